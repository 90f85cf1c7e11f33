"""Armijo backtracking line search (Nocedal & Wright 2006, Alg. 3.1; Martens & Sutskever 2012)."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["armijo"]


def armijo(f: Callable[[float], float], f0: float, slope: float, *, alpha: float = 1.0, shrink: float = 0.8,
           c: float = 1e-2, max_tries: int = 60) -> tuple[float, float]:
    """Largest ``α = alpha·shrinkᵏ`` with ``f(α) ≤ f0 + c·α·slope``.

    Args:
        f: Objective along the direction, ``α ↦ f(θ + α p)``.
        f0: ``f(0)``.
        slope: Directional derivative ``gᵀp`` (negative for a descent direction).

    Returns:
        ``(α, f(α))``; ``(0.0, f0)`` when no tried step satisfies the condition or the
        direction is not a descent direction.
    """
    if not slope < 0:
        return 0.0, f0
    for _ in range(max_tries):
        value = f(alpha)
        if math.isfinite(value) and value <= f0 + c * alpha * slope:
            return alpha, value
        alpha *= shrink
    return 0.0, f0
