"""Preconditioned conjugate gradient with Martens' (2010) stopping rule and iterate storage.

Pure functions on flat tensors: ``matvec`` maps (P,) to (P,) and must be symmetric
positive definite on the Krylov space (a damped Gauss-Newton matrix).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["STOP_REASONS", "CGResult", "backtrack_iterates", "martens_cg", "storage_schedule"]

#: Why :func:`martens_cg` stopped (:attr:`CGResult.stop` is one of these).
STOP_REASONS = ("progress", "max_iters", "converged", "negative_curvature")


@dataclass
class CGResult:
    """Outcome of :func:`martens_cg`.

    Attributes:
        x: The last iterate (P,) — the "un-backtracked" solution used for warm starts.
        iterates: Stored ``(i, x_i)`` pairs in increasing ``i`` (the last one included),
            for CG backtracking.
        phi: ``φ(x) = ½ xᵀAx − bᵀx`` at each iteration ``0..iters``.
        iters: Iterations run.
        stop: ``"progress"`` (relative-progress rule), ``"max_iters"``, ``"converged"``
            (residual vanished) or ``"negative_curvature"`` (``pᵀAp ≤ 0``: bailed out).
    """

    x: Tensor
    iterates: list[tuple[int, Tensor]] = field(default_factory=list)
    phi: list[float] = field(default_factory=list)
    iters: int = 0
    stop: str = "max_iters"


def storage_schedule(max_iters: int, start: float = 5.0, gamma: float = 1.3) -> set[int]:
    """Iterations at which CG stores its iterate: ``⌈start·gamma^j⌉`` (Martens 2010, §4.6)."""
    out, j = set(), 0
    while True:
        i = math.ceil(start * gamma**j)
        if i > max_iters:
            return out
        out.add(i)
        j += 1


def martens_cg(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    x0: Tensor,
    *,
    precond: Tensor | None = None,
    max_iters: int = 250,
    min_iters: int = 1,
    progress_tol: float = 5e-4,
    residual_tol: float = 1e-30,
) -> CGResult:
    """Minimise ``φ(x) = ½ xᵀAx − bᵀx`` by preconditioned CG from ``x0``.

    Stopping rule (Martens 2010, §4.4): with ``k = max(10, ⌈0.1·i⌉)`` stop at iteration
    ``i > k`` once ``φ_i < 0`` and ``(φ_i − φ_{i−k}) / φ_i < k·progress_tol``. CG also
    stops at ``max_iters``, when the preconditioned residual vanishes relative to the
    right-hand side's, and bails out (keeping the current iterate) on non-positive
    curvature ``pᵀAp ≤ 0``. Every rule is invariant to scaling ``A`` and ``b`` together
    and to scaling ``M``: a loss summed instead of averaged takes the same iterations.

    Args:
        matvec: ``v ↦ A v`` on (P,) tensors.
        b: Right-hand side (P,); for a Newton step ``b = −g``.
        x0: Initial iterate (P,), e.g. a decayed previous solution.
        precond: Diagonal preconditioner ``M`` (P,); CG uses ``M⁻¹ r``. None for none.
        max_iters: Iteration cap.
        min_iters: Never stop on progress before this many iterations.
        progress_tol: The ε of the relative-progress rule (0 disables it).
        residual_tol: Stop when ``rᵀM⁻¹r ≤ residual_tol · bᵀM⁻¹b`` (relative, so that the
            test does not depend on the loss's scale; ``b = 0`` stops at once).

    Returns:
        A :class:`CGResult`.
    """
    store_at = storage_schedule(max_iters)
    x = x0.clone()
    r = b - matvec(x)  # (P,)
    y = r / precond if precond is not None else r  # (P,)
    p = y.clone()
    ry = torch.dot(r, y)
    bb = b / precond if precond is not None else b  # (P,)
    stop_ry = residual_tol * float(torch.dot(b, bb))
    phi = [float(-0.5 * torch.dot(x, r + b))]
    res = CGResult(x=x, phi=phi)
    for i in range(1, max_iters + 1):
        if float(ry) <= stop_ry:
            res.stop = "converged"
            break
        ap = matvec(p)  # (P,)
        pap = torch.dot(p, ap)
        if not float(pap) > 0:
            res.stop = "negative_curvature"
            break
        alpha = ry / pap
        x = x + alpha * p
        r = r - alpha * ap
        y = r / precond if precond is not None else r
        ry_new = torch.dot(r, y)
        p = y + (ry_new / ry) * p
        ry = ry_new
        phi.append(float(-0.5 * torch.dot(x, r + b)))  # φ(x) = −½ xᵀ(r + b) since r = b − Ax
        res.x, res.iters = x, i
        if i in store_at:
            res.iterates.append((i, x))
        k = max(10, math.ceil(0.1 * i))
        if (progress_tol > 0 and i > k and i >= min_iters and phi[i] < 0
                and (phi[i] - phi[i - k]) / phi[i] < k * progress_tol):
            res.stop = "progress"
            break
    if not res.iterates or res.iterates[-1][0] != res.iters:
        res.iterates.append((res.iters, res.x))
    return res


def backtrack_iterates(iterates: list[tuple[int, Tensor]], objective: Callable[[Tensor], float]) -> tuple[Tensor, float]:
    """CG backtracking (Martens 2010, §4.6): walk the stored iterates from the last one
    back while the objective keeps decreasing; return the best iterate and its value."""
    best_x = iterates[-1][1]
    best = objective(best_x)
    for _, x in reversed(iterates[:-1]):
        value = objective(x)
        if not value < best:
            break
        best_x, best = x, value
    return best_x, best
