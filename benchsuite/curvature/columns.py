"""Backpropagation of the loss Hessian's square-root columns (exact or sampled).

KFLR factors and the exact GN diagonal (Botev et al. 2017; Dangel et al. 2020,
BackPACK) need, for every layer, the columns of the backpropagated square roots

    C_{l,n} = B_{l,n} W̃_{l+1}ᵀ C_{l+1,n},   C_{L,n} = C_n  (ℋ_n = C_n C_nᵀ),

and KFAC / the MC diagonal the same recursion started from M sampled columns. All
columns of all samples travel together as one (K, N, d) tensor, so each layer costs
one matmul (not one VJP per output dimension). For the exact case the K = C columns
are processed in chunks that bound memory; when ``C_n`` is diagonal (MSE,
BCEWithLogits) and the top module is Linear, the top layer is handled in closed form
and the columns at its input are ``c_k W̃[k, :]`` (no C × C matmul). At a narrow
layer (``d ≤ K/4``, e.g. an autoencoder's code) the K columns are replaced, exactly,
by the d columns of a square root of their per-sample Gram matrix ``Σ_k s sᵀ``
(all consumers only need that Gram), so the layers below cost ``d`` columns, not K.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from benchsuite.curvature.chunking import DEFAULT_MAX_ELEMENTS, chunk_count, spans
from benchsuite.curvature.losses import LossCurvature
from benchsuite.curvature.model import ForwardCache, SequentialModel

__all__ = ["backprop_sqrt"]


def backprop_sqrt(
    net: SequentialModel,
    cache: ForwardCache,
    lc: LossCurvature,
    visit: Callable[[int, Tensor], None],
    top_diagonal: Callable[[int, Tensor], None],
    *,
    mc_samples: int | None = None,
    generator: torch.Generator | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> None:
    """Call ``visit(i, S)`` with the square-root columns S (K, N, d) at module ``i``'s output.

    Args:
        net: Parsed model.
        cache: Its forward cache.
        lc: Loss curvature at the cached logits.
        visit: Called per parameterised module and chunk of columns (sum over chunks).
        top_diagonal: ``top_diagonal(i, c)`` is called once instead of ``visit`` for a
            top Linear layer ``i`` when the exact ``C_n`` are diagonal, with ``c`` (N, C)
            their diagonals (column k at sample n is ``c[n, k] e_k``).
        mc_samples: If given, use that many sampled columns instead of the exact ones.
        generator: Random generator for sampling.
        max_elements: Bound on the elements of one (K, N, d) chunk of columns (exact
            or sampled); results do not depend on it.
    """
    n, c = lc.logits.shape
    widths = [x.shape[1] for x in cache.inputs] + [c]
    per_column = n * max(widths)  # elements of one column (N, d) at the widest module
    if mc_samples is not None:
        sampled = lc.sample_columns(mc_samples, generator)  # (M, N, C)
        for m0, m1 in spans(mc_samples, chunk_count(max_elements, per_column, mc_samples)):
            net.backprop(cache, sampled[m0:m1], visit)
        return
    last = len(net.modules) - 1
    top = net.modules[last]
    chunk = chunk_count(max_elements, per_column, c)
    stop = _compression_point(net, last, c)
    diag = lc.diagonal
    use_top = diag is not None and last in net.linear_indices
    if use_top:
        top_diagonal(last, diag)
    gram: Tensor | None = None  # Σ_k s sᵀ per sample at the compression point, (N, d, d)
    for k0, k1 in spans(c, chunk):
        if use_top:
            sel, rows = diag.T[k0:k1], top.weight[k0:k1]  # (K, N), (K, in)
            s = net.backprop(cache, sel[:, :, None], visit, stop=stop,
                             top=lambda i, s=sel, w=rows: s[:, :, None] * w[:, None, :])
        else:
            s = net.backprop(cache, lc.sqrt_columns(k0, k1), visit, stop=stop)
        if s is not None:
            part = torch.einsum("kni,knj->nij", s, s)  # (N, d, d)
            gram = part if gram is None else gram + part
    while gram is not None:
        # Exact compression: diag and KFLR only need Σ_k s sᵀ per sample, so replace
        # the K columns by d columns of a square root R_n (R_n R_nᵀ = Σ_k s sᵀ).
        evals, evecs = _psd_eigh(gram)  # (N, d), (N, d, d)
        root = evecs * evals.clamp(min=0).sqrt()[:, None, :]  # (N, d, d)
        s = root.permute(2, 0, 1).contiguous()  # (d, N, d): column j of every R_n
        nxt = _compression_point(net, stop - 1, s.shape[0])
        s = net.backprop(cache, s, visit, start=stop, stop=nxt)
        gram, stop = (None, nxt) if s is None else (torch.einsum("kni,knj->nij", s, s), nxt)


def _psd_eigh(gram: Tensor) -> tuple[Tensor, Tensor]:
    """Eigendecomposition of a batch of PSD Gram matrices, robust to ill-conditioning.

    float32 ``eigh`` fails to converge on near-singular Grams (dead units make many
    of them rank-deficient), so this works in float64 and, if LAPACK still fails,
    retries with a jitter of 1e-12 · mean diagonal (far below float32 resolution).
    """
    g = gram.double()
    try:
        evals, evecs = torch.linalg.eigh(g)
    except RuntimeError:  # torch.linalg.LinAlgError
        jitter = 1e-12 * g.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-30)  # (N,)
        eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
        evals, evecs = torch.linalg.eigh(g + jitter[:, None, None] * eye)
    return evals.to(gram.dtype), evecs.to(gram.dtype)


def _compression_point(net: SequentialModel, below: int, k: int) -> int:
    """Highest Linear module at or below ``below`` (not the first layer) with ``out ≤ k/4``, or -1."""
    last = len(net.modules) - 1
    for i in reversed(net.linear_indices[1:]):
        if i <= below and i != last and 4 * net.modules[i].out_features <= k:
            return i
    return -1
