"""The batched engine: K models trained as one equal the same K trained one at a time."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dropnotes import models, train
from dropnotes import stacked as engine  # the stacked models (local names 'stacked' are groups)


def _data(n=96, d=12, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, :classes].argmax(1) + (torch.rand(n, generator=g) < 0.2).long()) % classes
    return x, y


def _reference(nets, x, y, *, epochs, batch_size, lr, momentum, wd, max_norm, clip, p_input, p_hidden, seed):
    """The same K models trained one at a time with torch.optim.SGD, replaying the engine's random draws
    (per epoch one (K, N) key tensor for the orders; per step and dropout site one uniform tensor (K', B, width)
    over the K' models that drop at that site, in order: all K when every model does, else only those with a rate
    above 0, the others drawing nothing, :func:`dropnotes.stacked.noise_plan`) and taking model k's slice."""
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
            site_rates = [p_input] + [p_hidden] * (len(widths) - 1)
            draws = []
            for w, rates in zip(widths, site_rates):
                on = [i for i in range(k) if rates[i] > 0]
                u = torch.rand(len(on), b, w, generator=g) if on else None
                draws.append({i: u[j] for j, i in enumerate(on)})
            for i, net in enumerate(nets):
                ps = [p_input[i]] + [p_hidden[i]] * (len(widths) - 1)
                masks = [(u[i] < 1 - p) / (1 - p) if i in u else 1.0 for u, p in zip(draws, ps)]
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


@pytest.mark.parametrize("wd, max_norm", [([0.0, 1e-2, 0.0], [1e9, 0.8, 1e9]),  # every model projected
                                           ([0.0, 0.0, 0.0], [math.inf, 0.8, math.inf])])  # one model; no decay
def test_batched_equals_sequential_with_per_model_hyperparameters(wd, max_norm):
    torch.manual_seed(0)
    k = 3
    nets = [torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 4)) for _ in range(k)]
    x, y = _data()
    hp = dict(lr=[0.05, 0.1, 0.02], wd=wd, max_norm=max_norm, clip=[1e9, 1e9, 0.3],
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
    out = m._drop(torch.ones(4, n, 1), "hidden", g)
    for i, p in enumerate(rates):
        dropped = float((out[i] == 0).float().mean())
        assert abs(dropped - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-12, (p, dropped)
        kept = out[i][out[i] != 0]
        torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - p)))
    m.eval()
    assert torch.equal(m._drop(torch.ones(4, 10, 3), "hidden", g), torch.ones(4, 10, 3))


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


# ------------------------------------------------------------------ noise kinds and the CNN group

def test_per_model_noise_kinds_have_their_own_statistics():
    """Bernoulli and Gaussian models in one group: each multiplier has mean 1 and variance p/(1-p) (within 5
    sigma); a spatial model shares one value per (sample, channel)."""
    rates = torch.tensor([0.2, 0.5, 0.5, 0.3])
    gaussian = torch.tensor([False, True, False, True])
    n = 100_000
    g = torch.Generator().manual_seed(0)
    out = engine.unit_noise(torch.ones(4, n, 1), rates, gaussian=gaussian, generator=g)
    for i in range(4):
        p = float(rates[i])
        var = p / (1 - p)
        assert abs(float(out[i].mean()) - 1) <= 5 * math.sqrt(var / n)
        q = 1 - p  # the fourth central moment: 3 sigma^4 (Gaussian); (p/q)^4 q + p (the scaled Bernoulli)
        mu4 = 3 * var ** 2 if gaussian[i] else (p / q) ** 4 * q + p
        se_var = math.sqrt((mu4 - var ** 2) / n)  # the standard error of a sample variance
        # plus the squared error of the estimated mean, (5 sigma)^2 = 25 var / n at most
        assert abs(float(out[i].var()) - var) <= 5 * se_var + 25 * var / n, (i, float(out[i].var()), var)
        assert bool((out[i] == 0).any()) != bool(gaussian[i])  # only Bernoulli models zero units
    h = torch.ones(64, 3, 4, 5, 5)  # (B, K, C, H, W)
    spatial = torch.tensor([True, False, True])
    out = engine.unit_noise(h, torch.tensor([0.5, 0.5, 0.0]), model_dim=1, spatial=spatial, generator=g)
    per_channel = out.flatten(3)
    assert torch.equal(per_channel[:, 0].amin(-1), per_channel[:, 0].amax(-1))  # one value per channel
    assert not torch.equal(per_channel[:, 1].amin(-1), per_channel[:, 1].amax(-1))
    assert torch.equal(out[:, 2], h[:, 2])  # rate 0: untouched


def test_dropconnect_models_mask_their_hidden_weights_only():
    torch.manual_seed(0)
    m = engine.StackedMLP(3, 6, (5, 4), 2, p_connect=[0.0, 0.5, 0.0], noise=["bernoulli", "bernoulli", "gaussian"])
    x = torch.randn(7, 6)
    clean = m.eval()(x)
    m.train()
    masks = [torch.rand(1, 5, 6) < 0.5, torch.rand(1, 4, 5) < 0.5, None]
    out = m(x, connect_masks=masks)
    torch.testing.assert_close(out[0], clean[0])  # no unit noise, no DropConnect: the deterministic net
    h = x
    for i, (w, b) in enumerate(zip(m.weights, m.biases)):
        wi = w[1] * masks[i][0] * 2.0 if i < 2 else w[1]
        h = h @ wi.T + b[1]
        h = F.relu(h) if i < 2 else h
    torch.testing.assert_close(out[1], h)
    # the written-out backward pass equals autograd's through the masked weights
    out.pow(2).sum().backward()
    w_ref = [w[1].detach().clone().requires_grad_() for w in m.weights]
    b_ref = [b[1].detach().clone().requires_grad_() for b in m.biases]
    h = x
    for i, (w, b) in enumerate(zip(w_ref, b_ref)):
        h = h @ (w * masks[i][0] * 2.0 if i < 2 else w).T + b
        h = F.relu(h) if i < 2 else h
    h.pow(2).sum().backward()
    for w, wr, b, br in zip(m.weights, w_ref, m.biases, b_ref):
        torch.testing.assert_close(w.grad[1], wr.grad)
        torch.testing.assert_close(b.grad[1], br.grad)
    assert not torch.allclose(m(x)[1], clean[1])  # fresh masks without connect_masks
    with pytest.raises(ValueError, match="Bernoulli-dropout models"):
        m.model(1)
    with pytest.raises(ValueError, match="noise='uniform' is not allowed"):
        engine.StackedMLP(2, 4, (4,), 2, noise=["bernoulli", "uniform"])


def _cnns(k=3, seed=0):
    torch.manual_seed(seed)
    return [models.SmallCNN(channels=(4, 6), placement="none") for _ in range(k)]


def test_stacked_cnn_is_its_k_cnns():
    """Eval and train mode (batch statistics, running-statistic updates) and the gradients equal the K
    separate SmallCNNs'; a model taken out of the group is the same model."""
    nets = _cnns()
    stacked = engine.StackedCNN.from_models(nets)
    x = torch.randn(3, 5, 1, 28, 28)  # each model's own batch
    y = torch.randint(0, 10, (3, 5))
    out = stacked(x, per_model=True)
    loss = sum(F.cross_entropy(out[i], y[i]) for i in range(3))
    loss.backward()
    for i, net in enumerate(nets):
        ref = net.train()(x[i])
        torch.testing.assert_close(out[i], ref, rtol=1e-4, atol=1e-5)
        F.cross_entropy(ref, y[i]).backward()
        torch.testing.assert_close(stacked.conv2.grad[i], net.features[4].weight.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(stacked.running_var2[i], net.bn_layers[1].running_var)
    stacked.eval()
    xe = torch.randn(4, 1, 28, 28)
    for i, net in enumerate(nets):
        torch.testing.assert_close(stacked(xe)[i], net.eval()(xe), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(stacked.model(i).eval()(xe), net(xe), rtol=1e-4, atol=1e-5)


def test_stacked_cnn_trained_batched_equals_sequential():
    """One epoch of fit_stacked on K CNNs (per-model lr and weight decay, each its own data order) equals
    torch.optim.SGD on each CNN with the same orders."""
    nets = _cnns(k=2, seed=1)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(40, 1, 28, 28, generator=g), torch.randint(0, 10, (40,), generator=g)
    stacked = engine.StackedCNN.from_models(nets)
    lr, wd = [0.05, 0.1], [0.0, 1e-3]
    engine.fit_stacked(stacked, x, y, x, y, epochs=1, batch_size=8, lr=lr, weight_decay=wd, momentum=0.9,
                       generator=torch.Generator().manual_seed(3))
    order = torch.rand(2, 40, generator=torch.Generator().manual_seed(3)).argsort(dim=1)
    for i, net in enumerate(nets):
        opt = torch.optim.SGD(net.parameters(), lr=lr[i], momentum=0.9, weight_decay=wd[i])
        net.train()
        for start in range(0, 40, 8):
            idx = order[i, start:start + 8]
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
        torch.testing.assert_close(stacked.conv1[i], net.features[0].weight, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(stacked.head_weight[i], net.head.weight, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(stacked.running_mean1[i], net.bn_layers[0].running_mean, rtol=1e-4, atol=1e-5)


def test_stacked_cnn_placements_and_noise_round_trip():
    nets = [models.SmallCNN(channels=(4, 6), placement=pl, noise=nz, p=0.3)
            for pl, nz in (("none", "pixel"), ("before-bn", "pixel"), ("after-bn", "spatial"), ("before-bn", "gaussian"))]
    s = engine.StackedCNN.from_models(nets)
    assert s.p_before_bn.tolist() == pytest.approx([0, 0.3, 0, 0.3]) and s.p_after_bn.tolist() == pytest.approx([0, 0, 0.3, 0])
    assert s.noise == ("pixel", "pixel", "spatial", "gaussian")
    for i, net in enumerate(nets):
        back = s.model(i)
        assert back.placement == net.placement
        assert [type(m) for m in back.features] == [type(m) for m in net.features]
    x = torch.ones(8, 1, 28, 28)
    out = s.train()(x)
    assert out.shape == (4, 8, 10) and torch.isfinite(out).all()


# ------------------------------------------------------------------ the LSTM language-model group

def _index(scheme: str) -> int:
    """The position of ``scheme`` in chapter 3's ladder (the order of :func:`_lms`)."""
    from dropnotes.models.lstm_lm import SCHEMES

    return list(SCHEMES).index(scheme)


def _lms(vocab=30, dim=8, layers=2, seed=0):
    from dropnotes.models import LSTMLM
    from dropnotes.models.lstm_lm import SCHEMES

    torch.manual_seed(seed)
    return [LSTMLM(vocab, dim, layers, s, p_io=0.3, p_rec=0.25, p_emb=0.2) for s in SCHEMES]


def test_stacked_lm_in_eval_mode_is_each_lstmlm_across_windows():
    lms = _lms()
    group = engine.StackedLSTMLM.from_models(lms).eval()
    ids = torch.randint(0, 30, (2, 3, 5))  # two windows of 3 sequences x 5 steps
    state, states = None, [None] * len(lms)
    for w in range(2):
        logits, state = group(ids[w], state)
        for i, lm in enumerate(lms):
            ref, states[i] = lm.eval()(ids[w], states[i])
            torch.testing.assert_close(logits[i], ref, rtol=1e-4, atol=1e-5)
    v = _index("variational")
    assert group.model(v).scheme == "variational"
    torch.testing.assert_close(group.model(v).eval()(ids[0])[0], lms[v](ids[0])[0])


def test_stacked_lm_in_training_is_each_lstmlm_with_the_same_masks():
    """Every scheme's training forward and gradients equal the single-model computation with the group's
    masks: word types dropped, input/output masks, h_{t-1} masks (lstm_loop), DropConnect on W_hh."""
    from dropnotes.models.lstm_lm import lstm_loop

    lms = _lms()
    group = engine.StackedLSTMLM.from_models(lms).train()
    ids, y = torch.randint(0, 30, (3, 5)), torch.randint(0, 30, (3, 5))
    masks = group.draw_masks(3, 5, torch.Generator().manual_seed(1))
    logits, _ = group(ids, masks=masks)
    sum(F.cross_entropy(logits[i].flatten(0, 1), y.flatten()) for i in range(len(lms))).backward()
    for i, lm in enumerate(lms):
        dropped = []  # (layer, the masked copy of the layer, its mask) of a weight-drop model
        x = lm.embed(ids)
        if masks["emb"] is not None:
            x = x * masks["emb"][i][ids].unsqueeze(-1)
        for layer, lstm in enumerate(lm.lstms):
            if masks["io"][layer] is not None:
                x = x * masks["io"][layer][i]
            if masks["w_hh"][layer] is not None and bool(group.weight_drop[i]):
                lstm = torch.nn.LSTM(8, 8, batch_first=True)
                lstm.load_state_dict(lm.lstms[layer].state_dict())
                with torch.no_grad():  # the masks of the weight-drop models only, in wd_index's order
                    mask = masks["w_hh"][layer][group.wd_index.tolist().index(i)]
                    lstm.weight_hh_l0.mul_(mask)
                dropped.append((layer, lstm, mask))
            x, _ = lstm_loop(x, lstm, None, None if masks["h"][layer] is None else masks["h"][layer][i])
        if masks["io"][-1] is not None:
            x = x * masks["io"][-1][i]
        ref = lm.decoder(x)
        torch.testing.assert_close(logits[i], ref, rtol=1e-4, atol=1e-5)
        F.cross_entropy(ref.flatten(0, 1), y.flatten()).backward()
        torch.testing.assert_close(group.dec_w.grad[i], lm.decoder.weight.grad, rtol=1e-4, atol=1e-6)
        if not bool(group.weight_drop[i]):
            torch.testing.assert_close(group.w_hh[0].grad[i], lm.lstms[0].weight_hh_l0.grad, rtol=1e-4, atol=1e-6)
        for layer, lstm, mask in dropped:  # d loss / d W_hh = d loss / d (W_hh * mask) * mask
            torch.testing.assert_close(group.w_hh[layer].grad[i], lstm.weight_hh_l0.grad * mask, rtol=1e-4, atol=1e-6)
    assert masks["h"][0][0].eq(1).all() and masks["h"][0][1].eq(1).all()  # none, naive: no mask on h_{t-1}
    assert group.wd_index.tolist() == [_index("weight-drop")]  # only weight-drop's W_hh is masked
    assert masks["w_hh"][0].shape == (1, 32, 8) and masks["w_hh"][0].ne(1).any()


def test_a_tied_h_mask_is_an_lstm_with_masked_w_hh_columns():
    """One sequence, a tied mask m on h_{t-1}: W_hh (m * h) = (W_hh diag m) h, so nn.LSTM with W_hh's
    columns scaled by m gives the same outputs."""
    lms = _lms(layers=1)
    group = engine.StackedLSTMLM.from_models(lms).train()
    ids = torch.randint(0, 30, (1, 6))
    masks = group.draw_masks(1, 6, torch.Generator().manual_seed(2))
    i = _index("variational")
    m = masks["h"][0][i, 0, 0]  # (dim,), the same at every step
    assert masks["h"][0].shape[2] in (1, 6) and torch.equal(masks["h"][0][i, 0, 0], masks["h"][0][i, 0, -1])
    masks = {**masks, "emb": None, "io": [None, None]}
    logits, _ = group(ids, masks=masks)
    lstm = torch.nn.LSTM(8, 8, batch_first=True)
    lstm.load_state_dict(lms[i].lstms[0].state_dict())
    with torch.no_grad():
        lstm.weight_hh_l0.mul_(m.view(1, -1))
    ref = lms[i].decoder(lstm(lms[i].embed(ids))[0])
    torch.testing.assert_close(logits[i], ref, rtol=1e-4, atol=1e-5)


def test_per_step_h_masks_differ_at_every_step_and_tied_ones_never():
    group = engine.StackedLSTMLM(5, 30, 64, 1, scheme=["none", "naive", "per-step-recurrent", "variational", "weight-drop"],
                                 p_io=0.3, p_rec=0.5, p_emb=0.1)
    masks = group.draw_masks(4, 10, torch.Generator().manual_seed(0))
    h, io = masks["h"][0], masks["io"][0]
    assert h.shape[2] == 10
    for t in range(1, 10):
        assert not torch.equal(h[2, :, t], h[2, :, t - 1])  # per-step-recurrent: fresh at every step
        assert torch.equal(h[3, :, t], h[3, :, 0])  # variational: tied in time
        assert not torch.equal(io[1, :, t], io[1, :, t - 1]) and torch.equal(io[4, :, t], io[4, :, 0])
    assert torch.equal(io[0], torch.ones_like(io[0]))  # none
    dropped = float((h[2] == 0).float().mean())
    assert abs(dropped - 0.5) <= 5 * math.sqrt(0.25 / h[2].numel())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_stacked_lm_training_equals_one_lstmlm_at_a_time(optimizer):
    """Two epochs of BPTT (per-model lr and clipping, the lr decayed after epoch 1, the state carried)
    give each model the weights SGD (or Adam) gives it alone, on the same full windows."""
    from dropnotes.models import LSTMLM

    torch.manual_seed(3)
    lms = [LSTMLM(20, 6, 2, "none") for _ in range(2)]
    tokens = torch.randint(0, 20, (200,), generator=torch.Generator().manual_seed(4))
    group = engine.StackedLSTMLM.from_models(lms)
    lr, clip = ([0.5, 1.0], [0.25, 5.0]) if optimizer == "sgd" else ([1e-2, 3e-3], [0.25, 5.0])
    res = engine.fit_stacked_lm(group, tokens, tokens[:80], epochs=2, batch_size=4, seq_len=7, lr=lr, lr_decay=2.0,
                                decay_after=1, clip=clip, restore_best=False, optimizer=optimizer)
    xs, ys = engine.lm_windows(tokens, 4, 7)
    for i, lm in enumerate(lms):
        opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(lm.parameters(), lr=lr[i])
        for epoch in (1, 2):
            opt.param_groups[0]["lr"] = lr[i] / 2.0 ** max(0, epoch - 1)
            state = None
            for x, y in zip(xs, ys):
                logits, state = lm.train()(x, state)
                state = [(h.detach(), c.detach()) for h, c in state]
                opt.zero_grad()
                F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
                torch.nn.utils.clip_grad_norm_(lm.parameters(), clip[i])
                opt.step()
        torch.testing.assert_close(group.w_hh[1][i], lm.lstms[1].weight_hh_l0, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(group.dec_w[i], lm.decoder.weight, rtol=1e-4, atol=1e-5)
    h = res.history
    assert len(h) == 4 and h.val_loss.notna().all() and res.died_at_step == [-1, -1]
    losses, counts = engine.lm_window_losses_stacked(group, tokens[:80], 4, 7)
    ref, ref_counts = train.lm_window_losses(lms[1], tokens[:80], 4, 7)
    torch.testing.assert_close(losses[1], ref, rtol=1e-4, atol=1e-5)
    assert torch.equal(counts, ref_counts)


def test_stacked_lm_trains_every_scheme_and_restores_the_best_epoch():
    group = engine.StackedLSTMLM(len(engine.LM_SCHEMES), 20, 8, 1, scheme=list(engine.LM_SCHEMES), p_io=0.3, p_rec=0.3,
                                 p_emb=0.1)
    tokens = torch.randint(0, 20, (400,), generator=torch.Generator().manual_seed(5))
    res = engine.fit_stacked_lm(group, tokens[:300], tokens[300:], epochs=3, batch_size=4, seq_len=8, lr=1.0, clip=5.0)
    h = res.history
    for m in range(group.k):
        hm = h[h.model == m]
        assert res.best_epoch[m] == int(hm.loc[hm.val_loss.idxmin(), "epoch"])
        losses, counts = engine.lm_window_losses_stacked(group, tokens[300:], 4, 8)
        assert float((losses[m] * counts).sum() / counts.sum()) == pytest.approx(res.best_val_error[m], rel=1e-5)


def test_stacked_cnn_sites_in_training_and_the_identity_in_eval():
    """With given multipliers each model is its SmallCNN with the noise at its one site (directly before BN 2,
    or after block 2); drawn noise leaves a p = 0 model alone; eval mode is deterministic and equals each
    SmallCNN in eval mode."""
    torch.manual_seed(5)
    nets = [models.SmallCNN(channels=(4, 6), placement=pl, noise=nz, p=0.3)
            for pl, nz in (("none", "pixel"), ("before-bn", "pixel"), ("after-bn", "spatial"), ("before-bn", "gaussian"))]
    s = engine.StackedCNN.from_models(nets).train()
    x = torch.randn(4, 5, 1, 28, 28)
    g = torch.Generator().manual_seed(6)
    m1, m2 = torch.rand(5, 4, 6, 14, 14, generator=g) * 2, torch.rand(5, 4, 6, 7, 7, generator=g) * 2
    out = s(x, per_model=True, masks=[m1, m2])
    for i, net in enumerate(nets):
        f = net.train().features
        h = f[4](f[3](f[2](f[1](f[0](x[i])))))
        h = f[8](f[7](f[6](h * m1[:, i])))  # given multipliers act at both sites: directly before BN 2,
        h = h * m2[:, i]  # and after block 2
        torch.testing.assert_close(out[i], net.head(h.flatten(1)), rtol=1e-4, atol=1e-5)
    ones = [torch.ones_like(m1), torch.ones_like(m2)]
    drawn, clean = s(x, per_model=True), s(x, per_model=True, masks=ones)
    torch.testing.assert_close(drawn[0], clean[0])  # the model without dropout
    for i in (1, 2, 3):
        assert not torch.allclose(drawn[i], clean[i])  # the noisy ones
    s = engine.StackedCNN.from_models(nets).eval()  # the nets' own BN statistics (the group's moved on above)
    xe = torch.randn(6, 1, 28, 28)
    assert torch.equal(s(xe), s(xe))
    for i, net in enumerate(nets):
        torch.testing.assert_close(s(xe)[i], net.eval()(xe), rtol=1e-4, atol=1e-5)


def test_gaussian_and_dropconnect_mlps_are_deterministic_in_eval():
    torch.manual_seed(7)
    m = engine.StackedMLP(3, 6, (5, 4), 2, p_hidden=[0.0, 0.5, 0.0], noise=["bernoulli", "gaussian", "bernoulli"],
                          p_connect=[0.0, 0.0, 0.5])
    x = torch.randn(9, 6)
    h = x.unsqueeze(0).expand(3, -1, -1)
    for i, (w, b) in enumerate(zip(m.weights, m.biases)):
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        h = F.relu(h) if i < 2 else h
    m.eval()
    torch.testing.assert_close(m(x), h)
    m.train()
    a, b = m(x), m(x)
    torch.testing.assert_close(a[0], h[0])  # no noise on model 0
    assert not torch.allclose(a[1], b[1]) and not torch.allclose(a[2], b[2])  # Gaussian units, DropConnect weights


# ------------------------------------------------------------------ the Vision Transformer group

def _vits(rates=(0.0, 0.2, 0.4), seed=0, depth=2):
    torch.manual_seed(seed)
    return [models.ViT(image_size=8, patch=4, dim=16, depth=depth, heads=2, p_path=r) for r in rates]


def test_stacked_vit_is_its_k_vits():
    """Eval mode, and training without drop-path: outputs and every gradient equal the K ViTs'; a model
    taken out of the group is the same model, with its per-block rates."""
    nets = _vits(rates=(0.0, 0.0, 0.0))
    for i, net in enumerate(nets):  # distinct weights
        with torch.no_grad():
            net.head.bias.add_(i)
    stacked = engine.StackedViT.from_models(nets)
    x = torch.randn(3, 5, 3, 8, 8)
    y = torch.randint(0, 10, (3, 5))
    out = stacked.train()(x, per_model=True)
    sum(F.cross_entropy(out[i], y[i]) for i in range(3)).backward()
    for i, net in enumerate(nets):
        ref = net.train()(x[i])
        torch.testing.assert_close(out[i], ref, rtol=1e-4, atol=1e-5)
        F.cross_entropy(ref, y[i]).backward()
        torch.testing.assert_close(stacked.b1_qkv_w.grad[i], net.blocks[1].attn.qkv.weight.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(stacked.embed_w.grad[i], net.embed.weight.grad.flatten(1), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(stacked.pos.grad[i], net.pos.grad[0], rtol=1e-4, atol=1e-6)
    nets = _vits(rates=(0.0, 0.3, 0.5))
    stacked = engine.StackedViT.from_models(nets).eval()
    xe = torch.randn(4, 3, 8, 8)
    for i, net in enumerate(nets):
        torch.testing.assert_close(stacked(xe)[i], net.eval()(xe), rtol=1e-4, atol=1e-5)
        back = stacked.model(i)
        assert [b.drop_path.p for b in back.blocks] == pytest.approx([b.drop_path.p for b in net.blocks])
        torch.testing.assert_close(back.eval()(xe), net(xe), rtol=1e-4, atol=1e-5)


def test_stacked_vit_drops_each_models_branches_like_its_droppath():
    """With the drop-path multipliers given, model k in training equals its ViT whose DropPath modules apply
    the same multipliers (forward and gradients); drawn, each model drops branches at its own rate."""
    nets = _vits(rates=(0.0, 0.3, 0.6))
    stacked = engine.StackedViT.from_models(nets).train()
    k, n = 3, 6
    g = torch.Generator().manual_seed(1)
    masks = [(torch.rand(k, n, 1, generator=g) < 0.5) * 2.0 for _ in range(2 * stacked.depth)]
    x = torch.randn(k, n, 3, 8, 8)
    out = stacked(x, per_model=True, masks=masks)
    out.sum().backward()
    for i, net in enumerate(nets):
        mods = [m for b in net.blocks for m in (b.drop_path, b.drop_path)]
        calls = iter(range(len(mods)))
        hooks = [b.drop_path.register_forward_hook(
            lambda mod, inp, _out, i=i: inp[0] * masks[next(calls)][i].view(n, 1, 1)) for b in net.blocks]
        ref = net.train()(x[i])
        for h in hooks:
            h.remove()
        torch.testing.assert_close(out[i], ref, rtol=1e-4, atol=1e-5)
        ref.sum().backward()
        torch.testing.assert_close(stacked.b0_fc2_w.grad[i], net.blocks[0].mlp[3].weight.grad, rtol=1e-4, atol=1e-5)
    # drawn: the fraction of dropped branches is each model's rate of that block (binomial, 5 sigma)
    rates = torch.tensor([0.0, 0.1, 0.4])
    draws = torch.stack([engine._drop_path_mult(rates, 4000, "cpu", g)[..., 0] for _ in range(5)])  # (5, K, N)
    dropped = (draws == 0).float().mean((0, 2))
    sigma = (rates * (1 - rates) / 20000).sqrt()
    assert ((dropped - rates).abs() <= 5 * sigma + 1e-9).all(), dropped
    kept = draws[:, 2][draws[:, 2] > 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.6))


def test_stacked_vit_trained_with_adamw_and_a_cosine_schedule_equals_sequential():
    """Two epochs of fit_stacked(optimizer="adamw") on K ViTs (per-model lr and decoupled weight decay, each
    its own data order, the rate annealed per epoch) equal torch.optim.AdamW + CosineAnnealingLR per ViT."""
    nets = _vits(rates=(0.0, 0.0), seed=2)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(24, 3, 8, 8, generator=g), torch.randint(0, 10, (24,), generator=g)
    stacked = engine.StackedViT.from_models(nets)
    lr, wd, epochs = [3e-3, 1e-3], [0.05, 0.0], 2
    cosine = lambda e: 0.5 * (1 + math.cos(math.pi * e / epochs))  # noqa: E731
    engine.fit_stacked(stacked, x, y, x, y, epochs=epochs, batch_size=8, lr=lr, weight_decay=wd, optimizer="adamw",
                       betas=(0.9, 0.95), lr_schedule=cosine, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    orders = [torch.rand(2, 24, generator=gen).argsort(dim=1) for _ in range(epochs)]
    for i, net in enumerate(nets):
        opt = torch.optim.AdamW(net.parameters(), lr=lr[i], weight_decay=wd[i], betas=(0.9, 0.95))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        net.train()
        for order in orders:
            for start in range(0, 24, 8):
                idx = order[i, start:start + 8]
                opt.zero_grad()
                F.cross_entropy(net(x[idx]), y[idx]).backward()
                opt.step()
            sched.step()
        torch.testing.assert_close(stacked.b0_qkv_w[i], net.blocks[0].attn.qkv.weight, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(stacked.head_b[i], net.head.bias, rtol=1e-4, atol=1e-5)


def test_stacked_vit_refuses_what_it_does_not_stack():
    with pytest.raises(ValueError, match="p_path must give one rate per block"):
        engine.StackedViT(2, image_size=8, patch=4, dim=16, depth=2, heads=2, p_path=[[0.1, 0.2, 0.3], 0.0])
    with pytest.raises(ValueError, match="drop-path only"):
        engine.StackedViT.from_models([models.ViT(image_size=8, patch=4, dim=16, depth=1, heads=2, p=0.1)])


# ------------------------------------------------------------------ MC dropout passes as one group

def _sliced(masks: dict, r: int) -> dict:
    pick = lambda m: None if m is None else m[r:r + 1]  # noqa: E731
    return {"emb": pick(masks["emb"]), **{key: [pick(m) for m in masks[key]] for key in ("io", "h", "w_hh")}}


@pytest.mark.parametrize("scheme", ["naive", "variational", "weight-drop"])
def test_replicas_are_model_i_each_with_its_own_masks(scheme):
    """Every replica of model i, given masks, equals model i alone (a one-model group) with the same masks;
    drawn, the replicas' masks differ; they share model i's weights without copying them."""
    i = _index(scheme)
    group = engine.StackedLSTMLM.from_models(_lms()).train()
    reps = group.replicas(i, 3).train()
    assert reps.embed.data_ptr() == group.embed[i].data_ptr() and reps.k == 3
    alone = engine.StackedLSTMLM.from_models([group.model(i)]).train()
    ids = torch.randint(0, 30, (2, 4))
    masks = reps.draw_masks(2, 4, torch.Generator().manual_seed(5))
    out, _ = reps(ids, masks=masks)
    for r in range(3):
        ref, _ = alone(ids, masks=_sliced(masks, r))
        torch.testing.assert_close(out[r], ref[0], rtol=1e-4, atol=1e-5)
    drawn = [m for m in [masks["emb"], *masks["io"], *masks["h"], *masks["w_hh"]] if m is not None]
    assert drawn and all(not torch.equal(m[0], m[1]) for m in drawn)


def test_mc_losses_without_noise_are_the_eval_losses_and_mc_beats_a_single_pass():
    """A model without dropout gives the weight-scaling losses under MC, whatever the chunking; with dropout,
    the chunked computation averages the probabilities of every pass (each chunk's passes carried over all
    windows, then the next chunk's), as computed here pass group by pass group."""
    group = engine.StackedLSTMLM.from_models(_lms())
    tokens = torch.randint(0, 30, (200,))
    ws, counts = engine.lm_window_losses_stacked(group, tokens, 4, 6)
    mc, mc_counts = engine.mc_window_losses(group, 0, tokens, 4, 6, samples=5, chunk=2)  # scheme "none"
    torch.testing.assert_close(mc, ws[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mc_counts, counts)
    from dropnotes.train import lm_batches

    a = engine.mc_window_losses(group, 3, tokens, 4, 6, samples=5, chunk=3, generator=torch.Generator().manual_seed(1))[0]
    g, logps = torch.Generator().manual_seed(1), []
    for s in (3, 2):
        reps, state, per_window = group.replicas(3, s).train(), None, []
        for x, y in lm_batches(tokens, 4, 6):
            logits, state = reps(x, state, generator=g)
            per_window.append(torch.log_softmax(logits, -1).gather(-1, y.expand(s, -1, -1).unsqueeze(-1)).squeeze(-1))
        logps.append(per_window)
    ref = [-(torch.logsumexp(torch.cat(parts), 0) - math.log(5)).mean() for parts in zip(*logps)]
    torch.testing.assert_close(a, torch.stack(ref).double(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a, ws[3])  # the masks are on: not the weight-scaling losses


# ------------------------------------------------------------------ sparse variational dropout

def test_stacked_sparse_mlp_trains_like_each_sparse_mlp(monkeypatch):
    """Eval outputs, the KL penalty and two epochs of fit_stacked (Adam, a per-epoch lr schedule and KL weight,
    the local reparameterisation noise of each model its slice of the group's draw) equal each SparseMLP
    trained alone with torch.optim.Adam on the loss CE + w * KL / N."""
    torch.manual_seed(0)
    nets = [models.SparseMLP(20, (12, 8), 4) for _ in range(2)]
    with torch.no_grad():
        nets[1].layers[0].log_sigma2.fill_(-2.0)  # some weights pruned, noise of a visible size
    stacked = engine.StackedSparseMLP.from_models(nets)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 20, generator=g), torch.randint(0, 4, (30,), generator=g)
    stacked.eval()
    for i, net in enumerate(nets):
        torch.testing.assert_close(stacked(x)[i], net.eval()(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stacked.penalty()[i], net.kl(), rtol=1e-5, atol=1e-4)
    assert stacked.compression()[1] > stacked.compression()[0] == pytest.approx(nets[0].compression())
    lr_f, kl_w = (lambda e: [1.0, 0.5][e]), (lambda e: [0.0, 1.0][e])
    engine.fit_stacked(stacked, x, y, x, y, epochs=2, batch_size=10, lr=1e-2, optimizer="adamw", lr_schedule=lr_f,
                       penalty_weight=kl_w, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    opts = [torch.optim.Adam(n.parameters(), lr=1e-2) for n in nets]
    for epoch in range(2):
        order = torch.rand(2, 30, generator=gen).argsort(dim=1)
        for opt in opts:
            opt.param_groups[0]["lr"] = 1e-2 * lr_f(epoch)
        for start in range(0, 30, 10):
            noise = [torch.randn(2, 10, w, generator=gen) for w in (12, 8, 4)]
            for i, (net, opt) in enumerate(zip(nets, opts)):
                draws = iter(noise)
                monkeypatch.setattr(torch, "randn_like", lambda t, i=i, d=draws: next(d)[i])
                idx = order[i, start:start + 10]
                loss = F.cross_entropy(net.train()(x[idx]), y[idx]) + kl_w(epoch) * net.kl() / 30
                opt.zero_grad()
                loss.backward()
                opt.step()
                monkeypatch.undo()
    for i, net in enumerate(nets):
        torch.testing.assert_close(stacked.weights[0][i], net.layers[0].weight, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(stacked.log_sigma2[2][i], net.layers[2].log_sigma2, rtol=1e-4, atol=1e-5)
        back = stacked.model(i)
        torch.testing.assert_close(back.eval()(x), stacked.eval()(x)[i], rtol=1e-5, atol=1e-6)


def test_the_written_out_sparse_vd_backward_is_the_gradient():
    """torch.autograd.gradcheck (float64) of the sparse VD weights' written-out backward (the variances and the
    KL terms), with log alpha on both sides of the clamp, and its outputs against the layer's own formulas."""
    from dropnotes.layers import SparseVariationalLinear as SVL

    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 4, 5, dtype=torch.float64, generator=g)
    s = torch.randn(2, 4, 5, dtype=torch.float64, generator=g) * 3
    s[0, 0, :2] = torch.tensor([-30.0, 30.0], dtype=torch.float64)  # log alpha clamped at -10 and at 10
    w, s = w.requires_grad_(), s.requires_grad_()
    consts = (SVL.K1, SVL.K2, SVL.K3)
    assert torch.autograd.gradcheck(lambda a, b: engine._SparseWeights.apply(a, b, consts), (w, s))
    var, kl = engine._SparseWeights.apply(w, s, consts)
    la = (s - torch.log(w ** 2 + 1e-8)).clamp(-10.0, 10.0)
    torch.testing.assert_close(var, torch.exp(la) * w * w)
    neg_kl = SVL.K1 * torch.sigmoid(SVL.K2 + SVL.K3 * la) - 0.5 * F.softplus(-la) - SVL.K1
    torch.testing.assert_close(kl, -neg_kl.flatten(1).sum(1))


@pytest.mark.parametrize("mask", ["none", "tied", "per-step"])
def test_the_written_out_lstm_backward_is_the_gradient(mask):
    """torch.autograd.gradcheck (float64, finite differences) of the LSTM layer's hand-written backward:
    the gradients of the input projections, the initial state and W_hh, with and without h masks."""
    g = torch.Generator().manual_seed(0)
    k, n, t, d = 2, 3, 4, 5
    gx = torch.randn(k, n, t, 4 * d, dtype=torch.float64, generator=g, requires_grad=True)
    h0 = torch.randn(k, n, d, dtype=torch.float64, generator=g, requires_grad=True)
    c0 = torch.randn(k, n, d, dtype=torch.float64, generator=g, requires_grad=True)
    w = (0.3 * torch.randn(k, 4 * d, d, dtype=torch.float64, generator=g)).requires_grad_()
    steps = {"none": 0, "tied": 1, "per-step": t}[mask]
    h_mask = None if not steps else (torch.rand(k, n, steps, d, generator=g) < 0.7).double() / 0.7
    assert torch.autograd.gradcheck(lambda *a: engine._LSTMLayer.apply(*a, h_mask, True), (gx, h0, c0, w))


# ------------------------------------------------------------------ the GPT group

def _gpts(k=3, seed=0):
    torch.manual_seed(seed)
    return [models.GPT(256, 8, 16, 2, 2) for _ in range(k)]


def test_stacked_gpt_is_its_k_gpts():
    """Eval mode, and training without dropout: logits and the gradients (the tied embedding's included)
    equal the K GPTs'; a model taken out of the group is the same model."""
    nets = _gpts()
    stacked = engine.StackedGPT.from_models(nets)
    ids = torch.randint(0, 256, (3, 4, 8))
    out = stacked.train()(ids, per_model=True)
    y = torch.randint(0, 256, (3, 4, 8))
    sum(F.cross_entropy(out[i].flatten(0, 1), y[i].flatten()) for i in range(3)).backward()
    for i, net in enumerate(nets):
        ref = net.train()(ids[i])
        torch.testing.assert_close(out[i], ref, rtol=1e-4, atol=1e-5)
        F.cross_entropy(ref.flatten(0, 1), y[i].flatten()).backward()
        torch.testing.assert_close(stacked.tok.grad[i], net.tok.weight.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(stacked.b1_fc1_w.grad[i], net.blocks[1].mlp[0].weight.grad, rtol=1e-4, atol=1e-6)
    stacked.eval()
    shared = torch.randint(0, 256, (2, 6))
    for i, net in enumerate(nets):
        torch.testing.assert_close(stacked(shared)[i], net.eval()(shared), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(stacked.model(i).eval()(shared), net(shared), rtol=1e-4, atol=1e-5)


def test_stacked_gpt_drops_per_model_and_its_written_out_attention_is_sdpa():
    """With noise sites built (max_rate > 0) but every rate 0, training (the written-out causal softmax) equals
    eval (SDPA); with per-model rates only the models with a rate are noisy, and set_rates switches a model
    off in place (early dropout)."""
    nets = _gpts()
    stacked = engine.StackedGPT.from_models(nets, max_rate=0.1)
    ids = torch.randint(0, 256, (4, 8))
    torch.testing.assert_close(stacked.train()(ids), stacked.eval()(ids), rtol=1e-4, atol=1e-5)
    stacked.set_rates(p_emb=[0.0, 0.3, 0.0], p_attn=[0.0, 0.0, 0.3], p_resid=[0.0, 0.3, 0.0])
    clean = stacked.eval()(ids)
    noisy = stacked.train()(ids, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(noisy[0], clean[0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(noisy[1], clean[1], atol=1e-3) and not torch.allclose(noisy[2], clean[2], atol=1e-3)
    for i, net in enumerate(nets):  # eval is the identity whatever the rates: each GPT's deterministic output
        torch.testing.assert_close(clean[i], net.eval()(ids), rtol=1e-4, atol=1e-5)
    stacked.set_rates(p_emb=0.0, p_attn=0.0, p_resid=0.0)
    torch.testing.assert_close(stacked.train()(ids), clean, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="without noise sites"):
        engine.StackedGPT.from_models(nets).set_rates(p_resid=0.1)


def test_attention_dropout_runs_one_sdpa_call_per_run_of_equal_rates():
    """The GPT group's attention-dropout rates, host-side, as runs of neighbouring models with one rate (one
    fused SDPA call each); set_rates updates them, which is when a captured step is captured again."""
    assert engine._runs([0.0, 0.0, 0.1, 0.1, 0.0]) == ((0, 2, 0.0), (2, 4, 0.1), (4, 5, 0.0))
    stacked = engine.StackedGPT.from_models(_gpts(), max_rate=0.1)
    assert stacked.attention_runs == ((0, 3, 0.0),)
    ids = torch.randint(0, 256, (4, 8))
    for rates, runs, quiet in (([0.0, 0.2, 0.2], [0.0, 0.2], 0), ([0.2, 0.0, 0.2], [0.2, 0.0, 0.2], 1)):
        stacked.set_rates(p_attn=rates)  # each run's rows must go to its own models
        assert [r[2] for r in stacked.attention_runs] == pytest.approx(runs)
        torch.manual_seed(0)
        noisy = stacked.train()(ids)
        clean = stacked.eval()(ids)
        for i in range(3):
            if i == quiet:
                torch.testing.assert_close(noisy[i], clean[i], rtol=1e-4, atol=1e-5)
            else:
                assert not torch.allclose(noisy[i], clean[i], atol=1e-3), (rates, i)


def test_dropout_multipliers_drop_at_each_models_rate_and_scale_by_its_keep():
    """dropout_mult (the GPT group's residual dropout): model k's multipliers are 0 with probability p_k (the
    zero fraction within 4 binomial standard errors) and 1/(1-p_k) otherwise, in h's dtype; unit_noise with
    kept noise constants draws exactly what it draws from p."""
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.0, 0.25, 0.5])
    n = 40000
    for dtype in (torch.float32, torch.bfloat16):
        mult = engine.dropout_mult(torch.ones(3, n, 1, dtype=dtype), p, generator=g)
        assert mult.dtype == dtype
        for k in range(3):
            values = set(mult[k].unique().float().tolist())
            keep = 1.0 - float(p[k])
            assert values <= {0.0, float(torch.tensor(1.0 / keep, dtype=dtype))}, (dtype, k, values)
            zeros = float((mult[k] == 0).float().mean())
            assert abs(zeros - float(p[k])) <= 4 * math.sqrt(keep * float(p[k]) / n) + 1e-12, (dtype, k, zeros)
    h = torch.randn(3, 50, 7, generator=g)
    gaussian = torch.tensor([False, True, False])
    a = engine.unit_noise(h, p, gaussian=gaussian, generator=torch.Generator().manual_seed(1))
    b = engine.unit_noise(h, p, gaussian=gaussian, generator=torch.Generator().manual_seed(1),
                          constants=engine.noise_constants(p))
    torch.testing.assert_close(a, b)


def test_stacked_gpts_trained_on_their_own_streams_equal_sequential_adamw():
    """fit_stacked_windows on K GPTs (own token streams, one of them shared; per-model lr; decoupled weight
    decay; clipping; a per-step lr factor) equals torch.optim.AdamW on each GPT over the batches
    train.window_batches draws with the same seed, and evaluates every model on the same windows."""
    nets = _gpts(k=3, seed=4)
    g = torch.Generator().manual_seed(0)
    shared, other = torch.randint(0, 256, (300,), generator=g), torch.randint(0, 256, (200,), generator=g)
    streams, valid = [shared, shared, other], torch.randint(0, 256, (100,), generator=g)
    stacked = engine.StackedGPT.from_models(nets)
    lr, factor = [1e-2, 3e-3, 1e-2], (lambda s: [1.0, 0.5, 0.25, 1.0][s])
    fit = engine.fit_stacked_windows(stacked, streams, valid, steps=4, batch_size=3, lr=lr, lr_factor=factor,
                                     weight_decay=0.1, betas=(0.9, 0.95), clip=0.5, eval_every=2, seeds=[5, 5, 6])
    for i, (net, stream, seed) in enumerate(zip(nets, streams, [5, 5, 6])):
        opt = torch.optim.AdamW(net.parameters(), lr=lr[i], weight_decay=0.1, betas=(0.9, 0.95))
        net.train()
        for s, (x, y) in enumerate(train.window_batches(stream, 3, 8, 4, torch.Generator().manual_seed(seed))):
            opt.param_groups[0]["lr"] = lr[i] * factor(s)
            opt.zero_grad()
            train.lm_loss(net(x), y).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
            opt.step()
        torch.testing.assert_close(stacked.tok[i], net.tok.weight, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(stacked.b0_qkv_w[i], net.blocks[0].attn.qkv.weight, rtol=1e-4, atol=1e-5)
        ref, _ = train.lm_window_losses(net, valid, 3, 8)
        torch.testing.assert_close(fit.windows[4][i], ref, rtol=1e-4, atol=1e-5)
    assert sorted(fit.windows) == [2, 4] and len(fit.history) == 6 and fit.died_at_step == [-1, -1, -1]


def test_dropconnect_rows_scale_before_the_cast_and_backward_is_the_gradient():
    """W_hh's DropConnect on some models of a group: the masked models' weights are the fp32 product rounded
    once to bf16 (as masking then casting), the others the plain cast; the written-out backward is the
    gradient (fp64 gradcheck)."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 6, 3, generator=gen)
    index = torch.tensor([1, 3])
    mult = (torch.rand(2, 6, 3, generator=gen) < 0.7) / 0.7
    out = engine._ScaledRowsCast.apply(w, torch.bfloat16, index, mult)
    ref = w.clone()
    ref[index] = w[index] * mult
    assert torch.equal(out, ref.to(torch.bfloat16))
    w64 = w.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: engine._ScaledRowsCast.apply(t, torch.float64, index, mult.double()), (w64,))


def test_clipping_factor_is_per_model_for_every_shape():
    """Each model's clipping factor over its own gradients, whatever their dims (a (K,) bias, a weight stored
    column-major), as clip_grad_norm_ computes it for that model alone."""
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, generator=gen), engine._weight(3, 5, 4).data.normal_(generator=gen),
             torch.randn(3, 2, 2, 2, generator=gen)]
    clip = torch.tensor([0.5, 100.0, 1.0])
    factor = engine._clip_factor(grads, clip)
    for k in range(3):
        norm = torch.linalg.vector_norm(torch.cat([g[k].reshape(-1) for g in grads]))
        torch.testing.assert_close(factor[k], (clip[k] / (norm + 1e-6)).clamp(max=1.0))


def _weight_sized_copies(model: torch.nn.Module, run) -> list[tuple]:
    """The copies (``copy_``, ``clone``) of a column-major weight's shape that ``run`` launches on the meta
    device: a gradient that autograd moves into its parameter's layout shows up as one."""
    from torch.utils._python_dispatch import TorchDispatchMode

    shapes = {tuple(p.shape) for p in model.parameters() if p.dim() > 2 and not p.is_contiguous()}
    seen = []

    class Copies(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name in ("copy_", "clone") and tuple(args[0].shape) in shapes:
                seen.append((name, tuple(args[0].shape)))
            return func(*args, **(kwargs or {}))

    with Copies():
        run()
    return seen


def test_weight_gradients_arrive_in_their_parameters_layout():
    """The batched groups' matmul weights are stored column-major (engine._weight), and one training step
    copies none of their gradients into place; it fails when a weight is stored row-major again, or when a
    product gives its weight's gradient in the other layout (as the layer-norm fold's bias term once did)."""
    with torch.device("meta"):
        groups = [
            (engine.StackedLSTMLM(3, 50, 16, 2, scheme=["none", "variational", "weight-drop"], p_io=0.3, p_rec=0.2,
                                  p_emb=0.1), lambda m: m(torch.zeros(4, 7, dtype=torch.long))[0], ["w_ih.0", "dec_w"]),
            (engine.StackedViT(2, image_size=8, patch=4, dim=16, depth=2, heads=2, p_path=0.1),
             lambda m: m(torch.zeros(3, 3, 8, 8)), ["embed_w", "head_w", "b1_qkv_w", "b1_fc1_w", "b1_fc2_w"]),
            (engine.StackedGPT(2, vocab_size=30, block_size=8, dim=16, layers=2, heads=2),
             lambda m: m(torch.zeros(2, 8, dtype=torch.long)), ["b0_qkv_w", "b0_proj_w", "b0_fc1_w"]),
            (engine.StackedSparseMLP(2, 20, (12, 8), 5), lambda m: m(torch.zeros(4, 20)),
             ["weights.0", "log_sigma2.1"]),
        ]
        for model, forward, column_major in groups:
            params = dict(model.named_parameters())
            assert all(not params[name].is_contiguous() for name in column_major), type(model)
            model.train()
            assert _weight_sized_copies(model, lambda: forward(model).float().sum().backward()) == [], type(model)


def test_a_planned_draw_gives_each_kind_its_own_statistics_and_p0_nothing():
    """stacked.noise_plan: in one group a model at p = 0 is untouched, a per-pixel model's multiplier is 0 or
    1/(1-p) at rate p, a spatial model's is constant over each channel, a Gaussian one has mean 1 and variance
    p/(1-p); a plan that swapped kinds or models, or scaled wrongly, fails one of these."""
    from dropnotes.stacked.noise import noise_constants, noise_plan, unit_noise

    p = torch.tensor([0.0, 0.5, 0.3, 0.5])
    kinds = ["pixel", "pixel", "spatial", "gaussian"]
    plan = noise_plan(p.tolist(), [k == "gaussian" for k in kinds], [k == "spatial" for k in kinds])
    assert plan == ([1], [2], [3])
    h = torch.ones(64, 4, 8, 6, 6)  # (sample, model, channel, H, W)
    out = unit_noise(h, p, model_dim=1, gaussian=torch.tensor([k == "gaussian" for k in kinds]),
                     spatial=torch.tensor([k == "spatial" for k in kinds]), constants=noise_constants(p),
                     plan=tuple(torch.tensor(i, dtype=torch.long) for i in plan),
                     generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 0], h[:, 0])
    pixel = out[:, 1]
    assert set(pixel.unique().tolist()) == {0.0, 2.0}
    assert abs((pixel == 0).float().mean().item() - 0.5) < 5 * (0.25 / pixel.numel()) ** 0.5
    spatial = out[:, 2]
    assert (spatial == spatial[..., :1, :1]).all()
    assert ((spatial == 0) | torch.isclose(spatial, torch.tensor(1 / 0.7))).all()
    n = spatial[..., 0, 0].numel()
    assert abs((spatial[..., 0, 0] == 0).float().mean().item() - 0.3) < 5 * (0.21 / n) ** 0.5
    g = out[:, 3].double()
    se = (1.0 / g.numel()) ** 0.5
    assert abs(g.mean().item() - 1) < 5 * se and abs(g.var().item() - 1.0) < 5 * 2 ** 0.5 * se
    assert noise_plan([0.5, 0.5], [False, False]) is None  # every model per element: one full draw
