"""Chapter 4's verdicts: the summary over seeds, each claim's row (paired on the same test images over seeds),
:func:`rejudge`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dropnotes.verdict import Verdict, verdict_table
from dropnotes import results
from dropnotes.experiments._base import config_of
from dropnotes.experiments.judging import judged
from dropnotes.stats import compare_examples, fmt_mean_sd
from dropnotes.experiments.droppath.config import (CHAPTER, DEIT_DEFAULT_RATE, DropPathConfig, HUANG_CIFAR10,
                                                   HUANG_EPOCH_S)


def summarize(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    g = runs.groupby(by)
    return pd.DataFrame({"validation accuracy %": g.val_error.apply(lambda e: fmt_mean_sd(1 - e, 100)),
                         "test accuracy %": g.test_error.apply(lambda e: fmt_mean_sd(1 - e, 100)),
                         "train accuracy %": g.train_error.apply(lambda e: fmt_mean_sd(1 - e, 100)),
                         "gap (train - test) pt": g.apply(lambda r: 100 * (r.test_error - r.train_error).mean(),
                                                          include_groups=False).round(2),
                         "seeds": g.size()}).reset_index()


def _sel(runs: pd.DataFrame, **where) -> pd.DataFrame:
    sel = runs
    for k, v in where.items():
        sel = sel[(sel[k] - v).abs() < 1e-9] if isinstance(v, float) else sel[sel[k] == v]
    return sel.sort_values("seed")


def _errors(runs: pd.DataFrame, **where) -> list[float]:
    return _sel(runs, **where).test_error.tolist()


def _wrong(runs: pd.DataFrame, **where) -> list:
    """Each seed's 0/1 mistakes on the test images, in seed order."""
    return [results.unpack_wrong(w) for w in _sel(runs, **where).wrong]


CLAIMS = {
    "rate": dict(source="Touvron et al. 2021 (DeiT); Huang et al. 2016",
                 paper=(f"DeiT default rate {DEIT_DEFAULT_RATE}; ResNet-110 CIFAR-10 error {HUANG_CIFAR10[0]} -> "
                        f"{HUANG_CIFAR10[1]} %")),
    "schedule": dict(claim="linear decay beats uniform rates at the same expected depth",
                     source="Huang et al. 2016 (Fig. 8)", paper="linear better"),
    "depth": dict(claim="the benefit of stochastic depth grows with depth", source="Huang et al. 2016",
                  paper="qualitative: stochastic depth lets much deeper nets gain (110 and 1202 layers)"),
}
UNIT = "pp of test error"


def _row(meta: dict, ours: str, r, missing: str) -> Verdict:
    """A comparison row from a paired result (None with ``missing``: the record lacks what the rule reads)."""
    if r is None:
        return Verdict(**meta, ours=ours, verdict=f"not judged ({missing})", unit=UNIT)
    rule = r.verdict()
    return Verdict(**meta, ours=f"{ours}; difference {100 * r.diff:+.2f} pt, 95 % interval {100 * r.low:+.2f} to "
                                f"{100 * r.high:+.2f}; compared at the end of the annealed schedule",
                   verdict=rule, effect=100 * r.diff, low=100 * r.low, high=100 * r.high, unit=UNIT,
                   decide=_decide(r) if rule.startswith("inconclusive") else None)


def _decide(r) -> str:
    """What would decide an undecided comparison (:meth:`dropnotes.stats.Paired.seeds_to_decide`), in the row's unit."""
    s = r.seeds_to_decide()
    if s is None:
        return (f"no number of seeds reaches 80 % power at the measured effect {100 * r.diff:+.2g} pt: the test set's "
                f"own noise bounds it; more test images would")
    return f"{s} seeds would reach 80 % power at the measured effect {100 * r.diff:+.2g} pt and spread"


def verdicts(rec: dict, cfg: DropPathConfig) -> pd.DataFrame:
    """The closing table, from the measurements, with the rules stated in the chapter: every comparison paired on the
    same test images over seeds (:func:`dropnotes.stats.compare_examples`, each model's per-image mistakes; > 0: the
    paper's direction), with no plateau gate (:data:`PLATEAU_GATE`). A record without per-image correctness reads
    *not judged*."""
    runs, mid = rec["runs"], rec["mid"]
    missing = "" if "wrong" in runs and runs["wrong"].notna().all() else "per-example test correctness not stored"
    paired = (lambda base, new: None) if missing else compare_examples  # noqa: E731
    deep = runs[(runs.depth == cfg.depth) & (runs.schedule == "linear")]
    means = deep.groupby("rate").test_error.mean()
    val = deep.groupby("rate").val_error.mean()  # the best rate is chosen on validation, then tested once
    best = float(val[val.index > 0].idxmin())
    acc = lambda e: 100 * (1 - e)  # noqa: E731
    w = (lambda **k: _wrong(runs, **k)) if not missing else (lambda **k: None)  # noqa: E731
    rows = [_row(dict(claim=f"stochastic depth helps a ViT trained from scratch on limited data (depth {cfg.depth})",
                      **CLAIMS["rate"]),
                 f"test accuracy {acc(means[0.0]):.1f} % at rate 0, {acc(means[best]):.1f} % at rate {best:g} "
                 f"(the best on validation)",
                 paired(w(depth=cfg.depth, schedule="linear", rate=0.0), w(depth=cfg.depth, schedule="linear", rate=best)),
                 missing)]
    lin, uni = (_errors(runs, depth=cfg.depth, rate=mid, schedule="linear"),
                _errors(runs, depth=cfg.depth, rate=mid / 2, schedule="uniform"))
    rows.append(_row(CLAIMS["schedule"], f"linear to {mid:.2f}: {acc(sum(lin) / len(lin)):.1f} %, uniform {mid / 2:.2f}: "
                                         f"{acc(sum(uni) / len(uni)):.1f} %",
                     paired(w(depth=cfg.depth, schedule="uniform", rate=mid / 2),
                            w(depth=cfg.depth, schedule="linear", rate=mid)), missing))
    # the depth interaction: per seed and test image, the deep net's gain from ``mid`` minus the shallow net's, paired
    # on the same images (> 0: the benefit grows with depth)
    gain = lambda depth: (np.mean(_errors(runs, depth=depth, schedule="linear", rate=0.0))  # noqa: E731
                          - np.mean(_errors(runs, depth=depth, schedule="linear", rate=mid)))
    r = None
    if not missing:
        r = compare_examples([a.astype(float) - b for a, b in zip(w(depth=cfg.depth, schedule="linear", rate=0.0),
                                                                   w(depth=cfg.depth, schedule="linear", rate=mid))],
                             [a.astype(float) - b for a, b in zip(w(depth=cfg.shallow_depth, schedule="linear", rate=0.0),
                                                                   w(depth=cfg.shallow_depth, schedule="linear", rate=mid))])
    rows.append(_row(CLAIMS["depth"], f"gain from rate {mid:.2f}: depth {cfg.depth} {100 * gain(cfg.depth):+.2f} pt, "
                                      f"depth {cfg.shallow_depth} {100 * gain(cfg.shallow_depth):+.2f} pt", r, missing))
    sp = rec["speed"].set_index("variant")
    f = rec["speed"].attrs.get("mean_rate", 0.25)
    ratio = sp.loc["skip dropped", "relative to masked"]
    rows.append(Verdict(claim="skipping dropped branches saves time in proportion to the dropped fraction",
                 source="Huang et al. 2016 (official code)", test="timing", setting="timing",
                 paper=f"{HUANG_EPOCH_S[0]} -> {HUANG_EPOCH_S[1]} s/epoch",
                 ours=(f"masked {sp.loc['masked', 'ms per step']:.0f} ms, skip {sp.loc['skip dropped', 'ms per step']:.0f} ms "
                          f"per step ({ratio:.2f}x; mean drop rate {f:.2f}); "
                          f"no DropPath {sp.loc['no DropPath', 'ms per step']:.0f} ms"),
                 verdict="reproduced" if ratio <= 1 - 0.8 * f else "not reproduced"))
    return verdict_table(rows)


def middle_rate(rates) -> float:
    """The middle rate of the sweep above 0 (the schedule and depth comparisons' ``mid``)."""
    nonzero = [r for r in rates if r > 0]
    return nonzero[len(nonzero) // 2] if nonzero else 0.1


def rejudge(record: dict) -> pd.DataFrame:
    """The rule verdicts of a stored run, computed again from its stored tables with the current rules (its
    ``runs``, with each model's per-image correctness, and ``speed``; the step times' mean drop rate is
    :func:`step_times`' default, a quarter). A record without per-image correctness reads *not judged* on its
    comparison rows."""
    cfg = config_of(DropPathConfig, record)
    speed = record["tables"]["speed"].copy()
    speed.attrs["mean_rate"] = 0.25
    rec = {"runs": record["tables"]["runs"], "mid": middle_rate(cfg.rates), "speed": speed}
    return judged(CHAPTER, cfg, verdicts(rec, cfg))
