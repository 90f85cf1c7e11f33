"""Uncertainty over seeds: the mean and its 95% confidence interval, one definition for every table and figure.

The report states one method and uses it everywhere: a two-sided Student-t interval for
the mean over seeds,

    x̄ ± t_{1-α/2, n-1} · s / √n,

with ``s`` the sample standard deviation (ddof = 1). With the few seeds a benchmark can
afford (2–10) the t-interval is the honest choice: a percentile bootstrap of 2–5 values
cannot reach its nominal coverage (it never extends beyond the observed range), while
the t-interval widens as the seed count falls (×12.7 s/√2 at two seeds). For skewed
quantities (times, ratios) :func:`bootstrap_ci` gives the BCa bootstrap of
:func:`scipy.stats.bootstrap` where at least ``min_bootstrap`` values exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["CI_LEVEL", "CI_METHOD", "Interval", "bootstrap_ci", "mean_ci"]

CI_LEVEL = 0.95
CI_METHOD = "two-sided Student-t 95% interval of the mean over seeds (x̄ ± t·s/√n)"


@dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval over ``n`` finite values (``low``/``high`` NaN when n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def format(self, digits: int = 4) -> str:
        """``"0.2478 [0.2401, 0.2555]"``; a single value alone; ``"–"`` for none."""
        if self.n == 0:
            return "–"
        if self.n == 1 or not math.isfinite(self.low):
            return f"{self.mean:.{digits}g}"
        return f"{self.mean:.{digits}g} [{self.low:.{digits}g}, {self.high:.{digits}g}]"


def _finite(values) -> np.ndarray:
    v = np.asarray(values, dtype=float).ravel()  # (n,)
    return v[np.isfinite(v)]


def mean_ci(values, level: float = CI_LEVEL) -> Interval:
    """Mean and Student-t confidence interval of the finite entries of ``values``.

    Args:
        values: Per-seed values (NaN and ±inf entries are left out; count them separately).
        level: Two-sided confidence level in (0, 1).
    """
    if not 0 < level < 1:
        raise ValueError(f"Invalid confidence level: {level} (need 0 < level < 1)")
    v = _finite(values)
    n = int(v.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def bootstrap_ci(values, statistic=np.median, level: float = CI_LEVEL, min_bootstrap: int = 5,
                 n_resamples: int = 2000, seed: int = 0) -> Interval:
    """``statistic`` of the finite values with a BCa bootstrap interval (:func:`scipy.stats.bootstrap`).

    Below ``min_bootstrap`` values the interval is NaN (the bootstrap distribution of a
    handful of values is too coarse to trust); the point estimate is still given.
    """
    v = _finite(values)
    n = int(v.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    point = float(statistic(v))
    if n < min_bootstrap or np.ptp(v) == 0:
        return Interval(point, math.nan, math.nan, n)
    res = stats.bootstrap((v,), statistic, confidence_level=level, n_resamples=n_resamples, method="BCa",
                          random_state=np.random.default_rng(seed))
    return Interval(point, float(res.confidence_interval.low), float(res.confidence_interval.high), n)
