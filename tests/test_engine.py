"""The batched engine: K models trained as one equal the same K trained one at a time."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dropnotes import engine, models, train


def _data(n=96, d=12, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, :classes].argmax(1) + (torch.rand(n, generator=g) < 0.2).long()) % classes
    return x, y


def _reference(nets, x, y, *, epochs, batch_size, lr, momentum, wd, max_norm, clip, p_input, p_hidden, seed):
    """The same K models trained one at a time with torch.optim.SGD, replaying the engine's random draws
    (per epoch one (K, N) key tensor for the orders; per step one (K, B, width) uniform tensor per dropout
    site) and taking model k's slice of each."""
    k = len(nets)
    g = torch.Generator().manual_seed(seed)
    opts = [torch.optim.SGD(m.parameters(), lr=lr[i], momentum=momentum, weight_decay=wd[i]) for i, m in enumerate(nets)]
    n = x.shape[0]
    widths = [x.shape[1]] + [lin.out_features for lin in nets[0] if isinstance(lin, torch.nn.Linear)][:-1]
    for _ in range(epochs):
        order = torch.rand(k, n, generator=g).argsort(dim=1)
        for start in range(0, n, batch_size):
            idx = order[:, start:start + batch_size]
            b = idx.shape[1]
            draws = [torch.rand(k, b, w, generator=g) for w in widths]
            for i, net in enumerate(nets):
                ps = [p_input[i]] + [p_hidden[i]] * (len(widths) - 1)
                masks = [(u[i] < 1 - p) / (1 - p) for u, p in zip(draws, ps)]
                lins = [m for m in net if isinstance(m, torch.nn.Linear)]
                h = x[idx[i]] * masks[0]
                for j, lin in enumerate(lins):
                    h = lin(h)
                    if j < len(lins) - 1:
                        h = F.relu(h) * masks[j + 1]
                loss = F.cross_entropy(h, y[idx[i]])
                opts[i].zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip[i])
                opts[i].step()
                train.max_norm_(net, max_norm[i])
    return nets


def test_batched_equals_sequential_with_per_model_hyperparameters():
    torch.manual_seed(0)
    k = 3
    nets = [torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 4)) for _ in range(k)]
    x, y = _data()
    hp = dict(lr=[0.05, 0.1, 0.02], wd=[0.0, 1e-2, 0.0], max_norm=[1e9, 0.8, 1e9], clip=[1e9, 1e9, 0.3],
              p_input=[0.0, 0.2, 0.1], p_hidden=[0.0, 0.5, 0.3])
    stacked = engine.StackedMLP.from_models(nets, p_input=hp["p_input"], p_hidden=hp["p_hidden"])
    engine.fit_stacked(stacked, x, y, x, y, epochs=2, batch_size=32, lr=hp["lr"], momentum=0.9,
                       weight_decay=hp["wd"], max_norm=hp["max_norm"], clip=hp["clip"],
                       generator=torch.Generator().manual_seed(7))
    ref = _reference(nets, x, y, epochs=2, batch_size=32, momentum=0.9, seed=7, **hp)
    for i, net in enumerate(ref):
        lins = [m for m in net if isinstance(m, torch.nn.Linear)]
        for w, b, lin in zip(stacked.weights, stacked.biases, lins):
            torch.testing.assert_close(w[i], lin.weight, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(b[i], lin.bias, rtol=1e-4, atol=1e-5)


def test_stacking_an_mlp_gives_its_outputs():
    nets = [models.MLP(784, (32, 16), 10) for _ in range(2)]
    stacked = engine.StackedMLP.from_models(nets).eval()
    x = torch.rand(5, 1, 28, 28)
    out = stacked(x.flatten(1))
    for i, net in enumerate(nets):
        torch.testing.assert_close(out[i], net.eval()(x), rtol=1e-5, atol=1e-6)


def test_per_model_rates_really_differ():
    """Each model's drop fraction is within 5 sigma of its own rate."""
    rates = [0.0, 0.1, 0.5, 0.8]
    m = engine.StackedMLP(4, 8, (8,), 2, p_hidden=rates)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    out = m._drop(torch.ones(4, n, 1), m.p_hidden, g)
    for i, p in enumerate(rates):
        dropped = float((out[i] == 0).float().mean())
        assert abs(dropped - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-12, (p, dropped)
        kept = out[i][out[i] != 0]
        torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - p)))
    m.eval()
    assert torch.equal(m._drop(torch.ones(4, 10, 3), m.p_hidden, g), torch.ones(4, 10, 3))


def test_a_nan_model_is_frozen_and_the_others_go_on():
    x, y = _data(n=128)
    m = engine.StackedMLP(3, 12, (16,), 4, seeds=[0, 1, 2])
    with torch.no_grad():
        m.weights[0][1].fill_(float("nan"))
    before = [w[0].clone() for w in m.weights]
    res = engine.fit_stacked(m, x, y, x, y, epochs=5, batch_size=32, lr=0.1, momentum=0.9)
    assert res.died_at_step == [-1, 1, -1]
    h = res.history
    assert not h[h.model == 1].alive.any() and h[h.model != 1].alive.all()
    for m_id in (0, 2):
        errs = h[h.model == m_id].val_error.tolist()
        assert errs[-1] < 0.75 and math.isfinite(errs[-1])
    assert not torch.equal(m.weights[0][0], before[0])  # the others trained


def test_best_epoch_is_chosen_on_validation_and_restored():
    x, y = _data(n=128, seed=1)
    xv, yv = _data(n=64, seed=2)
    m = engine.StackedMLP(2, 12, (16,), 4)
    res = engine.fit_stacked(m, x, y, xv, yv, epochs=6, batch_size=32, lr=[0.1, 0.5], momentum=0.9,
                             restore_best=True, x_test=xv, y_test=yv)
    h = res.history
    for i in range(2):
        hi = h[h.model == i]
        assert res.best_epoch[i] == int(hi.loc[hi.val_error.idxmin(), "epoch"])
        _, err = engine.evaluate_stacked(m, xv, yv)
        assert err[i].item() == pytest.approx(res.best_val_error[i])


def test_bad_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="lr must have one value per model"):
        engine.fit_stacked(engine.StackedMLP(2, 4, (4,), 2), torch.ones(4, 4), torch.zeros(4, dtype=torch.long),
                           torch.ones(4, 4), torch.zeros(4, dtype=torch.long), epochs=1, batch_size=2, lr=[0.1])
    with pytest.raises(ValueError, match="p_hidden must be in"):
        engine.StackedMLP(2, 4, (4,), 2, p_hidden=[0.1, 1.0])


def test_a_model_taken_out_of_the_group_is_the_same_model():
    m = engine.StackedMLP(3, 784, (32,), 10, p_input=[0.0, 0.2, 0.0], p_hidden=[0.0, 0.5, 0.1]).eval()
    x = torch.rand(4, 784)
    net = m.model(1).eval()
    assert net.p_input == pytest.approx(0.2) and net.p_hidden == pytest.approx(0.5)
    torch.testing.assert_close(net(x), m(x)[1], rtol=1e-5, atol=1e-6)
    pair = m.select([0, 2]).eval()
    torch.testing.assert_close(pair(x), m(x)[[0, 2]], rtol=1e-5, atol=1e-6)
