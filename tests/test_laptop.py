"""The laptop profile: CI never runs it (up to 45 minutes a chapter), so each laptop configuration is run here
for one training step at its real sizes (shapes, dtypes, memory), and a chapter without one refuses it by name."""

import pytest
import torch

from dropnotes.engine import StackedMLP, make_step
from dropnotes.experiments import CHAPTERS
from dropnotes.runtime import stream_seed


def _one_step(model: StackedMLP, batch_size: int, amp: bool) -> float:
    k = model.k
    x, y = torch.rand(4 * batch_size, 784), torch.randint(0, 10, (4 * batch_size,))
    idx = torch.randint(0, len(x), (k, batch_size))
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    step = make_step(model, x, y, idx, lr=torch.full((k,), 0.05), weight_decay=None, momentum=0.9, max_norm=None,
                     clip=None, amp_dtype=torch.bfloat16 if amp else None, generator=torch.Generator().manual_seed(0),
                     bufs=[torch.zeros_like(p) for p in params], alive=torch.ones(k, dtype=torch.bool),
                     died=torch.full((k,), -1), step_no=torch.zeros((), dtype=torch.long))
    step()
    return max(float((p - b).abs().max()) for p, b in zip(params, before))


def test_chapter1_laptop_group_takes_a_step_at_its_sizes():
    from dropnotes.experiments import mechanics as ch

    cfg = ch.configure("laptop", device="cpu")
    assert cfg.profile == "laptop" and cfg.n_seeds >= 3 and cfg.train_size == 50000
    group = ch.arms(cfg)
    model = StackedMLP(len(group), 784, cfg.hidden, 10, p_input=[cfg.input_p if r > 0 else 0.0 for r, _ in group],
                       p_hidden=[r for r, _ in group], seeds=[stream_seed(s, "init") for _, s in group])
    assert _one_step(model, cfg.batch_size, cfg.amp) > 0
    assert ch.train_flops(cfg) > 0


def test_chapter2_laptop_group_takes_a_step_at_its_sizes():
    from dropnotes.experiments import ensembles as ch

    cfg = ch.configure("laptop", device="cpu")
    assert cfg.n_seeds >= 3 and cfg.eval_every > 0
    k = cfg.n_seeds * (cfg.members + 1)
    model = StackedMLP(k, 784, cfg.hidden, 10, p_input=cfg.p_input, p_hidden=cfg.p_hidden)
    assert _one_step(model, cfg.batch_size, cfg.amp) > 0


def test_chapter7_laptop_configures():
    from dropnotes.experiments import cost

    cfg = cost.configure("laptop", device="cpu")
    assert cfg.profile == "laptop" and max(cfg.sizes) >= 2**24


@pytest.mark.parametrize("chapter", list(CHAPTERS))
def test_a_chapter_without_a_laptop_profile_refuses_it_by_name(chapter):
    import importlib

    module = importlib.import_module(f"dropnotes.experiments.{chapter}")
    if "laptop" in module.PROFILE_DEFAULTS:
        assert module.configure(profile="laptop", device="cpu").profile == "laptop"
    else:
        with pytest.raises(ValueError, match="profile='laptop' is not defined for this chapter; choose one of"):
            module.configure(profile="laptop", device="cpu")


def test_chapter4_flop_count_matches_torchs_counter():
    """The ViT FLOP count behind chapter 4's CPU estimate, against torch's own counter of one training step."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from dropnotes.experiments import droppath as ch
    from dropnotes.models import ViT

    model = ViT(dim=48, depth=3, heads=3, drop_path_rate=0.0)
    x = torch.randn(2, 3, 32, 32)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:  # the math path: counted matmuls
        model(x).sum().backward()
    counted = counter.get_total_flops()
    assert abs(ch.vit_train_flops(48, 3, 2) / counted - 1) < 0.01  # the head's bias-free count aside


def test_chapter4_says_its_claims_need_a_gpu():
    from dropnotes import scorecard
    from dropnotes.experiments import droppath as ch

    e = ch.cpu_hours("cpu")
    assert ch.LAPTOP_NEEDS_GPU and e["hours_at_least"] > 0.75  # over the laptop budget even at the peak rate
    assert "need a GPU" in ch.laptop_sentence("cpu")
    assert scorecard._needs_gpu("droppath") and not scorecard._needs_gpu("mechanics")
