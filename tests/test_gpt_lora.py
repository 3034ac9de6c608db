"""The byte-level GPT, LoRA, single-epoch window batches and the checkpoint cache (chapter 5)."""

import pytest
import torch

from dropnotes import results, train
from dropnotes.layers import LoRALinear, add_lora
from dropnotes.models import GPT


def test_gpt_is_causal_and_dropout_knobs_are_separate():
    torch.manual_seed(0)
    model = GPT(block_size=16, dim=32, layers=2, heads=4, p_emb=0.1, p_attn=0.2, p_resid=0.3).eval()
    x = torch.randint(0, 256, (2, 16))
    y = model(x)
    x2 = x.clone()
    x2[:, 10:] = (x2[:, 10:] + 1) % 256
    assert torch.allclose(model(x2)[:, :10], y[:, :10], atol=1e-5), "future bytes must not change the past"
    assert not torch.allclose(model(x2)[:, 10:], y[:, 10:])
    assert model.drop_emb.p == 0.1 and model.blocks[0].attn.p_attn == 0.2 and model.blocks[1].drop_mlp.p == 0.3
    model.set_dropout(p_resid=0.0)
    assert model.blocks[1].drop_attn.p == 0.0 and model.blocks[0].attn.p_attn == 0.2
    assert model.head.weight is model.tok.weight
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="p_attn"):
        model.set_dropout(p_attn=1.0)


def test_gpt_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    model = GPT(block_size=8, dim=16, layers=1, heads=2, p_resid=0.5)
    x = torch.randint(0, 256, (4, 8))
    assert not torch.allclose(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_lora_starts_as_the_base_layer_and_trains_only_the_adapter():
    torch.manual_seed(0)
    base = torch.nn.Linear(12, 6)
    lora = LoRALinear(base, r=2, alpha=4, p=0.5).eval()
    x = torch.randn(5, 12)
    assert torch.equal(lora(x), base(x)), "B = 0 at the start"
    with torch.no_grad():
        lora.lora_b.normal_()
    assert torch.allclose(lora.merged()(x), lora(x), atol=1e-5)
    lora.train()
    lora(x).sum().backward()
    assert base.weight.grad is None and lora.lora_a.grad is not None
    # lora_dropout acts on the adapter's input only: the base path is deterministic.
    with torch.no_grad():
        lora.lora_b.zero_()
    assert torch.equal(lora(x), base(x))


def test_add_lora_freezes_the_model():
    torch.manual_seed(0)
    model = add_lora(GPT(block_size=8, dim=16, layers=2, heads=2), ("qkv",), r=2, p=0.1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"blocks.{i}.attn.qkv.lora_{m}" for i in range(2) for m in "ab"}
    with pytest.raises(ValueError, match="matched no"):
        add_lora(GPT(block_size=8, dim=16, layers=1, heads=2), ("q_proj",))


def test_window_batches_are_one_epoch_before_repeating():
    tokens = torch.arange(1 + 10 * 4)  # exactly 10 windows of 4 (+1 target)
    gen = torch.Generator().manual_seed(0)
    batches = list(train.window_batches(tokens, batch_size=5, block_size=4, steps=4, generator=gen))
    first_epoch = torch.cat([x[:, 0] for x, _ in batches[:2]])
    assert sorted(first_epoch.tolist()) == list(range(0, 40, 4)), "every window once in the first epoch"
    for x, y in batches:
        assert torch.equal(y, x + 1)
    with pytest.raises(ValueError, match="shorter"):
        next(train.window_batches(torch.arange(3), 2, 4, 1))


def test_checkpoints_are_written_atomically(tmp_path):
    path = results.save_checkpoint({"a": torch.ones(2)}, {"result": {"loss": 1.5}}, tmp_path / "x" / "c.pt")
    state, meta = results.load_checkpoint(path)
    assert torch.equal(state["a"], torch.ones(2)) and meta == {"result": {"loss": 1.5}}
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.json", "c.pt"]  # no temporary file left


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    """The cache is loaded with weights_only=True: a pickle that calls a function is not executed."""
    import pickle

    path = tmp_path / "evil.pt"
    ran = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    torch.save({"state": Evil()}, path) if False else path.write_bytes(pickle.dumps(Evil()))
    path.with_suffix(".json").write_text("{}")
    with pytest.raises(pickle.UnpicklingError):
        results.load_checkpoint(path)
    assert not ran.exists()


def test_lora_adapter_follows_the_wrapped_layer():
    """Wrapping a layer that already sits on its device/dtype (as after model.to(device)) puts the
    adapter there too; the GPU run of chapter 5 once failed with the adapter left on the CPU."""
    base = torch.nn.Linear(6, 4).to(torch.float64)
    lora = LoRALinear(base, r=2, p=0.1)
    assert lora.lora_a.dtype == lora.lora_b.dtype == torch.float64
    assert lora.lora_a.device == lora.lora_b.device == base.weight.device
    lora(torch.randn(3, 6, dtype=torch.float64)).sum().backward()
