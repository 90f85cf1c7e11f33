"""Matrix-free linear algebra on curvature products: traces, eigenvalues, dense blocks.

A *product* is a function ``V ↦ A V`` on parameter-shaped vectors with a leading
axis of K (``GGNOperator.matmat``, ``HessianOperator.matmat``). From products alone
this module gives

* Hutchinson's unbiased trace estimate ``tr A ≈ (1/S) Σ_s zᵀ A z`` with Rademacher
  ``z`` (Hutchinson 1989), per parameter block;
* extreme eigenvalues by block Lanczos with full reorthogonalisation and
  Rayleigh–Ritz (Golub & Underwood 1977; Golub & Van Loan, *Matrix Computations*,
  §10.3): each step is one *batched* product of a block of vectors, so a Krylov space
  of dimension m costs m/b batched products instead of m sequential ones;
* a dense block from the product's action on the block's unit vectors.

Everything stays in torch on the products' device and dtype (the small projected
matrices are solved in float64); nothing is sent to the host but a few scalars.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "FlatProduct",
    "Product",
    "RitzResult",
    "block_dot",
    "block_lanczos",
    "dense_block",
    "flat_product",
    "hutchinson_estimates",
    "lanczos_min",
    "rademacher",
    "start_block",
    "top_eigenvalues",
]

log = logging.getLogger(__name__)

Product = Callable[[list[Tensor]], list[Tensor]]
FlatProduct = Callable[[Tensor], Tensor]  # (K, P_b) -> (K, P_b)


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
    total trace estimate is the sum over blocks. All S vectors go through one batched
    product.
    """
    az = product(z)
    return torch.stack([block_dot(b, z, az) for b in blocks])  # (B, S)


def flat_product(product: Product, params: Sequence[Tensor], indices: Sequence[int]) -> FlatProduct:
    """``product`` restricted to the parameters ``indices``, on flat (K, P_b) matrices.

    The block ``A_bb`` acts on vectors that are zero outside the block; the result is
    the block's rows of ``A v``. Stays on the parameters' device and dtype.
    """
    sizes = [params[i].numel() for i in indices]

    def matmat(cols: Tensor) -> Tensor:
        k = cols.shape[0]
        vec = [torch.zeros(k, *p.shape, dtype=p.dtype, device=p.device) for p in params]
        for i, part in zip(indices, torch.split(cols, sizes, dim=1)):
            vec[i] = part.reshape(k, *params[i].shape).to(params[i].dtype)
        res = product(vec)
        return torch.cat([res[i].reshape(k, -1) for i in indices], dim=1)  # (K, P_b)

    return matmat


def dense_block(product: Product, params: Sequence[Tensor], indices: Sequence[int]) -> Tensor:
    """The (P_b, P_b) float64 block of ``product`` on ``indices``: one batched product of unit vectors.

    Exact, and much cheaper than a Jacobian of all N·C logits.
    """
    n = sum(params[i].numel() for i in indices)
    eye = torch.eye(n, dtype=params[indices[0]].dtype, device=params[indices[0]].device)  # (P_b, P_b)
    return flat_product(product, params, indices)(eye).T.to(torch.float64)


@dataclass(frozen=True)
class RitzResult:
    """Ritz pairs' values from a (block) Lanczos run.

    Attributes:
        values: Ritz values (k,), float64 on the host, ordered as requested
            (``largest``: descending; else ascending); NaN where not converged.
        residuals: Error bounds ``min(r_j, r_j² / gap_j)`` (k,) with ``r_j = ‖A y_j − θ_j y_j‖``
            for the unit Ritz vectors ``y_j`` (see :func:`block_lanczos`).
        products: Number of vectors multiplied by ``A``.
        converged: Every returned value met the tolerance.
        vectors: The unit Ritz vectors (k, n) of the returned values (rows; NaN rows padded).
    """

    values: Tensor
    residuals: Tensor
    products: int
    converged: bool
    vectors: Tensor | None = None


def _project(w: Tensor, basis: Tensor) -> Tensor:
    """``w − (w Qᵀ) Q``: the rows of ``w`` (b, n) without their components along the rows of ``basis``."""
    return w - (w @ basis.T) @ basis if basis.shape[0] else w


def _project_twice(w: Tensor, basis: Tensor) -> Tensor:
    """:func:`_project`, repeated when it cancelled more than 30 % of a row's norm.

    Kahan–Parlett's criterion (Parlett, *The Symmetric Eigenvalue Problem*, §6.9):
    one more classical Gram–Schmidt pass restores orthogonality to working precision
    ("twice is enough"); without much cancellation one pass already does.
    """
    once = _project(w, basis)
    if bool((once.norm(dim=1) >= 0.7 * w.norm(dim=1)).all()):
        return once
    return _project(once, basis)


def _normalise_rows(w: Tensor, drop: float) -> Tensor:
    """An orthonormal basis (b', n) of the row space of ``w`` (b, n) from its Gram matrix.

    ``q = Λ^{-1/2} Uᵀ w`` with ``w wᵀ = U Λ Uᵀ`` (float64), dropping directions with
    ``√λ ≤ drop``; for one row it is a division by the norm.
    """
    gram = (w @ w.T).to(torch.float64)  # (b, b)
    lam, u = torch.linalg.eigh(gram)
    keep = lam > drop * drop
    if not bool(keep.any()):
        return w[:0]
    return ((u[:, keep] / lam[keep].sqrt()).T.to(w.dtype)) @ w


@dataclass
class _Basis:
    """Rows of an orthonormal basis (m, n) in a buffer that grows by doubling."""

    data: Tensor
    size: int = 0

    @property
    def rows(self) -> Tensor:
        return self.data[: self.size]

    def append(self, block: Tensor) -> None:
        need = self.size + block.shape[0]
        if need > self.data.shape[0]:
            grown = self.data.new_empty(max(need, 2 * self.data.shape[0]), self.data.shape[1])
            grown[: self.size] = self.rows
            self.data = grown
        self.data[self.size : need] = block
        self.size = need


def block_lanczos(
    matmat: FlatProduct,
    start: Tensor,
    k: int,
    *,
    largest: bool = True,
    tol: float = 0.0,
    max_products: int = 100,
) -> RitzResult:
    """Extreme eigenvalues of a symmetric operator by block Lanczos with Rayleigh–Ritz.

    The orthonormal basis ``Q`` of the block Krylov space
    ``span{X₀, A X₀, A² X₀, …}`` is grown one block at a time with one batched product
    ``A X`` per step, fully reorthogonalised (block Gram–Schmidt twice, "twice is
    enough"); the Ritz values are the eigenvalues of ``T = Qᵀ A Q``. The residual of a
    Ritz pair ``(θ, y = Q s)`` is ``A y − θ y = W s_last``, with ``W`` the last product
    block's component outside ``span Q`` (Golub & Van Loan, *Matrix Computations*,
    §10.3), so it costs no product. Ritz values interlace the spectrum (Cauchy): the
    j-th largest Ritz value is a lower bound on ``λ_j`` (j-th smallest: an upper bound).

    Error bounds (Parlett, *The Symmetric Eigenvalue Problem*, §11.7): with
    ``r = ‖A y − θ y‖`` some eigenvalue lies within ``r`` of θ, and within ``r² / gap``
    when θ is separated by ``gap`` from the rest of the spectrum; ``gap`` is estimated by
    the distance to the nearest other Ritz value, and used only once ``r < gap`` (θ
    isolated). The run stops when every wanted pair's bound (``r² / gap`` or ``r``) is
    at most ``tol · |θ|``, when the Krylov space is invariant (exact), or
    after ``max_products`` vectors; ``tol = 0`` runs to the cap.

    Args:
        matmat: Flat product (K, n) → (K, n) of a symmetric operator.
        start: Start block (b, n); its rows span the first block (b ≥ 1).
        k: Number of extreme eigenvalues wanted.
        largest: Largest (True) or smallest algebraic eigenvalues.
        tol: Relative error tolerance; unconverged values are NaN when ``tol > 0``.
        max_products: Cap on the Krylov dimension (vectors multiplied by ``A``).

    Returns:
        :class:`RitzResult`.
    """
    n = start.shape[1]
    k = min(k, n)
    cap = min(max_products, n)
    eps = torch.finfo(start.dtype).eps
    basis = _Basis(start.new_empty(min(cap, 4 * start.shape[0] + 16), n))  # Q (m, n)
    t = torch.zeros(0, 0, dtype=torch.float64, device=start.device)  # (m, m): Qᵀ A Q
    block = _normalise_rows(start, 1e3 * eps * float(start.norm(dim=1).max()))
    vals = err = torch.zeros(0, dtype=torch.float64)
    coef = torch.zeros(0, 0, dtype=torch.float64)
    converged = False
    while block.shape[0] and basis.size < cap:
        block = block[: cap - basis.size]
        image = matmat(block).to(start.dtype)  # (b, n): A X
        m0 = basis.size
        basis.append(block)
        q = basis.rows  # (m, n)
        cols = (q @ image.T).to(torch.float64)  # (m, b): the new columns of T
        grown = torch.zeros(basis.size, basis.size, dtype=torch.float64, device=t.device)
        grown[:m0, :m0] = t
        grown[:, m0:] = cols
        grown[m0:, :] = cols.T
        t = grown
        theta, s = torch.linalg.eigh((t + t.T) / 2)  # ascending
        m = theta.shape[0]
        want = torch.arange(m - 1, m - 1 - min(k, m), -1) if largest else torch.arange(min(k, m))
        want = want.to(theta.device)
        w = _project_twice(image, q)  # (b, n): A X outside span Q
        wg = (w @ w.T).to(torch.float64)  # (b, b)
        s_last = s[m0:, want]  # (b, k)
        res = ((s_last * (wg @ s_last)).sum(0).clamp_min(0)).sqrt()  # (k,): ‖A y − θ y‖
        others = theta[None, :] - theta[want][:, None]  # (k, m)
        others[torch.arange(len(want)), want] = float("inf")
        gap = others.abs().min(1).values if m > 1 else torch.zeros_like(res)
        # r²/gap only once θ is isolated (r < gap): before that the Ritz gap means nothing
        err = torch.where(res < gap, res * res / gap.clamp_min(1e-300), res).cpu()  # (k,)
        vals = theta[want].cpu()
        coef = s[:, want]  # (m, k): Ritz vectors in the basis
        if tol > 0 and m >= k and bool((err <= tol * vals.abs()).all()):
            converged = True
            break
        size = float(image.norm(dim=1).max())
        block = _normalise_rows(w, 1e3 * eps * size)
        if block.shape[0] and float(w.norm(dim=1).min()) < 1e-2 * size:
            # dividing by a small norm amplified the rounding left along Q: project once more
            block = _normalise_rows(_project(block, q), 0.5)
        if block.shape[0] == 0:  # invariant subspace: the Ritz values are eigenvalues
            converged = tol == 0 or bool((err <= tol * vals.abs()).all())
            break
    pad = torch.full((k - vals.shape[0],), float("nan"), dtype=torch.float64)
    vals, err = torch.cat([vals, pad]), torch.cat([err, pad])
    if not converged and tol > 0:
        ok = err <= tol * vals.abs()
        log.warning("block Lanczos (k=%d) did not converge in %d products; %d of %d values kept",
                    k, basis.size, int(ok.sum()), k)
        vals = torch.where(ok, vals, torch.full_like(vals, float("nan")))
    vectors = (coef.T.to(start.dtype) @ basis.rows[: coef.shape[0]]) if coef.numel() else None  # (k', n)
    return RitzResult(vals, err, int(basis.size), converged, vectors)


def top_eigenvalues(
    matmat: FlatProduct,
    start: Tensor,
    k: int,
    *,
    tol: float,
    max_products: int,
) -> Tensor:
    """The ``k`` largest algebraic eigenvalues (k,), descending, float64; NaN where not converged.

    Block Lanczos (:func:`block_lanczos`) with the rows of ``start`` (b, n) as the first
    block, to the relative residual ``tol``.
    """
    return block_lanczos(matmat, start, k, largest=True, tol=tol, max_products=max_products).values


def lanczos_min(matmat: FlatProduct, steps: int, start: Tensor) -> float:
    """Smallest Ritz value of a Krylov space of dimension ``steps`` (full reorthogonalisation).

    Ritz values interlace the spectrum, so the result is an upper bound on λ_min
    that tightens with ``steps`` and is exact once the Krylov space is the whole
    operator: a negative value proves a negative eigenvalue, and PSD operators give
    ≥ 0 up to rounding. It never stalls on a degenerate zero cluster; its cost is
    ``steps`` products, in ``steps / b`` batched products for a start block of b rows.
    """
    out = block_lanczos(matmat, start, 1, largest=False, tol=0.0, max_products=steps)
    return float(out.values[0])


def start_block(n: int, b: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device,
                guess: Tensor | None = None, mix: float = 0.1) -> Tensor:
    """A reproducible start block (b, n) on ``device``: Gaussian rows, the first one optionally a guess.

    With ``guess`` (n,) (e.g. the gradient, which leans towards the top eigenvectors of
    H and G; Gur-Ari, Roberts & Dyer 2018) the first row is ``ĝ + mix · r̂`` (unit
    vectors), so every eigenvector still has a component in the start; a zero guess is
    ignored.
    """
    g = torch.randn(b, n, generator=generator, device=generator.device, dtype=dtype)
    g = g / g.norm(dim=1, keepdim=True)
    if guess is not None:
        norm = float(guess.norm())
        if norm > 0 and math.isfinite(norm):
            g[0] = guess.to(device=g.device, dtype=dtype) / norm + mix * g[0]
    return g.to(device=device)
