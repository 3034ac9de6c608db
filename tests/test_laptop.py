"""The laptop profile: CI never runs it (up to 45 minutes a chapter), so each laptop configuration is run here
for one training step at its real sizes (shapes, dtypes, memory), and a chapter without one refuses it by name."""

import pytest
import torch

from dropnotes.stacked import StackedMLP, make_step
from dropnotes.experiments import REGISTRY
from dropnotes.runtime import stream_seed

pytestmark = pytest.mark.slow  # integration: subprocesses, kills, torchrun or whole-chapter sizes


def _one_step(model, batch_size: int, amp: bool, shape: tuple[int, ...] = (784,)) -> float:
    k = model.k
    x, y = torch.rand(4 * batch_size, *shape), torch.randint(0, 10, (4 * batch_size,))
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
    model = StackedMLP(len(group), 784, cfg.hidden, 10, p_input=[cfg.p_input if r > 0 else 0.0 for r, _ in group],
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


@pytest.mark.parametrize("chapter", list(REGISTRY))
def test_a_chapter_without_a_laptop_profile_refuses_it_by_name(chapter):

    module = REGISTRY[chapter].module
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

    model = ViT(dim=48, depth=3, heads=3, p_path=0.0)
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


def _changed(params, before) -> float:
    return max(float((p - b).abs().max()) for p, b in zip(params, before))


def test_chapter3_laptop_group_takes_a_step_at_its_sizes():
    """The seven schemes x seeds as one StackedLSTMLM at the laptop sizes, one step of the engine's own LM step."""
    from dropnotes.stacked import StackedLSTMLM, make_lm_step
    from dropnotes.experiments import variational as ch
    from dropnotes.models.lstm_lm import SCHEMES

    cfg = ch.configure("laptop", device="cpu")
    assert cfg.n_seeds >= 3 and cfg.epochs >= 4
    k, vocab = len(SCHEMES) * cfg.n_seeds, cfg.vocab_cap or 10000
    group = StackedLSTMLM(k, vocab, cfg.dim, cfg.layers, scheme=list(SCHEMES) * cfg.n_seeds, p_io=cfg.p_io,
                          p_rec=cfg.p_rec, p_emb=cfg.p_emb, seeds=list(range(k))).train()
    ids, tgt = (torch.randint(0, vocab, (cfg.batch_size, cfg.seq_len)) for _ in range(2))
    hs = [torch.zeros(k, cfg.batch_size, cfg.dim) for _ in range(cfg.layers)]
    cs = [torch.zeros_like(h) for h in hs]
    params = list(group.parameters())
    before = [p.detach().clone() for p in params]
    step_no, total = torch.zeros((), dtype=torch.long), torch.zeros(k)
    step = make_lm_step(group, ids, tgt, hs, cs, lr=torch.full((k,), cfg.lr), clip=torch.full((k,), cfg.clip),
                        optimizer=cfg.optimizer, moments=[(torch.zeros_like(p), torch.zeros_like(p)) for p in params],
                        amp_dtype=torch.bfloat16 if cfg.amp else None, generator=torch.Generator().manual_seed(0),
                        alive=torch.ones(k, dtype=torch.bool), died=torch.full((k,), -1), step_no=step_no, total=total)
    step()
    assert int(step_no) == 1 and bool(torch.isfinite(total).all()) and _changed(params, before) > 0


def test_chapter5_laptop_group_takes_a_step_at_its_sizes():
    """The pretraining arms x seeds as one StackedGPT at the laptop sizes, one step of the engine's window step."""
    from dropnotes.stacked import StackedGPT, make_window_step
    from dropnotes.experiments import llm as ch

    cfg = ch.configure("laptop", device="cpu")
    assert cfg.n_seeds >= 3
    k = len(ch.ARMS) * cfg.n_seeds
    group = StackedGPT(k, block_size=cfg.block_size, dim=cfg.dim, layers=cfg.layers, heads=cfg.heads,
                       p_emb=cfg.p_all, p_attn=cfg.p_all, p_resid=cfg.p_all, seeds=list(range(k))).train()
    params = list(group.parameters())
    before = [p.detach().clone() for p in params]
    table = torch.randint(0, 256, (4 * cfg.batch_size, cfg.block_size + 1))
    step_no, last = torch.zeros((), dtype=torch.long), torch.zeros(k)
    step = make_window_step(group, table, torch.randint(0, len(table), (k, cfg.batch_size)),
                            lr=torch.full((k,), cfg.pretrain_lr), weight_decay=torch.full((k,), 0.1), betas=(0.9, 0.95),
                            clip=torch.ones(k), amp_dtype=torch.bfloat16 if cfg.amp else None,
                            generator=torch.Generator().manual_seed(0),
                            moments=[(torch.zeros_like(p), torch.zeros_like(p)) for p in params],
                            alive=torch.ones(k, dtype=torch.bool), died=torch.full((k,), -1), step_no=step_no, last=last)
    step()
    assert int(step_no) == 1 and bool(torch.isfinite(last).all()) and _changed(params, before) > 0
    steps = cfg.pretrain_steps * cfg.batch_size * cfg.block_size
    params_one = sum(p.numel() for p in group.model(0).parameters())
    assert 10 <= steps / params_one <= 40  # compute-optimal: about 20 tokens per parameter


def test_chapter6_laptop_groups_take_a_step_at_their_sizes():
    from dropnotes.stacked import StackedCNN
    from dropnotes.experiments import interactions as ch

    cfg = ch.configure("laptop", device="cpu")
    assert cfg.n_seeds >= 3 and cfg.mlp_train_size + cfg.val_size <= 60000  # MNIST: 60,000 training images
    arms = ch.mlp_arms(cfg) * cfg.n_seeds
    mlp = StackedMLP(len(arms), 784, (cfg.mlp_hidden, cfg.mlp_hidden), 10,
                     p_hidden=[a["p"] if a["kind"] in ("dropout", "gaussian") else 0.0 for a in arms],
                     noise=["gaussian" if a["kind"] == "gaussian" else "bernoulli" for a in arms],
                     p_connect=[a["p"] if a["kind"] == "dropconnect" else 0.0 for a in arms])
    assert _one_step(mlp, cfg.batch_size, cfg.amp) > 0
    k = len(ch.CNN_ARMS) * cfg.n_seeds
    cnn = StackedCNN(k, p_before_bn=[cfg.p_cnn] * k, p_after_bn=[0.0] * k)
    assert _one_step(cnn, cfg.batch_size, cfg.amp, shape=(1, 28, 28)) > 0
