"""Exact and Monte-Carlo diagonals of the Gauss-Newton matrix, for every parameter.

Exact (Dangel, Kunstner & Hennig 2020, "BackPACK"; ALGORITHMS.md §4):

    diag G = Σ_n Σ_k (J_nᵀ c_{n,k})²

over the columns ``c_{n,k}`` of ``C_n`` (``ℋ_n = C_n C_nᵀ``, loss scale included).
For a Linear layer with output columns ``S_{k,n}`` (the backpropagated square roots
at its output) it factorises per sample as

    diag G_W[i, j] = Σ_n (Σ_k S_{k,n,i}²) ā_{n,j}²,   i.e. (S ⊙ S)ᵀ·1 ⊗ (ā ⊙ ā),

so one matmul per layer suffices. PReLU slopes: ``∂o/∂α = min(h, 0)``, hence
``diag G_α[i] = Σ_{n,k} (S_{k,n,i} min(h_{n,i}, 0))²`` (per-channel slopes) or
``Σ_{n,k} (Σ_i S_{k,n,i} min(h_{n,i}, 0))²`` (one shared slope).

Monte-Carlo: the same with ``M`` sampled columns scaled by ``1/√M`` (unbiased;
cheaper than the exact one when C is large). Results follow
``list(model.parameters())`` and the reduction of the loss module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from benchsuite.curvature.chunking import DEFAULT_MAX_ELEMENTS
from benchsuite.curvature.columns import backprop_sqrt
from benchsuite.curvature.losses import loss_curvature
from benchsuite.curvature.model import SequentialModel, parsed

__all__ = ["diag_empirical_fisher", "diag_ggn_exact", "diag_ggn_mc"]


def _diag(
    model: nn.Module | SequentialModel,
    loss_fn: nn.Module,
    x: Tensor,
    y: Tensor,
    mc_samples: int | None,
    generator: torch.Generator | None,
    max_elements: int,
    params: Sequence[int] | None = None,
) -> list[Tensor]:
    net = parsed(model)
    cache = net.forward(x)
    lc = loss_curvature(loss_fn, cache.output, y)
    out = [torch.zeros_like(p, memory_format=torch.contiguous_format).detach() for p in net.params]
    wanted = set(range(len(net.params))) if params is None else set(params)
    if not wanted:
        return out

    def visit(i: int, s: Tensor) -> None:  # s: (K, N, d)
        if not wanted.intersection(net.module_params[i]):
            return  # a module whose diagonal is not asked for costs nothing here
        for j, sq in zip(net.module_params[i], net.squared_param_grads(cache, i, s)):
            if j in wanted:
                out[j] += sq

    def top_diagonal(i: int, c: Tensor) -> None:  # c: (N, C), column k of C_n is c[n, k] e_k
        visit(i, c[None])  # a Linear layer only needs Σ_k S² = c ⊙ c

    with torch.no_grad():
        backprop_sqrt(net, cache, lc, visit, top_diagonal, mc_samples=mc_samples, generator=generator,
                      max_elements=max_elements)
    return out


def diag_ggn_exact(
    model: nn.Module | SequentialModel,
    loss_fn: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    params: Sequence[int] | None = None,
) -> list[Tensor]:
    """Exact diagonal of the GN matrix ``Σ_n J_nᵀ ℋ_n J_n``, one tensor per parameter.

    Args:
        model: ``nn.Sequential`` of Linear layers and supported activations.
        loss_fn: Torch loss module (its reduction is respected).
        x: Inputs (N, D_in).
        y: Targets.
        max_elements: Memory bound for one chunk of backpropagated columns.
        params: Indices into ``list(model.parameters())`` whose diagonal is wanted
            (default: all). The others are returned as zeros and their squared
            cotangents are never formed (e.g. KFGN asks only for the PReLU slopes).
    """
    return _diag(model, loss_fn, x, y, None, None, max_elements, params)


def diag_ggn_mc(
    model: nn.Module | SequentialModel,
    loss_fn: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    mc_samples: int = 1,
    generator: torch.Generator | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> list[Tensor]:
    """Unbiased Monte-Carlo estimate of the GN diagonal with ``mc_samples`` columns per sample.

    ``E[diag_ggn_mc] = diag_ggn_exact``; the columns are drawn from the model's
    predictive distribution (see :meth:`LossCurvature.sample_columns`) and
    backpropagated ``max_elements`` at a time.
    """
    return _diag(model, loss_fn, x, y, mc_samples, generator, max_elements)


def diag_empirical_fisher(model: nn.Module | SequentialModel, loss_fn: nn.Module, x: Tensor, y: Tensor) -> list[Tensor]:
    """Diagonal of the empirical Fisher ``mean_n ∇ℓ_n ⊙ ∇ℓ_n`` (``sum_n`` for ``reduction="sum"``).

    ``ℓ_n`` is the loss module applied to example ``n`` alone, so ``E = mean_n ℓ_n``
    (or ``sum_n``); this is Martens' (2010) HF preconditioner statistic and BackPACK's
    ``SumGradSquared`` up to the reduction scale. One backward pass of the per-example
    logit gradients ``δ_n`` through the cached layers gives every per-example gradient
    in factored form: Linear ``∇W_n = δ_n ā_nᵀ`` so ``Σ_n ∇W_n² = (δ²)ᵀ(a²)``;
    PReLU ``∇α_n = δ_n ⊙ min(h_n, 0)``. One tensor per parameter, no (N, P) matrix.
    """
    net = parsed(model)
    with torch.no_grad():
        cache = net.forward(x)
    logits = cache.output.detach().requires_grad_(True)
    with torch.enable_grad():
        (delta,) = torch.autograd.grad(loss_fn(logits, y), logits)  # (N, C): ∂E/∂z_n
    n = x.shape[0]
    scale = float(n) if loss_fn.reduction == "mean" else 1.0  # ∇ℓ_n = N·∂E/∂θ|_n for a mean
    out: list[Tensor | None] = [None] * len(net.params)

    def visit(i: int, s: Tensor) -> None:  # s: (1, N, d_out), one column
        for j, sq in zip(net.module_params[i], net.squared_param_grads(cache, i, s)):
            out[j] = scale * sq

    net.backprop(cache, delta.detach()[None], visit)
    return [o if o is not None else torch.zeros_like(p) for o, p in zip(out, net.params)]
