import math

import pytest
import torch
import torch.nn as nn

from dropnotes import metrics
from dropnotes.ensemble import VmapEnsemble, step_time_loop_vs_vmap


def test_auroc_known_values():
    assert metrics.auroc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 1.0
    assert metrics.auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 0.0
    assert metrics.auroc(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0])) == 0.5  # ties count half
    # P(out > in) for in = {0, 2}, out = {1, 3}: pairs (1>0), (3>0), (3>2) = 3 of 4
    assert metrics.auroc(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 3.0])) == 0.75
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4000, generator=g), torch.randn(4000, generator=g)
    assert abs(metrics.auroc(a, b) - 0.5) < 5 * math.sqrt(1 / 12 * (1 / 4000 + 1 / 4000) * 2)  # same distribution


def test_nll_error_and_ece():
    y = torch.tensor([0, 1, 1, 0])
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    assert metrics.error_rate(probs, y) == 0.25  # the tie at 0.5 resolves to class 0: correct
    assert metrics.nll(probs, y) == pytest.approx(-(math.log(.9) + math.log(.8) + math.log(.4) + math.log(.5)) / 4)
    # Perfect calibration: confidence 0.75 and 3 of 4 correct in that bin -> ECE 0.
    calibrated = torch.tensor([[0.75, 0.25]] * 4)
    assert metrics.expected_calibration_error(calibrated, torch.tensor([0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-6)
    overconfident = torch.tensor([[0.99, 0.01]] * 4)
    assert metrics.expected_calibration_error(overconfident, torch.tensor([0, 1, 0, 1])) == pytest.approx(0.49)


def _make():
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def test_vmap_ensemble_is_k_independent_trainings():
    torch.manual_seed(0)
    ens = VmapEnsemble(_make, 3)
    solo = [ens.member(i) for i in range(3)]
    x = torch.randn(40, 6)
    out = ens(x)
    assert out.shape == (3, 40, 3)
    for i, m in enumerate(solo):
        assert torch.allclose(out[i], m(x), atol=1e-6)


def test_step_timing_reports_a_ratio():
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    t = step_time_loop_vs_vmap(_make, 2, x, y, batch_size=32, steps=2)
    assert t["speedup"] == pytest.approx(t["loop_s_per_step"] / t["vmap_s_per_step"])
    assert t["speedup_stacked"] == pytest.approx(t["loop_s_per_step"] / t["stacked_s_per_step"])
