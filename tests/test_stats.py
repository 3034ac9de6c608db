import numpy as np
import pytest

from dropnotes import stats


def test_fmt_mean_sd():
    assert stats.fmt_mean_sd([0.1, 0.3], 100) == "20.00 ± 14.14 (n=2)"
    assert stats.fmt_mean_sd([0.285], 100, 1) == "28.5 (n=1)"


def test_compare_errors_rule():
    # 10,000 test examples: binomial SE of 5 % is 0.22 pt per model.
    diff, se, verdict = stats.compare_errors([0.07, 0.071], [0.05, 0.051], 10_000)
    assert diff == pytest.approx(0.02) and verdict.startswith("reproduced (direction")
    assert "2 seeds: test noise only" in verdict, "fewer than 3 seeds: the verdict says its SE is test noise only"
    assert stats.compare_errors([0.05], [0.07], 10_000)[2].startswith("not reproduced (the opposite")
    assert stats.compare_errors([0.050], [0.049], 10_000)[2].startswith("inconclusive")
    # with 3 seeds the seed-level SE counts, with t's 95 % factor for 2 degrees of freedom (4.30, not 2)
    assert stats.critical(3) == pytest.approx(4.3027, abs=1e-3) and stats.critical(2) == pytest.approx(1.96, abs=1e-2)
    base, new = [0.050, 0.060, 0.055], [0.045, 0.050, 0.052]  # paired differences 0.005, 0.010, 0.003
    diff, se, verdict = stats.compare_errors(base, new, 10_000)
    seed_se = float(np.std(np.subtract(base, new), ddof=1) / np.sqrt(3))
    assert se == pytest.approx(max(seed_se, se)) and se >= seed_se
    assert verdict.startswith("inconclusive") and "t with 2 df" in verdict, verdict  # 2 SE would have called it
    assert diff > 2 * se, "the case a fixed 2 SE rule got wrong"


def test_one_seed_has_test_noise_only():
    """compare_paired with one seed: the SE is the per-block (test sampling) one, and the verdict says so."""
    base = [[1.0, 1.2, 0.9, 1.1] * 25]
    new = [[v - 0.05 for v in base[0]]]
    diff, se, verdict = stats.compare_paired(base, new)
    assert se == pytest.approx(stats.block_se(np.subtract(base[0], new[0])))
    assert "1 seed: test noise only" in verdict


def test_equivalence_needs_power_and_a_margin():
    """TOST: equal arms measured precisely are equivalent; the same means measured noisily are inconclusive
    (a test that cannot separate two arms is no evidence that they are equal); arms apart by more than the
    margin, measured precisely, differ; a difference inside the margin but not shown to be is inconclusive."""
    assert stats.equivalent(0.0, 0.01, margin=0.05) == "reproduced (equivalent within ±0.05)"
    assert stats.equivalent(0.0, 0.05, margin=0.05).startswith("inconclusive")
    assert stats.equivalent(0.2, 0.01, margin=0.05).startswith("not reproduced")
    assert stats.equivalent(-0.2, 0.01, margin=0.05).startswith("not reproduced")
    assert stats.equivalent(0.04, 0.01, margin=0.05).startswith("inconclusive")  # 0.04 + 1.645 x 0.01 > 0.05
    with pytest.raises(ValueError, match="margin must be > 0"):
        stats.equivalent(0.0, 0.01, margin=0.0)
    # on error rates: 10,000 test images give a binomial SE of about 0.14 pt at 2 % error
    assert stats.equivalent_errors([0.020, 0.020, 0.020], [0.0201, 0.0199, 0.0200], 10_000, 0.005)[2] == \
        "reproduced (equivalent within ±0.5 pt)"
    assert stats.equivalent_errors([0.020], [0.0205], 500, 0.005)[2].startswith("inconclusive")  # 500 images: SE 0.6 pt
    assert stats.equivalent_errors([0.02] * 3, [0.04] * 3, 10_000, 0.005)[2].startswith("not reproduced")
    base = [[1.0, 1.1, 0.9, 1.05] * 50]
    assert stats.equivalent_paired(base, [[v + 0.001 for v in base[0]]], 0.01)[2].startswith("reproduced")
    assert stats.equivalent_paired(base, [[v + 0.1 for v in base[0]]], 0.01)[2].startswith("not reproduced")
