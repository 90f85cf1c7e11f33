"""The registry of curvature statistics and the presets a run records.

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
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from benchsuite.contracts.registry import Registry
from benchsuite.curvature.linalg import (
    dense_block,
    eigsh_extreme,
    flat_operator,
    hutchinson_estimates,
    lanczos_min,
)
from benchsuite.probes.context import ProbeContext

__all__ = ["PRESETS", "STATISTICS", "Statistic"]

Statistic = Callable[[ProbeContext], dict[str, float]]
STATISTICS: Registry[Statistic] = Registry("statistic", group=None)


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
    linear = set(net.linear_indices)
    out: dict[str, float] = {}
    for k, i in enumerate(net.linear_indices):
        j = i + 1
        if j >= len(net.modules) or j in linear:
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
    blocks = ctx.net.blocks
    out: dict[str, float] = {}
    for label, product in (("G", ctx.ggn), ("H", ctx.hessian)):
        per = hutchinson_estimates(product, z, [b.param_indices for b in blocks])  # (B, S)
        total = per.sum(0)  # (S,)
        out[f"trace_{label}"] = float(total.mean())
        for b, est in zip(blocks, per):
            out[f"trace_{label}/{b.name}"] = float(est.mean())
        if label == "H":
            s = total.shape[0]
            out["trace_H_stderr"] = float(total.std() / math.sqrt(s)) if s > 1 else float("nan")
            out["trace_H_sign"] = float(torch.sign(total.mean()))
    return out


@STATISTICS.register("top_eigenvalues", "Top-k eigenvalues of H and G (Lanczos on products)")
def top_eigenvalues_stat(ctx: ProbeContext) -> dict[str, float]:
    """``eig_H/j``, ``eig_G/j``: the j-th largest (algebraic) eigenvalue, j = 0..k-1,
    by implicitly restarted Lanczos (``scipy.sparse.linalg.eigsh``) on products."""
    indices = list(range(len(ctx.params)))
    n = sum(p.numel() for p in ctx.params)
    k = min(ctx.options.top_k, n - 1)
    out: dict[str, float] = {}
    for label, product in (("H", ctx.hessian), ("G", ctx.ggn)):
        op = flat_operator(product, ctx.params, indices)
        vals = eigsh_extreme(op, k, "LA", ctx.start_vector(n, 0.5), tol=ctx.options.eig_tol,
                             maxiter=ctx.options.eig_maxiter)[::-1]
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
    net, params, out = ctx.net, ctx.params, {}
    for b in net.blocks:
        indices = list(b.param_indices)
        size = sum(params[i].numel() for i in indices)
        if size <= ctx.options.dense_block_max:
            h, g = dense_block(ctx.hessian, params, indices), dense_block(ctx.ggn, params, indices)
            scale = g.abs().max()
            diff = (h - g).abs().max()
            rel = diff / scale if scale > 0 else diff
            min_eig = torch.linalg.eigvalsh((h + h.T) / 2)[0]
        else:
            z = ctx.rademacher(ctx.options.block_probe_vectors)
            z = [zi if i in indices else torch.zeros_like(zi) for i, zi in enumerate(z)]
            hz, gz = ctx.hessian(z), ctx.ggn(z)
            num = sum(((hz[i] - gz[i]) ** 2).sum() for i in indices)
            den = sum((gz[i] ** 2).sum() for i in indices)
            rel = torch.sqrt(num / den) if den > 0 else torch.sqrt(num)
            op = flat_operator(ctx.hessian, params, indices)
            min_eig = torch.tensor(lanczos_min(op, ctx.options.lanczos_steps, ctx.start_vector(size, -0.5)))
        out[f"block_rel_diff/{b.name}"] = float(rel)
        out[f"block_min_eig/{b.name}"] = float(min_eig)
    return out


PRESETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "cheap": ("loss", "grad_norm", "dead_units"),
    "full": ("loss", "grad_norm", "dead_units", "hutchinson_trace", "top_eigenvalues", "block_check"),
}
