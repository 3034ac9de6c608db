"""Statistical and structural tests of every dropout variant.

Each property is a checker function; every checker is run on the real variant and on a
deliberately wrong one (a "mutant") that it must reject, so the tests can fail. Tolerances are
5 standard deviations of the statistic under the variant's distribution, with fixed seeds.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dropnotes import functional as DF
from dropnotes import layers as L

P = 0.3
SIGMAS = 5.0


def assert_fraction(observed: float, expected: float, n: int, what: str = "fraction") -> None:
    """|observed - expected| <= 5 binomial standard deviations of a fraction over n draws."""
    sd = math.sqrt(expected * (1 - expected) / n)
    assert abs(observed - expected) <= SIGMAS * sd, f"{what} {observed:.5f}, expected {expected} ± {SIGMAS * sd:.5f}"


# --------------------------------------------------------------------------- checkers


def check_inverted(fn, p=P, n=400_000):
    """Zero fraction ≈ p, kept units exactly 1/(1-p), mean preserved (x = ones)."""
    torch.manual_seed(0)
    y = fn(torch.ones(n), p)
    zero = (y == 0).float().mean().item()
    assert_fraction(zero, p, n, "zero fraction")
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p))), "kept units must be scaled by 1/(1-p)"
    sd_mean = math.sqrt(p / (1 - p) / n)
    assert abs(y.mean().item() - 1) <= SIGMAS * sd_mean, "expectation not preserved"


def check_shared(fn, x, shared_dims, p=P):
    """The mask is constant along ``shared_dims`` and varies across the others with zero fraction ≈ p."""
    torch.manual_seed(0)
    y = fn(x, p)
    ratio = y / x
    ref = ratio.amax(dim=shared_dims, keepdim=True)
    assert torch.equal(ratio, ref.expand_as(ratio)), f"mask must be shared over dims {shared_dims}"
    n = ref.numel()
    assert_fraction((ref == 0).float().mean().item(), p, n, "dropped fraction of mask units")


def check_grad_is_mask(fn, p=P, n=10_000):
    """d sum(y) / dx is the scaled mask: exactly zero where y was dropped, 1/(1-p) where kept."""
    torch.manual_seed(0)
    x = (torch.rand(n) + 0.5).requires_grad_()
    y = fn(x, p)
    y.sum().backward()
    dropped = y.detach() == 0
    assert dropped.any() and (~dropped).any()
    assert torch.all(x.grad[dropped] == 0), "gradient must be zero where the unit was dropped"
    assert torch.allclose(x.grad[~dropped], torch.full_like(x.grad[~dropped], 1 / (1 - p)))


def check_identity_without_rng(fn, x):
    """Eval mode (or p = 0) returns x itself and draws no random numbers."""
    state = torch.get_rng_state()
    y = fn(x)
    assert y is x or torch.equal(y, x)
    assert torch.equal(torch.get_rng_state(), state), "no random numbers may be drawn"


def check_seeded(fn, x):
    torch.manual_seed(123)
    a = fn(x)
    torch.manual_seed(123)
    b = fn(x)
    torch.manual_seed(124)
    c = fn(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


# --------------------------------------------------------------------------- mutants


def mutant_scale_by_keep(x, p):  # the classic mistake: multiply by (1-p) instead of divide
    return x * torch.empty_like(x).bernoulli_(1 - p) * (1 - p)


def mutant_per_element(x, p):  # ignores mask sharing
    return x * torch.empty_like(x).bernoulli_(1 - p) / (1 - p)


def mutant_detached_mask_grad(x, p):  # gradient passes through dropped units
    mask = torch.empty_like(x).bernoulli_(1 - p) / (1 - p)
    return x + (x * mask - x).detach()


def test_checkers_reject_mutants():
    with pytest.raises(AssertionError):
        check_inverted(mutant_scale_by_keep)
    with pytest.raises(AssertionError):
        check_grad_is_mask(mutant_detached_mask_grad)
    with pytest.raises(AssertionError):
        check_shared(mutant_per_element, torch.ones(64, 3, 8, 8), (2, 3))  # spatial sharing
    with pytest.raises(AssertionError):
        check_shared(mutant_per_element, torch.ones(64, 20, 16), (1,))  # per time step redrawn
    with pytest.raises(AssertionError):
        check_shared(mutant_per_element, torch.ones(256, 4, 5), (1, 2))  # per sample
    with pytest.raises(AssertionError):
        check_identity_without_rng(lambda x: mutant_per_element(x, 0.5), torch.ones(10))


# --------------------------------------------------------------------------- standard dropout


def test_dropout_inverted():
    check_inverted(lambda x, p: DF.dropout(x, p))
    check_grad_is_mask(lambda x, p: DF.dropout(x, p))
    check_identity_without_rng(lambda x: DF.dropout(x, P, training=False), torch.ones(10))
    check_identity_without_rng(lambda x: DF.dropout(x, 0.0), torch.ones(10))
    check_seeded(lambda x: DF.dropout(x, P), torch.ones(1000))


def test_dropout_classic_scales_at_test_time():
    torch.manual_seed(0)
    n = 400_000
    y = DF.dropout(torch.ones(n), P, inverted=False)
    assert set(y.unique().tolist()) == {0.0, 1.0}, "classic dropout does not scale in training"
    assert_fraction((y == 0).float().mean().item(), P, n)
    assert torch.equal(DF.dropout(torch.ones(3), P, training=False, inverted=False), torch.full((3,), 1 - P))
    # Equivalence in expectation: training mean of classic == its eval output.
    assert abs(y.mean().item() - (1 - P)) <= SIGMAS * math.sqrt(P * (1 - P) / n)


def test_dropout_agrees_with_torch_reference():
    """Same semantics as torch.nn.Dropout: zero fraction, kept scale, eval identity."""
    check_inverted(lambda x, p: nn.Dropout(p).train()(x))  # the reference passes the same checker
    x = torch.randn(5)
    assert torch.equal(nn.Dropout(P).eval()(x), DF.dropout(x, P, training=False))


@pytest.mark.parametrize("fn", [
    lambda p: DF.dropout(torch.ones(3), p), lambda p: DF.gaussian_dropout(torch.ones(3), p),
    lambda p: DF.spatial_dropout(torch.ones(2, 3, 4), p), lambda p: DF.drop_path(torch.ones(2, 3), p),
    lambda p: DF.variational_dropout(torch.ones(2, 3, 4), p), lambda p: DF.drop_block(torch.ones(1, 1, 4, 4), p, 2),
    lambda p: DF.embedding_dropout(torch.tensor([1]), torch.ones(3, 2), p),
    lambda p: DF.dropconnect(torch.ones(1, 2), torch.ones(3, 2), None, p),
    lambda p: L.Dropout(p), lambda p: L.DropPath(p), lambda p: L.DropBlock2d(p, 3), lambda p: L.SpatialDropout(p),
    lambda p: L.DropConnectLinear(2, 3, p=p), lambda p: L.EmbeddingDropout(3, 2, p=p),
    lambda p: L.WeightDrop(nn.LSTM(2, 2), p=p), lambda p: L.drop_path_rates(4, p),
])
@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan")])
def test_bad_rate_raises_value_error_naming_it(fn, bad):
    with pytest.raises(ValueError, match=r"(^p |max_rate)"):
        fn(bad)


# --------------------------------------------------------------------------- Gaussian dropout


def check_gaussian_moments(fn, p=P, n=400_000):
    torch.manual_seed(0)
    y = fn(torch.ones(n), p)
    var = p / (1 - p)
    assert abs(y.mean().item() - 1) <= SIGMAS * math.sqrt(var / n), "mean must be 1"
    # sd of the sample variance of a normal: var * sqrt(2 / (n - 1))
    assert abs(y.var().item() - var) <= SIGMAS * var * math.sqrt(2 / (n - 1)), "variance must be p/(1-p)"


def test_gaussian_dropout_matches_bernoulli_moments():
    check_gaussian_moments(DF.gaussian_dropout)
    with pytest.raises(AssertionError):
        check_gaussian_moments(lambda x, p: x * (1 + math.sqrt(p) * torch.randn_like(x)))  # variance p: wrong
    check_identity_without_rng(lambda x: DF.gaussian_dropout(x, P, training=False), torch.ones(4))
    check_seeded(lambda x: DF.gaussian_dropout(x, P), torch.ones(100))


# --------------------------------------------------------------------------- DropConnect


def check_dropconnect(fn, p=P):
    """Weights (not units) dropped at rate p, kept ones scaled 1/(1-p), one mask shared by the batch."""
    torch.manual_seed(0)
    w, b = torch.rand(300, 400) + 0.5, torch.randn(300)
    x = torch.eye(400).repeat(2, 1)  # each row reads out one column of the masked weight matrix
    y = fn(x, w, b, p) - b
    masked = y[:400].T  # (out, in): the effective weight
    assert torch.equal(y[:400], y[400:]), "one weight mask per call, shared by the batch"
    assert_fraction((masked == 0).float().mean().item(), p, masked.numel(), "dropped weights")
    kept = masked != 0
    assert torch.allclose(masked[kept], w[kept] / (1 - p))


def test_dropconnect_masks_weights_once_per_call():
    check_dropconnect(DF.dropconnect)
    with pytest.raises(AssertionError):  # output dropout is not DropConnect
        check_dropconnect(lambda x, w, b, p: mutant_per_element(F.linear(x, w), p) + b)
    x, w, b = torch.randn(3, 4), torch.randn(5, 4), torch.randn(5)
    assert torch.equal(DF.dropconnect(x, w, b, P, training=False), F.linear(x, w, b))


def test_dropconnect_gradient_zero_at_dropped_weights():
    torch.manual_seed(0)
    layer = L.DropConnectLinear(50, 40, p=P)
    x = torch.rand(8, 50) + 0.1
    torch.manual_seed(1)
    layer(x).sum().backward()
    torch.manual_seed(1)  # the same seed reproduces the mask
    effective = DF.dropconnect(torch.eye(50), layer.weight.detach(), None, P).T
    dropped = effective == 0
    assert torch.all(layer.weight.grad[dropped] == 0) and torch.all(layer.weight.grad[~dropped] != 0)
    layer.eval()
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))


# --------------------------------------------------------------------------- structured masks


def test_spatial_dropout_shares_mask_over_positions():
    check_shared(DF.spatial_dropout, torch.ones(200, 16, 5, 5), (2, 3))
    check_shared(DF.spatial_dropout, torch.ones(200, 16, 7), (2,))
    check_identity_without_rng(lambda x: DF.spatial_dropout(x, P, training=False), torch.ones(2, 3, 4, 4))


def test_spatial_dropout_agrees_with_dropout2d():
    check_shared(lambda x, p: nn.Dropout2d(p).train()(x), torch.ones(200, 16, 5, 5), (2, 3))


def test_variational_dropout_same_mask_every_time_step():
    check_shared(DF.variational_dropout, torch.ones(100, 12, 40), (1,))
    check_shared(lambda x, p: DF.variational_dropout(x, p, batch_first=False), torch.ones(12, 100, 40), (0,))
    check_grad_is_mask(lambda x, p: DF.variational_dropout(x.view(100, 10, 10), p).flatten())


def test_drop_path_one_draw_per_sample():
    check_shared(DF.drop_path, torch.ones(4000, 3, 4), (1, 2))
    torch.manual_seed(0)
    y = DF.drop_path(torch.ones(4000, 3), P, scale_by_keep=False)
    assert set(y.unique().tolist()) == {0.0, 1.0}
    check_identity_without_rng(lambda x: DF.drop_path(x, P, training=False), torch.ones(3, 3))


def check_word_types(fn, p=P, vocab=2000, dim=8):
    """Every occurrence of a word shares one mask value; dropped types ≈ p; kept rows scaled 1/(1-p)."""
    torch.manual_seed(0)
    weight = torch.rand(vocab, dim) + 0.5
    ids = torch.arange(vocab).repeat(3).view(6, -1)  # every word occurs three times
    flat_ids = ids.flatten()
    ratio = fn(ids, weight, p).view(-1, dim) / weight[flat_ids]
    per_word = [ratio[flat_ids == w] for w in range(0, vocab, 97)]
    assert all(torch.equal(r, r[:1].expand_as(r)) for r in per_word), "all occurrences of a word share the mask"
    assert_fraction((ratio[:vocab, 0] == 0).float().mean().item(), p, vocab, "dropped word types")
    assert torch.allclose(ratio[ratio != 0], torch.full_like(ratio[ratio != 0], 1 / (1 - p)))


def test_embedding_dropout_drops_word_types():
    check_word_types(DF.embedding_dropout)
    with pytest.raises(AssertionError):  # dropping occurrences instead of types
        check_word_types(lambda ids, w, p: mutant_per_element(F.embedding(ids, w), p))
    ids, weight = torch.arange(10).view(2, 5), torch.randn(10, 3)
    assert torch.equal(DF.embedding_dropout(ids, weight, P, training=False), weight[ids])


def test_embedding_dropout_gradient_zero_for_dropped_words():
    torch.manual_seed(0)
    emb = L.EmbeddingDropout(500, 4, p=P)
    ids = torch.arange(500)
    out = emb(ids)
    out.sum().backward()
    dropped = out[:, 0] == 0
    assert dropped.any()
    assert torch.all(emb.weight.grad[dropped] == 0) and torch.all(emb.weight.grad[~dropped] != 0)


def _opening_is_identity(dropped: torch.Tensor, b: int) -> bool:
    """Morphological opening with a b x b square leaves a union of b x b squares unchanged."""
    d = dropped.float()
    eroded = -F.max_pool2d(-F.pad(d, (0, b - 1, 0, b - 1), value=0.0), b, stride=1)
    opened = F.max_pool2d(F.pad(eroded, (b - 1, 0, b - 1, 0)), b, stride=1)
    return torch.equal(opened, d)


def test_drop_block_drops_whole_squares_at_the_expected_rate():
    torch.manual_seed(0)
    b, p, h = 3, 0.1, 16
    x = torch.ones(400, 4, h, h)
    y = DF.drop_block(x, p, b)
    assert torch.allclose(y.mean(), torch.tensor(1.0)), "renormalised by count/count_ones"
    dropped = y == 0
    assert _opening_is_identity(dropped, b), "every dropped pixel lies in a dropped b x b square"
    assert not _opening_is_identity(mutant_per_element(x, p) == 0, b)  # per-pixel dropout fails
    gamma = p * h * h / (b * b * (h - b + 1) ** 2)
    expected = 1 - (1 - gamma) ** (b * b)  # a pixel away from the border is covered by b*b seed positions
    interior = dropped[:, :, b - 1:h - b + 1, b - 1:h - b + 1].float().mean(dim=(2, 3)).flatten()
    se = interior.std().item() / math.sqrt(interior.numel())  # maps are independent
    assert abs(interior.mean().item() - expected) <= SIGMAS * se
    check_identity_without_rng(lambda t: DF.drop_block(t, p, b, training=False), x)


def test_drop_block_even_and_oversized_blocks():
    torch.manual_seed(0)
    y = DF.drop_block(torch.ones(50, 2, 9, 9), 0.2, 4)
    assert y.shape == (50, 2, 9, 9) and _opening_is_identity(y == 0, 4)
    z = DF.drop_block(torch.ones(50, 2, 5, 5), 0.2, 9)  # clipped to the map: whole maps drop
    per_map = (z == 0).flatten(2).float().mean(-1)
    assert set(per_map.unique().tolist()) <= {0.0, 1.0}


# --------------------------------------------------------------------------- weight drop


def test_weight_drop_on_lstm():
    torch.manual_seed(0)
    lstm = nn.LSTM(6, 10, batch_first=True)
    raw = lstm.weight_hh_l0.detach().clone()
    wd = L.WeightDrop(lstm, ["weight_hh_l0"], p=0.5)
    x = torch.randn(3, 7, 6)
    torch.manual_seed(1)
    out_a, _ = wd(x)
    torch.manual_seed(1)
    out_b, _ = wd(x)
    assert torch.equal(out_a, out_b), "seeded"
    # Equivalent to running the LSTM with the dropped matrix itself (same seed, same mask).
    torch.manual_seed(1)
    dropped = DF.dropout(raw, 0.5)
    ref = nn.LSTM(6, 10, batch_first=True)
    ref.load_state_dict(lstm.state_dict())
    with torch.no_grad():
        ref.weight_hh_l0.copy_(dropped)
    assert torch.allclose(out_a, ref(x)[0], atol=1e-6)
    assert torch.equal(lstm.weight_hh_l0.detach(), raw), "the wrapped parameter is untouched"
    out_a.sum().backward()
    grad = lstm.weight_hh_l0.grad
    assert torch.all(grad[dropped == 0] == 0) and grad.abs().sum() > 0
    wd.eval()
    assert torch.equal(wd(x)[0], lstm(x)[0])
    with pytest.raises(ValueError, match="weights='weight_hh_l9'"):
        L.WeightDrop(nn.LSTM(2, 2), ["weight_hh_l9"])


# --------------------------------------------------------------------------- learned rates


def test_concrete_dropout_rate_is_learned():
    torch.manual_seed(0)
    cd = L.ConcreteDropout(nn.Linear(200, 1, bias=False), p_init=0.2, temperature=0.1)
    nn.init.ones_(cd.layer.weight)
    x = torch.ones(2000, 200)
    y = cd(x)
    dropped = 1 - (y.sum() / (x.sum() / (1 - cd.p))).item()  # mean relaxed drop fraction
    # The relaxed mask's mean is p for any temperature; sd over 400k near-Bernoulli draws.
    assert abs(dropped - 0.2) <= SIGMAS * math.sqrt(0.2 * 0.8 / x.numel())
    (y.mean() + cd.regularization()).backward()
    assert cd.p_logit.grad is not None and cd.p_logit.grad != 0
    cd.eval()
    assert torch.equal(cd(x), cd.layer(x))
    assert "p=0.200" in repr(cd)


def test_sparse_variational_linear():
    torch.manual_seed(0)
    layer = L.SparseVariationalLinear(50, 20)
    x = torch.randn(4, 50)
    with torch.no_grad():
        layer.log_sigma2.fill_(-30.0)  # tiny noise everywhere: log alpha clamps to -10, nothing pruned
    layer.eval()
    assert torch.allclose(layer(x), F.linear(x, layer.weight, layer.bias))
    assert layer.sparsity() == 0.0
    with torch.no_grad():
        layer.log_sigma2[:, :25] = 10.0  # huge noise on half the weights: pruned at eval
    assert layer.sparsity() == pytest.approx(0.5)
    assert torch.allclose(layer(x), F.linear(x[:, 25:], layer.weight[:, 25:], layer.bias), atol=1e-5)
    layer.train()
    samples = torch.stack([layer(x) for _ in range(4000)])
    mean = F.linear(x, layer.weight, layer.bias).detach()
    var = F.linear(x * x, torch.exp(layer.log_alpha) * layer.weight ** 2).detach()
    assert torch.all((samples.mean(0) - mean).abs() <= SIGMAS * (var / 4000).sqrt() + 1e-4)
    assert layer.kl().item() > 0 and torch.isfinite(layer.kl())


def test_drop_path_rates():
    assert L.drop_path_rates(5, 0.2) == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    assert L.drop_path_rates(3, 0.1, "uniform") == [0.1, 0.1, 0.1]
    assert L.drop_path_rates(1, 0.1) == [0.0]
    with pytest.raises(ValueError, match="schedule='cosine'"):
        L.drop_path_rates(4, 0.1, "cosine")


# --------------------------------------------------------------------------- module behaviour

MODULES = [
    (lambda: L.Dropout(0.123), (4, 8)), (lambda: L.GaussianDropout(0.123), (4, 8)),
    (lambda: L.DropConnectLinear(8, 3, p=0.123), (4, 8)), (lambda: L.SpatialDropout(0.123), (4, 3, 5, 5)),
    (lambda: L.VariationalDropout(0.123), (4, 6, 8)), (lambda: L.DropPath(0.123), (4, 8)),
    (lambda: L.DropBlock2d(0.123, 3), (4, 3, 8, 8)),
]


@pytest.mark.parametrize("make, shape", MODULES)
def test_module_repr_eval_and_dtypes(make, shape):
    m = make()
    assert "0.123" in m.extra_repr()
    x = torch.randn(shape)
    m.eval()
    if isinstance(m, nn.Linear):
        assert torch.equal(m(x), F.linear(x, m.weight, m.bias))
    else:
        assert m(x) is x
    m.train()
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        m.to(dtype)
        assert m(x.to(dtype)).dtype == dtype
    m.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m(x).shape[0] == shape[0]


@pytest.mark.parametrize("make, shape", MODULES)
def test_module_compiles(make, shape):
    torch._dynamo.reset()
    m = make()
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    x = torch.randn(shape)
    torch.manual_seed(0)
    out = compiled(x)
    assert out.shape[0] == shape[0]
    m.eval()
    assert torch.equal(compiled(x), m(x))


@pytest.mark.parametrize("fn, shape, mask_numel", [
    (lambda x: DF.drop_path(x, P), (64, 16, 32), 64),
    (lambda x: DF.spatial_dropout(x, P), (8, 16, 12, 12), 8 * 16),
    (lambda x: DF.variational_dropout(x, P), (8, 30, 32), 8 * 32),
    (lambda x: DF.embedding_dropout(torch.arange(64).view(8, 8), x, P), (100, 16), 100),
])
def test_masks_are_kept_at_their_reduced_shape(fn, shape, mask_numel):
    """Autograd saves only the reduced-shape mask, not a tensor of the input's size."""
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    x = torch.randn(shape, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    big = [n for n in saved if n >= x.numel() and n > mask_numel]
    assert not big, f"saved tensors {saved}; expected only the mask ({mask_numel})"


def test_attention_dropout_goes_to_sdpa_only_in_training(monkeypatch):
    seen = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(kwargs["dropout_p"])
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    attn = L.SelfAttention(16, 4, p_attn=0.25, causal=True)
    x = torch.randn(2, 5, 16)
    a, b = attn(x), attn(x)
    attn.eval()
    e1, e2 = attn(x), attn(x)
    assert seen == [0.25, 0.25, 0.0, 0.0]
    assert not torch.allclose(a, b) and torch.equal(e1, e2)
    assert "p_attn=0.250" in attn.extra_repr()
    # Causality: the first position does not see later ones.
    x2 = x.clone()
    x2[:, 1:] += 1.0
    assert torch.allclose(attn(x2)[:, 0], e1[:, 0], atol=1e-6)
    with pytest.raises(ValueError, match="p_attn"):
        L.SelfAttention(16, 4, p_attn=1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_eager_dropout_saves_no_more_bytes_than_torch(dtype):
    """The mask autograd keeps is one byte per element, as the fused ``native_dropout``'s (what F.dropout runs on
    a GPU; on a CPU F.dropout keeps a mask in x's dtype, 4 or 2 bytes); DropConnect's weight mask alike."""
    from dropnotes.bench import saved_bytes

    n = 1 << 16
    x = torch.randn(n, dtype=dtype, requires_grad=True)
    ours = saved_bytes(lambda t: DF.dropout(t, 0.1), x)
    fused = saved_bytes(lambda t: torch.native_dropout(t, 0.1, True)[0], x)
    assert fused == n and ours <= fused + 16  # the 0-d scale beside the mask
    w = torch.randn(256, 256, dtype=dtype, requires_grad=True)
    inp = torch.randn(8, 256, dtype=dtype)
    saved = saved_bytes(lambda t: DF.dropconnect(inp, t, None, 0.5), w)
    plain = saved_bytes(lambda t: F.linear(inp, t), w)
    assert saved - plain <= w.numel() * 1 + 16 + w.numel() * w.element_size()  # the masked weight F.linear keeps


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_one_byte_mask_holds_the_draws_of_a_mask_in_the_inputs_dtype(dtype):
    """Eager dropout draws its bool mask directly; the kept units and their scaling are those of a mask drawn in the
    input's dtype and divided by the keep rate (the form before the 1-byte mask), on the same seed."""
    x = torch.randn(4096, dtype=dtype)
    torch.manual_seed(3)
    y = DF.dropout(x, 0.3)
    torch.manual_seed(3)
    assert torch.equal(y, x * DF._keep_mask(x.shape, 0.7, x))
    w = torch.randn(64, 32, dtype=dtype, requires_grad=True)
    torch.manual_seed(4)
    DF.dropout(w, 0.3).sum().backward()
    torch.manual_seed(4)
    assert torch.equal(w.grad, torch.ones_like(w) * DF._keep_mask(w.shape, 0.7, w))
