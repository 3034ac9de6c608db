"""Small statistics shared by the chapters' verdict rules."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["binomial_se", "mean_se", "compare_errors", "compare_paired", "equivalent", "equivalent_errors",
           "equivalent_paired", "block_se", "fmt_mean_sd"]

Z_ONE_SIDED_5 = 1.6448536269514722  # the standard normal's 95th percentile: TOST at the 5 % level


def binomial_se(error: float, n: int) -> float:
    """Standard error of one model's error rate measured on ``n`` independent test examples."""
    return math.sqrt(max(error * (1 - error), 0.0) / n)


def mean_se(errors: Sequence[float], n_test: int) -> tuple[float, float]:
    """Mean of per-seed error rates and its standard error: the larger of the seed-based estimate
    (sd / sqrt(seeds)) and the binomial test-set estimate, so one seed is never over-trusted."""
    mean = float(np.mean(errors))
    return _mean_se(errors, binomial_se(mean, n_test))


def _mean_se(values: Sequence[float], measurement_se: float) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    seed_se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0
    return float(v.mean()), max(seed_se, measurement_se / math.sqrt(len(v)))


def _verdict(diff: float, se: float) -> str:
    if diff > 2 * se:
        return "reproduced (direction)"
    if diff < -2 * se:
        return "not reproduced (the opposite)"
    return "inconclusive (within 2 SE)"


def compare_errors(base: Sequence[float], new: Sequence[float], n_test: int) -> tuple[float, float, str]:
    """Is ``new`` lower than ``base``? Returns (base - new, its standard error, verdict) with the rule:
    *reproduced (direction)* if the difference exceeds 2 SE, *not reproduced* if it is below -2 SE,
    else *inconclusive*. Errors are fractions; the difference and SE are returned as fractions too."""
    (mb, sb), (mn, sn) = mean_se(base, n_test), mean_se(new, n_test)
    diff, se = mb - mn, math.hypot(sb, sn)
    return diff, se, _verdict(diff, se)


def compare_paired(base: Sequence[Sequence[float]], new: Sequence[Sequence[float]]) -> tuple[float, float, str]:
    """Is ``new`` lower than ``base`` on the same test blocks? One sequence of per-block losses per seed
    (e.g. per-window LM losses, the same windows for both). Returns (mean of base - new, its standard
    error, verdict) with :func:`compare_errors`' rule; the SE is the larger of the seed-based and the
    paired per-block estimate, so one seed is never over-trusted."""
    diffs = [np.asarray(b, dtype=float) - np.asarray(n, dtype=float) for b, n in zip(base, new, strict=True)]
    mean, se = _mean_se([d.mean() for d in diffs], float(np.mean([block_se(d) for d in diffs])))
    return mean, se, _verdict(mean, se)


def equivalent(diff: float, se: float, margin: float, shown: str | None = None) -> str:
    """Two one-sided tests (TOST, Schuirmann 1987) at the 5 % level for a claim of *equality*, with a margin
    stated before the run: the difference is shown equivalent when its 90 % interval
    ``diff ± 1.645 se`` lies inside ``(-margin, margin)``, and different when the interval lies wholly
    outside ``[-margin, margin]``. Anything else (a noisy test) is *inconclusive*: failing to separate two
    arms is never evidence that they are equal. ``shown``: the margin as the verdict writes it (its value)."""
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    m = shown or f"{margin:g}"
    low, high = diff - Z_ONE_SIDED_5 * se, diff + Z_ONE_SIDED_5 * se
    if -margin < low and high < margin:
        return f"reproduced (equivalent within ±{m})"
    if low > margin or high < -margin:
        return f"not reproduced (they differ by more than {m})"
    return f"inconclusive (equivalence within ±{m} not shown)"


def equivalent_errors(base: Sequence[float], new: Sequence[float], n_test: int, margin: float) -> tuple[float, float, str]:
    """TOST (:func:`equivalent`) on per-seed error rates, with :func:`compare_errors`' standard error:
    (base - new, its SE, verdict); errors and ``margin`` are fractions, the verdict gives the margin in
    percentage points."""
    (mb, sb), (mn, sn) = mean_se(base, n_test), mean_se(new, n_test)
    diff, se = mb - mn, math.hypot(sb, sn)
    return diff, se, equivalent(diff, se, margin, shown=f"{100 * margin:g} pt")


def equivalent_paired(base: Sequence[Sequence[float]], new: Sequence[Sequence[float]], margin: float,
                      shown: str | None = None) -> tuple[float, float, str]:
    """TOST (:func:`equivalent`) on per-block losses of the same blocks, with :func:`compare_paired`'s
    standard error: (mean of base - new, its SE, verdict)."""
    diff, se, _ = compare_paired(base, new)
    return diff, se, equivalent(diff, se, margin, shown)


def block_se(values: Sequence[float]) -> float:
    """Standard error of the mean of roughly independent block means (e.g. per-window LM losses)."""
    v = np.asarray(values, dtype=float)
    return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def fmt_mean_sd(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± sd (n=k)`` of ``values * scale`` (just ``mean (n=1)`` for a single value)."""
    v = np.asarray(values, dtype=float) * scale
    if len(v) == 1:
        return f"{v[0]:.{digits}f} (n=1)"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f} (n={len(v)})"
