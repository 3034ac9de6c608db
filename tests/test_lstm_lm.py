"""The LSTM language model's dropout schemes (chapter 3), the LM evaluation and sparse VD."""

import math

import pytest
import torch

from dropnotes import data, train
from dropnotes.models import LSTMLM, SparseMLP
from dropnotes.models.lstm_lm import SCHEMES, lstm_loop
from dropnotes.stats import compare_examples


def test_time_loop_equals_nn_lstm_without_masks():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(6, 5, batch_first=True)
    x, h0, c0 = torch.randn(3, 9, 6), torch.randn(3, 5), torch.randn(3, 5)
    ref, (h, c) = lstm(x, (h0[None], c0[None]))
    out, (h2, c2) = lstm_loop(x, lstm, (h0, c0), None)
    assert torch.allclose(ref, out, atol=1e-6) and torch.allclose(h[0], h2, atol=1e-6) and torch.allclose(c[0], c2, atol=1e-6)


def test_locked_recurrent_mask_equals_dropping_columns_of_w_hh():
    """For one sequence, multiplying h_{t-1} by the same mask at every step is exactly nn.LSTM with the
    matching columns of W_hh zeroed (and scaled): the mask is not redrawn per step."""
    torch.manual_seed(1)
    lstm = torch.nn.LSTM(4, 6, batch_first=True)
    x = torch.randn(1, 12, 4)
    mask = torch.tensor([2.0, 0.0, 2.0, 2.0, 0.0, 2.0])
    out, _ = lstm_loop(x, lstm, None, mask.view(1, 1, 6))
    dropped = torch.nn.LSTM(4, 6, batch_first=True)
    dropped.load_state_dict(lstm.state_dict())
    with torch.no_grad():
        dropped.weight_hh_l0.mul_(mask)
    assert torch.allclose(out, dropped(x)[0], atol=1e-6)
    # A mask redrawn per step (the per-step-recurrent scheme) is not equivalent to any fixed column mask.
    per_step = torch.bernoulli(torch.full((1, 12, 6), 0.5)) * 2
    assert not torch.allclose(lstm_loop(x, lstm, None, per_step)[0], out, atol=1e-4)


def _masks_seen(model: LSTMLM, x: torch.Tensor) -> torch.Tensor | None:
    torch.manual_seed(0)
    return model._h_mask(model.embed(x))


def test_every_compared_pair_of_schemes_differs_in_one_thing():
    """Chapter 3 compares schemes that differ in one field of their Scheme (where one kind of noise goes):
    each rung of the ladder, fresh against tied recurrent masks, weight-drop against variational."""
    from dataclasses import fields

    from dropnotes.experiments.variational import LADDER

    pairs = [("none", "naive"), *[(a, b) for a, b, _ in LADDER], ("per-step-recurrent", "tied-recurrent"),
             ("variational", "weight-drop")]
    for a, b in pairs:
        differ = [f.name for f in fields(SCHEMES[a]) if getattr(SCHEMES[a], f.name) != getattr(SCHEMES[b], f.name)]
        assert len(differ) == 1, (a, b, differ)


def test_schemes_put_noise_where_they_say():
    torch.manual_seed(0)
    x = torch.randint(0, 50, (4, 7))
    kw = dict(vocab_size=50, dim=16, layers=2, p_io=0.5, p_rec=0.5, p_emb=0.3)
    m = {s: LSTMLM(scheme=s, **kw) for s in SCHEMES}
    assert (m["none"].p_io, m["none"].p_rec, m["none"].p_emb) == (0, 0, 0)
    assert (m["naive"].p_rec, m["naive"].p_emb) == (0, 0)
    assert _masks_seen(m["naive"], x) is None and _masks_seen(m["weight-drop"], x) is None
    assert _masks_seen(m["tied"], x) is None and (m["tied"].p_rec, m["tied"].p_emb) == (0, 0) and m["tied"].locked
    assert not m["naive"].locked and m["per-step-recurrent"].locked  # the rungs differ in one thing each
    assert _masks_seen(m["per-step-recurrent"], x).shape == (4, 7, 16)  # a mask per step
    assert _masks_seen(m["tied-recurrent"], x).shape == (4, 1, 16) and m["tied-recurrent"].p_emb == 0
    assert _masks_seen(m["variational"], x).shape == (4, 1, 16)  # one per sequence
    wd = m["weight-drop"]
    assert wd.rnns[0].p == 0.5 and wd.rnns[0].weights == ("weight_hh_l0",)
    for model in m.values():
        logits, state = model(x)
        assert logits.shape == (4, 7, 50) and len(state) == 2 and state[0][0].shape == (4, 16)
        model.eval()
        a, _ = model(x)
        assert torch.equal(a, model(x)[0]), "eval is deterministic"
    with pytest.raises(ValueError, match="scheme"):
        LSTMLM(50, scheme="locked")
    with pytest.raises(ValueError, match="p_rec"):
        LSTMLM(50, scheme="variational", p_rec=1.0)


def test_state_is_carried_between_windows():
    torch.manual_seed(0)
    model = LSTMLM(30, 8, 1).eval()
    x = torch.randint(0, 30, (2, 10))
    whole, _ = model(x)
    first, state = model(x[:, :6])
    second, _ = model(x[:, 6:], state)
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-5)


def test_mc_evaluation_without_dropout_equals_eval_and_averages_probabilities():
    torch.manual_seed(0)
    tokens = torch.randint(0, 20, (700,))
    plain = LSTMLM(20, 8, 1, "none")
    ws = train.evaluate_lm(plain, tokens, 4, 10)
    assert train.evaluate_lm(plain, tokens, 4, 10, mc_samples=3) == pytest.approx(ws, abs=1e-6)
    assert plain.training, "mode restored"
    noisy = LSTMLM(20, 8, 1, "variational", p_io=0.5, p_rec=0.5, p_emb=0.2)
    torch.manual_seed(1)
    single = [train.evaluate_lm(noisy, tokens, 4, 10, mc_samples=1) for _ in range(4)]
    torch.manual_seed(1)
    mc4 = train.evaluate_lm(noisy, tokens, 4, 10, mc_samples=4)
    # Jensen: the log of averaged probabilities is at least the average log-probability.
    assert mc4 < sum(single) / len(single)
    losses, counts = train.lm_window_losses(plain, tokens, 4, 10)
    assert len(losses) == math.ceil(((700 - 1) // 4) / 10) and counts.sum() == 4 * ((700 - 1) // 4)


def test_capped_vocabulary_keeps_frequent_words():
    splits = data.TokenSplits("t", torch.tensor([0, 1, 2, 3, 4]), torch.tensor([4, 3]), torch.tensor([2]),
                              ["the", "<unk>", "a", "b", "c"])
    c = splits.capped(3)
    assert c.train.tolist() == [0, 1, 2, 1, 1] and c.valid.tolist() == [1, 1] and c.vocab_size == 3
    with pytest.raises(ValueError, match="size"):
        splits.capped(1)


def test_paired_windows_use_the_same_windows():
    rng = torch.Generator().manual_seed(0)
    b = torch.randn(200, generator=rng) + 5
    better = b - 0.05 + 0.01 * torch.randn(200, generator=rng)
    r = compare_examples([b.tolist()], [better.tolist()])
    assert r.verdict().startswith("reproduced (direction") and r.diff == pytest.approx(0.05, abs=0.005)
    r = compare_examples([b.tolist()] * 3, [(b + 0.05).tolist(), (b - 0.06).tolist(), (b + 0.04).tolist()])
    assert r.verdict().startswith("inconclusive"), "a seed-to-seed spread larger than the mean is not trusted"
    verdict = compare_examples([b.tolist()] * 2, [(b + 0.05).tolist(), (b - 0.06).tolist()]).verdict()
    assert "2 seeds: test noise only" in verdict, "two seeds cannot estimate the spread, and the verdict says so"


def test_sparse_mlp_compression_and_kl():
    torch.manual_seed(0)
    net = SparseMLP(20, (10,), 3)
    assert net(torch.randn(5, 20)).shape == (5, 3) and net.kl().ndim == 0
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.fill_(0.5)  # log α = -10 - log 0.25 < 3: nothing pruned
    assert net.compression() == pytest.approx(1.0) and net.sparsity() == [0.0, 0.0]
    with torch.no_grad():
        net.layers[0].log_sigma2.fill_(10.0)  # log α = 10 > 3: the first layer is pruned
    assert net.sparsity()[0] == 1.0 and net.compression() == pytest.approx(230 / 30)
    assert torch.equal(net.eval()(torch.randn(2, 20)), net(torch.zeros(2, 20)))


def test_learning_rate_pilot_chooses_the_lowest_mean_validation_loss_and_never_reads_test():
    """Chapter 3's pilot (protocol 6) trains every scheme at every candidate rate and keeps the rate of the lowest
    mean best validation cross-entropy over the schemes; a rate of 0 cannot learn, so it is never chosen; the test
    stream is not an argument of the pilot's training (a NaN test stream changes nothing)."""
    from dataclasses import replace

    from dropnotes.experiments import variational as ch

    cfg = replace(ch.configure("smoke", device="cpu"), lr_grid=(0.0, 1e-2), select_epochs=2)
    stream = torch.arange(3000) % 40  # a periodic stream: learnable within two epochs
    d = {"train": stream, "valid": stream[:1000].clone(), "test": torch.full((1000,), -1)}
    lr, pilot = ch.select_lr(cfg, d, 40)
    assert lr == 1e-2
    assert len(pilot) == 2 * len(SCHEMES) and set(pilot.lr) == {0.0, 1e-2}
    mean = pilot.groupby("lr").valid_ppl.apply(lambda s: s.map(math.log).mean())
    assert mean[1e-2] < mean[0.0]
    assert ch.select_lr(replace(cfg, lr_grid=()), d, 40)[0] == cfg.lr  # no grid: the configured rate


def test_lm_rate_schedule_multiplies_the_rate_per_epoch():
    """``fit_stacked_lm(lr_schedule=f)`` trains epoch ``e`` at ``lr * f(e)``: a factor of 0 leaves every weight as it
    was (Adam's step is the rate times its direction), the cosine factor of one epoch (1 at epoch 0) trains."""
    from dropnotes.stacked import StackedLSTMLM, fit_stacked_lm
    from dropnotes.train import cosine_factor

    stream = torch.arange(600) % 20

    def fit(schedule):
        model = StackedLSTMLM(2, 20, 8, 1, scheme="naive", p_io=0.1, p_rec=0.1, p_emb=0.0, seeds=[1, 2])
        before = [p.detach().clone() for p in model.parameters()]
        fit_stacked_lm(model, stream, stream[:200].clone(), epochs=1, batch_size=4, seq_len=5, lr=1e-2,
                       optimizer="adam", lr_schedule=schedule, restore_best=False)
        return max(float((p - b).abs().max()) for p, b in zip(model.parameters(), before))

    assert fit(lambda e: 0.0) == 0.0
    assert fit(cosine_factor(1)) > 0


def test_chapter_three_cosine_schedule_has_no_plateau_gate():
    """Protocol 8: the laptop profile anneals Adam's rate to zero (cosine), and under it the plateau gate is declared
    not applicable (``PLATEAU_GATE``); a constant rate keeps the gate; an unknown schedule names the allowed ones."""
    from dataclasses import replace

    import pandas as pd

    from dropnotes.experiments import variational as ch
    from dropnotes.experiments.variational.config import _ptb

    assert ch.configure("laptop", device="cpu").schedule == "cosine" and ch.PLATEAU_GATE.startswith("not applicable")
    cfg = ch.configure("smoke", device="cpu")
    curves = pd.DataFrame({"scheme": "naive", "seed": [0] * 4 + [1] * 4, "epoch": [1, 2, 3, 4] * 2,
                           "valid_ppl": [200.0, 150.0, 120.0, 100.0] * 2})
    assert ch.lm_plateau(curves, "naive", replace(cfg, schedule="cosine")) is None
    test = ch.lm_plateau(curves, "naive", cfg)
    assert not isinstance(test, str) and not test.plateaued
    with pytest.raises(ValueError, match="schedule='linear' is not allowed; choose one of 'constant', 'cosine'"):
        _ptb({"schedule": "linear"}, "smoke", "cpu")
