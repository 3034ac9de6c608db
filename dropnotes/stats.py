"""Small statistics shared by the chapters' verdict rules."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["binomial_se", "mean_se", "compare_errors", "fmt_mean_sd"]


def binomial_se(error: float, n: int) -> float:
    """Standard error of one model's error rate measured on ``n`` independent test examples."""
    return math.sqrt(max(error * (1 - error), 0.0) / n)


def mean_se(errors: Sequence[float], n_test: int) -> tuple[float, float]:
    """Mean of per-seed error rates and its standard error: the larger of the seed-based estimate
    (sd / sqrt(seeds)) and the binomial test-set estimate, so one seed is never over-trusted."""
    e = np.asarray(errors, dtype=float)
    mean = float(e.mean())
    seed_se = float(e.std(ddof=1) / math.sqrt(len(e))) if len(e) > 1 else 0.0
    return mean, max(seed_se, binomial_se(mean, n_test) / math.sqrt(len(e)))


def compare_errors(base: Sequence[float], new: Sequence[float], n_test: int) -> tuple[float, float, str]:
    """Is ``new`` lower than ``base``? Returns (base - new, its standard error, verdict) with the rule:
    *reproduced (direction)* if the difference exceeds 2 SE, *not reproduced* if it is below -2 SE,
    else *inconclusive*. Errors are fractions; the difference and SE are returned as fractions too."""
    mb, sb = mean_se(base, n_test)
    mn, sn = mean_se(new, n_test)
    diff, se = mb - mn, math.hypot(sb, sn)
    if diff > 2 * se:
        return diff, se, "reproduced (direction)"
    if diff < -2 * se:
        return diff, se, "not reproduced (the opposite)"
    return diff, se, "inconclusive (within 2 SE)"


def fmt_mean_sd(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± sd (n=k)`` of ``values * scale`` (just ``mean (n=1)`` for a single value)."""
    v = np.asarray(values, dtype=float) * scale
    if len(v) == 1:
        return f"{v[0]:.{digits}f} (n=1)"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f} (n={len(v)})"
