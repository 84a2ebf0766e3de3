"""Wilson score intervals against scipy's binomtest, edge counts included."""
from __future__ import annotations

import pytest
import math

import numpy as np
from scipy.stats import binomtest, ttest_rel

from wsol.metrics.intervals import paired_difference, wilson_interval


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 10), (10, 10), (3, 10), (459, 500), (1, 5794), (2897, 5794)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_equals_scipy_wilson(k: int, n: int, confidence: float) -> None:
    ref = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert wilson_interval(k, n, confidence) == pytest.approx((ref.low, ref.high), abs=1e-12)


@pytest.mark.parametrize("k,n,confidence", [(1, 0, 0.95), (-1, 5, 0.95), (6, 5, 0.95), (1, 5, 1.0), (1, 5, 0.0)])
def test_refuses_impossible_counts(k: int, n: int, confidence: float) -> None:
    with pytest.raises(ValueError):
        wilson_interval(k, n, confidence)


def test_paired_difference_is_scipys_paired_t_interval_on_the_samples_both_have() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 100, 40), rng.uniform(0, 100, 40)
    before = {i: float(v) for i, v in enumerate(a)}
    after = {i: float(v) for i, v in enumerate(b)}
    before[3], after[7] = math.nan, math.nan  # a sample a run did not score pairs with nothing
    after[99] = 50.0  # nor does a sample only one run drew
    keep = [i for i in range(40) if i not in (3, 7)]
    ci = ttest_rel(b[keep], a[keep]).confidence_interval(0.95)
    got = paired_difference(before, after)
    assert got["n"] == 38 and got["mean"] == pytest.approx(float(np.mean(b[keep] - a[keep])))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert paired_difference({1: 1.0}, {2: 1.0}) == {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
