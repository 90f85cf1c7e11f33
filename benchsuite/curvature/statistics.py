"""Curvature statistics: probes computed on a fixed probe batch, outside timed training work.

Each statistic is a registered function ``fn(ctx: ProbeContext) -> dict[str, float]``
(registry :data:`STATISTICS`); presets name the statistics a run records:

* ``none``: nothing;
* ``cheap``: ``loss``, ``grad_norm``, ``dead_units``;
* ``full``: everything (adds Hutchinson traces, top eigenvalues and per-layer
  Hessian-vs-GN block checks).

Keys are flat: ``loss``, ``grad_norm``, ``trace_H``, ``trace_G``, ``trace_H/layer0``,
``trace_H_sign``, ``eig_H/0``, ``eig_G/0``, ``block_rel_diff/layer0``,
``block_min_eig/layer0``, ``dead_frac/layer1``, ``dead_flips/layer1``. Blocks are
named ``layer{i}`` (Linear layer i: weight and bias) and ``prelu{i}`` (the slopes of
the PReLU after Linear layer i). These probes show the facts of Botev et al. (2017)
on a running network: for piecewise-linear activations each layer's Hessian block
equals its GN block and is PSD, and ``tr H ≥ 0``; dead units (``f'(h) = 0`` on the
whole probe batch) reduce the curvature reaching earlier layers.

Entry point for the runner: :class:`CurvatureProbe`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from benchsuite.curvature.model import ParamBlock, SequentialModel
from benchsuite.curvature.products import ggn_matrix_product, hessian_matrix_product
from benchsuite.errors import ConfigError, UnknownNameError
from benchsuite.contracts.registry import Registry

__all__ = ["PRESETS", "STATISTICS", "CurvatureProbe", "ProbeContext", "ProbeOptions", "Statistic"]

log = logging.getLogger(__name__)

Statistic = Callable[["ProbeContext"], dict[str, float]]
STATISTICS: Registry[Statistic] = Registry("statistic", group=None)


@dataclass(frozen=True)
class ProbeOptions:
    """Knobs of the statistics.

    Attributes:
        hutchinson_samples: Rademacher vectors per Hutchinson trace estimate.
        top_k: Number of top eigenvalues of H and G.
        dense_block_max: Blocks with at most this many parameters are checked densely;
            larger ones by products (randomised Frobenius ratio, Lanczos min eigenvalue).
        block_probe_vectors: Rademacher vectors for the randomised block difference.
        eig_tol: Relative tolerance passed to ``scipy.sparse.linalg.eigsh``.
        eig_maxiter: Iteration cap for ``eigsh`` (Lanczos restarts).
        lanczos_steps: Krylov dimension for the minimum eigenvalue of a large block.
    """

    hutchinson_samples: int = 16
    top_k: int = 3
    dense_block_max: int = 500
    lanczos_steps: int = 40
    block_probe_vectors: int = 4
    eig_tol: float = 1e-4
    eig_maxiter: int = 300

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | ProbeOptions | None) -> ProbeOptions:
        if options is None:
            return cls()
        if isinstance(options, ProbeOptions):
            return options
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ConfigError(f"Unknown probe option(s) {unknown}. Valid: {', '.join(sorted(valid))}")
        opts = replace(cls(), **options)
        for f in fields(cls):
            value = getattr(opts, f.name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"Invalid probe option {f.name}={value!r} (need a positive number)")
        return opts


@dataclass
class ProbeContext:
    """What a statistic sees: the model at the probe, the probe batch and a persistent state.

    Attributes:
        net: The parsed model.
        loss_fn: The torch loss module.
        x: Probe inputs (N, D_in).
        y: Probe targets.
        options: :class:`ProbeOptions`.
        generator: Random generator seeded from (seed, step).
        state: Per-statistic persistent state (e.g. last dead-unit masks), kept between calls.
        step: Training step of this probe.
    """

    net: SequentialModel
    loss_fn: nn.Module
    x: Tensor
    y: Tensor
    options: ProbeOptions
    generator: torch.Generator
    state: dict[str, Any] = field(default_factory=dict)
    step: int = 0

    @property
    def params(self) -> list[Tensor]:
        return self.net.params

    def rademacher(self, k: int) -> list[Tensor]:
        """K Rademacher vectors shaped like the parameters, (K, *p.shape) each."""
        out = []
        for p in self.params:
            r = torch.randint(0, 2, (k, *p.shape), generator=self.generator, device=p.device)
            out.append(r.to(p.dtype) * 2 - 1)
        return out

    def ggn(self, vectors: list[Tensor]) -> list[Tensor]:
        return ggn_matrix_product(self.net, self.loss_fn, self.x, self.y, vectors)

    def hessian(self, vectors: list[Tensor]) -> list[Tensor]:
        return hessian_matrix_product(self.net, self.loss_fn, self.x, self.y, vectors)


def _block_dot(block: ParamBlock, u: list[Tensor], v: list[Tensor]) -> Tensor:
    """Per-vector inner products restricted to a block, (K,)."""
    return sum((u[i] * v[i]).flatten(1).sum(1) for i in block.param_indices)


# ------------------------------------------------------------------ statistics


@STATISTICS.register("loss", "Loss on the probe batch")
def loss_stat(ctx: ProbeContext) -> dict[str, float]:
    with torch.no_grad():
        return {"loss": float(ctx.loss_fn(ctx.net.model(ctx.x), ctx.y))}


@STATISTICS.register("grad_norm", "Euclidean norm of the probe-batch gradient")
def grad_norm_stat(ctx: ProbeContext) -> dict[str, float]:
    with torch.enable_grad():
        loss = ctx.loss_fn(ctx.net.model(ctx.x), ctx.y)
        grads = torch.autograd.grad(loss, ctx.params)
    return {"grad_norm": float(torch.sqrt(sum((g * g).sum() for g in grads)))}


@STATISTICS.register("dead_units", "Fraction of units with f'(h)=0 on the whole probe batch, and flips")
def dead_units_stat(ctx: ProbeContext) -> dict[str, float]:
    """``dead_frac/layer{l}``: fraction of the activation inputs after Linear layer l with
    ``f'(h) = 0`` for every probe sample (maxout: pieces never selected);
    ``dead_flips/layer{l}``: units whose dead/alive status changed since the previous
    probe (0 at the first probe)."""
    net = ctx.net
    cache = net.forward(ctx.x)
    prev: dict[str, Tensor] = ctx.state.setdefault("dead_masks", {})
    out: dict[str, float] = {}
    for k, i in enumerate(net.linear_indices):
        j = i + 1
        if j >= len(net.modules) or isinstance(net.modules[j], nn.Linear):
            continue
        dead = (net.df(cache, j) == 0).all(0)  # (d,)
        key = f"layer{k}"
        out[f"dead_frac/{key}"] = float(dead.to(torch.float64).mean())
        out[f"dead_flips/{key}"] = float((dead != prev[key]).sum()) if key in prev else 0.0
        prev[key] = dead
    return out


@STATISTICS.register("hutchinson_trace", "Hutchinson traces of H and G, total and per block")
def hutchinson_stat(ctx: ProbeContext) -> dict[str, float]:
    """``tr A ≈ (1/S) Σ_s zᵀ A z`` with Rademacher ``z`` (unbiased; Hutchinson 1989).

    Per-block traces use the same vectors restricted to the block (unbiased since the
    entries of ``z`` are independent). ``trace_H_sign`` is the sign of the estimate and
    ``trace_H_stderr`` its standard error.
    """
    z = ctx.rademacher(ctx.options.hutchinson_samples)
    out: dict[str, float] = {}
    for label, product in (("G", ctx.ggn), ("H", ctx.hessian)):
        az = product(z)
        per = torch.stack([_block_dot(b, z, az) for b in ctx.net.blocks])  # (B, S)
        total = per.sum(0)  # (S,)
        out[f"trace_{label}"] = float(total.mean())
        for b, est in zip(ctx.net.blocks, per):
            out[f"trace_{label}/{b.name}"] = float(est.mean())
        if label == "H":
            s = total.shape[0]
            out["trace_H_stderr"] = float(total.std() / math.sqrt(s)) if s > 1 else float("nan")
            out["trace_H_sign"] = float(torch.sign(total.mean()))
    return out


def _flat_operator(ctx: ProbeContext, product: Callable[[list[Tensor]], list[Tensor]], indices: list[int]):
    """A float64 scipy LinearOperator for ``product`` restricted to parameters ``indices``."""
    from scipy.sparse.linalg import LinearOperator

    params = ctx.params
    sizes = [params[i].numel() for i in indices]

    def matmat(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m).reshape(sum(sizes), -1)
        cols = torch.as_tensor(m.T, dtype=params[0].dtype, device=params[0].device)  # (K, P_b)
        vec = [torch.zeros(cols.shape[0], *p.shape, dtype=p.dtype, device=p.device) for p in params]
        for i, part in zip(indices, torch.split(cols, sizes, dim=1)):
            vec[i] = part.reshape(cols.shape[0], *params[i].shape)
        res = product(vec)
        flat = torch.cat([res[i].reshape(cols.shape[0], -1) for i in indices], dim=1)  # (K, P_b)
        return flat.T.detach().cpu().to(torch.float64).numpy()

    n = sum(sizes)
    return LinearOperator((n, n), matvec=lambda v: matmat(v).ravel(), matmat=matmat, dtype=np.float64)


def _eigsh(ctx: ProbeContext, op, k: int, which: str) -> np.ndarray:
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    n = op.shape[0]
    v0 = torch.rand(n, generator=ctx.generator, device=ctx.generator.device, dtype=torch.float64).cpu().numpy() + 0.5
    try:
        vals = eigsh(op, k=k, which=which, v0=v0, tol=ctx.options.eig_tol,
                     maxiter=ctx.options.eig_maxiter, return_eigenvectors=False)
    except ArpackNoConvergence as exc:
        # Degenerate clusters (e.g. the many zero eigenvalues of a dead-unit block) can stall
        # Lanczos: keep what converged and mark the rest NaN rather than losing the probe.
        got = np.asarray(exc.eigenvalues, dtype=np.float64).ravel()
        log.warning("eigsh(%s, k=%d) did not converge; %d of %d eigenvalues kept", which, k, got.size, k)
        vals = np.concatenate([got, np.full(k - got.size, np.nan)])
    return np.sort(vals)


def _dense_block(ctx: ProbeContext, product: Callable[[list[Tensor]], list[Tensor]], block: ParamBlock) -> Tensor:
    """The (P_b, P_b) block of ``product`` from its action on the block's unit vectors
    (one batched product of P_b columns; exact, and much cheaper than a Jacobian of
    all N·C logits)."""
    op = _flat_operator(ctx, product, list(block.param_indices))
    cols = op.matmat(np.eye(op.shape[0]))  # (P_b, P_b)
    return torch.as_tensor(cols, dtype=torch.float64)


def _lanczos_min(ctx: ProbeContext, op, steps: int) -> float:
    """Smallest Ritz value of ``steps`` Lanczos iterations (full reorthogonalisation).

    Ritz values interlace the spectrum, so the result is an upper bound on λ_min
    that tightens with ``steps`` and is exact once the Krylov space is the whole
    block: a negative value proves a negative eigenvalue, and PSD blocks give ≥ 0 up
    to rounding. Unlike ``eigsh(which="SA")`` it never stalls on the degenerate zero
    cluster of dead units; its cost is ``steps`` block Hessian-vector products.
    """
    n = op.shape[0]
    k = min(steps, n)
    v = torch.rand(n, generator=ctx.generator, device=ctx.generator.device, dtype=torch.float64).cpu().numpy() - 0.5
    basis = np.zeros((k, n))
    basis[0] = v / np.linalg.norm(v)
    alphas, betas = [], []
    for j in range(k):
        w = op.matvec(basis[j])
        alphas.append(float(w @ basis[j]))
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = float(np.linalg.norm(w))
        if j == k - 1 or beta <= 1e-12 * max(1.0, max(abs(a) for a in alphas)):
            break
        betas.append(beta)
        basis[j + 1] = w / beta
    t = np.diag(alphas) + np.diag(betas[: len(alphas) - 1], 1) + np.diag(betas[: len(alphas) - 1], -1)
    return float(np.linalg.eigvalsh(t)[0])


@STATISTICS.register("top_eigenvalues", "Top-k eigenvalues of H and G (Lanczos on products)")
def top_eigenvalues_stat(ctx: ProbeContext) -> dict[str, float]:
    """``eig_H/j``, ``eig_G/j``: the j-th largest (algebraic) eigenvalue, j = 0..k-1,
    by implicitly restarted Lanczos (``scipy.sparse.linalg.eigsh``) on products."""
    indices = list(range(len(ctx.params)))
    n = sum(p.numel() for p in ctx.params)
    k = min(ctx.options.top_k, n - 1)
    out: dict[str, float] = {}
    for label, product in (("H", ctx.hessian), ("G", ctx.ggn)):
        vals = _eigsh(ctx, _flat_operator(ctx, product, indices), k, "LA")[::-1]
        out.update({f"eig_{label}/{j}": float(v) for j, v in enumerate(vals)})
    return out


@STATISTICS.register("block_check", "Per-block max|H_l - G_l| relative to max|G_l| and min eigenvalue of H_l")
def block_check_stat(ctx: ProbeContext) -> dict[str, float]:
    """Within-block Hessian vs GN (Botev et al. 2017: equal and PSD for PL activations).

    Blocks with at most ``dense_block_max`` parameters: dense blocks from batched products
    with the block's unit vectors,
    ``block_rel_diff = max|H_l − G_l| / max|G_l|`` and ``block_min_eig = λ_min(H_l)``.
    Larger blocks: ``block_rel_diff = ‖(H_l − G_l) Z‖_F / ‖G_l Z‖_F`` with Rademacher
    ``Z`` (a randomised relative difference, 0 iff equal on the probes) and
    ``λ_min(H_l)`` as the smallest Ritz value of ``lanczos_steps`` Lanczos iterations on
    block-restricted Hessian-vector products (an upper bound, exact for small blocks).
    """
    net, out = ctx.net, {}
    for b in net.blocks:
        size = sum(ctx.params[i].numel() for i in b.param_indices)
        if size <= ctx.options.dense_block_max:
            h, g = _dense_block(ctx, ctx.hessian, b), _dense_block(ctx, ctx.ggn, b)
            scale = g.abs().max()
            diff = (h - g).abs().max()
            rel = diff / scale if scale > 0 else diff
            min_eig = torch.linalg.eigvalsh((h + h.T) / 2)[0]
        else:
            z = ctx.rademacher(ctx.options.block_probe_vectors)
            z = [zi if i in b.param_indices else torch.zeros_like(zi) for i, zi in enumerate(z)]
            hz, gz = ctx.hessian(z), ctx.ggn(z)
            num = sum(((hz[i] - gz[i]) ** 2).sum() for i in b.param_indices)
            den = sum((gz[i] ** 2).sum() for i in b.param_indices)
            rel = torch.sqrt(num / den) if den > 0 else torch.sqrt(num)
            op = _flat_operator(ctx, ctx.hessian, list(b.param_indices))
            min_eig = torch.tensor(_lanczos_min(ctx, op, ctx.options.lanczos_steps))
        out[f"block_rel_diff/{b.name}"] = float(rel)
        out[f"block_min_eig/{b.name}"] = float(min_eig)
    return out


PRESETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "cheap": ("loss", "grad_norm", "dead_units"),
    "full": ("loss", "grad_norm", "dead_units", "hutchinson_trace", "top_eigenvalues", "block_check"),
}


class CurvatureProbe:
    """Computes a preset of statistics on a fixed probe batch; the runner calls it per probe.

    Args:
        preset: ``none``, ``cheap`` or ``full``.
        model: The ``nn.Sequential`` being trained (read, never modified).
        loss_fn: Its torch loss module.
        batch: The fixed probe batch ``(x, y)``.
        seed: Seeds the random vectors (Hutchinson, Lanczos start) with the step.
        options: :class:`ProbeOptions` or a mapping of its fields.

    Raises:
        UnknownNameError: for an unknown preset (the message lists the valid ones).
        ConfigError: for an unsupported model, loss or option.

    Calling the probe restores the model's training mode and leaves ``.grad`` untouched
    (products use ``torch.autograd.grad``, never ``backward``).
    """

    def __init__(
        self,
        preset: str,
        model: nn.Module,
        loss_fn: nn.Module,
        batch: tuple[Tensor, Tensor],
        *,
        seed: int = 0,
        options: Mapping[str, Any] | ProbeOptions | None = None,
    ):
        if preset not in PRESETS:
            raise UnknownNameError("statistics preset", preset, PRESETS)
        self.preset = preset
        self.names = PRESETS[preset]
        for name in self.names:
            STATISTICS.get(name)
        self.options = ProbeOptions.from_mapping(options)
        self.seed = int(seed)
        self.net = SequentialModel(model) if self.names else None
        self.loss_fn = loss_fn
        self.x, self.y = batch
        self.state: dict[str, Any] = {}

    def __call__(self, step: int) -> dict[str, float]:
        """The preset's statistics at training step ``step`` (flat ``key -> float``)."""
        if not self.names:
            return {}
        model = self.net.model
        was_training = model.training
        device = self.x.device
        gen = torch.Generator(device=device)
        gen.manual_seed((self.seed * 1_000_003 + int(step)) % (2**63))
        ctx = ProbeContext(self.net, self.loss_fn, self.x, self.y, self.options, gen, self.state, int(step))
        out: dict[str, float] = {}
        try:
            model.eval()
            for name in self.names:
                try:
                    out.update(STATISTICS.get(name)(ctx))
                except (RuntimeError, ValueError, ArithmeticError) as exc:  # a probe must not end a run
                    log.warning("statistic %s failed at step %d: %s", name, step, exc)
                    out[f"{name}_failed"] = 1.0
        finally:
            model.train(was_training)
        return out
