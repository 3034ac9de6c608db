"""The plateau test of convergence (stats.plateau), proven by simulation at the stored runs' noise.

The rule: an arm has plateaued when the one-sided 95 % upper bound of its late gain (third quarter's mean minus
the fourth's, per seed, over seeds) lies below the tolerance δ declared with the claim. Two rates, measured with
fixed seeds: an arm still improving by δ a quarter is called plateaued at most 5 % of the time (plus Monte-Carlo
error), and on flat curves the rule's power is what the simulation gives (stated, not asserted loosely)."""

import math

import numpy as np
import pytest

from dropnotes import stats

SIMS = 4000
MC = 2 * math.sqrt(0.05 * 0.95 / SIMS)  # two Monte-Carlo standard errors of a 5 % rate

# The noise of the stored laptop curves (residual SD around a line over each curve's last half): chapter 1's dropout
# arms about 0.1 pp of validation error at 20 points, chapter 3's LSTMs about 0.004 nats at 14 points.
SETTINGS = [("ch1", 0.1, 20, 3, 0.0875), ("ch1, every epoch", 0.1, 80, 3, 0.0875), ("ch1, 5 seeds", 0.1, 20, 5, 0.0875),
            ("ch3", 0.004, 14, 3, 0.005)]


@pytest.mark.parametrize("name,noise,points,seeds,delta", SETTINGS)
def test_an_arm_still_improving_by_delta_is_let_in_at_most_5_percent(name, noise, points, seeds, delta):
    rate = stats.simulate_plateau(noise, points, seeds, delta, gain=delta, sims=SIMS, seed=1)
    assert rate <= 0.05 + MC, f"{name}: {rate:.3f}"
    # and it is not trivially conservative: close to the nominal 5 %
    assert rate >= 0.05 - MC, f"{name}: {rate:.3f}"


def test_power_on_flat_curves_is_what_the_pages_state():
    power = {name: stats.simulate_plateau(noise, points, seeds, delta, gain=0.0, sims=SIMS, seed=2)
             for name, noise, points, seeds, delta in SETTINGS}
    # more evaluation points or more seeds raise it (the page says which would reach 80 %)
    assert power["ch1, every epoch"] > power["ch1"] + 0.2
    assert power["ch1, 5 seeds"] > power["ch1"] + 0.2
    assert power["ch1, every epoch"] >= 0.8


def test_simulation_and_rule_agree_on_the_same_curves():
    """simulate_plateau vectorises plateau(): both must read the same arms the same way."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        idx = np.arange(20)
        curves = [-(0.05 / 10) * idx + 0.1 * rng.standard_normal(20) for _ in range(3)]
        p = stats.plateau(curves, 0.0875)
        g = [c[10:15].mean() - c[15:].mean() for c in curves]
        assert p.gain == pytest.approx(np.mean(g))
        assert p.plateaued == (p.upper < 0.0875)


def test_plateau_reads_direction_of_metric_and_refuses_bad_input():
    up = [np.linspace(0.5, 0.9, 12) + 0.001 * k for k in range(3)]  # accuracy still rising
    assert not stats.plateau(up, 0.01, higher_is_better=True).plateaued
    assert stats.plateau(up, 0.01).gain < 0  # read as an error it is getting worse, not improving
    with pytest.raises(ValueError, match="delta"):
        stats.plateau(up, 0.0)
    with pytest.raises(ValueError, match="2 seeds"):
        stats.plateau(up[:1], 0.01)
    with pytest.raises(ValueError, match="4 evaluation points"):
        stats.plateau([[1, 2, 3]] * 3, 0.01)


def test_a_late_arm_blocks_only_when_it_could_close_the_gap():
    flat = stats.plateau([np.full(20, 1.0) + 0.001 * np.sin(np.arange(20) + k) for k in range(3)], 0.05)
    late = stats.plateau([np.linspace(2, 1, 20) + 0.01 * np.cos(np.arange(20) + k) for k in range(3)], 0.05)
    assert flat.plateaued and not late.plateaued
    # new better by 0.5; the worse (base) arm still improving by ~0.25 a quarter: cannot close 0.5
    assert stats.blocks(0.5, late, flat) == ""
    # a gap of 0.1 it can close
    assert "close the gap" in stats.blocks(0.1, late, flat)
    # the better arm improving only widens the gap
    assert stats.blocks(0.1, flat, late) == ""
    # an equivalence claim is blocked by any late arm that could cross its margin
    assert "margin" in stats.blocks(0.0, flat, late, test="equivalence", margin=0.1)
    assert late.needed()
