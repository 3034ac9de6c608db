"""Chapter 6's verdicts: the learning curves and the trained-net gate (:func:`trained_below`), each claim's row
(paired on the same test images over seeds, gated by each arm's plateau test), :func:`rejudge` and
:func:`merge_blocks`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dropnotes.verdict import Outcome, Verdict, verdict_table
from dropnotes.results import unpack_wrong
from dropnotes.experiments.judging import judged
from dropnotes.stats import blocks, compare_examples, plateau
from dropnotes.experiments._base import config_of
from dropnotes.experiments.interactions.config import (CHANCE_ERROR, CHAPTER, DELTA, EQUAL_MARGIN,
                                                       InteractionsConfig, LI_DENSENET, NEARER_CHANCE, PAPER_TABLE10,
                                                       PAPER_TABLE2_MAXNORM)


def curves(cnn_history: pd.DataFrame, mlp_history: pd.DataFrame) -> pd.DataFrame:
    """The stored table ``curves``: every model's learning curve, one row per model and evaluation (part, arm,
    seed, the model's index in its part's group, epoch, validation error and loss, training error)."""
    cols = ["seed", "arm", "model", "epoch", "val_error", "val_loss", "train_error"]
    return pd.concat([h[cols].assign(part=part) for part, h in (("cnn", cnn_history), ("mlp", mlp_history))],
                     ignore_index=True)[["part", *cols]]


def merge_blocks(cfg: InteractionsConfig, blocks: list[dict]) -> dict:
    """One record of the seed blocks of a run in blocks (:func:`~dropnotes.experiments.store.run_in_blocks`; block s
    is the run with ``seed=s, n_seeds=1``, so it draws its own training subset and validation split, and every block
    tests on the same test images): the blocks' tables together, each learning curve's ``model`` renumbered to its
    row in the merged part table, judged again over all their seeds; the speed as the blocks' mean (each measured in
    its own block)."""
    t = [b["tables"] for b in blocks]
    tables = {k: pd.concat([x[k] for x in t], ignore_index=True) for k in ("cnn", "reestimated", "mlp", "timing")}
    tables["shift_check"] = t[0]["shift_check"]  # the same simulation in every block
    parts, offset = [], {"cnn": 0, "mlp": 0}
    for x in t:
        c = x["curves"].copy()
        for part in offset:
            c.loc[c.part == part, "model"] += offset[part]
            offset[part] += len(x[part])
        parts.append(c)
    tables["curves"] = pd.concat(parts, ignore_index=True)
    wrong = pd.concat([x["wrong"] for x in t], ignore_index=True)
    tables["wrong"] = pd.concat([wrong[wrong.part == part] for part in ("cnn", "mlp")], ignore_index=True)
    tables["grid"] = grid(tables["mlp"])
    rec = {**tables, **{f"{part}_wrong": np.stack([unpack_wrong(w) for w in wrong[wrong.part == part].packed])
                        for part in ("cnn", "mlp")}}
    tables["verdicts"] = judged(CHAPTER, cfg, verdicts(rec, cfg))
    metrics = [b["metrics"] for b in blocks]
    speed = {k: float(np.mean([m[k] for m in metrics])) for k in metrics[0] if k.startswith("mlp_")}
    return {"metrics": {**speed, "precision": metrics[0].get("precision"), "bn2_shift_before_bn": float(
                tables["cnn"].loc[tables["cnn"].arm == "before-bn (pixel)", "bn2 shift"].mean())},
            "tables": tables, "verdicts": tables["verdicts"]}


def grid(mlp_runs: pd.DataFrame, value: str = "test_error") -> pd.DataFrame:
    """Mean error (%) of the plain-dropout MLPs, rows = dropout rate, columns = weight decay; ``value``:
    ``"test_error"`` (the table shown) or ``"val_error"`` (what chooses the cells compared)."""
    sel = mlp_runs[mlp_runs.kind.isin(["none", "dropout"]) & (mlp_runs.lr == mlp_runs.lr.min())
                   & (mlp_runs.max_norm == 0)]
    return (100 * sel.pivot_table(index="p", columns="weight_decay", values=value, aggfunc="mean")).round(2)


def _select(runs: pd.DataFrame, **where) -> pd.DataFrame:
    sel = runs
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return sel.sort_values("seed")


def _err(runs: pd.DataFrame, **where) -> list[float]:
    return _select(runs, **where).test_error.tolist()


def trained_below(plain_errors) -> float:
    """The test error above which a net of a part counts as *not trained*: ``NEARER_CHANCE`` of the way, on a log
    scale, from the median error of the part's plain nets (those whose loss stayed finite) to chance, i.e. the
    geometric mean of the two errors. A part whose plain nets all failed has no yardstick: 0 (no net trained)."""
    plain = np.asarray([e for e in plain_errors if np.isfinite(e)], dtype=float)
    if not len(plain):
        return 0.0
    ref = min(float(np.median(plain)), CHANCE_ERROR)
    return float(np.exp((1 - NEARER_CHANCE) * np.log(max(ref, 1e-6)) + NEARER_CHANCE * np.log(CHANCE_ERROR)))


def untrained(runs: pd.DataFrame, below: float) -> pd.Series:
    """Which nets of ``runs`` did not train: their loss stopped being finite (``died_at_step`` >= 0), they have no
    valid epoch (test error NaN), or their test error is at or above ``below`` (:func:`trained_below`)."""
    err = runs.test_error.astype(float)
    return (runs.died_at_step >= 0) | err.isna() | (err >= below)


def not_trained(verdict: str, failed: int, total: int, what: str, below: float) -> str:
    """A rule verdict read again when ``failed`` of the ``total`` nets it rests on did not train: *not trained*,
    whichever sign it read, with the rule's own reading kept in brackets."""
    if failed == 0 or str(verdict).startswith(("not measured", Outcome.NOT_TRAINED.value)):
        return verdict
    return (f"{Outcome.NOT_TRAINED.value} ({failed} of {total} {what} diverged or erred at or above "
            f"{100 * below:.1f} % on the test set, nearer chance ({100 * CHANCE_ERROR:.0f} %) than the plain nets; "
            f"it read: {verdict})")


CLAIMS = {  # claim -> (source, paper, setting, part, test): the rows after the BN shift, in order
    "dropout after the last BN (or re-estimated BN statistics) beats dropout before BN":
        ("Li et al. 2019", f"DenseNet CIFAR-100 {LI_DENSENET[1]} % with dropout before BN vs {LI_DENSENET[0]} % without "
                           "(arXiv v1, Fig. 1)", None, "cnn", "direction"),
    "channel-wise (spatial) dropout regularises conv features better than per-pixel dropout":
        ("Tompson et al. 2015", "qualitative (FLIC pose estimation)", "Tompson et al. 2015", "cnn", "direction"),
    "DropConnect (one mask per mini-batch, mean-weight inference) lowers the test error of an MLP without dropout":
        ("our test (after Wan et al. 2013, who draw a mask per example and infer by moment matching)",
         "Wan et al.'s own DropConnect, MNIST 2 x 800: no-drop > DropConnect in error (Table 3)",
         "Wan et al. 2013", "mlp", "direction"),
    "DropConnect (one mask per mini-batch, mean-weight inference) regularises like dropout":
        ("our test (after Wan et al. 2013, who draw a mask per example and infer by moment matching)",
         "Wan et al.'s own DropConnect, MNIST 2 x 800: dropout > DropConnect in error (Table 3)",
         "Wan et al. 2013", "mlp", "equivalence"),
    "Gaussian dropout with variance p/(1-p) performs like Bernoulli dropout":
        ("Srivastava et al. 2014 (Section 10)", PAPER_TABLE10, "Srivastava et al. 2014", "mlp", "equivalence"),
    "max-norm lowers the test error of a dropout net (the same net and learning rate without it)":
        ("Srivastava et al. 2014 (Table 2; §5.1)",
         f"dropout ReLU 3 x 1024: {PAPER_TABLE2_MAXNORM[0]:.2f} % without max-norm, {PAPER_TABLE2_MAXNORM[1]:.2f} % "
         "with it (Table 2; secondary sources)", "Srivastava et al. 2014", "mlp", "direction"),
    "dropout and weight decay are complementary":
        ("Srivastava et al. 2014 (Table 9)", "dropout + L2 1.25 % < L2 alone 1.62 %", "Srivastava et al. 2014", "mlp",
         "direction"),
}


def _arm_plateau(rec: dict, part: str, index) -> object:
    """The plateau test (:func:`dropnotes.stats.plateau`) of the nets ``index`` of ``part`` (one arm, its seeds), on
    validation error in percent at every evaluation, or the reason it cannot run (a text)."""
    curves = rec.get("curves")
    if curves is None or "val_error" not in curves:
        return "learning curves not stored"
    arm = curves[(curves.part == part) & curves.model.isin(list(index))].sort_values("epoch")
    per_seed = [100 * g.val_error.to_numpy() for _, g in arm.groupby("model")]
    if len(per_seed) < 2 or min(map(len, per_seed), default=0) < 4:
        return f"the plateau test needs 2 seeds and 4 evaluation points per arm; this arm has {len(per_seed)}"
    return plateau(per_seed, 100 * DELTA)


def _row(claim: str, ours: str, rec: dict, part: str, base, new, equal: bool = False) -> Verdict:
    """One comparison row of :data:`CLAIMS`: ``base`` and ``new`` the nets' indices in ``part``'s table (one per
    seed, in seed order), compared image by image on the same test images over seeds and gated by each arm's plateau
    test; an equality by TOST against :data:`EQUAL_MARGIN`."""
    source, paper, setting, _, test = CLAIMS[claim]
    fields = dict(claim=claim, source=source, paper=paper, setting=setting, test=test, unit="pp of test error",
                  kind="our test" if source.startswith("our test") else "paper claim")
    wrong = rec.get(f"{part}_wrong")
    if wrong is None:
        return Verdict(**fields, ours=ours, verdict="not judged (per-example test mistakes not stored)")
    pb, pn = _arm_plateau(rec, part, base), _arm_plateau(rec, part, new)
    if isinstance(pb, str) or isinstance(pn, str):
        return Verdict(**fields, ours=ours, verdict=f"not judged ({pb if isinstance(pb, str) else pn})")
    r = compare_examples([wrong[i].astype(float) for i in base], [wrong[i].astype(float) for i in new])
    margin = 100 * EQUAL_MARGIN if equal else 100 * DELTA
    text = r.equivalent(EQUAL_MARGIN, shown=f"{100 * EQUAL_MARGIN:g} pt", scale=100) if equal else r.verdict()
    why = blocks(100 * r.diff, pb, pn, test, margin if equal else None)
    verdict = f"not converged ({why}; it read: {text})" if why else text
    decide = why or (r.decide() if text.startswith("inconclusive") else None)
    return Verdict(**fields, ours=f"{ours}; difference {100 * r.diff:+.2f} pp, 95 % interval {100 * r.low:+.2f} to "
                                  f"{100 * r.high:+.2f} (paired over the same test images and seeds)",
                   verdict=verdict, effect=100 * r.diff, low=100 * r.low, high=100 * r.high, margin=margin,
                   decide=decide)


def verdicts(rec: dict, cfg: InteractionsConfig) -> pd.DataFrame:
    """The closing table, from the measurements, with the rules stated in the chapter. Every comparison pairs the
    nets on the same test images over seeds (:func:`dropnotes.stats.compare_examples`) and is gated by each arm's
    plateau test (an arm still improving blocks it only when its late gain could close the gap); a row resting on a
    net that did not train (:func:`untrained`) reads *not trained*, whichever sign. The BN variance shift is a
    mechanism measurement: no convergence gate. A record without what a row reads reads *not judged*."""
    cnn, mlp_runs = rec["cnn"], rec["mlp"]
    cnn_below = trained_below(cnn[cnn.arm == "none"].test_error)
    rows, rests_on = [], []  # per row: (part, the index of every net it rests on)
    shift = cnn.groupby("arm")["bn2 shift"].mean()
    chk = rec["shift_check"]
    rel = float((chk["train var (measured)"] / chk["train var (predicted)"] - 1).abs().max())
    ok = shift["before-bn (pixel)"] >= 1.3 and shift["none"] <= 1.1 and shift["after-bn (pixel)"] <= 1.1 and rel < 0.1
    rows.append(Verdict(claim="dropout before batch norm shifts the variance BN sees between training and test",
                 source="Li et al. 2019", paper="shift ratio up to about 3 per BN layer (DenseNet, CIFAR-100)",
                 ours=(f"median per-channel ratio at BN2: before-BN {shift['before-bn (pixel)']:.2f}, after-BN "
                          f"{shift['after-bn (pixel)']:.2f}, none {shift['none']:.2f}; Gaussian before-BN "
                          f"{shift['before-bn (gaussian)']:.2f}; formula within {100 * rel:.1f} %"),
                 verdict="reproduced" if ok else "not reproduced"))
    rests_on.append(("cnn", cnn.index))
    claims = list(CLAIMS)
    sel = lambda arm: _select(cnn, arm=arm).index  # noqa: E731
    before, after, spatial = sel("before-bn (pixel)"), sel("after-bn (pixel)"), sel("after-bn (spatial)")
    mean = lambda idx, runs=cnn: 100 * float(runs.loc[idx].test_error.mean())  # noqa: E731
    re = 100 * float(rec["reestimated"].test_error.mean())
    rows.append(_row(claims[0], f"error before-BN {mean(before):.2f} %, after-BN {mean(after):.2f} %; BN re-estimated "
                                f"{re:.2f} %", rec, "cnn", before, after))
    rests_on.append(("cnn", before.union(after)))
    gap = cnn.assign(gap=cnn.test_error - cnn.train_error).groupby("arm").gap.mean()
    rows.append(_row(claims[1], f"error per-pixel {mean(after):.2f} %, spatial {mean(spatial):.2f} %; train-test gap "
                                f"{100 * gap['after-bn (pixel)']:.1f} vs {100 * gap['after-bn (spatial)']:.1f} pt",
                     rec, "cnn", after, spatial))
    rests_on.append(("cnn", after.union(spatial)))
    mlp_rows = claims[2:]
    if "arm" not in mlp_runs or "max_norm" not in mlp_runs or rec.get("mlp_wrong") is None:
        for claim in mlp_rows:  # a record of an older protocol: other MLP arms, no per-example mistakes
            source, paper, setting, _, test = CLAIMS[claim]
            rows.append(Verdict(claim=claim, source=source, paper=paper, setting=setting, test=test, ours="",
                                kind="our test" if source.startswith("our test") else "paper claim",
                                verdict="not judged (per-example test mistakes and protocol 6's MLP arms not stored)"))
            rests_on.append(("mlp", mlp_runs.index[:0]))
        return _trained_gate(verdict_table(rows), rests_on, cnn, cnn_below, mlp_runs, 0.0)
    plain_mlp = mlp_runs[(mlp_runs.kind == "none") & (mlp_runs.weight_decay == 0) & (mlp_runs.max_norm == 0)]
    mlp_below = trained_below(plain_mlp[plain_mlp.lr == mlp_runs.lr.min()].test_error)
    base_lr = mlp_runs.lr.min()
    at_base = mlp_runs[(mlp_runs.lr == base_lr) & (mlp_runs.max_norm == 0)]  # no max-norm: every arm but its own
    none_sel = _select(at_base, kind="none", weight_decay=0.0).index
    drop_sel = _select(at_base, kind="dropout", p=0.5, weight_decay=0.0).index
    dc_sel, gauss_sel = _select(at_base, kind="dropconnect").index, _select(at_base, kind="gaussian").index
    m = lambda idx: mean(idx, mlp_runs)  # noqa: E731
    dc_text = (f"error none {m(none_sel):.2f} %, dropout {m(drop_sel):.2f} %, DropConnect (one mask per batch, "
               f"mean-weight inference) {m(dc_sel):.2f} %")
    rows.append(_row(mlp_rows[0], dc_text, rec, "mlp", none_sel, dc_sel))
    rests_on.append(("mlp", none_sel.union(dc_sel)))
    rows.append(_row(mlp_rows[1], f"{dc_text}; equivalence margin ±{100 * EQUAL_MARGIN:g} pt (TOST, 5 %)", rec, "mlp",
                     drop_sel, dc_sel, equal=True))
    rests_on.append(("mlp", drop_sel.union(dc_sel)))
    rows.append(_row(mlp_rows[2], f"Bernoulli {m(drop_sel):.2f} %, Gaussian {m(gauss_sel):.2f} %; equivalence margin "
                                  f"±{100 * EQUAL_MARGIN:g} pt (TOST, 5 %)", rec, "mlp", drop_sel, gauss_sel, equal=True))
    rests_on.append(("mlp", drop_sel.union(gauss_sel)))
    mn_sel = _select(mlp_runs[(mlp_runs.lr == base_lr) & (mlp_runs.max_norm > 0)], kind="dropout", p=0.5,
                     weight_decay=0.0).index
    rows.append(_row(mlp_rows[3], f"lr {base_lr:g}: dropout {m(drop_sel):.2f} %, dropout + max-norm {cfg.max_norm:g} "
                                  f"{m(mn_sel):.2f} %", rec, "mlp", drop_sel, mn_sel))
    rests_on.append(("mlp", drop_sel.union(mn_sel)))
    g, gv = rec["grid"], grid(mlp_runs, "val_error")  # the cells compared are chosen on validation error
    best_both = gv.loc[gv.index > 0, gv.columns > 0].stack().idxmin()
    best_p = gv.loc[gv.index > 0, 0.0].idxmin()
    best_wd = gv.loc[0.0, gv.columns > 0].idxmin()
    cells = lambda p, wd: _select(at_base[at_base.kind.isin(["none", "dropout"])], p=p, weight_decay=wd).index  # noqa: E731
    single = min([(best_p, 0.0), (0.0, best_wd)], key=lambda k: gv.loc[k])
    rows.append(_row(mlp_rows[4], f"best on validation with both: p={best_both[0]:g}, wd={best_both[1]:g} "
                                  f"{g.loc[best_both]:.2f} %; with one: p={single[0]:g}, wd={single[1]:g} "
                                  f"{m(cells(*single)):.2f} %", rec, "mlp", cells(*single), cells(*best_both)))
    rests_on.append(("mlp", cells(*single).union(cells(*best_both))))
    return _trained_gate(verdict_table(rows), rests_on, cnn, cnn_below, mlp_runs, mlp_below)


def _trained_gate(out: pd.DataFrame, rests_on: list, cnn, cnn_below, mlp_runs, mlp_below) -> pd.DataFrame:
    """A net that did not train is never evidence: the row reads "not trained", whichever sign, converged or not."""
    raw = out.verdict.copy()
    for i, (part, idx) in enumerate(rests_on):
        runs, below = (cnn, cnn_below) if part == "cnn" else (mlp_runs, mlp_below)
        failed = int(untrained(runs.loc[idx], below).sum())
        if failed and not str(raw[i]).startswith("not judged"):
            out.loc[i, "verdict"] = not_trained(raw[i], failed, len(idx), f"{part.upper()}s", below)
    return out


def rejudge(record: dict) -> pd.DataFrame:
    """The verdicts of a stored run, computed again from its stored tables with the current rules; what the record
    lacks (a protocol-5 record: per-example mistakes, curves, protocol 6's MLP arms) reads *not judged*."""
    cfg = config_of(InteractionsConfig, record)
    t = record["tables"]
    rec = {k: t.get(k) for k in ("shift_check", "cnn", "reestimated", "mlp", "grid", "curves")}
    wrong = t.get("wrong")
    for part in ("cnn", "mlp"):
        rec[f"{part}_wrong"] = (None if wrong is None else
                                np.stack([unpack_wrong(w) for w in wrong[wrong.part == part].packed]))
    return judged(CHAPTER, cfg, verdicts(rec, cfg))
