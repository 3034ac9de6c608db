"""Verdict rules on synthetic records, in seconds: every rule's outcomes (reproduced, the opposite,
inconclusive) from inputs built to produce them, without training a model."""

import math

import numpy as np
import pandas as pd
import pytest

from dropnotes import stats
from dropnotes.experiments import ensembles as ens

# --------------------------------------------------------------------------------------------- stats


def test_mcnemar_exact_matches_the_binomial_tail():
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(10, 0) == pytest.approx(2 / 2 ** 10)  # all 10 discordant pairs one way
    assert stats.mcnemar_exact(5, 5) == 1.0
    # two-sided P(X <= 15) for X ~ Bin(45, 1/2), summed directly
    tail = sum(math.comb(45, i) for i in range(16)) / 2 ** 45
    assert stats.mcnemar_exact(30, 15) == pytest.approx(2 * tail) and stats.mcnemar_exact(15, 30) == pytest.approx(2 * tail)
    with pytest.raises(ValueError, match="discordant counts"):
        stats.mcnemar_exact(-1, 3)


def _wrong(rng, n, rate):
    return (rng.random(n) < rate).astype(float)


def test_compare_predictions_outcomes():
    rng = np.random.default_rng(0)
    base = [_wrong(rng, 10_000, 0.06) for _ in range(2)]
    fixed = [np.where(rng.random(10_000) < 0.3, 0.0, b) for b in base]  # fixes 30 % of base's errors
    assert stats.compare_predictions(base, fixed)[2].startswith("reproduced (direction")
    assert stats.compare_predictions(fixed, base)[2].startswith("not reproduced (the opposite")
    redraw = [_wrong(rng, 10_000, 0.06) for _ in base]  # another net with the same error rate: no real difference
    assert stats.compare_predictions(base, redraw)[2].startswith("inconclusive (McNemar")
    # three seeds that disagree: the pooled McNemar test is significant, the seed-level one is not
    seeds = [_wrong(rng, 10_000, 0.06) for _ in range(3)]
    new = [np.where(rng.random(10_000) < 0.9, 0.0, seeds[0]), seeds[1].copy(),  # much better, the same,
           np.where(rng.random(10_000) < 0.03, 1.0, seeds[2])]  # and worse
    d, se, v = stats.compare_predictions(seeds, new)
    assert v.startswith("inconclusive") and "seed" in v
    with pytest.raises(ValueError, match="equal shapes"):
        stats.compare_predictions([np.zeros(3)], [np.zeros(4)])


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


def test_compare_estimates_and_shortfall():
    assert stats.compare_estimates([0.1, 0.12], [0.01, 0.01])[2] == "reproduced (direction)"
    assert stats.compare_estimates([-0.1, -0.12], [0.01, 0.01])[2] == "not reproduced (the opposite)"
    assert stats.compare_estimates([0.01, 0.012], [0.01, 0.01])[2].startswith("inconclusive")
    assert stats.compare_estimates([0.3, -0.2, 0.2], [0.01] * 3)[2].startswith("inconclusive")  # seed noise counts
    assert stats.shortfall({"epochs": 300, "hidden": (1024,) * 3}, {"epochs": 300, "hidden": (1024,) * 3}) == []
    assert stats.shortfall({"epochs": 40, "hidden": (512, 512)}, {"epochs": 300, "hidden": (1024,) * 3}) == \
        ["epochs 40 of 300", "hidden 512 x 512 instead of 1024 x 1024 x 1024"]
    assert stats.shortfall({"epochs": 400}, {"epochs": 300}) == []  # longer than the paper is not a cut


# --------------------------------------------------------------------------------- chapter 2's rules


def test_chapter2_rule_functions():
    up, down, unsure = "reproduced (direction)", "not reproduced (the opposite)", "inconclusive (within 2 SE)"
    eq, differ, eq_unsure = ("reproduced (equivalent within ±0.2 pt)", "not reproduced (they differ by more than 0.2 pt)",
                             "inconclusive (equivalence within ±0.2 pt not shown)")
    assert ens.rule_level(up, 1.10, []) == up
    assert ens.rule_level(up, 2.00, []).startswith("partly")
    assert ens.rule_level(up, 2.00, ["epochs 40 of 100"]) == up  # a cut run is judged in direction only
    assert ens.rule_level(down, 2.00, []) == down
    assert ens.rule_mc_matches(up, eq) == "reproduced"
    assert ens.rule_mc_matches(unsure, eq).startswith("partly")
    assert ens.rule_mc_matches(up, differ) == differ and ens.rule_mc_matches(up, eq_unsure) == eq_unsure
    assert ens.rule_ordering(True, True, up) == "reproduced"
    assert ens.rule_ordering(True, False, up) == "partly"
    assert ens.rule_ordering(True, True, unsure).startswith("partly (the ordering holds")
    assert ens.rule_ordering(False, False, up) == "not reproduced"
    assert ens.rule_regression(0.05, 0.2, 0.3) == "reproduced"
    assert ens.rule_regression(0.05, 0.06, 0.3) == "partly"
    assert ens.rule_regression(0.05, 0.04, 0.3) == "not reproduced"
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
            quality.append({"seed": s, "model": m, "member": 0, "error": e + rng.normal(0, 1e-4), "nll": nll[m],
                            "ece": nll[m] / 10, "brier": nll[m] / 3, "temperature": 1.0})
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
    return {"quality": q, "summary": ens.summarize_quality(q), "wrong": wrong, "calibration": calibration,
            "rotation_pairs": pd.DataFrame(rot), "ood_pairs": pd.DataFrame(ood),
            "regression": {"std_by_region": {"data": 0.05, "gap": 0.05 + 0.2 * max(effect, 0),
                                             "outside": 0.05 + 0.3 * max(effect, 0)}}}


@pytest.mark.parametrize("effect, expected", [
    (1.0, ["reproduced (direction)", "reproduced", "reproduced", "reproduced (direction)", "reproduced", "reproduced",
           "reproduced", "reproduced"]),
    (-1.0, ["not reproduced", "not reproduced", "not reproduced", "not reproduced", "not reproduced",
            "not reproduced", "not reproduced", "not reproduced"]),
    (0.0, ["inconclusive", "partly", "not reproduced", "inconclusive", "not reproduced", "inconclusive",
           "inconclusive", "inconclusive"]),
])
def test_chapter2_verdicts_on_synthetic_records(effect, expected):
    cfg = ens.configure("quick", device="cpu")
    table = ens.verdicts(_chapter2_record(effect), cfg)
    assert len(table) == len(expected)
    for got, want in zip(table.verdict, expected):
        assert got.startswith(want), (got, want)


def test_chapter2_level_is_judged_only_at_the_papers_size():
    rec = _chapter2_record(1.0)
    at_size = ens.configure("quick", device="cpu", train_size=50000)
    at_size = type(at_size)(**{**at_size.__dict__, "hidden": (1024, 1024, 1024)})
    # 5 % error at the paper's size is far from its 1.06 %: partly; the same numbers from a smaller run: direction only
    assert ens.verdicts(rec, at_size).verdict.iloc[0].startswith("partly: direction reproduced, level")
    assert ens.verdicts(rec, ens.configure("quick", device="cpu")).verdict.iloc[0] == "reproduced (direction)"
