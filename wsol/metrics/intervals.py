"""Confidence intervals for what the metrics report: proportions (accuracy over n images) and means (per-sample scores)."""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

from wsol.export.tables import UNDEFINED_INTERVAL, Interval


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Tuple[float, float]:
    """Two-sided Wilson score interval of the proportion ``successes / n``, as fractions.

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or n successes,
    which matters for the small test splits and the near-0 / near-100 % localization scores."""
    if n <= 0:
        raise ValueError("an interval needs at least one trial")
    if not 0 <= successes <= n:
        raise ValueError(f"{successes} successes out of {n} trials")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_cell(successes: int, n: int) -> Interval:
    """:func:`wilson_interval` as a table value (Markdown ``[low, high]``, CSV two numeric columns); undefined for no trial."""
    return Interval(*wilson_interval(successes, n)) if n > 0 else UNDEFINED_INTERVAL


def mean_interval(values: Sequence[float], confidence: float = 0.95, bounds: Tuple[float, float] = (-math.inf, math.inf)) -> Dict[str, Any]:
    """Mean and two-sided Student-t interval over the finite values, clipped to ``bounds`` (a top-k intersection of
    92 % ± 13 over 2 samples reads [79, 100], not [79, 105]); an undefined number (the mean of
    none, the bounds of fewer than two) is None, so a summary written as JSON stays valid JSON."""
    v = np.array([x for x in values if math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = float(v.mean())
    if v.size < 2:
        return {"mean": mean, "ci_low": None, "ci_high": None, "n": 1}
    half = float(student_t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return {"mean": mean, "ci_low": max(mean - half, bounds[0]), "ci_high": min(mean + half, bounds[1]), "n": int(v.size)}


def interval_cell(stats: Mapping[str, Any]) -> Interval:
    """The ``ci_low``/``ci_high`` of a :func:`mean_interval` or :func:`paired_difference` result (or of a summary.json
    metric, which holds one) as a table value; undefined where a bound is None (fewer than two values)."""
    return Interval.between(stats.get("ci_low"), stats.get("ci_high"))


def paired_difference(before: Mapping[Any, float], after: Mapping[Any, float], confidence: float = 0.95) -> Dict[str, Any]:
    """Mean and Student-t interval of ``after[i] − before[i]`` over the keys (sample ids) both have a finite value for:
    two models scored on the same samples differ by less noise than their two intervals suggest, so a paired
    interval is what tells whether one is better."""
    both = [i for i in before if i in after and math.isfinite(before[i]) and math.isfinite(after[i])]
    return mean_interval([after[i] - before[i] for i in both], confidence)


__all__ = ["interval_cell", "mean_interval", "paired_difference", "wilson_cell", "wilson_interval"]
