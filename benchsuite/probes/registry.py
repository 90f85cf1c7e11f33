"""The registry of curvature statistics and the presets a run records.

Each statistic is a registered function ``fn(ctx: ProbeContext) -> dict[str, float]``
(registry :data:`STATISTICS`); presets name the statistics a run records:

* ``none``: nothing;
* ``cheap``: ``loss``, ``grad_norm``, ``dead_units``;
* ``full``: everything (adds Hutchinson traces, top eigenvalues and per-layer
  Hessian-vs-GN block checks).

Keys are flat and each has one meaning:

* ``loss``, ``grad_norm``;
* ``trace_H``, ``trace_G``, ``trace_H/{block}``, ``trace_G/{block}``: Hutchinson
  estimates; ``trace_H_stderr``, ``trace_H_sign``;
* ``eig_H/{j}``, ``eig_G/{j}``: the j-th largest eigenvalue to ``eig_tol`` (NaN if
  block Lanczos did not converge);
* exact block checks, blocks with at most ``dense_block_max`` parameters only:
  ``block_rel_diff/{block}`` = ``max|H_l − G_l| / max|G_l|`` and
  ``block_min_eig/{block}`` = ``λ_min(H_l)``;
* their estimates for larger blocks, under other keys:
  ``block_rel_diff_est/{block}`` = ``‖(H_l − G_l) Z‖_F / ‖G_l Z‖_F`` (randomised, 0 iff
  equal on the probe vectors) and ``block_min_eig_ritz/{block}``, the smallest Ritz
  value of ``lanczos_steps`` Lanczos vectors (an upper bound on ``λ_min(H_l)``);
* ``dead_frac/{block}``, ``dead_flips/{block}``.

Blocks are named ``layer{i}`` (Linear layer i: weight and bias) and ``prelu{i}`` (the
slopes of the PReLU after Linear layer i). All products of a probe share one forward
pass per operator (:class:`~benchsuite.probes.context.ProbeContext`) and stay on the
model's device; eigenvalues come from block Lanczos with batched products
(:func:`~benchsuite.curvature.linalg.block_lanczos`). These probes show the facts of Botev et al. (2017)
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
    flat_product,
    hutchinson_estimates,
    lanczos_min,
    top_eigenvalues,
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


@STATISTICS.register("top_eigenvalues", "Top-k eigenvalues of H and G (block Lanczos on products)")
def top_eigenvalues_stat(ctx: ProbeContext) -> dict[str, float]:
    """``eig_H/j``, ``eig_G/j``: the j-th largest (algebraic) eigenvalue, j = 0..k-1.

    Block Lanczos with full reorthogonalisation and Rayleigh–Ritz (Golub & Underwood
    1977) on batched products of the probe's cached operators, started from the
    probe-batch gradient (plus a random component), until each Ritz value's error
    bound ``min(r, r²/gap)`` (Parlett 1998, §11.7) is at most ``eig_tol · |θ|``; values
    not converged within ``eig_maxiter`` products are NaN.
    """
    indices = list(range(len(ctx.params)))
    n = sum(p.numel() for p in ctx.params)
    k = min(ctx.options.top_k, n)
    b = min(ctx.options.eig_block, n)
    grad = ctx.flat_gradient()
    out: dict[str, float] = {}
    for label, product in (("H", ctx.hessian), ("G", ctx.ggn)):
        vals = top_eigenvalues(flat_product(product, ctx.params, indices), ctx.start_block(n, b, grad), k,
                               tol=ctx.options.eig_tol, max_products=ctx.options.eig_maxiter)
        out.update({f"eig_{label}/{j}": float(v) for j, v in enumerate(vals)})
    return out


@STATISTICS.register("block_check", "Per-block H_l vs G_l difference and min eigenvalue of H_l (exact or estimated)")
def block_check_stat(ctx: ProbeContext) -> dict[str, float]:
    """Within-block Hessian vs GN (Botev et al. 2017: equal and PSD for PL activations).

    Blocks with at most ``dense_block_max`` parameters, exact: dense blocks from one
    batched product with the block's unit vectors,
    ``block_rel_diff/{b} = max|H_l − G_l| / max|G_l|`` and ``block_min_eig/{b} = λ_min(H_l)``.

    Larger blocks, estimated under other keys:
    ``block_rel_diff_est/{b} = ‖(H_l − G_l) Z‖_F / ‖G_l Z‖_F`` with Rademacher ``Z``
    (a randomised relative difference, 0 iff equal on the probes) and
    ``block_min_eig_ritz/{b}``, the smallest Ritz value of a ``lanczos_steps``-dimensional
    block Krylov space of block-restricted Hessian products: an upper bound on
    ``λ_min(H_l)`` (a negative value proves a negative eigenvalue).
    """
    net, params, out = ctx.net, ctx.params, {}
    for b in net.blocks:
        indices = list(b.param_indices)
        size = sum(params[i].numel() for i in indices)
        if size <= ctx.options.dense_block_max:
            h, g = dense_block(ctx.hessian, params, indices), dense_block(ctx.ggn, params, indices)  # (P_b, P_b)
            scale = g.abs().max()
            diff = (h - g).abs().max()
            rel = diff / scale if scale > 0 else diff
            out[f"block_rel_diff/{b.name}"] = float(rel)
            out[f"block_min_eig/{b.name}"] = float(torch.linalg.eigvalsh((h + h.T) / 2)[0])
        else:
            z = ctx.rademacher(ctx.options.block_probe_vectors)
            z = [zi if i in indices else torch.zeros_like(zi) for i, zi in enumerate(z)]
            hz, gz = ctx.hessian(z), ctx.ggn(z)
            num = sum(((hz[i] - gz[i]) ** 2).sum() for i in indices)
            den = sum((gz[i] ** 2).sum() for i in indices)
            rel = torch.sqrt(num / den) if den > 0 else torch.sqrt(num)
            steps = min(ctx.options.lanczos_steps, size)
            start = ctx.start_block(size, min(ctx.options.eig_block, steps))
            out[f"block_rel_diff_est/{b.name}"] = float(rel)
            out[f"block_min_eig_ritz/{b.name}"] = lanczos_min(flat_product(ctx.hessian, params, indices),
                                                              steps, start)
    return out


PRESETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "cheap": ("loss", "grad_norm", "dead_units"),
    "full": ("loss", "grad_norm", "dead_units", "hutchinson_trace", "top_eigenvalues", "block_check"),
}
