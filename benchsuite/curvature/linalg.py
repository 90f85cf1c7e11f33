"""Matrix-free linear algebra on curvature products: traces, eigenvalues, dense blocks.

A *product* is a function ``V ↦ A V`` on parameter-shaped vectors with a leading
axis of K (``GGNOperator.matmat``, :func:`~benchsuite.curvature.products.hessian_matrix_product`).
From products alone this module gives

* Hutchinson's unbiased trace estimate ``tr A ≈ (1/S) Σ_s zᵀ A z`` with Rademacher
  ``z`` (Hutchinson 1989), per parameter block;
* the extreme eigenvalues by implicitly restarted Lanczos (``scipy.sparse.linalg.eigsh``)
  or by plain Lanczos with full reorthogonalisation (Ritz values);
* a dense block from the product's action on the block's unit vectors.

Everything works in float64 on the host (scipy); only torch, numpy and scipy are used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Product",
    "block_dot",
    "dense_block",
    "eigsh_extreme",
    "flat_operator",
    "hutchinson_estimates",
    "lanczos_min",
    "rademacher",
]

log = logging.getLogger(__name__)

Product = Callable[[list[Tensor]], list[Tensor]]


def rademacher(params: Sequence[Tensor], k: int, generator: torch.Generator) -> list[Tensor]:
    """K Rademacher vectors (entries ±1) shaped like the parameters, (K, *p.shape) each."""
    out = []
    for p in params:
        r = torch.randint(0, 2, (k, *p.shape), generator=generator, device=p.device)
        out.append(r.to(p.dtype) * 2 - 1)
    return out


def block_dot(indices: Sequence[int], u: Sequence[Tensor], v: Sequence[Tensor]) -> Tensor:
    """Per-vector inner products ``u_k · v_k`` restricted to parameters ``indices``, (K,)."""
    return sum((u[i] * v[i]).flatten(1).sum(1) for i in indices)


def hutchinson_estimates(product: Product, z: list[Tensor], blocks: Sequence[Sequence[int]]) -> Tensor:
    """Per-block, per-vector estimates ``z_sᵀ (A z_s)|_b`` (B, S) of ``tr A_bb`` (Hutchinson 1989).

    Unbiased per block since the entries of Rademacher ``z`` are independent; the
    total trace estimate is the sum over blocks.
    """
    az = product(z)
    return torch.stack([block_dot(b, z, az) for b in blocks])  # (B, S)


def flat_operator(product: Product, params: Sequence[Tensor], indices: Sequence[int]):
    """A float64 ``scipy.sparse.linalg.LinearOperator`` for ``product`` restricted to ``indices``."""
    from scipy.sparse.linalg import LinearOperator

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


def dense_block(product: Product, params: Sequence[Tensor], indices: Sequence[int]) -> Tensor:
    """The (P_b, P_b) block of ``product`` on ``indices`` from one batched product of unit vectors.

    Exact, and much cheaper than a Jacobian of all N·C logits.
    """
    op = flat_operator(product, params, indices)
    return torch.as_tensor(op.matmat(np.eye(op.shape[0])), dtype=torch.float64)


def eigsh_extreme(op, k: int, which: str, v0: np.ndarray, *, tol: float, maxiter: int) -> np.ndarray:
    """``k`` extreme eigenvalues (sorted ascending) by implicitly restarted Lanczos.

    Degenerate clusters (e.g. the many zero eigenvalues of a dead-unit block) can stall
    Lanczos: the converged values are kept and the rest are NaN.

    Args:
        op: A symmetric ``LinearOperator``.
        k: Number of eigenvalues.
        which: ``"LA"`` (largest algebraic), ``"SA"``, ``"LM"``...
        v0: Start vector.
        tol: Relative tolerance.
        maxiter: Iteration cap.
    """
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    try:
        vals = eigsh(op, k=k, which=which, v0=v0, tol=tol, maxiter=maxiter, return_eigenvectors=False)
    except ArpackNoConvergence as exc:
        got = np.asarray(exc.eigenvalues, dtype=np.float64).ravel()
        log.warning("eigsh(%s, k=%d) did not converge; %d of %d eigenvalues kept", which, k, got.size, k)
        vals = np.concatenate([got, np.full(k - got.size, np.nan)])
    return np.sort(vals)


def lanczos_min(op, steps: int, v0: np.ndarray) -> float:
    """Smallest Ritz value of ``steps`` Lanczos iterations (full reorthogonalisation).

    Ritz values interlace the spectrum, so the result is an upper bound on λ_min
    that tightens with ``steps`` and is exact once the Krylov space is the whole
    operator: a negative value proves a negative eigenvalue, and PSD operators give
    ≥ 0 up to rounding. Unlike ``eigsh(which="SA")`` it never stalls on a degenerate
    zero cluster; its cost is ``steps`` products.
    """
    n = op.shape[0]
    k = min(steps, n)
    basis = np.zeros((k, n))
    basis[0] = v0 / np.linalg.norm(v0)
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
