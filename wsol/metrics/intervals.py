"""Confidence intervals for the proportions the metrics report (accuracy over n images)."""
from __future__ import annotations

import math
from typing import Tuple

from scipy.stats import norm


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


def wilson_text(successes: int, n: int, fmt: str = ".3f") -> str:
    """``[low, high]`` of :func:`wilson_interval` as a table cell ("" for no trial)."""
    if n <= 0:
        return ""
    low, high = wilson_interval(successes, n)
    return f"[{low:{fmt}}, {high:{fmt}}]"


__all__ = ["wilson_interval", "wilson_text"]
