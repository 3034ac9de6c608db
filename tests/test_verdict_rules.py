"""Verdict rules on synthetic records, in seconds: every rule's outcomes (reproduced, the opposite,
inconclusive) from inputs built to produce them, without training a model."""

import math

import numpy as np
import pandas as pd
import pytest

from dropnotes import stats
from dropnotes.results import pack_wrong
from dropnotes.experiments import ensembles as ens
from dropnotes.experiments import judging

# --------------------------------------------------------------------------------------------- stats


def _wrong(rng, n, rate):
    return (rng.random(n) < rate).astype(float)


def test_paired_mistakes_outcomes():
    rng = np.random.default_rng(0)
    base = [_wrong(rng, 10_000, 0.06) for _ in range(3)]
    fixed = [np.where(rng.random(10_000) < 0.3, 0.0, b) for b in base]  # fixes 30 % of base's errors
    assert stats.compare_examples(base, fixed).verdict().startswith("reproduced (direction")
    assert stats.compare_examples(fixed, base).verdict().startswith("not reproduced (the opposite")
    redraw = [_wrong(rng, 10_000, 0.06) for _ in base]  # another net with the same error rate: no real difference
    assert stats.compare_examples(base, redraw).verdict().startswith("inconclusive")
    # three seeds that disagree (much better, the same, worse): the seeds' spread keeps it undecided
    new = [np.where(rng.random(10_000) < 0.9, 0.0, base[0]), base[1].copy(),
           np.where(rng.random(10_000) < 0.03, 1.0, base[2])]
    assert stats.compare_examples(base, new).verdict().startswith("inconclusive")


def test_paired_bootstrap_auroc():
    rng = np.random.default_rng(1)
    s_in, s_out = rng.normal(0, 1, 500), rng.normal(1, 1, 400)
    d, se = stats.paired_bootstrap_auroc(s_in, s_out, s_in, s_out, n_boot=200)
    assert d == 0.0 and se == 0.0  # the same score: no difference, and none in any resample
    noisy_in, noisy_out = s_in + rng.normal(0, 2, 500), s_out + rng.normal(0, 2, 400)
    d, se = stats.paired_bootstrap_auroc(s_in, s_out, noisy_in, noisy_out, n_boot=200)
    assert d > 4 * se > 0  # the clean score separates better, by many SE
    assert stats.paired_bootstrap_auroc(s_in, s_out, noisy_in, noisy_out, n_boot=200) == (d, se)  # fixed seed
    with pytest.raises(ValueError, match="same examples"):
        stats.paired_bootstrap_auroc(s_in, s_out, s_in[:10], s_out)


def test_over_seeds_and_shortfall():
    assert stats.over_seeds([0.1, 0.12, 0.11]).verdict().startswith("reproduced (direction")
    assert stats.over_seeds([-0.1, -0.12, -0.11]).verdict().startswith("not reproduced (the opposite")
    assert stats.over_seeds([0.3, -0.2, 0.2]).verdict().startswith("inconclusive")  # seed noise counts
    assert stats.shortfall({"epochs": 300, "hidden": (1024,) * 3}, {"epochs": 300, "hidden": (1024,) * 3}) == []
    assert stats.shortfall({"epochs": 40, "hidden": (512, 512)}, {"epochs": 300, "hidden": (1024,) * 3}) == \
        ["epochs 40 of 300", "hidden 512 x 512 instead of 1024 x 1024 x 1024"]
    assert stats.shortfall({"epochs": 400}, {"epochs": 300}) == []  # longer than the paper is not a cut


# --------------------------------------------------------------------------------- chapter 2's rules


def test_chapter2_rule_functions():
    up, down, unsure = "reproduced (direction", "not reproduced (the opposite", "inconclusive (within 2 SE)"
    eq, differ, eq_unsure = ("reproduced (equivalent within ±0.2 pt)", "not reproduced (they differ by more than 0.2 pt)",
                             "inconclusive (equivalence within ±0.2 pt not shown)")
    assert ens.rule_level(up, 1.10, []) == up
    assert ens.rule_level(up, 2.00, []).startswith("partly")
    assert ens.rule_level(up, 2.00, ["epochs 40 of 100"]) == up
    assert ens.rule_level(down, 2.00, []) == down
    assert ens.rule_mc_matches(up, eq) == "reproduced"
    assert ens.rule_mc_matches(unsure, eq).startswith("partly")
    assert ens.rule_mc_matches(up, differ) == differ and ens.rule_mc_matches(up, eq_unsure) == eq_unsure
    assert ens.rule_ordering("reproduced", "reproduced", up) == "reproduced"
    assert ens.rule_ordering("reproduced", unsure, up).startswith("inconclusive")
    assert ens.rule_ordering("reproduced", "reproduced", unsure).startswith("partly (the ordering holds")
    assert ens.rule_ordering("not reproduced", "not reproduced", up) == "not reproduced"
    assert ens.rule_ordering("reproduced", "not reproduced (x)", up) == "not reproduced (in part)"
    assert ens.rule_rotation(up, up) == "reproduced"
    assert ens.rule_rotation(up, unsure).startswith("partly") and ens.rule_rotation(up, down).startswith("partly")
    assert ens.rule_rotation(down, up).startswith("not reproduced") and ens.rule_rotation(unsure, up) == unsure
    assert ens.rule_ood(0.9, up) == "reproduced"
    assert ens.rule_ood(0.9, down).startswith("not reproduced (the deterministic")
    assert ens.rule_ood(0.6, up).startswith("not reproduced (AUROC below")
    assert ens.rule_ood(0.9, unsure).startswith("inconclusive")


def _chapter2_record(effect: float, seed: int = 0, n: int = 10_000, seeds: int = 3) -> dict:
    """A synthetic chapter-2 record. ``effect`` > 0: every claim holds clearly; < 0: every comparison points
    the other way; 0: the arms are the same up to noise."""
    rng = np.random.default_rng(seed)
    quality, wrong, calibration, rot, ood = [], [], [], [], []
    for s in range(seeds):
        single = 0.07
        models = {"single net": single, "single net + temperature": single, "ensemble": single - 0.02 * effect,
                  "dropout, weight scaling": single - 0.02 * effect,
                  "dropout, weight scaling + temperature": single - 0.02 * effect, "dropout, MC (20)": single - 0.02 * effect}
        nll = {"single net": 0.30, "single net + temperature": 0.25, "ensemble": 0.25 - 0.10 * effect,
               "dropout, weight scaling": 0.25, "dropout, weight scaling + temperature": 0.25,
               "dropout, MC (20)": 0.25 - 0.05 * effect}
        for m, e in models.items():
            jitter = rng.normal(0, 0.002)  # seed-to-seed noise in NLL, so the paired tests over seeds have an SE
            quality.append({"seed": s, "model": m, "member": 0, "error": e + rng.normal(0, 1e-4), "nll": nll[m] + jitter,
                            "ece": (nll[m] + jitter) / 10, "brier": nll[m] / 3, "temperature": 1.0})
        ws = _wrong(rng, n, 0.05)
        k1 = np.where(rng.random(n) < 0.02 * max(effect, 0), 1.0, ws)  # one sample: worse when effect > 0
        k50 = np.where(rng.random(n) < 0.05 * abs(effect), 1.0, ws) if effect < 0 else ws.copy()
        wrong.append({"weight scaling": ws, 1: k1, 50: k50})
        base = rng.gamma(2.0, 0.12, n)
        calibration.append({"single net + temperature": base, "dropout, MC": base - 0.05 * effect + rng.normal(0, 0.01, n)})
        rot.append({"seed": s, "digits": 100, "rise_mc": 0.5 * effect + rng.normal(0, 0.01), "rise_mc_se": 0.02,
                    "rise_deterministic": 0.2 * effect, "diff": 0.3 * effect + rng.normal(0, 0.01), "diff_se": 0.02})
        for shift in ("fashion-mnist", "inverted mnist"):
            ood.append({"seed": s, "shift": shift, "auroc_mc": 0.85 + 0.05 * effect, "auroc_deterministic": 0.85,
                        "diff": 0.05 * effect + rng.normal(0, 0.002), "se": 0.01})
    q = pd.DataFrame(quality)
    # the trained nets: two plain members and the dropout net per seed, their test mistakes (the members at 7 %, the
    # dropout net 2 pt lower when effect > 0) and flat validation curves (every arm plateaued)
    packed, curves = [], []
    for s in range(seeds):
        for arm, e in (("member 0", 0.07), ("member 1", 0.07), ("dropout net", 0.07 - 0.02 * effect)):
            packed.append({"arm": arm, "seed": s, "packed": pack_wrong(_wrong(rng, n, e))})
            curves += [{"seed": s, "arm": arm, "epoch": k, "val_error": e + rng.normal(0, 1e-5)} for k in range(1, 13)]
    reg = pd.DataFrame([{"seed": s, "data": 0.05, "gap": 0.05 * np.exp(effect + rng.normal(0, 0.05)),
                         "outside": 0.05 * np.exp(1.5 * effect + rng.normal(0, 0.05))} for s in range(seeds)])
    return {"quality": q, "summary": ens.summarize_quality(q), "wrong": wrong, "calibration": calibration,
            "wrong_packed": pd.DataFrame(packed), "curves": pd.DataFrame(curves),
            "rotation_pairs": pd.DataFrame(rot), "ood_pairs": pd.DataFrame(ood), "regression_seeds": reg}


@pytest.mark.parametrize("effect, expected", [
    (1.0, ["reproduced (direction", "reproduced", "reproduced", "reproduced (direction", "reproduced", "reproduced",
           "reproduced", "reproduced"]),
    (-1.0, ["not reproduced", "not reproduced", "not reproduced", "not reproduced", "not reproduced",
            "not reproduced", "not reproduced", "not reproduced"]),
    (0.0, ["inconclusive", "partly", "inconclusive", "inconclusive", "inconclusive", "inconclusive",
           "inconclusive", "inconclusive"]),
])
def test_chapter2_verdicts_on_synthetic_records(effect, expected):
    cfg = ens.configure("quick", device="cpu")
    table = ens.verdicts(_chapter2_record(effect), cfg)
    assert len(table) == len(expected)
    for got, want in zip(table.verdict, expected):
        assert got.startswith(want), (got, want)


def test_chapter2_ordering_needs_paired_seed_level_evidence():
    """The case protocol 2 missed: NLL and ECE means in the claimed order, but within the seeds' noise, read
    "reproduced" by raw means. Paired over >= 3 seeds they read inconclusive; with 2 seeds nothing is claimed."""
    rng = np.random.default_rng(0)
    rows = [{"seed": s, "model": m, "member": 0, "nll": v + rng.normal(0, 0.02), "ece": v / 10 + rng.normal(0, 0.002)}
            for s in range(3) for m, v in (("ensemble", 0.300), ("dropout, MC (20)", 0.301), ("single net", 0.302))]
    q = pd.DataFrame(rows)
    means = q.groupby("model").nll.mean()
    assert ens.ordering_tests(q, "nll")[2].startswith("inconclusive")
    clear = q.assign(nll=q.model.map({"ensemble": 0.2, "dropout, MC (20)": 0.25, "single net": 0.3}) +
                     rng.normal(0, 0.001, len(q)))
    assert ens.ordering_tests(clear, "nll")[2] == "reproduced"
    assert ens.ordering_tests(clear[clear.seed < 2], "nll")[2].startswith("inconclusive (2 seeds")
    assert means.notna().all()


def test_chapter2_regression_gap_over_seeds_with_an_se():
    """The case protocol 2 missed: one seed's std ratio, no SE. Now the log ratio over >= 3 seeds is t-tested."""
    one = pd.DataFrame([{"seed": 0, "data": 0.05, "gap": 0.2, "outside": 0.3}])
    assert ens.rule_regression(one)[2].startswith("inconclusive (1 seeds")
    noisy = pd.DataFrame([{"seed": s, "data": 0.05, "gap": 0.05 * g, "outside": 1.0} for s, g in enumerate((3.0, 0.5, 1.6))])
    assert ens.rule_regression(noisy)[2].startswith("inconclusive")  # a mean ratio above 1, within seed noise
    clear = pd.DataFrame([{"seed": s, "data": 0.05, "gap": 0.05 * g, "outside": 1.0} for s, g in enumerate((3.0, 3.2, 2.9))])
    ratio, se, v = ens.rule_regression(clear)
    assert v.startswith("reproduced (direction") and ratio == pytest.approx(3.03, abs=0.02) and se > 0


def test_chapter2_level_is_judged_only_at_the_papers_size():
    rec = _chapter2_record(1.0)
    at_size = ens.configure("quick", device="cpu", train_size=50000)
    at_size = type(at_size)(**{**at_size.__dict__, "hidden": (1024, 1024, 1024),
                               "epochs": -(-ens.PAPER_SETTINGS["Table 2"]["updates"] // (50000 // at_size.batch_size))})
    # 5 % error at the paper's size is far from its 1.06 %: partly; the same numbers from a smaller run: direction only
    assert ens.verdicts(rec, at_size).verdict.iloc[0].startswith("partly: direction reproduced, level")
    assert ens.verdicts(rec, ens.configure("quick", device="cpu")).verdict.iloc[0].startswith("reproduced (direction")


# --------------------------------------------------------------------------------- chapter 1's rules


def _chapter1_record(errors: dict[float, float], val_offset: float = 0.0, seeds: int = 3, late: float = 0.0,
                     n_test: int = 10_000, epochs: int = 20):
    """Synthetic finals and curves of chapter 1: per rate, ``seeds`` models whose test mistakes fall on a shared set
    of hard images (so the pairs matter) plus their own; curves flat at the final validation error, or still falling
    by ``late`` percentage points a quarter."""
    from dropnotes import results

    rng = np.random.default_rng(0)
    hard = rng.random(n_test) < 0.005
    rows, curves = [], []
    for p, e in errors.items():
        for s in range(seeds):
            wrong = hard | (rng.random(n_test) < max(e - 0.005, 0) / 0.995)
            val = e + val_offset + rng.normal(0, 1e-4)
            rows.append({"p": p, "seed": s, "best_epoch": epochs, "val_error": val, "train_error": 0.0,
                         "test_error": wrong.mean(), "died_at_step": -1, "wrong": results.pack_wrong(wrong)})
            for k in range(epochs):
                slope = late / 100 / (epochs / 4)
                curves.append({"p": p, "seed": s, "epoch": k + 1,
                               "val_error": val + slope * (epochs - 1 - k) + rng.normal(0, 2e-5)})
    return pd.DataFrame(rows), pd.DataFrame(curves)


def _ch1(finals, curves):
    from dropnotes.experiments import mechanics as mech

    return mech.verdicts(mech.summarize(finals), finals, curves)


@pytest.mark.parametrize("errors, first", [
    ({0.0: 0.020, 0.2: 0.016, 0.5: 0.0125}, "reproduced (direction"),
    ({0.0: 0.010, 0.2: 0.016, 0.5: 0.0200}, "not reproduced (the opposite"),
    ({0.0: 0.0150, 0.2: 0.0152, 0.5: 0.0151}, "inconclusive"),
])
def test_chapter1_verdicts_on_synthetic_records(errors, first):
    finals, curves = _chapter1_record(errors)
    table = _ch1(finals, curves)
    assert table.verdict.iloc[0].startswith(first), table.verdict.iloc[0]
    assert table.low.iloc[0] < table.effect.iloc[0] < table.high.iloc[0]
    if first == "inconclusive":
        assert "seeds would reach" in table.decide.iloc[0] or "more test examples" in table.decide.iloc[0]


@pytest.mark.parametrize("errors, expected", [
    ((1.25, 1.26, 1.24), "reproduced"),  # tight seeds at the paper's value
    ((1.50, 1.51, 1.49), "not reproduced"),  # protocol 2 passed 1.50 % as reaching 1.25 %
    ((1.10, 1.40, 1.25), "inconclusive"),  # spread too wide to tell at 3 seeds
])
def test_chapter1_level_rule_is_an_interval_against_a_declared_margin(errors, expected):
    finals, curves = _chapter1_record({0.0: 0.020, 0.2: 0.016, 0.5: 0.0125})
    finals.loc[finals.p == 0.5, "test_error"] = [e / 100 for e in errors]
    row = _ch1(finals, curves).iloc[1]
    assert row.verdict.startswith(expected) and not row.verdict.startswith("not reproduced" if expected == "reproduced"
                                                                           else "-"), row.verdict
    if expected == "inconclusive":
        assert "seeds would decide it" in row.decide


def test_chapter1_a_late_arm_blocks_only_the_rows_it_could_change():
    # the worse arm (p = 0) still falling by 1 pp a quarter: it could close the gap, so the direction reads
    # not converged; the level claim rests on p = 0.5 alone, which has plateaued
    finals, curves = _chapter1_record({0.0: 0.020, 0.2: 0.016, 0.5: 0.0125})
    late0, _ = _chapter1_record({0.0: 0.020}, late=1.0)
    _, late_curves = _chapter1_record({0.0: 0.020}, late=1.0)
    curves = pd.concat([curves[curves.p != 0.0], late_curves], ignore_index=True)
    table = _ch1(finals, curves)
    assert table.verdict.iloc[0].startswith("not converged") and "close the gap" in table.verdict.iloc[0]
    assert not table.verdict.iloc[1].startswith("not converged")
    # the better arm still improving only widens the gap: no block
    finals, curves = _chapter1_record({0.0: 0.020, 0.2: 0.016, 0.5: 0.0125})
    _, late5 = _chapter1_record({0.5: 0.0125}, late=1.0)
    curves = pd.concat([curves[curves.p != 0.5], late5], ignore_index=True)
    table = _ch1(finals, curves)
    assert table.verdict.iloc[0].startswith("reproduced (direction")
    assert table.verdict.iloc[1].startswith("not converged")  # the level rests on the late arm itself


def test_chapter1_record_without_per_example_correctness_is_not_judged():
    finals, curves = _chapter1_record({0.0: 0.020, 0.2: 0.016, 0.5: 0.0125})
    table = _ch1(finals.drop(columns="wrong"), curves)
    assert table.verdict.iloc[0].startswith("not judged (per-example test correctness")
    table = _ch1(finals, None)
    assert table.verdict.iloc[0].startswith("not judged (learning curves")
    assert table.verdict.iloc[1].startswith("not judged")


@pytest.mark.parametrize("profile", ["quick", "laptop"])
def test_chapter1_scale_reads_both_signs_alike(profile):
    """The same synthetic record at both signs, judged at a run below the paper's setting: the direction claim
    reads "direction at reduced scale" and "opposite at reduced scale", the level claim "not at paper scale"
    either way (it never confirms or refutes the paper's number). At the paper's setting the rule's words stand."""
    from dropnotes.experiments import mechanics as mech

    cfg = mech.configure(profile, device="cpu")
    out = {}
    for sign, errors in (("+", {0.0: 0.020, 0.2: 0.016, 0.5: 0.0120}), ("-", {0.0: 0.012, 0.2: 0.016, 0.5: 0.0200})):
        out[sign] = judging.judged("mechanics", cfg, _ch1(*_chapter1_record(errors)))
    assert list(out["+"].outcome) == ["direction at reduced scale", "not at paper scale"]
    assert list(out["-"].outcome) == ["opposite at reduced scale", "not at paper scale"]
    assert (out["+"].scale == out["-"].scale).all() and "updates" in out["+"].scale.iloc[0]
    epochs = -(-mech.PAPER_UPDATES // (50000 // 128))  # the full profile's batches: a million updates
    at_paper = mech.configure("full", device="cpu", epochs=epochs)
    record = _chapter1_record({0.0: 0.020, 0.2: 0.016, 0.5: 0.0125})
    t = judging.judged("mechanics", at_paper, _ch1(*record))
    assert list(t.outcome) == ["reproduced", "reproduced"] and (t.scale == "paper scale").all()
    two = type(at_paper)(**{**at_paper.__dict__, "n_seeds": 2})  # too few seeds: a direction at most
    t = judging.judged("mechanics", two, _ch1(*record))
    assert list(t.outcome) == ["direction at reduced scale", "not at paper scale"] and "2 seeds" in t.scale.iloc[0]


def test_chapter1_rate_is_chosen_on_validation_not_test():
    finals, curves = _chapter1_record({0.0: 0.020, 0.2: 0.012, 0.5: 0.016})
    finals.loc[finals.p == 0.2, "val_error"] = 0.030  # p = 0.2 is best on test, but worst on validation
    assert "p=0.5" in _ch1(finals, curves).ours.iloc[0]


# --------------------------------------------------------------------------------- chapter 5's rules


def test_chapter5_rule_functions():
    from dropnotes.experiments import llm

    up = "reproduced (direction"
    assert llm.rule_resolved(up, {"p=0": 100, "p=0.1": 300}, 50) == up
    assert llm.rule_resolved(up, {"p=0": 50, "p=0.1": 300}, 50).startswith("inconclusive (the minimum of p=0 falls")
    se = 0.01
    assert llm.rule_crossing([(0.30, se), (0.10, se), (0.02, se), (-0.01, se)]) == "reproduced"
    # the factor is t at each slice's Satterthwaite df (from its Paired result): 2 df need a gain beyond 4.30 SE
    assert llm.rule_crossing([(0.03, se, 2.0), (0.0, se, 2.0)]).startswith("inconclusive (no gain")
    assert llm.rule_crossing([(0.03, se, 200.0), (0.0, se, 200.0)]) == "reproduced"
    # the example: +0.28, -0.08, +0.01, -0.08 rises between the 2nd and 3rd slice
    assert llm.rule_crossing([(0.28, se), (-0.08, se), (0.01, se), (-0.08, se)]).startswith("not reproduced (the gain does not")
    assert llm.rule_crossing([(0.28, se), (-0.08, se), (-0.07, se), (-0.08, se)]).startswith("inconclusive (not monotone")
    assert llm.rule_crossing([(0.30, se), (0.20, se), (0.10, se)]).startswith("not reproduced (the gain persists")
    assert llm.rule_crossing([(0.01, se), (0.0, se)]).startswith("inconclusive (no gain")
    assert llm.rule_crossing([(-0.1, se), (0.0, se)]).startswith("not reproduced (dropout hurts")


# --------------------------------------------------------------------------------- chapter 6's rules


def _chapter6_curves(cnn: pd.DataFrame, mlp: pd.DataFrame, late: float = 0.0, epochs: int = 12) -> pd.DataFrame:
    """Every net's validation curve: flat at its final error (plateaued), or still falling by ``late`` (a fraction of
    error) a quarter."""
    rows = []
    for part, runs in (("cnn", cnn), ("mlp", mlp)):
        for i, r in runs.iterrows():
            for e in range(1, epochs + 1):
                rows.append({"part": part, "arm": r.arm, "seed": r.seed, "model": i, "epoch": e,
                             "val_error": r.val_error + late / (epochs / 4) * (epochs - e)})
    return pd.DataFrame(rows)


def _chapter6_record(effect: float, seeds: int = 3, best_epoch: int = 5, late: float = 0.0) -> tuple[dict, object]:
    """A synthetic chapter-6 record: ``effect`` 1 makes every claim hold, -1 reverses every comparison, 0 makes
    the arms equal (each seed's errors jitter by 0.01 pt, far below the binomial SE of 10,000 test images)."""
    from dropnotes.experiments import interactions as inter

    cfg = inter.configure("quick", device="cpu", n_seeds=seeds)
    rng = np.random.default_rng(4)
    jitter = lambda: rng.normal(0, 1e-4)  # noqa: E731
    cnn_err = {"none": 0.14, "before-bn (pixel)": 0.13 + 0.02 * effect, "after-bn (pixel)": 0.13,
               "after-bn (spatial)": 0.13 - 0.02 * effect, "before-bn (gaussian)": 0.13}
    shift = {"none": 1.0, "before-bn (pixel)": 1.0 + max(effect, 0), "after-bn (pixel)": 1.0 + max(-effect, 0),
             "after-bn (spatial)": 1.0, "before-bn (gaussian)": 1.0 + max(effect, 0)}
    cnn, reest = [], []
    for s in range(seeds):
        for placement, noise in inter.CNN_ARMS:
            arm = f"{placement} ({noise})" if placement != "none" else "none"
            cnn.append({"arm": arm, "placement": placement, "noise": noise, "seed": s, "best_epoch": best_epoch,
                        "val_error": cnn_err[arm], "train_error": 0.0, "test_error": cnn_err[arm] + jitter(),
                        "died_at_step": -1, "bn1 shift": 1.0, "bn2 shift": shift[arm]})
        reest.append({"seed": s, "test_error": 0.13 + 0.01 * effect, "bn2 shift": 1.0})
    up, down = max(effect, 0.0), max(-effect, 0.0)
    # 1.5 % error: 3 seeds on 10,000 test images give a TOST interval of about ±0.16 pt, inside the 0.2 pt margin
    mlp_err = {"none": 0.015 + 0.008 * up, "dropout": 0.015 + 0.008 * down, "gaussian": 0.015 + 0.018 * down,
               "dropconnect": 0.015 + 0.006 * down}
    mlp = []
    for s in range(seeds):
        for arm in inter.mlp_arms(cfg):
            e = mlp_err["dropout" if arm["p"] > 0 and arm["kind"] == "dropout" else arm["kind"]]
            if arm["kind"] == "dropout" and arm["weight_decay"] > 0:
                e -= 0.003 * effect  # both regularisers: better (effect > 0) or worse
            elif arm["kind"] == "none" and arm["weight_decay"] > 0:
                e -= 0.004 * up
            if arm["max_norm"]:  # the same dropout net and rate with max-norm: lower error (effect > 0) or higher
                e = 0.015 - 0.004 * up + 0.02 * down
            died = False
            mlp.append({**arm, "seed": s, "best_epoch": best_epoch, "val_error": e, "train_error": 0.0,
                        "test_error": e + jitter(), "died_at_step": 100 if died else -1})
    mlp = pd.DataFrame(mlp)
    # per-example test mistakes, paired as on the same test images: one latent difficulty per image and seed, so
    # nets of equal error make the same mistakes and a net of higher error makes those and more
    latent = {s: rng.random(cfg.test_size) for s in range(seeds)}
    wrong = np.stack([latent[r.seed] < r.test_error for r in mlp.itertuples()])
    cnn = pd.DataFrame(cnn)
    cnn_wrong = np.stack([latent[r.seed] < r.test_error for r in cnn.itertuples()])
    rec = {"cnn": cnn, "reestimated": pd.DataFrame(reest), "mlp": mlp, "mlp_wrong": wrong, "cnn_wrong": cnn_wrong,
           "curves": _chapter6_curves(cnn, mlp, late), "grid": inter.grid(mlp),
           "shift_check": pd.DataFrame([inter.variance_shift_check(c, 1.0, cfg.p_cnn, n=200_000) for c in (0.0, 0.5, 1.0)])}
    return rec, cfg


@pytest.mark.parametrize("effect, expected", [
    (1.0, ["reproduced", "reproduced (direction", "reproduced (direction", "reproduced (direction",
           "reproduced (equivalent", "reproduced (equivalent", "reproduced (direction", "reproduced (direction"]),
    (-1.0, ["not reproduced", "not reproduced (the opposite", "not reproduced (the opposite",
            "not reproduced (the opposite", "inconclusive (equivalence", "not reproduced (they differ",
            "not reproduced (the opposite", "not reproduced (the opposite"]),
    (0.0, ["not reproduced", "inconclusive", "inconclusive", "inconclusive", "reproduced (equivalent",
           "reproduced (equivalent", "inconclusive", "inconclusive"]),
])
def test_chapter6_verdicts_on_synthetic_records(effect, expected):
    from dropnotes.experiments import interactions as inter

    rec, cfg = _chapter6_record(effect)
    table = inter.verdicts(rec, cfg)
    assert len(table) == len(expected)
    for got, want in zip(table.verdict, expected):
        assert got.startswith(want), (got, want)


def test_chapter6_equality_needs_power_from_the_paired_test():
    """Gaussian and Bernoulli nets of equal error whose mistakes fall on different images of a small test set:
    the paired difference is too noisy for the 0.2 pt margin, so the TOST reads inconclusive, never reproduced."""
    from dropnotes.experiments import interactions as inter

    rec, cfg = _chapter6_record(1.0)
    rng = np.random.default_rng(11)
    rec["mlp_wrong"] = rng.random((len(rec["mlp"]), 500)) < 0.015  # independent mistakes on 500 images
    row = inter.verdicts(rec, cfg).iloc[5]
    assert row.claim.startswith("Gaussian") and row.verdict.startswith("inconclusive (equivalence"), row.verdict


@pytest.mark.parametrize("effect", [1.0, -1.0])
def test_chapter6_arms_still_improving_decide_nothing_either_way(effect):
    """Every net still falling by 5 pt of validation error a quarter, more than any gap: every comparison reads "not
    converged", whichever sign; the BN variance shift, a mechanism measurement, has no convergence gate."""
    from dropnotes.experiments import interactions as inter

    rec, cfg = _chapter6_record(effect, late=0.05)
    verdicts = inter.verdicts(rec, cfg).verdict
    assert not verdicts.iloc[0].startswith("not converged")
    assert verdicts.iloc[1:].str.startswith("not converged").all(), list(verdicts)


def test_chapter6_stored_record_of_protocol_5_is_judged_where_it_can_be():
    """The stored laptop run (protocol 5) has no per-example mistakes, curves or protocol 6's MLP arms: its BN shift
    row (a mechanism measurement) is judged again, every other row reads "not judged", never the old rule."""
    from dropnotes.experiments import interactions as inter
    from dropnotes.results import load_repo_result

    record = load_repo_result("interactions", "laptop")
    if record is None or int(record["provenance"].get("protocol", 1)) != 5:
        pytest.skip("no stored protocol-5 laptop run of chapter 6")
    table = inter.rejudge(record)
    assert not table.verdict.iloc[0].startswith("not judged")
    assert table.verdict.iloc[1:].str.startswith("not judged").all(), list(table.verdict)


def test_chapter6_max_norm_needs_nets_that_trained():
    """The case protocol 5 missed: nets at 43-47 % test error counted as trained. Now a row resting on a net nearer
    chance than its part's plain nets reads "not trained", whichever sign; max-norm is one factor at one rate."""
    from dropnotes.experiments import interactions as inter

    claim = "max-norm lowers the test error of a dropout net (the same net and learning rate without it)"
    rec, cfg = _chapter6_record(1.0)
    assert inter.verdicts(rec, cfg).set_index("claim").loc[claim].verdict.startswith("reproduced (direction")
    mlp = rec["mlp"]
    mn = mlp.max_norm > 0
    assert (mlp[mn].lr == mlp[~mn & (mlp.kind == "dropout")].lr.min()).all()  # the same learning rate
    mlp.loc[mn, "test_error"] = 0.45
    assert inter.verdicts(rec, cfg).set_index("claim").loc[claim].verdict.startswith("not trained"), claim


def test_chapter6_dropconnect_like_dropout_is_an_equivalence_test():
    """The case protocol 4 missed: DropConnect beating *no* dropout decided "regularises like dropout", even when
    it was far worse than dropout. Now that claim is a TOST against dropout; beating none is its own row."""
    from dropnotes.experiments import interactions as inter

    rec, cfg = _chapter6_record(1.0)
    mlp = rec["mlp"]
    mlp.loc[mlp.kind == "dropconnect", "test_error"] = 0.020  # better than none (2.3 %), worse than dropout (1.5 %)
    rng = np.random.default_rng(2)
    for i in mlp.index[mlp.kind == "dropconnect"]:  # most of the mistakes of the same seed's net without dropout
        none_i = mlp.index[(mlp.kind == "none") & (mlp.weight_decay == 0) & (mlp.seed == mlp.seed[i])][0]
        rec["mlp_wrong"][i] = rec["mlp_wrong"][none_i] & (rng.random(rec["mlp_wrong"].shape[1]) < 0.87)
    t = inter.verdicts(rec, cfg).set_index("claim")
    dc = "DropConnect (one mask per mini-batch, mean-weight inference)"
    assert t.loc[f"{dc} lowers the test error of an MLP without dropout"].verdict.startswith("reproduced (direction")
    assert t.loc[f"{dc} regularises like dropout"].verdict.startswith("not reproduced")
    assert t.loc[f"{dc} regularises like dropout"].kind == "our test"  # not Wan et al.'s DropConnect


def test_chapter6_complementarity_cells_are_chosen_on_validation():
    from dropnotes.experiments import interactions as inter

    rec, cfg = _chapter6_record(1.0)
    mlp = rec["mlp"]
    both = (mlp.kind == "dropout") & (mlp.weight_decay > 0) & (mlp.lr == cfg.lr)
    worst = mlp[both].weight_decay.max()
    mlp.loc[both & (mlp.weight_decay == worst), "test_error"] -= 0.01  # best on test, but not on validation
    mlp.loc[both & (mlp.weight_decay == worst), "val_error"] += 0.01
    rec["grid"] = inter.grid(mlp)
    row = inter.verdicts(rec, cfg).iloc[-1]
    assert f"wd={worst:g}" not in row.ours.split(";")[0]


# --------------------------------------------------------------------------------- chapter 3's rules


def _chapter3_curves(seeds: int, epochs: int = 6, late: dict | None = None) -> pd.DataFrame:
    """Validation curves of every scheme: flat (plateaued) up to tiny noise, or still falling by ``late[scheme]``
    nats a quarter."""
    from dropnotes.models.lstm_lm import SCHEMES

    rng = np.random.default_rng(6)
    rows = []
    for scheme in SCHEMES:
        slope = (late or {}).get(scheme, 0.0) / (epochs / 4)
        for s in range(seeds):
            for e in range(1, epochs + 1):
                rows.append({"scheme": scheme, "seed": s, "epoch": e,
                             "valid_ppl": math.exp(5.0 + slope * (epochs - e) + rng.normal(0, 1e-4))})
    return pd.DataFrame(rows)


def _chapter3_record(gain: float, seeds: int = 3, windows: int = 60, best_epoch: int = 1) -> dict:
    """A synthetic chapter-3 record: every rung of the ladder lowers the per-window test loss by ``gain`` nats
    (raises it when negative); tied recurrent masks beat per-step ones by the same; weight-drop equals
    variational up to 0.001 nats of noise; MC beats weight scaling by ``gain``."""
    from dropnotes.experiments import variational as var
    from dropnotes.models.lstm_lm import SCHEMES

    rng = np.random.default_rng(5)
    level = {"none": 5.0, "naive": 5.0 - gain, "tied": 5.0 - 2 * gain, "tied-recurrent": 5.0 - 3 * gain,
             "variational": 5.0 - 4 * gain, "per-step-recurrent": 5.0 - 2 * gain, "weight-drop": 5.0 - 4 * gain}
    base = rng.normal(0, 0.3, windows)  # the windows' own difficulty, shared by every scheme (pairing)
    runs, win = [], {}
    for s in range(seeds):
        for scheme in SCHEMES:
            # each scheme's own noise; none when every level is equal, so that the null case is exactly null
            w = level[scheme] + base + (rng.normal(0, 0.001, windows) if gain else 0.0)
            win[scheme, s] = w.tolist()
            runs.append({"scheme": scheme, "seed": s, "test_loss": float(w.mean()), "best_epoch": best_epoch})
    summary = pd.DataFrame({"scheme": list(SCHEMES), "words/s (one model)": [1000.0 if SCHEMES[k].time_loop else 5000.0
                                                                            for k in SCHEMES]})
    ws = [win["variational", s] for s in range(seeds)]
    mc = [(np.array(w) - gain).tolist() for w in ws]
    return {"runs": pd.DataFrame(runs), "windows": win, "summary": summary, "curves": _chapter3_curves(seeds),
            "mc": pd.DataFrame({"seed": range(seeds), "ws_ppl": [math.exp(np.mean(w)) for w in ws],
                                "mc_ppl": [math.exp(np.mean(w)) for w in mc]}),
            "mc_windows": {"ws": ws, "mc": mc},
            "svd": pd.DataFrame({"seed": range(seeds), "epoch": 200, "test_error": 0.019, "compression": 60.0,
                                 "sparsity_fc1": 0.97, "sparsity_fc2": 0.9, "sparsity_fc3": 0.5})}, var


@pytest.mark.parametrize("gain, ladder, equal", [
    (0.05, "reproduced (direction", "reproduced"),
    (-0.05, "not reproduced (the opposite", "reproduced"),
    (0.0, "inconclusive", "reproduced"),
])
def test_chapter3_ladder_verdicts_on_synthetic_records(gain, ladder, equal):
    rec, var = _chapter3_record(gain)
    full = var.configure("full", device="cpu")
    table = var.verdicts(rec, full).set_index("claim").verdict
    rungs = ["naive dropout on the non-recurrent connections lowers test perplexity", *[c for _, _, c in var.LADDER],
             "on the recurrent connections, masks tied in time beat fresh masks at every step (same rate and placement)",
             "MC averaging lowers test perplexity slightly"]
    for claim in rungs:
        assert table[claim].startswith(ladder), (claim, table[claim])
    wd = [c for c in table.index if c.startswith("weight-drop")][0]
    assert table[wd].startswith(equal), table[wd]
    # sparse VD at the authors' 200 epochs: judged on the level; a 2-epoch run on the mechanism only
    svd = [c for c in table.index if c.startswith("sparse VD")][0]
    assert table[svd] == "reproduced"
    # the case protocol 3 missed: a 20-epoch run (13.9x, a fifth of the paper's 68x) passed relaxed levels and read
    # "reproduced (direction)". A level below the authors' schedule now reads "not at paper scale", met or missed.

    rec["svd"]["epoch"], rec["svd"]["compression"] = 20, 13.9
    cut = type(full)(**{**full.__dict__, "svd_epochs": 20})
    short = judging.judged("variational", cut, var.verdicts(rec, cut)).set_index("claim")
    assert short.outcome[svd] == "not at paper scale" and "13.9x" in short.ours[svd], short.verdict[svd]
    assert "svd_epochs 20 of 200" in short.scale[svd]
    rec["svd"]["compression"] = 80.0  # the level met, at the same reduced schedule: still not judged
    short = judging.judged("variational", cut, var.verdicts(rec, cut)).set_index("claim")
    assert short.outcome[svd] == "not at paper scale"


def test_chapter3_a_scheme_still_improving_blocks_only_the_rungs_it_could_change():
    rec, var = _chapter3_record(0.05)
    full = var.configure("full", device="cpu")
    # naive still falling by 0.3 nats a quarter before the decay: it is the better arm of none -> naive (no block) and
    # the worse arm of naive -> tied (0.05 nats: it could close it)
    rec["curves"] = _chapter3_curves(3, late={"naive": 0.3})
    table = var.verdicts(rec, full).set_index("claim").verdict
    assert table["naive dropout on the non-recurrent connections lowers test perplexity"].startswith("reproduced")
    tied = table[var.LADDER[0][2]]
    assert tied.startswith("not converged (naive") and "close the gap" in tied, tied
    assert table["MC averaging lowers test perplexity slightly"].startswith("reproduced")  # the same weights: no gate


def test_chapter3_stored_record_without_windows_is_not_judged():
    rec, var = _chapter3_record(0.05)
    rec["windows"] = None
    table = var.verdicts(rec, var.configure("full", device="cpu"))
    lm = table[~table.source.str.startswith("Molchanov")]
    assert all(v.startswith("not judged (per-window") for v in lm.verdict[:-1]), list(lm.verdict)
    rec, _ = _chapter3_record(0.05)
    rec["curves"] = None
    table = var.verdicts(rec, var.configure("full", device="cpu"))
    assert table.verdict.iloc[0].startswith("not judged (learning curves")


def test_chapter3_weight_drop_margin_is_tighter_than_the_effect():
    """The case protocol 3 missed: weight-drop 0.015 nats worse than variational on every window passed the
    0.02-nat margin as "equivalent", though the paper's whole naive -> variational effect is 0.037 nats. The
    margin is now a quarter of that effect, and the same difference reads "they differ"."""
    rec, var = _chapter3_record(0.05, seeds=3, windows=60)
    assert var.EQUAL_MARGIN_NATS == pytest.approx(math.log(82.7 / 79.7) / 4, abs=1e-4)
    for s in range(3):
        rec["windows"]["weight-drop", s] = (np.array(rec["windows"]["weight-drop", s]) + 0.015).tolist()
    table = var.verdicts(rec, var.configure("full", device="cpu")).set_index("claim")
    wd = [c for c in table.index if c.startswith("weight-drop")][0]
    assert table.verdict[wd].startswith("not reproduced (they differ"), table.verdict[wd]
    assert table.kind[wd] == "our test" and not table.source[wd].startswith("Merity")


def test_chapter3_weight_drop_equality_needs_power():
    rec, var = _chapter3_record(0.05, seeds=3, windows=60)
    for s in range(3):  # weight-drop 0.05 nats worse, beyond the 0.02 margin, on every window
        rec["windows"]["weight-drop", s] = (np.array(rec["windows"]["weight-drop", s]) + 0.05).tolist()
    table = var.verdicts(rec, var.configure("full", device="cpu")).set_index("claim").verdict
    wd = [c for c in table.index if c.startswith("weight-drop")][0]
    assert table[wd].startswith("not reproduced (they differ")
    rec, var = _chapter3_record(0.05, seeds=2, windows=3)  # three windows of noise 0.3 nats: no power
    rng = np.random.default_rng(6)
    for k in list(rec["windows"]):
        rec["windows"][k] = (np.array(rec["windows"][k]) + rng.normal(0, 0.3, 3)).tolist()
    table = var.verdicts(rec, var.configure("full", device="cpu")).set_index("claim").verdict
    assert table[wd].startswith("inconclusive")


# --------------------------------------------------------------------------------- chapter 4's rules


def _chapter4_record(effect: float, cfg) -> dict:
    """Synthetic ViT runs: with ``effect`` 1 drop-path helps (more at depth 12 than 6), linear beats uniform
    and skipping dropped branches saves time; -1 reverses each; 0: all equal. Each model's per-image mistakes: one
    difficulty per seed and test image (shared by the arms, so their mistakes are correlated), each model erring
    where the difficulty lies below its error rate, with 2 % of its answers flipped at random."""
    from dropnotes import results
    from dropnotes.experiments import droppath as dp

    rng = np.random.default_rng(11)
    difficulty = {s: rng.random(cfg.test_size) for s in cfg.seeds}
    nonzero = [r for r in cfg.rates if r > 0]
    mid = nonzero[len(nonzero) // 2]
    rows = []
    for depth, models in dp.arms(cfg, mid).items():
        gain = (0.10 if depth == cfg.depth else 0.0) * effect  # far beyond the test set's sampling error
        for rate, schedule, seed in models:
            e = 0.40 - (gain if rate > 0 else 0.0) + (0.08 * effect if schedule == "uniform" else 0.0)
            wrong = (difficulty[seed] < e) ^ (rng.random(cfg.test_size) < 0.02)
            rows.append({"depth": depth, "rate": rate, "schedule": schedule, "seed": seed, "train_error": 0.1,
                         "val_error": e + (0.01 if rate != mid and rate > 0 else 0.0), "test_error": float(wrong.mean()),
                         "wrong": results.pack_wrong(wrong)})
    ratio = 1 - 0.25 * effect if effect > 0 else 1.0 + 0.1 * abs(effect)
    speed = pd.DataFrame({"variant": ["no DropPath", "masked", "skip dropped"], "ms per step": [90.0, 100.0, 100 * ratio],
                          "relative to masked": [0.9, 1.0, ratio]})
    speed.attrs["mean_rate"] = 0.25
    return {"runs": pd.DataFrame(rows), "mid": mid, "speed": speed}


@pytest.mark.parametrize("effect, expected", [
    (1.0, ["reproduced (direction", "reproduced (direction", "reproduced (direction", "reproduced"]),
    (-1.0, ["not reproduced (the opposite", "not reproduced (the opposite", "not reproduced (the opposite",
            "not reproduced"]),
    (0.0, ["inconclusive", "inconclusive", "inconclusive", "not reproduced"]),
])
def test_chapter4_verdicts_on_synthetic_records(effect, expected):
    from dropnotes.experiments import droppath as dp

    cfg = dp.configure("quick", device="cpu", n_seeds=3)
    rec = _chapter4_record(effect, cfg)
    table = dp.verdicts(rec, cfg)
    for got, want in zip(table.verdict, expected, strict=True):
        assert got.startswith(want), (got, want)
    compared = table.iloc[:3]
    assert compared.unit.eq(dp.UNIT).all() and (compared.low <= compared.effect).all() \
        and (compared.effect <= compared.high).all()
    assert (np.sign(compared.effect) == np.sign(effect)).all() or effect == 0
    # an undecided comparison says what would decide it, computed from its variance components
    undecided = table[table.verdict.str.startswith("inconclusive")]
    if len(undecided):
        assert undecided.decide.notna().all() and undecided.decide.str.contains("seeds|test examples").all()
    # the rate compared with 0 is the one best on validation, even where another rate's test error is lower
    runs = rec["runs"]
    runs.loc[(runs.rate == max(cfg.rates)) & (runs.depth == cfg.depth), "test_error"] -= 0.2
    assert f"rate {rec['mid']:g} (the best on validation)" in dp.verdicts(rec, cfg).ours.iloc[0]


def test_chapter4_record_without_per_image_correctness_is_not_judged_and_rejudge_reads_the_tables():
    import dataclasses

    from dropnotes.experiments import droppath as dp

    cfg = dp.configure("quick", device="cpu", n_seeds=3)
    rec = _chapter4_record(1.0, cfg)
    record = {"params": dataclasses.asdict(cfg), "tables": {"runs": rec["runs"], "speed": rec["speed"]}}
    again = dp.rejudge(record)
    assert again.rule_verdict.tolist() == dp.verdicts(rec, cfg).verdict.tolist()
    record["tables"]["runs"] = rec["runs"].drop(columns="wrong")
    table = dp.rejudge(record)
    assert table.verdict.iloc[:3].str.startswith("not judged (per-example test correctness not stored)").all()
    assert table.outcome.iloc[:3].eq("not judged").all() and table.verdict.iloc[3] == "reproduced"


# --------------------------------------------------------------------------------- chapter 7's rules


def test_chapter7_overhead_rule_needs_the_bound_shown():
    from dropnotes.experiments import cost

    assert cost.rule_overhead(0.5, 1.0) == "reproduced"  # 1.5 % at most
    assert cost.rule_overhead(0.5, 4.0).startswith("inconclusive")  # a noisy 0.5 % does not confirm the bound
    assert cost.rule_overhead(8.0, 1.0) == "not reproduced (8 %)"
    assert cost.rule_overhead(2.5, 1.0).startswith("inconclusive")


def test_chapter7_memory_bound_is_judged_on_the_eager_kernel():
    """The case protocol 1 missed: its rule became "the best of eager and compiled" in the commit that stored the
    GPU run (eager 0.33 fails, compiled 0.52 passes). The rule first stated judges the eager kernel; the compiled
    one is reported beside it. The claims are labelled as this book's own test and a rule of thumb."""
    from dropnotes.experiments import cost

    bench = pd.DataFrame([
        {"variant": "dropout", "elements": 2**28, "ratio": 1.54, "GB/s": 1100.0, "of copy bandwidth": 0.33},
        {"variant": "dropout (torch.compile)", "elements": 2**28, "ratio": 1.0, "GB/s": 1750.0, "of copy bandwidth": 0.52}])
    steps = pd.DataFrame([{"model": "MLP", "variant": v, "ms per step": ms, "overhead vs removed %": o,
                           "spread (IQR) %": 0.5} for v, ms, o in (("removed", 10.0, 0.0), ("p=0", 10.0, 0.1),
                                                                   ("p=0.1", 10.9, 9.0))])
    rec = {"bench": bench, "steps": steps, "bench_attrs": {"copy_GBps": 3350.0}, "device_name": "NVIDIA H100"}
    t = cost.verdicts(rec, cost.configure("quick", device="cpu")).set_index("claim")
    row = t.loc["element-wise dropout is memory-bound on a large tensor"]
    assert row.verdict.startswith("not reproduced (the eager kernel at 0.33") and "compiled (not judged)" in row.ours
    assert row.kind == "our test"
    assert t.kind.iloc[0] == "rule of thumb"


# --------------------------------------------------------------------------------- chapter 5's table


def _chapter5_curves(cfg, late: dict | None = None) -> pd.DataFrame:
    """Validation-half curves of every fine-tuning run: flat (plateaued) unless ``late`` names a (method, p, size)
    whose curves still fall by the given bpb per evaluation to the end."""
    rng = np.random.default_rng(3)
    late = late or {}
    rows = []
    keys = [("full", q, s) for s in sorted({*cfg.sizes, cfg.finetune_bytes})
            for q in sorted({0.0, cfg.p_all, *cfg.finetune_rates})]
    keys += [("LoRA", q, cfg.finetune_bytes) for q in cfg.lora_rates]
    for method, q, size in keys:
        slope = late.get((method, q, size), 0.0)
        for s in range(cfg.n_seeds):
            for k in range(1, cfg.finetune_steps // cfg.eval_every + 1):
                rows.append({"method": method, "p": q, "size": size, "seed": s, "step": k * cfg.eval_every,
                             "valid_bpb": 3.0 - slope * k + rng.normal(0, 1e-4)})
    return pd.DataFrame(rows)


def _chapter5_record(gain: float, cfg, first_best: bool = False, late: dict | None = None) -> dict:
    """Synthetic LLM runs: dropout costs ``gain`` bpb in pretraining (and early dropout half of it), and lowers the
    best fine-tuning loss by ``gain`` on the smallest slice, shrinking to nothing on all the data. Every fine-tuning
    curve is flat (plateaued) unless ``late`` says otherwise (see :func:`_chapter5_curves`)."""
    from dropnotes.experiments.llm import LN2

    rng = np.random.default_rng(7)
    seeds = range(cfg.n_seeds)
    base = {s: rng.normal(3.0, 0.2, 200) * LN2 for s in seeds}  # per-window losses in nats, shared by the arms
    noise = lambda: rng.normal(0, 1e-4, 200)  # noqa: E731
    pre = {arm: [{"final_windows": (base[s] + d * LN2 + noise()).tolist(), "seed": s, "lr": cfg.pretrain_lr}
                 for s in seeds] for arm, d in (("none", 0.0), ("dropout", gain), ("early", gain / 2))}
    ft = {}
    sizes = list(cfg.sizes)
    from dropnotes.experiments.llm import first_eval

    step = first_eval(cfg) if first_best else 5 * cfg.eval_every

    def run(s, w, epochs):
        return {"best": {"windows": w.tolist(), "valid_loss": float(w.mean()), "step": step}, "seed": s,
                "row": {"epochs": epochs, "overfit_bpb": 0.1}}
    for k, size in enumerate(sizes + ([cfg.finetune_bytes] if cfg.finetune_bytes not in sizes else [])):
        g = gain * max(0.0, 1 - k / max(len(sizes) - 1, 1))  # the crossing: gain shrinks to 0 on all the data
        for q in sorted({0.0, cfg.p_all, *cfg.finetune_rates}):
            ft["full", q, size] = [run(s, base[s] - (g * LN2 if q > 0 else 0.0) + noise(), 10.0 / (k + 1)) for s in seeds]
    for q in cfg.lora_rates:
        ft["LoRA", q, cfg.finetune_bytes] = [run(s, base[s] - (gain * LN2 if q > 0 else 0.0) + noise(), 10.0)
                                             for s in seeds]
    return {"pre": pre, "ft": ft, "pretrain_tokens": 1000, "corpus_tokens": 5000, "curves": _chapter5_curves(cfg, late)}


@pytest.mark.parametrize("gain, expected", [
    (0.05, ["reproduced (direction", "reproduced (its gain", "reproduced (direction", "reproduced (direction",
            "reproduced"]),
    (-0.05, ["not reproduced (the opposite", "not reproduced (its gain's lower bound", "not reproduced (the opposite",
             "not reproduced (the opposite", "not reproduced (dropout hurts"]),
])
def test_chapter5_verdicts_on_synthetic_records(gain, expected):
    from dropnotes.experiments import llm

    cfg = llm.configure("quick", device="cpu", n_seeds=3)
    table = llm.verdicts(_chapter5_record(gain, cfg), cfg)
    for got, want in zip(table.verdict, expected, strict=True):
        assert got.startswith(want), (got, want)
    assert table.unit.eq("bpb").all() and table.effect.notna().all() and (table.low <= table.high).all()
    # every minimum on the first evaluation: the fine-tuning comparisons cannot be judged
    table = llm.verdicts(_chapter5_record(gain, cfg, first_best=True), cfg)
    assert table.verdict.iloc[2].startswith("inconclusive (the minimum") and table.verdict.iloc[4].startswith("inconclusive")
    assert table.decide.iloc[2].startswith("evaluations before step")


def test_chapter5_one_seed_cannot_take_the_plateau_test():
    """Pretraining needs no plateau gate (one pass is the claim's regime): with one seed it is still judged; the
    fine-tuning rows need two seeds for the plateau test and read not judged."""
    from dropnotes.experiments import llm

    cfg = llm.configure("quick", device="cpu", n_seeds=1)
    table = llm.verdicts(_chapter5_record(0.05, cfg), cfg)
    assert table.verdict.iloc[0].startswith("reproduced (direction")
    assert table.verdict.iloc[1].startswith("reproduced")
    assert all(v.startswith("not judged (the plateau test needs 2 seeds") for v in table.verdict.iloc[2:])


def test_chapter5_a_late_arm_blocks_only_the_rows_it_could_change():
    """The p = 0 arm of full fine-tuning on the main slice still falls by far more than the gap: the fine-tuning row
    reads not converged (and says what would plateau it); LoRA and pretraining are untouched. A late arm whose gain is
    below the gap (the better arm, here dropout's) widens the gap and blocks nothing."""
    from dropnotes.experiments import llm

    cfg = llm.configure("quick", device="cpu", n_seeds=3)
    main = ("full", 0.0, cfg.finetune_bytes)
    table = llm.verdicts(_chapter5_record(0.05, cfg, late={main: 0.01}), cfg).set_index("claim")
    fine = table.loc[llm.CLAIMS["finetune"]["claim"]]
    assert fine.verdict.startswith("not converged (the base arm was still improving") and "it read: reproduced" in fine.verdict
    assert fine.decide and fine.margin == llm.FT_DELTA_BPB
    assert table.loc[llm.CLAIMS["lora"]["claim"]].verdict.startswith("reproduced (direction")
    assert table.loc[llm.CLAIMS["pretrain"]["claim"]].verdict.startswith("reproduced (direction")
    # the crossing reads every slice's arms: the main slice is one of them
    assert table.loc[llm.CLAIMS["crossing"]["claim"]].verdict.startswith("not converged (on 10000 bytes")
    better = ("full", max(cfg.finetune_rates), cfg.finetune_bytes)  # 2p: chosen on validation (ties: the first)
    table = llm.verdicts(_chapter5_record(0.05, cfg, late={("LoRA", cfg.p_all, cfg.finetune_bytes): 0.01, better: 0.0}),
                         cfg).set_index("claim")
    assert table.loc[llm.CLAIMS["lora"]["claim"]].verdict.startswith("reproduced (direction")


def test_chapter5_an_inconclusive_row_says_what_would_decide_it():
    from dropnotes.experiments import llm

    cfg = llm.configure("quick", device="cpu", n_seeds=3)
    rec = _chapter5_record(0.0, cfg)
    rng = np.random.default_rng(0)
    for runs in (*rec["pre"].values(), *rec["ft"].values()):  # seed noise on every run: no difference is shown
        for r in runs:
            shift = rng.normal(0, 0.01)
            if "final_windows" in r:
                r["final_windows"] = (np.asarray(r["final_windows"]) + shift).tolist()
            else:
                r["best"]["windows"] = (np.asarray(r["best"]["windows"]) + shift).tolist()
    table = llm.verdicts(rec, cfg)
    undecided = table[table.verdict.str.startswith("inconclusive")]
    assert len(undecided) >= 3, table.verdict.tolist()
    assert undecided.decide.notna().all() and undecided.decide.str.contains("seeds|test examples").all()


def test_chapter5_rejudge_reads_the_stored_tables_and_never_the_old_rule():
    """A record made before rules 2 holds no per-window losses: every row reads not judged, saying so; a record
    that stores them is judged again from them as the run judged it."""
    from dropnotes import results
    from dropnotes.experiments import llm

    laptop = results.load_result(llm.CHAPTER, "laptop")
    if laptop is not None:
        table = llm.rejudge(laptop)
        assert len(table) == len(llm.CLAIMS)
        shown, note = judging.current_verdicts(llm.CHAPTER, laptop)
        if "windows" in laptop["tables"]:  # a record that stores them reads as its run judged it
            assert table.verdict.tolist() == laptop["tables"]["verdicts"].verdict.tolist()
            if int(laptop["provenance"].get("protocol", 1)) == llm.PROTOCOL:
                assert shown.verdict.tolist() == table.verdict.tolist() and not note.startswith("superseded")
        else:
            assert table.verdict.eq(f"not judged ({llm.NO_WINDOWS})").all() and table.outcome.eq("not judged").all()
            if int(laptop["provenance"].get("protocol", 1)) < llm.PROTOCOL:  # a pilot on its grid's edge: superseded
                assert note.startswith("superseded") and shown.outcome.eq("superseded").all()
            else:
                assert shown.verdict.eq("not judged (per-window losses not stored)").all()
                assert note.startswith("verdicts recomputed")
    cfg = llm.configure("quick", device="cpu", n_seeds=3)
    rec = _chapter5_record(0.05, cfg)
    direct = llm.verdicts(rec, cfg)
    import dataclasses

    record = {"params": dataclasses.asdict(cfg), "metrics": {"pretrain_tokens": 1000, "corpus_tokens": 5000},
              "tables": {"windows": llm.window_table(rec["pre"], rec["ft"]), "curves": rec["curves"]}}
    again = llm.rejudge(record)
    assert again.rule_verdict.tolist() == direct.verdict.tolist()
    record["tables"].pop("windows")
    assert llm.rejudge(record).verdict.str.startswith("not judged (per-window losses not stored)").all()


def test_chapter5_selects_on_the_validation_half_and_judges_on_the_test_half():
    """The early-stopping step is the validation half's minimum, whatever the test half says; the numbers
    reported are the test half's, at that step."""
    from dropnotes.experiments import llm

    select, judge = llm.split_windows([1.0, 2.0, 3.0, 4.0, 5.0])
    assert select == [1.0, 2.0] and judge == [3.0, 4.0, 5.0]
    with pytest.raises(ValueError, match="eval_bytes"):
        llm.split_windows([1.0])
    curve = [{"step": 10, "valid_loss": 3.0}, {"step": 20, "valid_loss": 2.0}, {"step": 30, "valid_loss": 2.5}]
    judged = {10: [1.0, 1.0], 20: [4.0, 4.0], 30: [5.0, 6.0]}  # the test half's minimum is at step 10
    out = llm._best_and_final(curve, judged)
    assert out["best"]["step"] == 20 and out["best"]["test_loss"] == 4.0 and out["best"]["windows"] == [4.0, 4.0]
    assert out["final_windows"] == [5.0, 6.0] and out["final"]["test_loss"] == 5.5


def test_a_verdict_row_checks_its_kind_test_and_outcome():
    from dropnotes.verdict import Verdict, verdict_table

    v = Verdict(claim="c", source="s", paper="1 %", ours="2 %", verdict="inconclusive (within noise)")
    assert v.row() == {"claim": "c", "source": "s", "paper": "1 %", "ours": "2 %", "verdict": "inconclusive (within noise)",
                       "kind": "paper claim", "test": "direction"}
    with pytest.raises(ValueError, match="kind must be one of"):
        Verdict(claim="c", source="s", paper="", ours="", verdict="reproduced", kind="hunch")
    with pytest.raises(ValueError, match="test must be one of"):
        Verdict(claim="c", source="s", paper="", ours="", verdict="reproduced", test="vibes")
    with pytest.raises(ValueError, match="verdict must start with one of"):
        Verdict(claim="c", source="s", paper="", ours="", verdict="looks fine")
    table = verdict_table([v, Verdict(claim="d", source="s", paper="", ours="", verdict="reproduced", setting="Table 2")])
    assert list(table.claim) == ["c", "d"] and table.setting.isna().tolist() == [True, False]
    with pytest.raises(TypeError, match="Verdict rows"):
        verdict_table([v.row()])


def test_chapter1_page_states_its_rules_power_at_the_records_noise():
    from dropnotes.experiments import mechanics as mech

    finals, curves = _chapter1_record({0.0: 0.020, 0.2: 0.016, 0.5: 0.0125})
    text = mech.rule_power({"tables": {"finals": finals, "curves": curves}})
    assert "simulated" in text and "power with 3 seeds" in text, text
    assert mech.rule_power({"tables": {"finals": finals}}) == ""


def test_a_pilot_choice_on_the_grids_edge_widens_the_grid():
    """A pilot that picks the largest (or smallest) rate it tried has not chosen (issue 46): the grid grows one step of
    its own ratio at a time until the choice is interior, at most ``widen`` times, and says whether it got there."""
    import pandas as pd

    from dropnotes.train import choose_on_grid

    def bowl(best):  # a validation loss whose minimum is at ``best`` (log scale), and the rates it was asked for
        asked = []

        def evaluate(rates):
            asked.append(list(rates))
            return pd.Series({r: (np.log10(r) - np.log10(best)) ** 2 for r in rates})
        return evaluate, asked

    up = 1e-2 * (1e-2 / 3e-3)  # one step of the grid's ratio above its top
    evaluate, asked = bowl(up)  # above the grid: one widening finds it, a second shows it interior
    lr, scores, interior = choose_on_grid(evaluate, (1e-3, 3e-3, 1e-2))
    assert lr == pytest.approx(up) and interior and asked[1] == [pytest.approx(up)] and len(asked) == 3
    down = 1e-3 / 3  # one step of the grid's ratio below its bottom
    evaluate, asked = bowl(down)  # below: widened downwards
    lr, _, interior = choose_on_grid(evaluate, (1e-3, 3e-3, 1e-2))
    assert lr == pytest.approx(down) and interior
    evaluate, asked = bowl(1.0)  # far above: two widenings, still on the edge, and it says so
    lr, scores, interior = choose_on_grid(evaluate, (1e-3, 3e-3, 1e-2), widen=2)
    assert not interior and len(scores) == 5 and lr == pytest.approx(up * up / 1e-2)
    evaluate, asked = bowl(3e-3)  # interior at once: no widening
    assert choose_on_grid(evaluate, (1e-3, 3e-3, 1e-2))[2] and len(asked) == 1
