import numpy as np
import pytest

from dropnotes import stats


def test_fmt_mean_sd():
    assert stats.fmt_mean_sd([0.1, 0.3], 100) == "20.00 ± 14.14 (n=2)"
    assert stats.fmt_mean_sd([0.285], 100, 1) == "28.5 (n=1)"


def test_one_seed_has_test_noise_only():
    """compare_examples with one seed: the SE is the per-example (test sampling) one, and the verdict says so."""
    base = [[1.0, 1.2, 0.9, 1.1] * 25]
    new = [[v - 0.05 for v in base[0]]]
    r = stats.compare_examples(base, new)
    assert r.se == pytest.approx(stats.block_se(np.subtract(base[0], new[0])))
    assert "1 seed: test noise only" in r.verdict()


def test_equivalence_needs_power_and_a_margin():
    """TOST: equal arms measured precisely are equivalent; the same means measured noisily are inconclusive
    (a test that cannot separate two arms is no evidence that they are equal); arms apart by more than the
    margin, measured precisely, differ."""
    rng = np.random.default_rng(0)
    base = [rng.normal(1.0, 0.1, 200) for _ in range(3)]
    assert stats.compare_examples(base, [b + 0.001 for b in base]).equivalent(0.01).startswith("reproduced")
    assert stats.compare_examples(base, [b + 0.1 for b in base]).equivalent(0.01).startswith("not reproduced")
    noisy = [b + rng.normal(0, 1.0, 200) for b in base]
    assert stats.compare_examples(base, noisy).equivalent(0.01).startswith("inconclusive")
    with pytest.raises(ValueError, match="margin must be > 0"):
        stats.compare_examples(base, noisy).equivalent(0.0)
