"""Small statistics shared by the chapters' verdict rules: a thin layer over ``scipy.stats`` that turns its
tests into verdict texts.

Every interval over seeds uses the t distribution with the seeds' degrees of freedom (with 3 seeds the
two-sided 95 % factor is 4.30, not 2). With fewer than :data:`dropnotes.verdict.MIN_SEEDS` seeds the standard
error holds test-set sampling only; the verdict says so, and :mod:`dropnotes.verdict` lets it read a
direction at most."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from dropnotes.metrics import auroc
from dropnotes.verdict import MIN_SEEDS

__all__ = ["critical", "direction", "seeds_note", "binomial_se", "mean_se", "compare_errors", "compare_paired", "equivalent",
           "equivalent_errors",
           "equivalent_paired", "mcnemar_exact", "compare_predictions", "paired_bootstrap_auroc",
           "compare_estimates", "shortfall", "block_se", "fmt_mean_sd"]

Z_ONE_SIDED_5 = float(sps.norm.ppf(0.95))  # the standard normal's 95th percentile: TOST at the 5 % level
ALPHA = 0.05  # every test of the book: two-sided 5 % (TOST: each one-sided test at 5 %)


def critical(n_seeds: int, alpha: float = ALPHA, two_sided: bool = True) -> float:
    """The factor of an interval over ``n_seeds`` seeds: Student's t with ``n_seeds - 1`` degrees of freedom
    when there are at least :data:`MIN_SEEDS` seeds (the SE is then a seed-level estimate), else the normal
    (the SE is the test set's sampling error only)."""
    q = 1 - alpha / 2 if two_sided else 1 - alpha
    n = int(n_seeds)
    return float(sps.t.ppf(q, n - 1)) if n >= MIN_SEEDS else float(sps.norm.ppf(q))


def seeds_note(n_seeds: int) -> str:
    """``"; 2 seeds: test noise only"`` for a run with too few seeds to estimate seed variance, else ``""``."""
    n = int(n_seeds)
    return "" if n >= MIN_SEEDS else f"; {n} seed{'s' if n != 1 else ''}: test noise only"


def binomial_se(error: float, n: int) -> float:
    """Standard error of one model's error rate measured on ``n`` independent test examples."""
    return math.sqrt(max(error * (1 - error), 0.0) / n)


def mean_se(errors: Sequence[float], n_test: int) -> tuple[float, float]:
    """Mean of per-seed error rates and its standard error: the larger of the seed-based estimate
    (sd / sqrt(seeds)) and the binomial test-set estimate, so one seed is never over-trusted."""
    mean = float(np.mean(errors))
    return _mean_se(errors, binomial_se(mean, n_test))


def _mean_se(values: Sequence[float], measurement_se: float) -> tuple[float, float]:
    """Mean and SE: the larger of the seed-level SE (with at least :data:`MIN_SEEDS` seeds) and the mean
    measurement SE over seeds. With fewer seeds the seed SD is not estimated: the SE is measurement only."""
    v = np.asarray(values, dtype=float)
    seed_se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) >= MIN_SEEDS else 0.0
    return float(v.mean()), max(seed_se, measurement_se / math.sqrt(len(v)))


def direction(diff: float, se: float, n_seeds: int) -> str:
    """The rule of every comparison: significant at :data:`ALPHA` (two-sided) with the factor :func:`critical`
    of the seeds' count; the text names the factor used."""
    c = critical(n_seeds)
    factor = f"{c:.2f} SE, t with {n_seeds - 1} df" if n_seeds >= MIN_SEEDS else f"{c:.2f} SE"
    note = seeds_note(n_seeds)
    if diff > c * se:
        return f"reproduced (direction; beyond {factor}{note})"
    if diff < -c * se:
        return f"not reproduced (the opposite; beyond {factor}{note})"
    return f"inconclusive (within {factor}{note})"


def compare_errors(base: Sequence[float], new: Sequence[float], n_test: int) -> tuple[float, float, str]:
    """Is ``new`` lower than ``base``? Per-seed error rates of the two arms, seed ``s`` of each trained from
    the same initialisation stream. Returns (base - new, its standard error, verdict) with :func:`direction`'s
    rule: significant beyond :func:`critical` SE. With equal seed counts the SE is the paired one over seeds
    (at least the test set's binomial error); else each arm's SE combined. Errors are fractions; the
    difference and SE are returned as fractions too."""
    b, n = np.asarray(base, dtype=float), np.asarray(new, dtype=float)
    measurement = math.hypot(binomial_se(float(b.mean()), n_test) / math.sqrt(len(b)),
                             binomial_se(float(n.mean()), n_test) / math.sqrt(len(n)))
    if len(b) == len(n):
        d = b - n
        seed_se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) >= MIN_SEEDS else 0.0
        diff, se = float(d.mean()), max(seed_se, measurement)
    else:
        (mb, sb), (mn, sn) = mean_se(b, n_test), mean_se(n, n_test)
        diff, se = mb - mn, math.hypot(sb, sn)
    return diff, se, direction(diff, se, min(len(b), len(n)))


def compare_paired(base: Sequence[Sequence[float]], new: Sequence[Sequence[float]]) -> tuple[float, float, str]:
    """Is ``new`` lower than ``base`` on the same test blocks? One sequence of per-block losses per seed
    (e.g. per-window LM losses, the same windows for both). Returns (mean of base - new, its standard
    error, verdict) with :func:`direction`'s rule. The SE is the larger of the paired per-block estimate
    (test sampling) and, with at least :data:`MIN_SEEDS` seeds, the seed-level one; with fewer seeds it is
    test sampling only, and the verdict says so."""
    diffs = [np.asarray(b, dtype=float) - np.asarray(n, dtype=float) for b, n in zip(base, new, strict=True)]
    mean, se = _mean_se([d.mean() for d in diffs], float(np.mean([block_se(d) for d in diffs])))
    return mean, se, direction(mean, se, len(diffs))


def equivalent(diff: float, se: float, margin: float, shown: str | None = None, n_seeds: int | None = None) -> str:
    """Two one-sided tests (TOST, Schuirmann 1987) at the 5 % level for a claim of *equality*, with a margin
    stated before the run: the difference is shown equivalent when its 90 % interval
    ``diff ± 1.645 se`` lies inside ``(-margin, margin)``, and different when the interval lies wholly
    outside ``[-margin, margin]``. Anything else (a noisy test) is *inconclusive*: failing to separate two
    arms is never evidence that they are equal. ``shown``: the margin as the verdict writes it (its value);
    ``n_seeds``: the seeds behind ``se`` (t with their degrees of freedom from :data:`MIN_SEEDS` on; None or
    fewer: the normal, as for a test-sampling SE)."""
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    m = shown or f"{margin:g}"
    z = critical(n_seeds or 1, two_sided=False)
    low, high = diff - z * se, diff + z * se
    if -margin < low and high < margin:
        return f"reproduced (equivalent within ±{m})"
    if low > margin or high < -margin:
        return f"not reproduced (they differ by more than {m})"
    return f"inconclusive (equivalence within ±{m} not shown)"


def equivalent_errors(base: Sequence[float], new: Sequence[float], n_test: int, margin: float) -> tuple[float, float, str]:
    """TOST (:func:`equivalent`) on per-seed error rates, with :func:`compare_errors`' standard error:
    (base - new, its SE, verdict); errors and ``margin`` are fractions, the verdict gives the margin in
    percentage points."""
    diff, se, _ = compare_errors(base, new, n_test)
    return diff, se, equivalent(diff, se, margin, shown=f"{100 * margin:g} pt", n_seeds=min(len(base), len(new)))


def equivalent_paired(base: Sequence[Sequence[float]], new: Sequence[Sequence[float]], margin: float,
                      shown: str | None = None) -> tuple[float, float, str]:
    """TOST (:func:`equivalent`) on per-block losses of the same blocks, with :func:`compare_paired`'s
    standard error: (mean of base - new, its SE, verdict)."""
    diff, se, _ = compare_paired(base, new)
    return diff, se, equivalent(diff, se, margin, shown, n_seeds=len(base))


def mcnemar_exact(b: int, c: int) -> float:
    """Exact McNemar test (McNemar 1947; the binomial form, ``scipy.stats.binomtest``): the two-sided p-value
    that ``b`` and ``c``, the discordant pairs (examples that only the first model gets wrong, and only the
    second), come from a fair coin, i.e. that the two models' error rates on the same examples are equal."""
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return float(sps.binomtest(b, b + c, 0.5).pvalue)


def compare_predictions(base_wrong: Sequence[Sequence[float]], new_wrong: Sequence[Sequence[float]],
                        alpha: float = 0.05) -> tuple[float, float, str]:
    """Is ``new`` wrong less often than ``base`` on the *same* test examples? One 0/1 array per seed for each
    (1 = misclassified; seed ``s`` of both arms on the same examples). Returns (base - new error, its SE,
    verdict). The test is the exact McNemar test on the discordant pairs pooled over seeds; with three or
    more seeds the seed-level test (the mean difference over 2 seed-level SE) must agree too, so that seed
    noise is never hidden behind many examples (beyond :func:`critical` seed-level SE). *reproduced (direction)*
    / *not reproduced (the opposite)* when significant at ``alpha`` (two-sided), else *inconclusive*."""
    pairs = [(np.asarray(b, dtype=float), np.asarray(n, dtype=float)) for b, n in zip(base_wrong, new_wrong, strict=True)]
    if not pairs or any(b.shape != n.shape or b.size == 0 for b, n in pairs):
        raise ValueError("base_wrong and new_wrong need one non-empty array per seed, of equal shapes")
    only_base = int(sum(((b > 0) & (n == 0)).sum() for b, n in pairs))
    only_new = int(sum(((b == 0) & (n > 0)).sum() for b, n in pairs))
    per_seed = np.array([b.mean() - n.mean() for b, n in pairs])
    diff = float(per_seed.mean())
    paired_se = math.sqrt(sum(float((b - n).var(ddof=1)) / b.size for b, n in pairs if b.size > 1)) / len(pairs)
    n = len(per_seed)
    seed_se = float(per_seed.std(ddof=1) / math.sqrt(n)) if n >= MIN_SEEDS else 0.0
    se = max(paired_se, seed_se)
    p = mcnemar_exact(only_base, only_new)
    seeds_agree = n < MIN_SEEDS or abs(diff) > critical(n, alpha) * seed_se
    note = seeds_note(n)
    if p < alpha and seeds_agree:
        v = "reproduced (direction" if diff > 0 else "not reproduced (the opposite"
        return diff, se, f"{v}; McNemar p = {p:.2g}{note})"
    why = f"McNemar p = {p:.2g}" if p >= alpha else f"within {critical(n, alpha):.2f} seed-level SE, t with {n - 1} df"
    return diff, se, f"inconclusive ({why}{note})"


def paired_bootstrap_auroc(in_a, out_a, in_b, out_b, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """AUROC of score ``a`` minus AUROC of score ``b``, both computed on the *same* in- and out-of-distribution
    examples, and the standard error of that difference from a paired bootstrap (Efron & Tibshirani 1993):
    each resample draws the in- and the out-of-distribution examples with replacement, the same indices
    for both scores. Fixed ``seed``: the same inputs give the same SE."""
    in_a, out_a, in_b, out_b = (np.asarray(v, dtype=float) for v in (in_a, out_a, in_b, out_b))
    if in_a.shape != in_b.shape or out_a.shape != out_b.shape:
        raise ValueError("the two scores must be measured on the same examples (equal shapes)")
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for r in range(n_boot):
        i, o = rng.integers(0, len(in_a), len(in_a)), rng.integers(0, len(out_a), len(out_a))
        diffs[r] = auroc(in_a[i], out_a[o]) - auroc(in_b[i], out_b[o])
    return auroc(in_a, out_a) - auroc(in_b, out_b), float(diffs.std(ddof=1))


def compare_estimates(diffs: Sequence[float], ses: Sequence[float]) -> tuple[float, float, str]:
    """Is a difference (one estimate per seed, each with its measurement SE) above zero? Returns (mean, SE,
    verdict) with :func:`direction`'s rule; the SE is the larger of the measurement estimate and, with at least
    :data:`MIN_SEEDS` seeds, the seed-level one."""
    d = np.asarray(diffs, dtype=float)
    measurement = math.sqrt(float(np.sum(np.square(ses)))) / len(d)
    seed_se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) >= MIN_SEEDS else 0.0
    mean, se = float(d.mean()), max(measurement, seed_se)
    return mean, se, direction(mean, se, len(d))


def shortfall(measured: dict, paper: dict) -> list[str]:
    """What a run cut from the paper's protocol, from what it measured (never from a profile's name): for
    each ``paper`` entry, a note such as ``"epochs 40 of 300"`` when ``measured`` falls short of it. Numbers
    fall short when smaller; other values (a layer shape, a dataset) when different. An empty list: the
    run is at the paper's scale, so a level it misses is a real miss."""
    cut = []
    for name, want in paper.items():
        got = measured.get(name)
        if isinstance(want, (int, float)) and not isinstance(want, bool) and isinstance(got, (int, float)):
            short = got < want
        else:
            short = got != want
        if short:
            cut.append(f"{name} {_show(got)} of {_show(want)}" if isinstance(want, (int, float)) else
                       f"{name} {_show(got)} instead of {_show(want)}")
    return cut


def _show(v) -> str:
    if isinstance(v, (tuple, list)):
        return " x ".join(map(str, v))
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


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


def mean_sd(frame: pd.DataFrame, by: str | list[str], value: str, scale: float = 1.0, label=None) -> pd.DataFrame:
    """Points for :func:`dropnotes.page.plot_scales`: ``value`` x ``scale`` averaged over the rows (seeds) of each
    ``by`` group, with its SD; ``label(key)`` names the quantity (default: the key as text)."""
    g = frame.groupby(by, sort=False)[value]
    out = pd.DataFrame({"value": g.mean() * scale, "sd": g.std() * scale}).reset_index()
    keys = out[by].itertuples(index=False, name=None) if isinstance(by, list) else out[by]
    out["quantity"] = [label(k) if label else str(k) for k in keys]
    return out[["quantity", "value", "sd"]]
