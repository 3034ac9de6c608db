import math

import pytest
import torch
import torch.nn as nn

from dropnotes import layers as L
from dropnotes.mc import classifier_summary, mc_predict, regression_summary


def _net():
    return nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), L.Dropout(0.5), nn.Linear(16, 3),
                         nn.Dropout(0.1))


def test_mc_predict_keeps_only_dropout_stochastic_and_restores_modes():
    torch.manual_seed(0)
    net = _net()
    net.train()
    net[1].train(False)  # a mixed state must be restored exactly
    before = {m: m.training for m in net.modules()}
    stats = net[1].running_mean.clone()
    x = torch.randn(8, 4)
    out = mc_predict(net, x, samples=20)
    assert out.shape == (20, 8, 3)
    assert not torch.allclose(out[0], out[1]), "dropout must be active"
    assert torch.equal(net[1].running_mean, stats), "batch norm must stay in eval mode (no stat updates)"
    assert {m: m.training for m in net.modules()} == before
    net.eval()
    assert torch.allclose(out.mean(0), net(x), atol=0.5)  # MC mean near the weight-scaled output


def test_mc_predict_restores_modes_on_error():
    net = _net().eval()
    with pytest.raises(RuntimeError):
        mc_predict(net, torch.randn(2, 5), samples=2)  # wrong input width
    assert not any(m.training for m in net.modules())
    with pytest.raises(ValueError, match="samples"):
        mc_predict(net, torch.randn(2, 4), samples=0)


def test_classifier_summary_decomposition():
    # Two confident samples that disagree: high mutual information, low expected entropy.
    logits = torch.tensor([[[20.0, 0.0]], [[0.0, 20.0]]])
    s = classifier_summary(logits)
    assert torch.allclose(s.mean, torch.tensor([[0.5, 0.5]]), atol=1e-6)
    assert s.entropy.item() == pytest.approx(math.log(2), abs=1e-5)
    assert s.expected_entropy.item() == pytest.approx(0.0, abs=1e-5)
    assert s.mutual_information.item() == pytest.approx(math.log(2), abs=1e-5)
    # Agreeing samples: no mutual information.
    agree = classifier_summary(torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]]))
    assert agree.mutual_information.item() == pytest.approx(0.0, abs=1e-6)
    assert agree.variance.item() == pytest.approx(0.0, abs=1e-12)


def test_regression_summary():
    mean, std = regression_summary(torch.tensor([[1.0], [3.0]]))
    assert mean.item() == 2.0 and std.item() == 1.0
