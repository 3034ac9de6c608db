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
