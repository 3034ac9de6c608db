"""The statistics of the book's verdict rules (the book's rules 2), a thin layer over ``scipy.stats``:

* :func:`compare_examples`: two arms scored on the *same* test examples over seeds (0/1 mistakes, or per-window
  losses), one variance model for every paired comparison: crossed seed, example and interaction terms from the
  two-way ANOVA, Satterthwaite's degrees of freedom. Its :class:`Paired` result reads a direction, an equivalence
  (TOST), a "does not beat" claim, its power at any number of seeds, and what would decide it;
* :func:`over_seeds`: a quantity measured once per seed (an ECE, an AUROC), the one-sample t test over seeds;
* :func:`plateau` and :func:`blocks`: convergence, per arm, by the upper confidence bound of the late gain against a
  tolerance declared with the claim, and whether an arm still improving could change a verdict;
* :func:`simulate_plateau`, :func:`simulate_paired`: the simulations that prove the rules' error rates
  (``tests/test_plateau.py``, ``tests/test_variance_model.py``).

With fewer than :data:`dropnotes.verdict.MIN_SEEDS` seeds a verdict says its SE holds test noise only, and
:mod:`dropnotes.verdict` lets it read a direction at most."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from dropnotes.metrics import auroc
from dropnotes.verdict import MIN_SEEDS

__all__ = ["Paired", "Plateau", "compare_examples", "over_seeds", "plateau", "blocks", "simulate_plateau",
           "simulate_paired", "paired_bootstrap_auroc", "shortfall", "block_se", "fmt_mean_sd", "mean_sd", "seeds_note"]

ALPHA = 0.05  # every test of the book: two-sided 5 % (TOST: each one-sided test at 5 %)


def seeds_note(n_seeds: int) -> str:
    """``"; 2 seeds: test noise only"`` for a run with too few seeds to estimate seed variance, else ``""``."""
    n = int(n_seeds)
    return "" if n >= MIN_SEEDS else f"; {n} seed{'s' if n != 1 else ''}: test noise only"


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


# ---------------------------------------------------------------------------------------------------------------
# Convergence: the plateau test, per arm, with a tolerance declared with the claim.
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plateau:
    """The plateau test of one arm (:func:`plateau`): its late gain ``gain`` (the mean over seeds of the third
    quarter's mean minus the fourth quarter's mean of the validation metric, lower is better, so > 0 means still
    improving), its seed-level standard error ``se`` with ``df`` degrees of freedom, the one-sided upper bound
    ``upper`` (level ``1 - alpha``), the tolerance ``delta`` declared with the claim, and the reading: plateaued when
    ``upper < delta``. ``ratio``: the fourth quarter's gain over the third's (mean over seeds), or NaN, which
    :meth:`needed` uses to say how much longer a schedule would plateau the arm."""

    gain: float
    se: float
    df: int
    upper: float
    delta: float
    plateaued: bool
    points: int
    ratio: float = float("nan")

    def needed(self) -> str:
        """What schedule would plateau an arm still improving: if its quarter-on-quarter gains shrink by the
        measured ratio r < 1, the number of further quarters until the bound falls below ``delta``; else that the
        curve gives no estimate."""
        if self.plateaued:
            return ""
        if self.gain < self.delta:
            return ("its late gain is below δ but too noisy to bound below it: more seeds or more evaluation points "
                    "per quarter, not a longer schedule, would decide it")
        r = self.ratio
        if not (0 < r < 1) or not self.upper > 0:
            return "its gains are not shrinking, so its curve gives no estimate of the schedule that would plateau it"
        quarters = math.ceil(math.log(self.delta / self.upper) / math.log(r))
        return (f"its quarter gains shrink by {r:.2f} a quarter, so about {max(quarters, 1)} more quarter"
                f"{'s' if quarters > 1 else ''} of its schedule ({1 + max(quarters, 1) / 4:.2g}x its length) would plateau it")

    def text(self, name: str, unit: str = "") -> str:
        u = f" {unit}" if unit else ""
        how = "plateaued" if self.plateaued else "still improving"
        return (f"{name} {how}: late gain {self.gain:.3g} ± {self.se:.2g}{u} (upper bound {self.upper:.3g} against "
                f"δ = {self.delta:.3g}{u})")


def _quarters(curve: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(curve)
    return curve[n // 4: n // 2], curve[n // 2: (3 * n) // 4], curve[(3 * n) // 4:]


def plateau(curves: Sequence[Sequence[float]], delta: float, alpha: float = ALPHA,
            higher_is_better: bool = False) -> Plateau:
    """The plateau test of one arm from its learning curves (one sequence per seed: the validation metric at every
    evaluation point, in order; lower is better unless ``higher_is_better``). Per seed, the late gain G is the mean
    of the third quarter of its points minus the mean of the fourth (every point used; a seed's own offset cancels);
    the arm's G is their mean, with the seed-level standard error and ``seeds - 1`` degrees of freedom. The arm has
    plateaued when the one-sided ``1 - alpha`` upper bound of G lies below ``delta``, the tolerance declared with the
    claim before the run. An arm that is still improving by ``delta`` a quarter is called plateaued at most ``alpha``
    of the time (``tests/test_plateau.py`` checks it by simulation at the stored runs' noise). A schedule that decays
    its learning rate is judged on the points before the decay (pass those)."""
    if not delta > 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    arrays = [np.asarray(c, dtype=float) * (-1.0 if higher_is_better else 1.0) for c in curves]
    if len(arrays) < 2:
        raise ValueError(f"curves needs at least 2 seeds for a seed-level standard error, got {len(arrays)}")
    if any(len(a) < 4 for a in arrays):
        raise ValueError("each curve needs at least 4 evaluation points (one per quarter)")
    gains, earlier = [], []
    for a in arrays:
        q2, q3, q4 = _quarters(a)
        gains.append(q3.mean() - q4.mean())
        earlier.append(q2.mean() - q3.mean())
    g = np.asarray(gains)
    n = len(g)
    se = float(g.std(ddof=1) / math.sqrt(n))
    upper = float(g.mean() + sps.t.ppf(1 - alpha, n - 1) * se)
    e = float(np.mean(earlier))
    ratio = float(g.mean() / e) if e > 0 else float("nan")
    return Plateau(float(g.mean()), se, n - 1, upper, float(delta), upper < delta, min(len(a) for a in arrays), ratio)


def blocks(diff: float, base: Plateau | None, new: Plateau | None, test: str = "direction",
           margin: float | None = None) -> str:
    """Whether an arm still improving blocks a comparison's verdict, and why ('' when none does). ``diff``: the
    measured difference base - new in the metric (lower is better, so > 0 means ``new`` is better); ``base``,
    ``new``: the arms' plateau tests (None: the arm needs none, e.g. the same trained weights).

    * a direction: only the *worse* arm can close or flip the gap by improving further; it blocks when it has not
      plateaued and its late gain's upper bound reaches the gap. The better arm improving would widen the gap.
    * an equivalence or "does not beat" claim (``margin``): any arm not plateaued whose upper bound reaches the
      distance from the difference to the margin blocks it."""
    def late(p):
        return p is not None and not p.plateaued

    if test == "direction":
        worse, name = (base, "the base arm") if diff > 0 else (new, "the new arm")
        if late(worse) and worse.upper >= abs(diff):
            return (f"{name} was still improving by up to {worse.upper:.3g} a quarter, enough to close the gap of "
                    f"{abs(diff):.3g}; {worse.needed()}")
        return ""
    room = (margin - abs(diff)) if margin is not None else 0.0
    for p, name in ((base, "the base arm"), (new, "the new arm")):
        if late(p) and p.upper >= room:
            return (f"{name} was still improving by up to {p.upper:.3g} a quarter, enough to move the difference "
                    f"past the margin; {p.needed()}")
    return ""


# ---------------------------------------------------------------------------------------------------------------
# Paired comparisons on the same test examples, with seed variance: one variance model.
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Paired:
    """A paired comparison of two arms on the same test examples over seeds (:func:`compare_examples`): the mean
    difference ``diff`` (base - new error; > 0: new is better), its standard error ``se`` and Satterthwaite degrees
    of freedom ``df``, the two-sided p-value, the 95 % interval, and the variance components it came from (per seed
    ``seed_var``, per example ``item_var``, their interaction ``resid_var``)."""

    diff: float
    se: float
    df: float
    p: float
    low: float
    high: float
    seeds: int
    examples: int
    seed_var: float
    item_var: float
    resid_var: float

    def verdict(self, alpha: float = ALPHA) -> str:
        note = seeds_note(self.seeds)
        df = f"t with {self.df:.1f} df" if math.isfinite(self.df) else "normal"
        if self.p < alpha:
            v = "reproduced (direction" if self.diff > 0 else "not reproduced (the opposite"
            return f"{v}; p = {self.p:.2g}, {df}{note})"
        return f"inconclusive (p = {self.p:.2g}, {df}{note})"

    def _one_sided(self, margin: float, shown: str | None, alpha: float) -> tuple[str, float, float, str]:
        """The margin as written, the one-sided ``1 - alpha`` bounds of ``diff`` (t at this comparison's degrees of
        freedom) and the seeds' note: what a margin rule reads."""
        if not margin > 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        c = float(sps.t.ppf(1 - alpha, self.df)) if math.isfinite(self.df) else float(sps.norm.ppf(1 - alpha))
        return shown or f"{margin:g}", self.diff - c * self.se, self.diff + c * self.se, seeds_note(self.seeds)

    def equivalent(self, margin: float, shown: str | None = None, alpha: float = ALPHA, scale: float = 1.0) -> str:
        """TOST (Schuirmann 1987) on this comparison, with a margin stated before the run: *reproduced
        (equivalent)* when the ``1 - 2 alpha`` interval (t at this comparison's degrees of freedom) lies inside
        (-margin, margin), *not reproduced* when it lies wholly outside [-margin, margin], else *inconclusive*.
        ``shown``: the margin as the text writes it; ``scale``: what the interval is multiplied by in the text, so
        that it is written in the margin's unit (100 for a fraction shown in points)."""
        m, low, high, note = self._one_sided(margin, shown, alpha)
        interval = f"90 % interval {scale * low:.3g} to {scale * high:.3g}{note}"
        if -margin < low and high < margin:
            return f"reproduced (equivalent within ±{m}; {interval})"
        if low > margin or high < -margin:
            return f"not reproduced (they differ by more than {m}; {interval})"
        return f"inconclusive (equivalence within ±{m} not shown; {interval})"

    def not_better(self, margin: float, shown: str | None = None, alpha: float = ALPHA, scale: float = 1.0) -> str:
        """A "new does not beat base" claim with a margin stated before the run: *reproduced* when the one-sided
        ``1 - alpha`` upper bound of the gain (``diff``, base - new) lies below ``margin``, *not reproduced* when
        the lower bound lies above it, else *inconclusive*. ``shown``, ``scale``: as in :meth:`equivalent`."""
        m, low, high, note = self._one_sided(margin, shown, alpha)
        low, high = scale * low, scale * high
        if high < scale * margin:
            return f"reproduced (its gain's upper bound {high:.3g} lies below {m}{note})"
        if low > scale * margin:
            return f"not reproduced (its gain's lower bound {low:.3g} lies above {m}{note})"
        return f"inconclusive (its gain's bounds {low:.3g} to {high:.3g} straddle {m}{note})"

    def power(self, seeds: int, effect: float | None = None, alpha: float = ALPHA) -> float:
        """The power of this comparison with ``seeds`` seeds per arm on the same test set, at the measured effect
        (or ``effect``) and variance components (scipy's noncentral t at the Satterthwaite df)."""
        se, df = _crossed(self.seed_var, self.item_var, self.resid_var, int(seeds), self.examples)
        d = abs(self.diff if effect is None else effect)
        return _power(d / se, df, alpha) if se > 0 else float(d > 0)

    def seeds_to_decide(self, power: float = 0.8, alpha: float = ALPHA, effect: float | None = None,
                        most: int = 200) -> int | None:
        """The fewest seeds (at most ``most``) at which this comparison reaches ``power`` at the measured effect
        (or ``effect``) and spread: the seed and interaction terms shrink with the seeds, the test-example term
        does not. None when no number of seeds reaches it."""
        for s in range(2, most + 1):
            if self.power(s, effect, alpha) >= power:
                return s
        return None

    def decide(self, power: float = 0.8) -> str:
        """What would decide an inconclusive comparison, computed: the seeds that reach ``power``, or that more
        test examples are needed."""
        s = self.seeds_to_decide(power)
        if s is None:
            return (f"no number of seeds reaches {power:.0%} power at the measured effect {self.diff:.3g}: the test "
                    f"set's own noise bounds it; more test examples would")
        return f"{s} seeds would reach {power:.0%} power at the measured effect {self.diff:.3g} and spread"


def _crossed(seed_var: float, item_var: float, resid_var: float, seeds: int, examples: int,
             mean_squares: tuple[float, float, float] | None = None) -> tuple[float, float]:
    """Standard error and Satterthwaite degrees of freedom of a grand mean over ``seeds`` x ``examples`` with
    crossed random effects (seed, example, interaction). ``mean_squares``: the observed (seed, example, residual)
    mean squares; by default their expectations under the components."""
    s, n = int(seeds), int(examples)
    if s < 2:  # the seed term is not estimable: the examples' spread holds everything
        se2 = (item_var + resid_var) / n
        return math.sqrt(max(se2, 0.0)), float(n - 1)
    ms_s, ms_i, ms_e = mean_squares or (n * max(seed_var, 0.0) + resid_var, s * item_var + resid_var, resid_var)
    # se2 * n * s = ms_s + (ms_i - ms_e) where the example term is estimated above zero, else ms_s alone: the
    # per-seed differences' own spread (their test noise included) plus the examples' shared term
    b = float(ms_i > ms_e)
    terms = [(ms_s, s - 1), (b * ms_i, n - 1), (-b * ms_e, (s - 1) * (n - 1))]
    total = sum(v for v, _ in terms)
    denom = sum(v * v / df for v, df in terms if v and df > 0)
    se2 = total / (n * s)
    return math.sqrt(max(se2, 0.0)), (total * total / denom if denom > 0 else float("inf"))


def _power(ncp: float, df: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided t test at noncentrality ``ncp`` (scipy's noncentral t)."""
    c = sps.t.ppf(1 - alpha / 2, df)
    return float(sps.nct.sf(c, df, ncp) + sps.nct.cdf(-c, df, ncp))


def compare_examples(base_wrong: Sequence[Sequence[float]], new_wrong: Sequence[Sequence[float]],
                     alpha: float = ALPHA) -> Paired:
    """Is ``new`` wrong less often than ``base`` on the same test examples, over seeds? One array per seed for each
    arm, per test example: 0/1 mistakes (1 = misclassified), or any per-example loss (a language model's loss on each
    test window); seed ``s`` of both arms paired, on the same examples in the same order. Lower is better.

    The variance model: the differences d_si = base_si - new_si form a seeds x examples table with crossed random
    effects, a seed's (how much one training run differs from another), an example's (some examples separate the
    arms more than others: the paired test-set variance) and their interaction. The components come from the
    two-way ANOVA's mean squares (each truncated at zero); the mean's variance is seed/S + example/n +
    interaction/(nS), and its degrees of freedom are Satterthwaite's, so three seeds whose spread dominates give
    about 2 df and a test set whose noise dominates gives many. With one seed the seed term is not estimable and
    the SE holds test noise only (the verdict says so). Calibration (at most ``alpha`` false directions under the
    null) and power are checked by simulation in ``tests/test_variance_model.py``."""
    b = [np.asarray(x, dtype=float) for x in base_wrong]
    n = [np.asarray(x, dtype=float) for x in new_wrong]
    if not b or len(b) != len(n) or any(x.shape != y.shape or x.ndim != 1 or x.size < 2 for x, y in zip(b, n)):
        raise ValueError("base_wrong and new_wrong need one 1-d array per seed (at least 2 examples), "
                         "the same number of seeds and equal shapes")
    if len({x.size for x in b}) != 1:
        raise ValueError("every seed must be scored on the same test examples (equal lengths)")
    d = np.stack(b) - np.stack(n)  # seeds x examples
    seeds, examples = d.shape
    grand = float(d.mean())
    rows, cols = d.mean(axis=1), d.mean(axis=0)
    if seeds >= 2:
        ms_s = examples * float(((rows - grand) ** 2).sum()) / (seeds - 1)
        ms_i = seeds * float(((cols - grand) ** 2).sum()) / (examples - 1)
        ms_e = float(((d - rows[:, None] - cols[None, :] + grand) ** 2).sum()) / ((seeds - 1) * (examples - 1))
        # the seed term is never dropped, however small it looks: with few seeds a seed variance that merely looks
        # small would trade its S - 1 degrees of freedom for the examples' and read too many directions (simulated:
        # 7.5 % false directions at 3 seeds when the seed term was pooled on an F test at p > 0.5)
        seed_var = (ms_s - ms_e) / examples  # may be negative: the SE below uses ms_s itself
        item_var, resid_var = max(0.0, (ms_i - ms_e) / seeds), ms_e
        se, df = _crossed(seed_var, item_var, resid_var, seeds, examples, (ms_s, ms_i, ms_e))
    else:
        seed_var, item_var, resid_var = 0.0, float(d[0].var(ddof=1)), 0.0
        se, df = _crossed(0.0, item_var, 0.0, 1, examples)
    if se == 0:
        p = 1.0 if grand == 0 else 0.0
    else:
        p = float(2 * sps.t.sf(abs(grand) / se, df))
    c = float(sps.t.ppf(1 - alpha / 2, df)) if math.isfinite(df) else float(sps.norm.ppf(1 - alpha / 2))
    return Paired(grand, se, df, p, grand - c * se, grand + c * se, seeds, examples, seed_var, item_var, resid_var)


def over_seeds(diffs: Sequence[float], alpha: float = ALPHA) -> Paired:
    """A difference measured once per seed (base - new; > 0: new is better) where the quantity has no per-example
    form (a calibration error, an AUROC, a ratio of predictive spreads): Student's one-sample t test over seeds,
    ``seeds - 1`` degrees of freedom. It is :func:`compare_examples` with one "example" per seed: the seeds' spread
    holds each seed's own test noise, while a term shared by every seed's test set cannot be separated (the
    verdict rests on the seeds alone). Needs at least 2 seeds."""
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"diffs needs one value per seed, at least 2 seeds, got {d.shape}")
    s = len(d)
    var = float(d.var(ddof=1))
    se, df = math.sqrt(var / s), float(s - 1)
    diff = float(d.mean())
    p = (1.0 if diff == 0 else 0.0) if se == 0 else float(2 * sps.t.sf(abs(diff) / se, df))
    c = float(sps.t.ppf(1 - alpha / 2, df))
    return Paired(diff, se, df, p, diff - c * se, diff + c * se, s, 1, var, 0.0, 0.0)


# ---------------------------------------------------------------------------------------------------------------
# The rules proven by simulation: the rates a page states and the tests check.
# ---------------------------------------------------------------------------------------------------------------

def simulate_plateau(noise: float, points: int, seeds: int, delta: float, gain: float, sims: int = 4000,
                     seed: int = 0, alpha: float = ALPHA, gain_sd: float = 0.0) -> float:
    """The rate at which :func:`plateau` calls an arm plateaued, over ``sims`` simulated arms of ``seeds`` curves
    with ``points`` evaluation points each: a straight line whose late gain (third quarter's mean minus the
    fourth's) is ``gain`` (per seed drawn around it with SD ``gain_sd``), plus independent noise of SD ``noise`` at
    each point. With ``gain = delta`` the rate is the rule's error (an arm still improving let in); with
    ``gain = 0`` it is the rule's power on flat curves."""
    rng = np.random.default_rng(seed)
    n = int(points)
    idx = np.arange(n)
    q3 = (idx >= n // 2) & (idx < (3 * n) // 4)
    q4 = idx >= (3 * n) // 4
    # a line with slope -s per point has late gain s * (mean index of q4 - mean index of q3)
    spacing = idx[q4].mean() - idx[q3].mean()
    g = gain + gain_sd * rng.standard_normal((sims, seeds, 1))
    curves = -(g / spacing) * idx + noise * rng.standard_normal((sims, seeds, n))
    late = curves[..., q3].mean(-1) - curves[..., q4].mean(-1)
    upper = late.mean(-1) + sps.t.ppf(1 - alpha, seeds - 1) * late.std(-1, ddof=1) / math.sqrt(seeds)
    return float((upper < delta).mean())


def simulate_paired(error: float, effect: float, seed_sd: float, examples: int, seeds: int, sims: int = 2000,
                    seed: int = 0, alpha: float = ALPHA, spread: float = 2.0) -> float:
    """The rate at which :func:`compare_examples` reads a direction (either sign), over ``sims`` simulated
    comparisons: ``examples`` test examples whose difficulty varies (logit SD ``spread``: some examples are hard
    for every model, so the two arms' errors are correlated), the base arm at error rate ``error``, the new arm
    ``effect`` lower (a fraction), and each model's error rate shifted by seed noise of SD ``seed_sd`` (a fraction).
    With ``effect = 0`` the rate is the rule's false-direction rate (at most ``alpha``, within Monte-Carlo error);
    at the paper's effect, its power."""
    from scipy.special import expit

    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((sims, 1, examples)) * spread

    def shift_for(rate):  # the logit shift that gives mean error ``rate`` over these difficulties
        lo, hi = np.full(sims, -30.0), np.full(sims, 30.0)
        for _ in range(40):
            mid = (lo + hi) / 2
            too_high = expit(theta[:, 0, :] + mid[:, None]).mean(-1) > rate
            hi, lo = np.where(too_high, mid, hi), np.where(too_high, lo, mid)
        return (lo + hi) / 2

    hits = 0
    centre_b, centre_n = shift_for(error), shift_for(error - effect)
    # seed noise on the error rate, carried to the logit scale at the base rate
    slope = error * (1 - error)
    for b in range(0, sims, 200):
        sl = slice(b, min(b + 200, sims))
        k = sl.stop - sl.start
        ub = centre_b[sl, None, None] + seed_sd / slope * rng.standard_normal((k, seeds, 1))
        un = centre_n[sl, None, None] + seed_sd / slope * rng.standard_normal((k, seeds, 1))
        wb = rng.random((k, seeds, examples)) < expit(theta[sl] + ub)
        wn = rng.random((k, seeds, examples)) < expit(theta[sl] + un)
        for i in range(k):
            hits += compare_examples(wb[i], wn[i], alpha).p < alpha
    return hits / sims
