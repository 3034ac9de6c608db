"""Chapter 2's verdicts: the summaries over seeds, the rules, :func:`verdicts`, :func:`rejudge` and
:func:`merge_blocks` (one record from seed blocks)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dropnotes.experiments._base import config_of
from dropnotes.experiments.judging import judged, scale_cuts
from dropnotes.experiments.ensembles.config import (
    CHAPTER,
    DELTA_PP,
    EQUAL_MARGIN_PP,
    OOD_THRESHOLD,
    PAPER_T2,
    PAPER_UB_ECE,
    PAPER_UB_NLL,
    EnsemblesConfig,
)
from dropnotes.results import unpack_values, unpack_wrong
from dropnotes.stats import blocks, compare_examples, fmt_mean_sd, over_seeds, plateau
from dropnotes.verdict import MIN_SEEDS, Verdict, verdict_table


def summarize_quality(quality: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd over seeds (and over members for the single nets) of error %, NLL, ECE and Brier score."""
    rows = []
    for model, g in quality.groupby("model", sort=False):
        rows.append({"model": model, "error %": fmt_mean_sd(g.error, 100), "NLL": fmt_mean_sd(g.nll, 1, 3),
                     "ECE": fmt_mean_sd(g.ece, 1, 4), "Brier": fmt_mean_sd(g.brier, 1, 4),
                     "temperature": fmt_mean_sd(g.temperature, 1, 2), "error_mean": 100 * g.error.mean(),
                     "nll_mean": g.nll.mean(), "ece_mean": g.ece.mean(), "brier_mean": g.brier.mean()})
    return pd.DataFrame(rows)


def summarize_sweep(sweep: pd.DataFrame) -> pd.DataFrame:
    """MC-averaging error (%) per k: mean and sd over seeds x repeats, and the weight-scaling error."""
    g = sweep.groupby("k")
    return pd.DataFrame({"mc error %": 100 * g.error.mean(), "sd %": 100 * g.error.std(ddof=1),
                         "weight scaling %": 100 * g.ws_error.mean(),
                         "paired se %": 100 * g.paired_se.mean()}).reset_index()


def summarize_ood(ood: pd.DataFrame) -> pd.DataFrame:
    g = ood.groupby(["shift", "method", "score"], sort=False).auroc
    return pd.DataFrame({"AUROC": g.mean(), "sd": g.std(ddof=1), "seeds": g.size()}).reset_index()


# The verdict rules, as functions of what was measured (unit-tested on synthetic inputs in tests/test_verdict_rules.py).


def rule_level(direction: str, error_pct: float, cut: list[str], paper: float = PAPER_T2["dropout"],
               tolerance: float = 0.25) -> str:
    """Claim 1: the direction test's verdict; at the paper's scale (nothing ``cut``) the error must also come
    within ``tolerance`` points of the paper's."""
    if cut or not direction.startswith("reproduced") or error_pct <= paper + tolerance:
        return direction
    return f"partly: direction reproduced, level {error_pct:.2f} % vs {paper:.2f} %"


def rule_mc_matches(k1_worse: str, equal_at_k: str) -> str:
    """Claim 2: one sample (k = 1) is worse than weight scaling, and k = 50 is *equivalent* to it (TOST)."""
    if not equal_at_k.startswith("reproduced"):
        return equal_at_k  # not shown equivalent (inconclusive), or shown different
    return "reproduced" if k1_worse.startswith("reproduced") else "partly (k = 50 matches; k = 1 is not shown worse)"


def ordering_tests(quality: pd.DataFrame, metric: str) -> tuple[str, str, str]:
    """Claim 3's two inequalities on ``metric`` (``nll`` or ``ece``), each a paired test over seeds (the same
    test images and seed for the three models; the single nets' members averaged per seed;
    :func:`dropnotes.stats.over_seeds`): (MC minus ensemble, single net minus MC) as ``mean ± SE`` texts, and the
    verdict of the ordering ensemble < MC < single net."""
    per = quality.groupby(["model", "seed"])[metric].mean().unstack("model")
    mc = [c for c in per.columns if c.startswith("dropout, MC")][0]
    gaps = (per[mc] - per["ensemble"], per["single net"] - per[mc])
    if len(per) < MIN_SEEDS:
        text = [f"{g.mean():+.4f}" for g in gaps]
        return text[0], text[1], f"inconclusive ({len(per)} seeds: a paired test over seeds needs {MIN_SEEDS})"
    tests = [over_seeds(g.to_numpy()) for g in gaps]
    text = [f"{t.diff:+.4f} ± {t.se:.4f}" for t in tests]
    verdicts = [t.verdict() for t in tests]
    if all(v.startswith("reproduced") for v in verdicts):
        return text[0], text[1], "reproduced"
    if any(v.startswith("not reproduced") for v in verdicts):
        return text[0], text[1], "not reproduced (an inequality is reversed beyond the seeds' SE)"
    return text[0], text[1], "inconclusive (an inequality is within the seeds' SE)"


def rule_ordering(nll: str, ece: str, beats_temperature: str) -> str:
    """Claim 3: ensemble < MC dropout < single net in NLL and in ECE (each :func:`ordering_tests`' verdict);
    the calibration claim must also beat the temperature-scaled single net (``beats_temperature``: the paired
    NLL test's verdict)."""
    tested = (nll, ece)
    if any(v.startswith("not reproduced") for v in tested):
        return "not reproduced" + ("" if all(v.startswith("not reproduced") for v in tested) else " (in part)")
    if not all(v.startswith("reproduced") for v in tested):
        return f"inconclusive (NLL: {nll}; ECE: {ece})"
    if beats_temperature.startswith("reproduced"):
        return "reproduced"
    return f"partly (the ordering holds; against temperature scaling: {beats_temperature})"


def rule_regression(by_seed: pd.DataFrame) -> tuple[float, float, str]:
    """Claim 4a: the predictive std in the gap and outside the data exceeds the std on the data. Per seed, the
    log of min(gap, outside) / data; a one-sample t test over seeds (>= 3 of them) that its mean is above 0.
    Returns (the geometric-mean ratio, the log ratio's SE, verdict)."""
    logs = np.log(np.minimum(by_seed["gap"], by_seed["outside"]) / by_seed["data"]).to_numpy(dtype=float)
    if len(logs) < MIN_SEEDS:
        return float(np.exp(logs.mean())), float("nan"), (f"inconclusive ({len(logs)} seeds: the regression gap is "
                                                          f"tested over at least {MIN_SEEDS})")
    r = over_seeds(logs)
    return float(np.exp(r.diff)), r.se, r.verdict()


def rule_rotation(rise: str, more_than_deterministic: str) -> str:
    """Claim 4b: MC entropy rises with rotation (over digits), and rises more than the deterministic net's."""
    if rise.startswith("not reproduced"):
        return "not reproduced (the entropy falls)"
    if rise.startswith("inconclusive"):
        return rise
    if more_than_deterministic.startswith("reproduced"):
        return "reproduced"
    if more_than_deterministic.startswith("not reproduced"):
        return "partly (it rises, but less than the deterministic net's entropy)"
    return "partly (it rises; more than the deterministic net's: inconclusive)"


def rule_ood(auroc_mc: float, better: str, threshold: float = OOD_THRESHOLD) -> str:
    """Claim 4c: the MC entropy's AUROC reaches ``threshold`` and beats the same net's deterministic entropy."""
    if better.startswith("not reproduced"):
        return "not reproduced (the deterministic net detects better)"
    if auroc_mc < threshold:
        return f"not reproduced (AUROC below {threshold})"
    if better.startswith("reproduced"):
        return "reproduced"
    return "inconclusive (AUROC above the threshold; the gain over the deterministic net is within 2 SE)"


def _arm_plateau(curves: pd.DataFrame | None, arm: str, schedule: str = "constant"):
    """The plateau test of ``arm`` ("members": the plain nets averaged per seed, or "dropout net") on validation error
    in percent at every evaluation, the reason it cannot run (a text), or None where no gate applies (the cosine
    schedule of protocol 5: :data:`PLATEAU_GATE`)."""
    if schedule == "cosine":
        return None
    if curves is None or "val_error" not in curves:
        return "learning curves not stored"
    sel = curves[curves.arm.str.startswith("member")] if arm == "members" else curves[curves.arm == arm]
    per_seed = [100 * g.groupby("epoch").val_error.mean().sort_index().to_numpy() for _, g in sel.groupby("seed")]
    if len(per_seed) < 2 or min(map(len, per_seed), default=0) < 4:
        return f"the plateau test needs 2 seeds and 4 evaluation points per arm; {arm} has {len(per_seed)}"
    return plateau(per_seed, DELTA_PP)


def _test_mistakes(packed: pd.DataFrame | None) -> tuple[list, list] | None:
    """Per seed: the plain members' mistakes averaged per test image, and the dropout net's (weight scaling)."""
    if packed is None:
        return None
    members, drop = [], []
    for _, g in packed.groupby("seed"):
        w = {a: unpack_wrong(x).astype(float) for a, x in zip(g.arm, g.packed)}
        members.append(np.mean([v for a, v in w.items() if a.startswith("member")], axis=0))
        drop.append(w["dropout net"])
    return members, drop


def verdicts(rec: dict, cfg: EnsemblesConfig) -> pd.DataFrame:
    """The closing table, computed from the measurements with the rules stated in the chapter. Every comparison
    pairs the models on the same test examples over seeds (:func:`dropnotes.stats.compare_examples`), or over seeds
    where the quantity has no per-example form (:func:`dropnotes.stats.over_seeds`). A comparison of two trained
    arms is gated by their plateau tests; a record without what a row reads reads *not judged*."""
    q = rec["quality"]
    curves = rec.get("curves")
    p_members, p_drop = (_arm_plateau(curves, arm, cfg.schedule) for arm in ("members", "dropout net"))
    gate_missing = next((p for p in (p_members, p_drop) if isinstance(p, str)), "")
    single = q[q.model == "single net"].groupby("seed").error.mean().tolist()
    ws = q[q.model == "dropout, weight scaling"].error.tolist()
    ws_mean = 100 * float(np.mean(ws))
    cut = scale_cuts(CHAPTER, cfg)["Table 2"]
    first = dict(claim="dropout lowers the test error of a ReLU MLP on MNIST (the same net, learning rate and "
                       "schedule without it)",
                 source="Srivastava et al. 2014, Table 2",
                 paper=(f"{PAPER_T2['dropout']:.2f} % with dropout (ReLU 3 x 1024, no max-norm; "
                        f"{PAPER_T2['dropout_maxnorm']:.2f} % with max-norm); Table 2 has no such net without dropout "
                        f"(its {PAPER_T2['none']:.2f} % is Simard et al.'s 2 x 800 logistic net)"),
                 kind="setup check", setting="Table 2", unit="pp of test error", margin=DELTA_PP)
    ours = f"{100 * np.mean(single):.2f} % -> {ws_mean:.2f} %"
    mistakes = _test_mistakes(rec.get("wrong_packed"))
    if mistakes is None or gate_missing:
        rows = [Verdict(**first, ours=ours, verdict=f"not judged ({gate_missing or 'per-example test mistakes not stored'})")]
    else:
        r = compare_examples(*mistakes)
        why = blocks(100 * r.diff, p_members, p_drop)
        text = rule_level(r.verdict(), ws_mean, cut)
        rows = [Verdict(**first, ours=f"{ours} ({100 * r.diff:+.2f} pp, 95 % interval {100 * r.low:+.2f} to "
                                      f"{100 * r.high:+.2f}; paired over the same test images and seeds)",
                        verdict=f"not converged ({why}; it read: {text})" if why else text,
                        effect=100 * r.diff, low=100 * r.low, high=100 * r.high,
                        decide=why or (r.decide() if text.startswith("inconclusive") else None))]

    mc_claim = dict(claim="MC averaging over k sub-networks matches weight scaling around k = 50 (k = 1 is worse)",
                    source="Srivastava et al. 2014, Fig. 11 / §7.5", paper="k ≈ 50", unit="pp of test error",
                    margin=EQUAL_MARGIN_PP)
    wrong = rec.get("wrong")
    if not wrong:
        rows.append(Verdict(**mc_claim, ours="", verdict="not judged (the MC passes' per-example mistakes not stored)"))
    else:  # the same weights, two inferences: no convergence gate
        ks = [k for k in wrong[0] if k != "weight scaling"]
        k1, k_big = min(ks), (50 if 50 in ks else max(ks))
        worse = compare_examples([w[k1] for w in wrong], [w["weight scaling"] for w in wrong])
        same = compare_examples([w["weight scaling"] for w in wrong], [w[k_big] for w in wrong])
        eq = same.equivalent(EQUAL_MARGIN_PP / 100, shown=f"{EQUAL_MARGIN_PP:g} pt", scale=100)
        rows.append(Verdict(**mc_claim,
                            ours=(f"k={k1} minus weight scaling {100 * worse.diff:+.2f} pp (95 % interval "
                                  f"{100 * worse.low:+.2f} to {100 * worse.high:+.2f}); k={k_big} minus weight scaling "
                                  f"{-100 * same.diff:+.2f} pp (TOST margin ±{EQUAL_MARGIN_PP:g} pt), on the same "
                                  f"{len(wrong[0]['weight scaling']):,} test images"),
                            verdict=rule_mc_matches(worse.verdict(), eq), effect=-100 * same.diff,
                            low=-100 * same.high, high=-100 * same.low))

    s = rec["summary"].set_index("model")
    mc_name = [m for m in s.index if m.startswith("dropout, MC")][0]
    nll = [s.loc[m, "nll_mean"] for m in ("ensemble", mc_name, "single net")]
    ece = [s.loc[m, "ece_mean"] for m in ("ensemble", mc_name, "single net")]
    nll_a, nll_b, nll_v = ordering_tests(rec["quality"], "nll")
    ece_a, ece_b, ece_v = ordering_tests(rec["quality"], "ece")
    late = [p.text(name, "pp of validation error") for name, p in (("the members", p_members),
            ("the dropout net", p_drop)) if p is not None and not isinstance(p, str) and not p.plateaued]

    def gated(text: str) -> str:  # NLL and ECE rows: any trained arm still improving blocks them
        if gate_missing:
            return f"not judged ({gate_missing})"
        return f"not converged ({'; '.join(late)}; it read: {text})" if late else text

    cal = rec.get("calibration")
    if cal:
        t = compare_examples([c["single net + temperature"] for c in cal], [c["dropout, MC"] for c in cal])
        beats_t, t_text = t.verdict(), f"{t.diff:+.4f} nats per test image (95 % interval {t.low:+.4f} to {t.high:+.4f})"
    else:
        beats_t, t_text, t = "not judged (per-example NLL not stored)", "", None
    nll_t = s.loc["single net + temperature", "nll_mean"]
    rows.append(Verdict(claim="ensemble < MC dropout <= single net in NLL and ECE",
                 source="uncertainty-baselines (CIFAR-10, WRN-28-10)",
                 paper=f"NLL {PAPER_UB_NLL['ensemble']} / {PAPER_UB_NLL['mc']} / {PAPER_UB_NLL['single']}; "
                          f"ECE {PAPER_UB_ECE['ensemble']} / {PAPER_UB_ECE['mc']} / {PAPER_UB_ECE['single']}",
                 setting="uncertainty-baselines",
                 ours=(f"NLL {nll[0]:.3f} / {nll[1]:.3f} / {nll[2]:.3f} (MC - ensemble {nll_a}, single - MC {nll_b}); "
                          f"ECE {ece[0]:.4f} / {ece[1]:.4f} / {ece[2]:.4f} (MC - ensemble {ece_a}, single - MC {ece_b}; "
                          f"paired over seeds); single net + temperature NLL {nll_t:.3f}"),
                 verdict=gated(rule_ordering(nll_v, ece_v, beats_t))))
    rows.append(Verdict(claim="MC dropout has a lower NLL than a temperature-scaled single net",
                 source="the baseline of Guo et al. 2017 (temperature fitted on validation)", paper="not claimed",
                 kind="our test", setting="uncertainty-baselines", unit="nats per test image",
                 ours=(f"single net + temperature minus MC dropout: {t_text} (paired); Brier "
                       f"{s.loc['single net + temperature', 'brier_mean']:.4f} vs {s.loc[mc_name, 'brier_mean']:.4f}"),
                 verdict=gated(beats_t) if t is not None else beats_t,
                 **({} if t is None else dict(effect=t.diff, low=t.low, high=t.high,
                                              decide=t.decide() if beats_t.startswith("inconclusive") else None))))

    regs = rec["regression_seeds"]
    ratio, ratio_se, reg_v = rule_regression(regs)
    rows.append(Verdict(claim="MC-dropout predictive std grows away from the data",
                 source="Gal & Ghahramani 2016 (regression experiments)", paper="qualitative",
                 setting="Gal & Ghahramani 2016",
                 ours=(f"std on data {regs.data.mean():.3f}, in the gap {regs.gap.mean():.3f}, outside "
                          f"{regs.outside.mean():.3f}; min(gap, outside) / data {ratio:.2f} (log ratio SE "
                          f"{ratio_se:.3f}, {len(regs)} seeds)"),
                 verdict=reg_v, **_decided(reg_v, regs)))

    r = rec["rotation_pairs"]
    if len(r) < 2:  # one seed (a seed block): a test over seeds waits for the merged record
        return verdict_table(rows + [_one_seed(claim) for claim in SEED_TESTED])
    rise, more = over_seeds(r.rise_mc.to_numpy()), over_seeds(r["diff"].to_numpy())
    rows.append(Verdict(claim=SEED_TESTED[0],
                 source="Gal & Ghahramani 2016 (rotated-digit experiment)", paper="qualitative",
                 setting="Gal & Ghahramani 2016", unit="nats of entropy",
                 ours=(f"entropy rise 30-150° vs 0°: MC {rise.diff:.3f} ± {rise.se:.3f} nats, deterministic "
                          f"{r.rise_deterministic.mean():.3f}; difference {more.diff:+.3f} ± {more.se:.3f} "
                          f"({int(r.digits.iloc[0])} digits x {len(r)} seeds, paired)"),
                 verdict=rule_rotation(rise.verdict(), more.verdict()), effect=more.diff, low=more.low,
                 high=more.high, decide=more.decide() if not more.verdict().startswith(("reproduced", "not")) else None))

    o = rec["ood_pairs"]
    for claim, shift in zip(SEED_TESTED[1:], ("fashion-mnist", "inverted mnist")):
        g = o[o["shift"] == shift]
        better = over_seeds(g["diff"].to_numpy())
        mc_h = float(g.auroc_mc.mean())
        rows.append(Verdict(claim=claim,
                     source=f"our test (after Gal & Ghahramani 2016's uncertainty argument; that paper has no "
                               f"OOD experiment); protocol threshold AUROC >= {OOD_THRESHOLD}",
                     paper="not in the paper", kind="our test", setting="Gal & Ghahramani 2016", unit="AUROC",
                     ours=(f"AUROC of the entropy: MC {mc_h:.3f}, deterministic {g.auroc_deterministic.mean():.3f} "
                              f"(difference {better.diff:+.3f}, 95 % interval {better.low:+.3f} to {better.high:+.3f}, "
                              f"over seeds)"),
                     verdict=rule_ood(mc_h, better.verdict()), effect=better.diff, low=better.low, high=better.high,
                     decide=better.decide() if better.verdict().startswith("inconclusive") else None))
    return verdict_table(rows)


# The rows tested over seeds alone (no per-example form), after the regression row: one seed cannot judge them.
SEED_TESTED = ("MC-dropout uncertainty rises as a rotated digit becomes ambiguous, more than the same net's "
               "deterministic softmax",
               *(f"MC-dropout uncertainty detects out-of-distribution inputs ({shift}) better than the same net's "
                 "deterministic softmax" for shift in ("fashion-mnist", "inverted mnist")))


def _one_seed(claim: str) -> Verdict:
    return Verdict(claim=claim, source="", paper="", setting="Gal & Ghahramani 2016", ours="one seed",
                   verdict="not judged (one seed: a test over seeds needs at least 2; a run in seed blocks judges it "
                           "when the blocks merge)")


def _decided(verdict: str, regs: pd.DataFrame) -> dict:
    """What would decide the regression row when it is undecided (its log ratio over seeds), else nothing."""
    if not str(verdict).startswith("inconclusive") or len(regs) < 2:
        return {}
    logs = np.log(np.minimum(regs["gap"], regs["outside"]) / regs["data"]).to_numpy(dtype=float)
    return {"decide": over_seeds(logs).decide()}


def rejudge(record: dict) -> pd.DataFrame:
    """The verdicts of a stored run of this protocol, computed again from its stored tables; what it does not store
    (the MC passes' mistakes, or before protocol 5 the per-example NLL) reads *not judged*."""
    return _judge_tables(config_of(EnsemblesConfig, record), record["tables"])


def _judge_tables(cfg: EnsemblesConfig, t: dict) -> pd.DataFrame:
    """The verdicts from a record's stored tables (what :func:`rejudge` and :func:`merge_blocks` judge)."""
    mc = t.get("mc_wrong")
    wrong = None if mc is None else [{(int(k) if str(k).isdigit() else k): unpack_values(x)
                                      for k, x in zip(g.k, g.packed)} for _, g in mc.groupby("seed")]
    nll = t.get("nll")
    calibration = None if nll is None else [{m: unpack_values(x) for m, x in zip(g.model, g.packed)}
                                            for _, g in nll.groupby("seed")]
    rec = {"quality": t["quality"], "curves": t.get("curves"), "wrong_packed": t.get("wrong"), "wrong": wrong,
           "summary": t["summary"], "calibration": calibration, "regression_seeds": t["regression_seeds"],
           "rotation_pairs": t["rotation_pairs"], "ood_pairs": t["ood_pairs"]}
    return judged(CHAPTER, cfg, verdicts(rec, cfg))


def merge_blocks(cfg: EnsemblesConfig, blocks: list[dict]) -> dict:
    """One record of the seed blocks of a run in blocks (:func:`~dropnotes.experiments.store.run_in_blocks`; block s
    is the run with ``seed=s, n_seeds=1``, so it draws its own validation split): the blocks' per-seed tables
    together, summarised and judged again over all their seeds; the rotation figure's table and the regression
    figure's spread from the first block (the figures' seed); the speeds as the blocks' means (each measured in its
    own block)."""
    t = [b["tables"] for b in blocks]
    tables = {k: pd.concat([x[k] for x in t], ignore_index=True)
              for k in ("quality", "sweep", "ood", "ood_pairs", "rotation_pairs", "regression_seeds", "best_epochs",
                        "curves", "wrong", "mc_wrong") + (("nll",) if "nll" in t[0] else ())}
    tables.update(rotation=t[0]["rotation"], summary=summarize_quality(tables["quality"]),
                  mc_curve=summarize_sweep(tables["sweep"]), ood_summary=summarize_ood(tables["ood"]))
    tables["verdicts"] = _judge_tables(cfg, tables)
    metrics = [b["metrics"] for b in blocks]
    mean = {k: float(np.mean([m[k] for m in metrics])) for k in ("vmap_speedup", "train_gflops_per_s",
                                                                  "matmul_2048_gflops_per_s") if k in metrics[0]}
    return {"metrics": {**mean, "regression_std": metrics[0]["regression_std"],
                        **({"precision": metrics[0]["precision"]} if "precision" in metrics[0] else {})},
            "tables": tables, "verdicts": tables["verdicts"],
            "provenance": {"ood_dataset": blocks[0]["provenance"].get("ood_dataset")}}
