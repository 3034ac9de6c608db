import pytest
import torch

from dropnotes import functional as DF
from dropnotes.models import ViT


def test_vit_shapes_rates_and_eval():
    torch.manual_seed(0)
    model = ViT(dim=32, depth=5, heads=2, p_path=0.2, p_attn=0.1)
    x = torch.randn(3, 3, 32, 32)
    assert model(x).shape == (3, 10)
    assert [b.drop_path.p for b in model.blocks] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    assert [b.drop_path.p for b in ViT(dim=32, depth=3, heads=2, p_path=0.2, schedule="uniform").blocks] \
        == [0.2, 0.2, 0.2]
    model.eval()
    assert torch.equal(model(x), model(x))
    with pytest.raises(ValueError, match="divisible"):
        ViT(image_size=30, patch=4)


def test_drop_path_skip_equals_the_masked_residual():
    """Same seed, same mask: skipping the dropped samples' branch gives the masked result and gradients."""
    lin = torch.nn.Linear(8, 8)
    x = torch.randn(64, 5, 8, requires_grad=True)
    torch.manual_seed(3)
    masked = x + DF.drop_path(lin(x), 0.4)
    g_masked = torch.autograd.grad(masked.square().sum(), [x, lin.weight])
    torch.manual_seed(3)
    calls = []
    skipped = DF.drop_path_skip(x, lambda t: calls.append(t.shape[0]) or lin(t), 0.4)
    g_skip = torch.autograd.grad(skipped.square().sum(), [x, lin.weight])
    assert torch.allclose(masked, skipped, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g_masked, g_skip))
    kept = int((masked != x).any(-1).any(-1).sum())
    assert calls == [kept] and kept < 64, "the branch ran on the kept samples only"
    assert torch.equal(DF.drop_path_skip(x, lin, 0.4, training=False), x + lin(x))


def test_vit_skip_variant_matches_masked_vit():
    torch.manual_seed(0)
    a = ViT(dim=32, depth=4, heads=2, p_path=0.3)
    b = ViT(dim=32, depth=4, heads=2, p_path=0.3, skip_dropped=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(16, 3, 32, 32)
    torch.manual_seed(1)
    ya = a(x)
    torch.manual_seed(1)
    yb = b(x)
    assert torch.allclose(ya, yb, atol=1e-5)
