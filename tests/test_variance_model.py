"""The variance model of paired comparisons (stats.compare_examples), proven by simulation.

Two arms scored on the same test examples over seeds; the standard error adds the seeds' spread and the
examples' shared term, with Satterthwaite degrees of freedom. Under the null (the arms identical in
distribution) it reads a direction at most 5 % of the time, within Monte-Carlo error, whatever the share of seed
noise; at the paper's effect its simulated power matches the analytic power the pages state."""

import math

import numpy as np
import pytest

from dropnotes import stats

SIMS = 1500
MC = 2 * math.sqrt(0.05 * 0.95 / SIMS)


@pytest.mark.parametrize("seed_sd", [0.0005, 0.004])  # chapter 1's seed SD of the test error, and 8x that
def test_false_directions_under_the_null_are_at_most_5_percent(seed_sd):
    rate = stats.simulate_paired(0.015, 0.0, seed_sd, examples=4000, seeds=3, sims=SIMS, seed=11)
    assert rate <= 0.05 + MC, rate


def test_power_at_the_papers_effect_matches_the_analytic_power():
    """Chapter 1's setting: 10,000 test images, error 1.6 % against 1.25 % (Srivastava et al. 2014, Table 2)."""
    simulated = stats.simulate_paired(0.016, 0.0035, 0.0005, examples=10_000, seeds=3, sims=600, seed=12)
    rng = np.random.default_rng(13)
    # one realisation of the same process gives the variance components the analytic power uses
    from scipy.special import expit
    theta = 2.0 * rng.standard_normal(10_000)
    powers = []
    for _ in range(20):
        def arm(rate):
            lo, hi = -30.0, 30.0
            for _ in range(40):
                mid = (lo + hi) / 2
                lo, hi = (lo, mid) if expit(theta + mid).mean() > rate else (mid, hi)
            u = (lo + hi) / 2 + 0.0005 / (0.016 * 0.984) * rng.standard_normal((3, 1))
            return rng.random((3, 10_000)) < expit(theta + u)
        powers.append(stats.compare_examples(arm(0.016), arm(0.0125)).power(3, effect=0.0035))
    analytic = float(np.mean(powers))
    assert abs(simulated - analytic) < 0.1, (simulated, analytic)


def test_the_model_reduces_to_the_paired_test_with_one_seed_and_pairs_examples():
    rng = np.random.default_rng(0)
    hard = rng.random(5000) < 0.02  # examples every model gets wrong
    base = [hard | (rng.random(5000) < 0.004) for _ in range(3)]
    new = [hard | (rng.random(5000) < 0.002) for _ in range(3)]
    r = stats.compare_examples(base, new)
    unpaired = math.sqrt(2 * 0.024 * 0.976 / 5000 / 3)
    assert r.se < unpaired / 2  # the shared hard examples cancel in the pairs
    assert r.diff > 0 and r.verdict().startswith("reproduced")
    one = stats.compare_examples(base[:1], new[:1])
    assert one.df == 4999 and "test noise only" in one.verdict()
    assert one.se == pytest.approx(np.std(base[0].astype(float) - new[0], ddof=1) / math.sqrt(5000))


def test_power_and_seeds_to_decide():
    rng = np.random.default_rng(1)
    base = [rng.random(10_000) < 0.016 for _ in range(3)]
    new = [rng.random(10_000) < 0.0155 for _ in range(3)]
    r = stats.compare_examples(base, new)
    assert r.power(10) > r.power(3)
    s = r.seeds_to_decide(effect=0.0035)
    assert s is not None and r.power(s, effect=0.0035) >= 0.8 > r.power(s - 1, effect=0.0035)
    assert "seeds would reach" in r.decide() or "more test examples" in r.decide()


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same number of seeds"):
        stats.compare_examples([[0, 1]], [[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="same test examples"):
        stats.compare_examples([[0, 1], [0, 1, 1]], [[0, 1], [0, 1, 1]])


def test_equivalence_and_not_better_read_their_intervals():
    rng = np.random.default_rng(5)
    base = [rng.normal(4.0, 0.5, 2000) for _ in range(3)]
    same = [b + rng.normal(0, 0.01, 2000) for b in base]
    r = stats.compare_examples(base, same)
    assert r.equivalent(0.05).startswith("reproduced (equivalent")
    assert r.not_better(0.05).startswith("reproduced")
    far = stats.compare_examples(base, [b - 0.3 for b in same])  # new lower by 0.3: a gain of 0.3
    assert far.equivalent(0.05).startswith("not reproduced")
    assert far.not_better(0.05).startswith("not reproduced")
    with pytest.raises(ValueError, match="margin"):
        r.equivalent(0)


def test_over_seeds_is_the_one_sample_t_test_and_its_power_model():
    from scipy import stats as sps

    d = [0.02, 0.03, 0.025, 0.018]
    r = stats.over_seeds(d)
    assert r.p == pytest.approx(sps.ttest_1samp(d, 0).pvalue) and r.df == 3
    se, df = stats._crossed(r.seed_var, 0.0, 0.0, 4, 1)
    assert se == pytest.approx(r.se) and df == pytest.approx(3)
    assert stats.over_seeds([0.1, -0.1, 0.05]).verdict().startswith("inconclusive")
    with pytest.raises(ValueError, match="2 seeds"):
        stats.over_seeds([0.1])
