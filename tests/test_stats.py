import pytest

from dropnotes import stats


def test_fmt_mean_sd():
    assert stats.fmt_mean_sd([0.1, 0.3], 100) == "20.00 ± 14.14 (n=2)"
    assert stats.fmt_mean_sd([0.285], 100, 1) == "28.5 (n=1)"


def test_compare_errors_rule():
    # 10,000 test examples: binomial SE of 5 % is 0.22 pt per model.
    diff, se, verdict = stats.compare_errors([0.07, 0.071], [0.05, 0.051], 10_000)
    assert diff == pytest.approx(0.02) and verdict == "reproduced (direction)"
    assert stats.compare_errors([0.05], [0.07], 10_000)[2] == "not reproduced (the opposite)"
    assert stats.compare_errors([0.050], [0.049], 10_000)[2] == "inconclusive (within 2 SE)"
    # Seed noise larger than the binomial SE widens the interval.
    assert stats.compare_errors([0.05, 0.09], [0.05, 0.06], 10_000)[2] == "inconclusive (within 2 SE)"


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
