"""The report's one definition of a confidence interval, against textbook values and coverage."""

import math

import numpy as np
import pytest
from scipy import stats

from benchsuite.report.uncertainty import bootstrap_ci, mean_ci


def test_t_interval_matches_the_textbook_formula():
    x = [1.0, 2.0, 4.0]
    ci = mean_ci(x)
    half = stats.t.ppf(0.975, 2) * np.std(x, ddof=1) / math.sqrt(3)
    assert ci.n == 3 and ci.mean == pytest.approx(7 / 3)
    assert (ci.low, ci.high) == pytest.approx((7 / 3 - half, 7 / 3 + half))


@pytest.mark.parametrize("values,n", [([], 0), ([3.0], 1), ([math.nan, 1.0, math.inf], 1)], ids=["none", "one", "non-finite"])
def test_too_few_values_give_no_interval(values, n):
    ci = mean_ci(values)
    assert ci.n == n and math.isnan(ci.low) and math.isnan(ci.high)


def test_coverage_is_nominal_with_three_seeds():
    rng = np.random.default_rng(0)
    samples = rng.normal(1.0, 2.0, (4000, 3))
    covered = np.mean([(c := mean_ci(s)).low <= 1.0 <= c.high for s in samples])
    assert 0.93 < covered < 0.97


def test_bad_level_names_the_value():
    with pytest.raises(ValueError, match="Invalid confidence level: 1.5"):
        mean_ci([1.0, 2.0], level=1.5)


def test_bootstrap_needs_enough_values_and_brackets_the_median():
    assert math.isnan(bootstrap_ci([1.0, 2.0, 3.0]).low)
    ci = bootstrap_ci(np.arange(1.0, 21.0))
    assert ci.low < ci.mean == 10.5 < ci.high
