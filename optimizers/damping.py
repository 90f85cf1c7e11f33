"""Levenberg-Marquardt adaptation of a damping strength (Moré 1978; Martens 2010, §4.1)."""

from __future__ import annotations

import math

__all__ = ["lm_update", "reduction_ratio"]


def reduction_ratio(actual: float, predicted: float) -> float:
    """``ρ = (f(θ+p) − f(θ)) / (q(p) − q(0))``; NaN-safe (a non-finite or non-negative
    prediction, or a non-finite actual change, gives ``−inf`` so damping grows)."""
    if not (math.isfinite(actual) and math.isfinite(predicted)) or predicted >= 0:
        return -math.inf
    return actual / predicted


def lm_update(damping: float, rho: float, *, lower: float = 0.25, upper: float = 0.75,
              increase: float = 1.5, decrease: float = 2.0 / 3.0, minimum: float = 1e-8,
              maximum: float = 1e8) -> float:
    """New damping after a step with reduction ratio ``rho``.

    ``ρ < lower`` (the quadratic model over-promised) multiplies the damping by
    ``increase``; ``ρ > upper`` (the model is trustworthy) multiplies it by ``decrease``;
    otherwise it is kept. The result is clipped to ``[minimum, maximum]``.
    """
    if rho < lower:
        damping *= increase
    elif rho > upper:
        damping *= decrease
    return min(max(damping, minimum), maximum)
