"""Chapter 1's verdicts: the summary over seeds, each rate's plateau test, the paired direction claim and the level
claim, the power of the rule at the stored runs' noise, :func:`rejudge` and :func:`merge_blocks`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dropnotes.verdict import Verdict, verdict_table
from dropnotes.stats import compare_examples, plateau, blocks, simulate_plateau
from dropnotes.experiments._base import config_of
from dropnotes.experiments.judging import judged
from dropnotes import results
from dropnotes.experiments.mechanics.config import (CHAPTER, DELTA_PP, LEVEL_MARGIN_PP, MechanicsConfig,
                                                    PAPER_DROPOUT_RELU, PAPER_NO_DROPOUT, REFERENCE_EFFECT_PP)


def summarize(finals: pd.DataFrame, n_test: int = 10_000) -> pd.DataFrame:
    """Mean and spread of the test error per rate, in percent, with the binomial standard error of one
    model's error on the test set and the seed-to-seed standard deviation."""
    g = finals.groupby("p")
    out = pd.DataFrame({
        "seeds": g.size(),
        "val error %": 100 * g.val_error.mean(),
        "best epoch": g.best_epoch.mean(),
        "test error %": 100 * g.test_error.mean(),
        "seed sd %": 100 * g.test_error.std(ddof=1),
        "train error %": 100 * g.train_error.mean(),
    })
    e = out["test error %"] / 100
    out["binomial se %"] = 100 * np.sqrt(e * (1 - e) / n_test)
    out["gap (test - train) %"] = out["test error %"] - out["train error %"]
    return out.reset_index()


def arm_plateau(curves: pd.DataFrame | None, rate: float):
    """The plateau test (:func:`dropnotes.stats.plateau`) of the arm of ``rate`` from the stored curves (validation
    error in percent, every evaluation point, one curve per seed), or None without curves."""
    if curves is None or "val_error" not in curves:
        return None
    arm = curves[curves.p == rate].sort_values("epoch")
    return plateau([100 * g.val_error.to_numpy() for _, g in arm.groupby("seed")], DELTA_PP)


def _testable(curves: pd.DataFrame | None, rates) -> str:
    """Why the plateau test cannot run on ``rates``' curves ('' when it can): it needs two seeds and four
    evaluation points per arm."""
    if curves is None or "val_error" not in curves:
        return "learning curves not stored"
    for r in rates:
        arm = curves[curves.p == r]
        if arm.seed.nunique() < 2 or arm.groupby("seed").size().min() < 4:
            return (f"the plateau test needs 2 seeds and 4 evaluation points per arm; p = {r:g} has "
                    f"{arm.seed.nunique()} and {arm.groupby('seed').size().min()}")
    return ""


def _wrong(finals: pd.DataFrame, rate: float) -> list:
    arm = finals[finals.p == rate].sort_values("seed")
    return [results.unpack_wrong(w) for w in arm.wrong]


def _missing(finals: pd.DataFrame, curves: pd.DataFrame | None) -> str:
    need = []
    if "wrong" not in finals or finals["wrong"].isna().any():
        need.append("per-example test correctness")
    if curves is None or "val_error" not in curves:
        need.append("learning curves")
    return " and ".join(need) + (" not stored: protocol 3's rules read them" if need else "")


def verdicts(summary: pd.DataFrame, finals: pd.DataFrame, curves: pd.DataFrame | None = None) -> pd.DataFrame:
    """The chapter's closing table, computed from the measured numbers with the rules stated in the chapter:
    the *rule* verdicts, which :func:`~dropnotes.experiments.judging.judged` then reads at the run's scale.

    * the direction claim: the p = 0 arm against the dropout arm chosen on validation, paired on the same test
      images over seeds (:func:`dropnotes.stats.compare_examples`); an arm still improving blocks it only when its
      late gain could close the gap (:func:`dropnotes.stats.blocks`);
    * the level claim: the p = 0.5 arm's mean test error over seeds, its 95 % t interval (seed-level, S - 1 df),
      against the paper's 1.25 %: met when the interval reaches it or lies below it, missed when it lies wholly
      above; the arm must have plateaued.

    A record without what a rule reads (per-example correctness, curves) reads *not judged*."""
    base = summary[summary.p == 0.0].iloc[0]
    best = summary[summary.p > 0].sort_values("val error %").iloc[0]  # the rate is chosen on validation data
    missing = _missing(finals, curves) or _testable(curves, [0.0, float(best.p)])
    paper = (f"{PAPER_DROPOUT_RELU:.2f} % with dropout (3 x 1024 ReLU); Table 2 has no 3 x 1024 net without dropout "
             f"(its {PAPER_NO_DROPOUT:.2f} % is Simard et al.'s 2 x 800 logistic net)")
    common = dict(claim="dropout lowers the test error of a ReLU MLP on MNIST", source="Srivastava et al. 2014, Table 2",
                  kind="paper claim", test="direction", setting="Table 2", paper=paper, unit="pp of test error",
                  margin=DELTA_PP)
    ours = f"{base['test error %']:.2f} % -> {best['test error %']:.2f} % (p={best.p:g}, chosen on validation"
    if missing:
        rows = [Verdict(**common, ours=ours + ")", verdict=f"not judged ({missing})")]
    else:
        r = compare_examples(_wrong(finals, 0.0), _wrong(finals, float(best.p)))
        diff, lo, hi = 100 * r.diff, 100 * r.low, 100 * r.high
        rule = r.verdict()
        why = blocks(diff, arm_plateau(curves, 0.0), arm_plateau(curves, float(best.p)))
        verdict = f"not converged ({why}; it read: {rule})" if why else rule
        decide = r.decide() if rule.startswith("inconclusive") else (why or None)
        rows = [Verdict(**common, ours=f"{ours}; difference {diff:.2f} pp, 95 % interval {lo:.2f} to {hi:.2f})",
                        verdict=verdict, effect=diff, low=lo, high=hi, decide=decide)]
    level = dict(claim="3 x 1024 ReLU dropout net reaches the paper's error", source="Srivastava et al. 2014, Table 2",
                 kind="paper claim", test="level", setting="Table 2", paper=f"{PAPER_DROPOUT_RELU:.2f} %",
                 unit="pp of test error")
    arm = finals[finals.p == 0.5]
    if not len(arm):
        rows.append(Verdict(**level, ours="no p = 0.5 arm", verdict="not measured (no p = 0.5 arm)"))
        return verdict_table(rows)
    errs = 100 * arm.test_error.to_numpy()
    mean = float(errs.mean())
    why = "a second seed needed" if len(errs) < 2 else _testable(curves, [0.5])
    if why:
        rows.append(Verdict(**level, ours=f"{mean:.2f} % (p=0.5)", verdict=f"not judged ({why})"))
        return verdict_table(rows)
    from scipy import stats as sps

    n = len(errs)
    sd = float(errs.std(ddof=1))
    half = float(sps.t.ppf(0.95, n - 1) * sd / np.sqrt(n))
    lo, hi = mean - half, mean + half
    bar = PAPER_DROPOUT_RELU + LEVEL_MARGIN_PP
    shown = f"its one-sided 95 % bounds {lo:.2f} to {hi:.2f} %"
    if hi < bar:
        rule = f"reproduced ({shown} lie below {PAPER_DROPOUT_RELU:.2f} + {LEVEL_MARGIN_PP:.3g} %)"
    elif lo > bar:
        rule = f"not reproduced ({shown} lie above {PAPER_DROPOUT_RELU:.2f} + {LEVEL_MARGIN_PP:.3g} %)"
    else:
        rule = f"inconclusive ({shown} straddle {PAPER_DROPOUT_RELU:.2f} + {LEVEL_MARGIN_PP:.3g} %)"
    decide = None
    if rule.startswith("inconclusive"):
        room = abs(bar - mean)
        more = next((k for k in range(n, 201) if sps.t.ppf(0.95, k - 1) * sd / np.sqrt(k) < room), None)
        decide = (f"{more} seeds would decide it at the measured mean and seed spread" if more else
                  "no number of seeds up to 200 decides it at the measured mean and spread")
    pl = arm_plateau(curves, 0.5)
    if not pl.plateaued:
        rule = f"not converged ({pl.text('the p = 0.5 arm', 'pp')}; {pl.needed()}; it read: {rule})"
    rows.append(Verdict(**level, ours=f"{mean:.2f} % (p=0.5, epoch chosen on validation; one-sided 95 % bounds "
                                      f"{lo:.2f} to {hi:.2f} %)", verdict=rule, effect=PAPER_DROPOUT_RELU - mean,
                        low=PAPER_DROPOUT_RELU - hi, high=PAPER_DROPOUT_RELU - lo, paper_effect=0.0,
                        margin=LEVEL_MARGIN_PP, decide=decide))
    return verdict_table(rows)


def rejudge(record: dict) -> pd.DataFrame:
    """The rule verdicts of a stored run, computed again from its stored numbers with this protocol's rules
    (a run of an older protocol whose training is unchanged)."""
    cfg = config_of(MechanicsConfig, record)
    finals = record["tables"]["finals"]
    return judged(CHAPTER, cfg, verdicts(summarize(finals), finals, record["tables"].get("curves")))


def merge_blocks(cfg: MechanicsConfig, blocks: list[dict]) -> dict:
    """One record of the seed blocks of a run in blocks (:func:`~dropnotes.experiments.store.run_in_blocks`): the
    blocks' curves and final errors together, summarised and judged again over all their seeds; the speed as the
    blocks' mean (each measured in its own block)."""
    curves = pd.concat([b["tables"]["curves"] for b in blocks], ignore_index=True)
    finals = pd.concat([b["tables"]["finals"] for b in blocks], ignore_index=True)
    summary = summarize(finals)
    table = judged(CHAPTER, cfg, verdicts(summary, finals, curves))
    metrics = [b["metrics"] for b in blocks]
    speed = {k: float(np.mean([m[k] for m in metrics])) for k in ("train_s", "train_gflops_per_s",
                                                                   "matmul_2048_gflops_per_s")}
    return {"curves": curves, "finals": finals, "summary": summary, "verdicts": table,
            "metrics": {**{f"test_error_p{r:g}": float(summary.loc[summary.p == r, "test error %"].iloc[0])
                           for r in cfg.p_hidden}, **speed, "precision": metrics[0].get("precision")},
            "tables": {"summary": summary, "verdicts": table, "curves": curves, "finals": finals}}


def plateaus(record: dict) -> dict[float, object]:
    """The plateau test of every arm of a stored record (rate -> :class:`dropnotes.stats.Plateau`), or {} when it
    stores no curves."""
    curves = record["tables"].get("curves")
    rates = record["tables"]["finals"].p.unique()
    return {} if curves is None else {float(r): arm_plateau(curves, float(r)) for r in rates}


def curve_noise(curves: pd.DataFrame) -> float:
    """The evaluation noise of a record's validation curves, in percentage points: the residual SD around a straight
    line over the last half of each dropout model's curve, averaged (the noise the plateau test's power depends on;
    the p = 0 arm, whose curve freezes once it fits its training set, would understate it)."""
    res = []
    for _, g in curves[curves.p > 0].groupby(["p", "seed"]):
        y = 100 * g.sort_values("epoch").val_error.to_numpy()
        h = y[len(y) // 2:]
        if len(h) >= 4:
            t = np.arange(len(h))
            res.append(float(np.std(h - np.polyval(np.polyfit(t, h, 1), t), ddof=2)))
    return float(np.mean(res)) if res else float("nan")


def rule_power(record: dict) -> str:
    """The power of the chapter's rules at a record's own noise, simulated (:func:`dropnotes.stats.simulate_plateau`)
    and computed (:meth:`dropnotes.stats.Paired.power`), as the page states it."""
    curves, finals = record["tables"].get("curves"), record["tables"]["finals"]
    if curves is None or "val_error" not in curves:
        return ""
    noise, seeds = curve_noise(curves), int(finals.seed.nunique())
    points = int(curves.groupby(["p", "seed"]).size().min())
    flat = simulate_plateau(noise, points, seeds, DELTA_PP, gain=0.0, sims=4000, seed=0)
    late = simulate_plateau(noise, points, seeds, DELTA_PP, gain=DELTA_PP, sims=4000, seed=1)
    text = (f"At this run's curve noise ({noise:.3f} pp a point, {points} points, {seeds} seeds) the plateau test "
            f"calls a flat arm plateaued {100 * flat:.0f} % of the time and lets in an arm still improving by δ "
            f"{100 * late:.1f} % of the time (simulated).")
    if "wrong" in finals and not finals["wrong"].isna().any():
        r = compare_examples(_wrong(finals, 0.0), _wrong(finals, 0.5))
        text += (f" At the reference effect ({REFERENCE_EFFECT_PP:.2f} pp) and this run's spread, the paired direction "
                 f"test has {100 * r.power(seeds, effect=REFERENCE_EFFECT_PP / 100):.0f} % power with {seeds} seeds.")
    return text
