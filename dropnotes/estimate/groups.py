"""The model groups of every chapter's profile, as :class:`~dropnotes.estimate.timemodel.Group` rows: each group's
step built from the engine's own step factories and counted on the meta device."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from dropnotes.amp import autocast
from dropnotes.experiments._base import record_config
from dropnotes.estimate.counter import Cost, _ce, _meta_forward, _meta_step, measure
from dropnotes.estimate.timemodel import CUDNN_LSTM_KERNELS, STORED_SCHEMES, Group


# ------------------------------------------------------------------------------------------ the chapters

def _on(device, make: Callable[[], nn.Module]) -> nn.Module:
    """``make()`` on ``device``: built on the meta device directly, else on the CPU (the groups seed their
    initialisation with CPU generators) and moved."""
    if str(device) == "meta":
        with torch.device("meta"):
            return make()
    return make().to(device)


def _engine_step_fn(k: int, cfg, max_norm: int, make_model: Callable[[], nn.Module] | None = None, example=(784,),
                    momentum: float | None = None, weight_decay: bool = False, optimizer: str = "sgd",
                    transform=None, penalty: bool = False, device="meta"):
    """One step of the batched engine for a group of K models (``make_model()``; by default K MLPs of the
    chapter's size) on ``device``, as the chapter runs it (:func:`dropnotes.stacked.make_step`, bf16 autocast
    with ``cfg.amp``); ``max_norm`` of them are projected, and the group decays or not. Returns the step, the
    group and the tensors the step updates."""
    from dropnotes.stacked import StackedMLP, _flat, make_step

    if make_model is None:
        make_model = lambda: StackedMLP(k, 784, cfg.hidden, 10, p_input=0.2, p_hidden=0.5, seeds=[0] * k)  # noqa: E731
    model = _on(device, make_model).train()
    with torch.device(device):
        x, y = torch.rand(cfg.batch_size * 2, *example), torch.zeros(cfg.batch_size * 2, dtype=torch.long)
        idx = torch.randint(0, cfg.batch_size * 2, (k, cfg.batch_size))
        vec = torch.full((k,), 1e-3)
        index = None if max_norm in (0, k) else torch.arange(max_norm)
        params = list(model.parameters())
        bufs = ([(torch.zeros_like(p), torch.zeros_like(p)) for p in params] if optimizer == "adamw"
                else [torch.zeros_like(p) for p in params])
        alive, died = torch.ones(k, dtype=torch.bool), torch.full((k,), -1, dtype=torch.long)
        step_no = torch.zeros((), dtype=torch.long)
        step = make_step(model, x, y, idx, lr=vec, weight_decay=vec if weight_decay else None,
                         momentum=cfg.momentum if momentum is None else momentum,
                         max_norm=torch.ones(max_norm) if max_norm else None, max_norm_index=index, clip=None,
                         amp_dtype=torch.bfloat16 if getattr(cfg, "amp", False) else None, generator=None, bufs=bufs,
                         alive=alive, died=died, step_no=step_no, optimizer=optimizer, transform=transform,
                         penalty=torch.ones(()) if penalty else None)
    return step, model, params + _flat(bufs) + list(model.buffers()) + [alive, died, step_no]


def _engine_step(k: int, cfg, max_norm: int, make_model: Callable[[], nn.Module] | None = None, example=(784,), **kw):
    """FLOPs, kernels and bytes of :func:`_engine_step_fn`'s step on the meta device, and the group."""
    step, model, _ = _engine_step_fn(k, cfg, max_norm, make_model, example, **kw)
    with torch.device("meta"):
        return measure(step), model


def _svd_args(cfg) -> tuple:
    """Chapter 3's sparse VD group for :func:`_engine_step_fn`: the seeds' LeNet-300-100s, Adam, batch 100, fp32."""
    from dropnotes.stacked import StackedSparseMLP

    ks = cfg.n_seeds
    return ((dataclasses.replace(cfg, batch_size=100, amp=False), 0, lambda: StackedSparseMLP(ks, seeds=[0] * ks), (784,)),
            dict(momentum=0.0, optimizer="adamw", penalty=True))


def _vit_args(cfg, depth: int, k: int) -> tuple:
    """Chapter 4's group of ``k`` ViTs of one depth for :func:`_engine_step_fn` (AdamW, decay, augmentation)."""
    from dropnotes.stacked import StackedViT
    from dropnotes.experiments.droppath import augment

    return ((lambda: StackedViT(k, dim=cfg.dim, depth=depth, heads=cfg.heads, p_path=0.1, seeds=[0] * k), (3, 32, 32)),
            dict(momentum=0.0, weight_decay=True, optimizer="adamw", transform=augment))


def _interaction_model(cfg, name: str, k: int) -> Callable[[], nn.Module]:
    """Chapter 6's CNN or MLP group of ``k`` models (their noise kinds in the chapter's proportions)."""
    from dropnotes.stacked import StackedCNN, StackedMLP

    if name == "CNN":
        return lambda: StackedCNN(k, p_before_bn=cfg.p, p_after_bn=cfg.p,
                                  noise=["pixel", "spatial", "gaussian"] * (k // 3) + ["pixel"] * (k % 3),
                                  seeds=[0] * k)
    return lambda: StackedMLP(k, 784, (cfg.mlp_hidden, cfg.mlp_hidden), 10, p_hidden=0.5,
                              noise=["bernoulli", "gaussian"] * (k // 2) + ["bernoulli"] * (k % 2),
                              p_connect=[0.5] + [0.0] * (k - 1), seeds=[0] * k)


def _mechanics(cfg) -> list[Group]:
    k = len(cfg.rates) * cfg.n_seeds
    (f, n, b), model = _engine_step(k, cfg, max_norm=0)
    with torch.device("meta"):
        model.eval()
        fe, ne, be = _meta_forward(model, torch.empty(4096, 784), cfg.amp)
    evals = math.ceil(cfg.epochs / cfg.eval_every) * math.ceil((cfg.train_size + cfg.val_size + 10000) / 4096)
    dtype = "bf16" if cfg.amp else "fp32"
    return [Group("mechanics", f"{k} MLPs {cfg.hidden} (rates x seeds), batched", 1,
                  cfg.epochs * (cfg.train_size // cfg.batch_size),
                  f, n, dtype, captured=True, models_per_step=k, bytes_per_step=b),
            Group("mechanics", "evaluation (train, validation, test)", 1, evals, fe, ne, dtype, models_per_step=k,
                  bytes_per_step=be)]


def _ensembles(cfg) -> list[Group]:
    from dropnotes.models import MLP

    k = cfg.n_seeds * (cfg.members + 1)
    (f, n, b), group = _engine_step(k, cfg, max_norm=0)  # one factor: no net is max-norm constrained (protocol 4)
    with torch.device("meta"):
        net = MLP(784, cfg.hidden, 10, p_input=cfg.p_input, p_hidden=cfg.p_hidden).train()
        fe, ne, be = _meta_forward(net, torch.empty(4096, 784))
        group.eval()
        fv, nv, bv = _meta_forward(group, torch.empty(4096, 784), cfg.amp)
    # the group's evaluations on train and validation every eval_every epochs (at the end only when 0)
    evals = math.ceil(cfg.epochs / (cfg.eval_every or cfg.epochs)) * math.ceil((cfg.train_size + cfg.val_size) / 4096)
    from dropnotes.experiments.ensembles import ROTATION_ANGLES, ROTATION_SAMPLES

    # MC passes per seed over 10,000 test images, the in- and out-of-distribution sets, the k-sweep and the
    # rotated digits (batches of 4,096 images), and the one rotated digit of the figure.
    images = (cfg.mc_samples * (10000 + 3 * cfg.ood_size) + cfg.mc_repeats * max(cfg.mc_ks) * cfg.mc_test_size
              + ROTATION_SAMPLES * len(ROTATION_ANGLES) * cfg.rotation_digits)
    passes = cfg.n_seeds * math.ceil(images / 4096) + len(ROTATION_ANGLES)
    dtype = "bf16" if cfg.amp else "fp32"
    return [Group("ensembles", f"{k} MLPs (members + dropout nets), batched", 1,
                  cfg.epochs * (cfg.train_size // cfg.batch_size), f, n, dtype, captured=True, models_per_step=k,
                  bytes_per_step=b),
            Group("ensembles", "evaluation of the group (train, validation)", 1, evals, fv, nv, dtype, models_per_step=k,
                  bytes_per_step=bv),
            Group("ensembles", "MC-dropout evaluation", 1, passes, fe, ne, bytes_per_step=be)]


def _variational(cfg) -> list[Group]:
    """Chapter 3 on the engine: every scheme x seed as one StackedLSTMLM (one batched cell per time step,
    the step graph-captured), its validation and test passes, one standalone model per scheme timed for
    ``speed_steps`` windows, MC dropout per variational model (its passes ``MC_CHUNK`` at a time as one
    group), and the sparse VD seeds as one captured StackedSparseMLP."""
    from dropnotes.experiments.variational import MC_CHUNK
    from dropnotes.models.lstm_lm import SCHEMES

    tokens = cfg.train_tokens or 929589
    windows = (tokens - 1) // cfg.batch_size // cfg.seq_len
    k = len(SCHEMES) * cfg.n_seeds
    dtype = "bf16" if cfg.amp else "fp32"
    step, group, _ = _lstm_step_fn(cfg)
    with torch.device("meta"):
        ids = torch.zeros(cfg.batch_size, cfg.seq_len, dtype=torch.long)
        f, n, b = measure(step)
        group.eval()

        def window():  # what lm_window_losses_stacked runs per window: the forward and each model's loss
            with torch.no_grad(), autocast("meta", torch.bfloat16 if cfg.amp else None):
                logits, _ = group(ids)
                F.cross_entropy(logits.float().flatten(0, 2), ids.expand(k, -1, -1).flatten(), reduction="none")

        fe, ne, be = measure(window)
        chunk = min(cfg.mc_samples, MC_CHUNK)
        reps = group.replicas(list(SCHEMES).index("variational"), chunk).train()
        fm, nm, bm = _meta_forward(reps, ids, cfg.amp)
    eval_windows = 2 * ((cfg.eval_tokens or 82430) // (cfg.batch_size * cfg.seq_len) + 1)  # validation, test
    groups = [Group("variational", f"{k} LSTM LMs {cfg.layers}x{cfg.dim} (schemes x seeds), batched", 1,
                    windows * cfg.epochs, f, n, dtype, captured=True, models_per_step=k, bytes_per_step=b),
              Group("variational", "evaluation (validation every epoch, test once)", 1, eval_windows * cfg.epochs // 2
                    + eval_windows // 2, fe, ne, dtype, captured=True, models_per_step=k, bytes_per_step=be)]
    for g in _variational_sequential(dataclasses.replace(cfg, epochs=1), schemes=tuple(SCHEMES)):
        if g.group.startswith("LSTM "):  # the speed table: speed_steps + 2 windows of one model per scheme
            groups.append(dataclasses.replace(g, group=f"speed: {g.group.split(' ', 2)[2]} (one model)", runs=1,
                                              steps=cfg.speed_steps + 2))
    test_windows = (cfg.eval_tokens or 82430) // (cfg.batch_size * cfg.seq_len) + 1
    groups.append(Group("variational", f"MC dropout ({cfg.mc_samples} passes, {chunk} per batched forward)",
                        cfg.n_seeds, test_windows * math.ceil(cfg.mc_samples / chunk), fm, nm, dtype,
                        models_per_step=chunk, bytes_per_step=bm))
    ks = cfg.n_seeds
    a, kw = _svd_args(cfg)
    (fs, ns, bs), _ = _engine_step(ks, *a, **kw)
    groups.append(Group("variational", f"sparse VD LeNet-300-100, {ks} seeds, batched", 1,
                        cfg.svd_epochs * (cfg.svd_train_size // 100), fs, ns, captured=True, models_per_step=ks,
                        bytes_per_step=bs))
    return groups


def _lstm_step_fn(cfg, device="meta"):
    """Chapter 3's training step of every scheme x seed as one StackedLSTMLM on ``device``, as
    :func:`dropnotes.stacked.fit_stacked_lm` runs it (bf16 autocast with ``cfg.amp``, clipping, SGD);
    the step, the group and the tensors it updates."""
    from dropnotes.stacked import StackedLSTMLM, make_lm_step
    from dropnotes.models.lstm_lm import SCHEMES

    vocab, k = cfg.vocab_cap or 10000, len(SCHEMES) * cfg.n_seeds
    group = _on(device, lambda: StackedLSTMLM(k, vocab, cfg.dim, cfg.layers, scheme=list(SCHEMES) * cfg.n_seeds,
                                              p_io=cfg.p_io, p_rec=cfg.p_rec, p_emb=cfg.p_emb, seeds=[0] * k)).train()
    dev = torch.device(device)
    with dev:
        ids = torch.randint(0, vocab, (cfg.batch_size, cfg.seq_len))
        tgt = torch.randint(0, vocab, (cfg.batch_size, cfg.seq_len))
        params = list(group.parameters())
        alive, clip = torch.ones(k, dtype=torch.bool), torch.full((k,), float(cfg.clip or 5.0))
        died, step_no, total = torch.full((k,), -1, dtype=torch.long), torch.zeros((), dtype=torch.long), torch.zeros(k)
        lr = torch.full((k,), float(cfg.lr))
        hs = [torch.zeros(k, cfg.batch_size, cfg.dim) for _ in range(cfg.layers)]
        cs = [torch.zeros_like(h) for h in hs]
        moments = [(torch.zeros_like(q), torch.zeros_like(q)) for q in params] if cfg.optimizer == "adam" else []
    # the engine's own step (the one fit_stacked_lm trains with): the dead-model marking, the carried state and the
    # loss total included
    step = make_lm_step(group, ids, tgt, hs, cs, lr=lr, clip=clip, optimizer=cfg.optimizer, moments=moments,
                        amp_dtype=torch.bfloat16 if cfg.amp else None, generator=None, alive=alive, died=died,
                        step_no=step_no, total=total)
    return step, group, params + hs + cs + [alive, died, step_no, total] + [t for mv in moments for t in mv]


def _variational_sequential(cfg, schemes: tuple[str, ...] = STORED_SCHEMES) -> list[Group]:
    """Chapter 3 as it ran before the batched group (each scheme and seed its own training): what its stored
    full run measured (its wall time and the words/s of the fused and the time-loop schemes); ``schemes``:
    those of that run (or, for the speed table, the chapter's ladder)."""
    from dropnotes.models import LSTMLM, SparseMLP
    from dropnotes.models.lstm_lm import SCHEMES

    vocab = cfg.vocab_cap or 10000
    tokens = cfg.train_tokens or 929589
    steps = (tokens - 1) // (cfg.batch_size * cfg.seq_len) * cfg.epochs
    groups = []
    with torch.device("meta"):  # what nn.LSTM decomposes into here (cuDNN runs it as a few kernels per layer)
        lstm = nn.LSTM(cfg.dim, cfg.dim, batch_first=True)
        _, per_layer, _ = measure(lambda: lstm(torch.empty(cfg.batch_size, cfg.seq_len, cfg.dim,
                                                        requires_grad=True))[0].sum().backward())
    for scheme in schemes:
        with torch.device("meta"):
            m = LSTMLM(vocab, cfg.dim, cfg.layers, scheme, p_io=cfg.p_io, p_rec=cfg.p_rec, p_emb=cfg.p_emb)
            x = torch.zeros(cfg.batch_size, cfg.seq_len, dtype=torch.long)
            f, n, b = _meta_step(m, x, x, loss=_ce, clip=cfg.clip)
        fused = any(isinstance(r, nn.LSTM) or isinstance(getattr(r, "module", None), nn.LSTM) for r in m.rnns)
        if fused and not SCHEMES[scheme].time_loop:
            n = n - cfg.layers * per_layer + cfg.layers * CUDNN_LSTM_KERNELS
        groups.append(Group("variational", f"LSTM {cfg.layers}x{cfg.dim} {scheme}", cfg.n_seeds, steps, f, n, bytes_per_step=b))
    with torch.device("meta"):
        m = LSTMLM(vocab, cfg.dim, cfg.layers, "variational", p_io=cfg.p_io, p_rec=cfg.p_rec, p_emb=cfg.p_emb)
        m.train()
        fe, ne, be = _meta_forward(m, torch.zeros(cfg.batch_size, cfg.seq_len, dtype=torch.long))
        sv = SparseMLP()
        fs, ns, bs = _meta_step(sv, torch.empty(100, 784), torch.zeros(100, dtype=torch.long), loss=F.cross_entropy,
                            optimizer="adamw")
    test_windows = (cfg.eval_tokens or 82430) // (cfg.batch_size * cfg.seq_len)
    return groups + [
        Group("variational", f"MC dropout ({cfg.mc_samples} passes)", cfg.n_seeds, cfg.mc_samples * test_windows, fe, ne,
              bytes_per_step=be),
        Group("variational", "sparse VD LeNet-300-100", 1, cfg.svd_epochs * math.ceil(cfg.svd_train_size / 100), fs, ns,
              bytes_per_step=bs)]


def _droppath(cfg) -> list[Group]:
    """Chapter 4 on the engine: the arms x seeds of each depth as one StackedViT (AdamW, augmentation, the
    step graph-captured), evaluated once on train, validation and test; and the single-ViT speed table."""
    from dropnotes.experiments.droppath import EVAL_BATCH, arms
    from dropnotes.models import ViT

    steps = cfg.epochs * (cfg.train_size // cfg.batch_size)
    dtype = "bf16" if cfg.amp else "fp32"
    out = []
    for depth, models in arms(cfg, 0.1).items():
        k = len(models)
        a, kw = _vit_args(cfg, depth, k)
        (f, n, b), group = _engine_step(k, cfg, 0, *a, **kw)
        with torch.device("meta"):
            group.eval()
            fe, ne, be = _meta_forward(group, torch.empty(EVAL_BATCH, 3, 32, 32), cfg.amp)
        evals = sum(math.ceil(size / EVAL_BATCH) for size in (cfg.train_size, cfg.val_size, cfg.test_size))
        out += [Group("droppath", f"{k} ViTs depth {depth} dim {cfg.dim} (arms x seeds), batched", 1, steps, f, n, dtype,
                      captured=True, models_per_step=k, bytes_per_step=b),
                Group("droppath", f"depth {depth} evaluation (train, validation, test once)", 1, evals, fe, ne, dtype,
                      models_per_step=k, bytes_per_step=be)]
    with torch.device("meta"):  # the speed table: 3 variants x 28 steps of one deep ViT, eager
        m = ViT(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, p_path=0.5)
        f, n, b = _meta_step(m, torch.empty(cfg.batch_size, 3, 32, 32), torch.zeros(cfg.batch_size, dtype=torch.long),
                             loss=F.cross_entropy, optimizer="adamw", amp=cfg.amp)
    out.append(Group("droppath", "speed: one deep ViT, 3 variants", 3, 28, f, n, dtype, bytes_per_step=b))
    return out


def _droppath_sequential(cfg) -> list[Group]:
    """Chapter 4 as it ran before the engine (each arm and seed its own eager run): what its stored full run
    measured."""
    from dropnotes.models import ViT

    steps = cfg.epochs * math.ceil(cfg.train_size / cfg.batch_size)
    out = []
    for depth, runs in ((cfg.depth, len(cfg.rates) + 1), (cfg.shallow_depth, 2)):
        with torch.device("meta"):
            m = ViT(dim=cfg.dim, depth=depth, heads=cfg.heads, p_path=0.1)
            f, n, b = _meta_step(m, torch.empty(cfg.batch_size, 3, 32, 32), torch.zeros(cfg.batch_size, dtype=torch.long),
                                 loss=F.cross_entropy, optimizer="adamw", amp=cfg.amp)
        out.append(Group("droppath", f"ViT depth {depth} dim {cfg.dim}", runs * cfg.n_seeds, steps, f, n,
                         dtype="bf16" if cfg.amp else "fp32", bytes_per_step=b))
    return out


def _stdlib_bytes() -> int:
    """The size of this machine's standard-library corpus (file sizes only; nothing is read)."""
    import sysconfig
    from pathlib import Path

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return sum(p.stat().st_size for p in stdlib.rglob("*.py")
               if "site-packages" not in p.parts and "dist-packages" not in p.parts)


def _corpus_bytes(name: str) -> int:
    """The training split of a pretraining corpus on this machine, in bytes (file sizes only; nothing is read)."""
    if name == "python-stdlib":
        return int(_stdlib_bytes() * 0.95)
    if name == "python-sources":
        from dropnotes.data import held_out_file, python_source_files

        files, _ = python_source_files()
        return sum(p.stat().st_size for i, (_, p) in enumerate(files) if not held_out_file(i))
    return 90_000_000  # enwik8


def _gpt_step_fn(k: int, cfg, batch: int, p: float, device="meta"):
    """Chapter 5's training step of K GPTs as one StackedGPT on ``device``, as
    :func:`dropnotes.stacked.fit_stacked_windows` runs it (each model's windows gathered, bf16 autocast with
    ``cfg.amp``, clipping, AdamW); the step, the group and the tensors it updates."""
    from dropnotes.stacked import StackedGPT, _flat, make_window_step

    rates = [0.0] * (k // 3) + [p] * (k - k // 3)  # as the arms: a third without dropout, two runs of SDPA calls
    group = _on(device, lambda: StackedGPT(k, block_size=cfg.block_size, dim=cfg.dim, layers=cfg.layers,
                                           heads=cfg.heads, p_emb=rates, p_attn=rates, p_resid=rates,
                                           seeds=[0] * k)).train()
    dev = torch.device(device)
    with dev:
        params = list(group.parameters())
        moments = [(torch.zeros_like(q), torch.zeros_like(q)) for q in params]
        table = torch.randint(0, 256, (1000, cfg.block_size + 1))
        idx = torch.randint(0, 1000, (k, batch))
        vec, clip, alive = torch.full((k,), 1e-3), torch.ones(k), torch.ones(k, dtype=torch.bool)
        died, step_no = torch.full((k,), -1, dtype=torch.long), torch.zeros((), dtype=torch.long)
        last = torch.zeros(k)
    # the engine's own step (the one fit_stacked_windows trains with), so the count cannot drift from it
    step = make_window_step(group, table, idx, lr=vec, weight_decay=vec, betas=(0.9, 0.95), clip=clip,
                            amp_dtype=torch.bfloat16 if cfg.amp else None, generator=None, moments=moments,
                            alive=alive, died=died, step_no=step_no, last=last)
    return step, group, params + _flat(moments) + [alive, died, step_no, last]


def _gpt_group_step(k: int, cfg, batch: int, p: float) -> tuple[Cost, Cost]:
    """One training step of a K-model StackedGPT (gather, forward, loss, backward, clipping, AdamW) and one
    evaluation forward, on meta tensors."""
    step, group, _ = _gpt_step_fn(k, cfg, batch, p)
    with torch.device("meta"):
        train_cost = measure(step)
        group.eval()
        eval_cost = _meta_forward(group, torch.zeros(batch, cfg.block_size, dtype=torch.long), cfg.amp)
    return train_cost, eval_cost


def _llm(cfg, pretrain_steps: int | None = None) -> list[Group]:
    """Chapter 5 on the engine: the pretraining arms x seeds x rates as one captured StackedGPT, the full
    fine-tuning runs x seeds as another, each evaluated every ``eval_every`` steps; the LoRA runs one at a time."""
    from dropnotes.experiments.llm import _model, early_evals, full_runs
    from dropnotes.layers import add_lora

    if pretrain_steps is None:  # capped at one pass over the corpus, as the chapter does (this machine's corpus)
        pretrain_steps = int(min(cfg.pretrain_steps, (_corpus_bytes(cfg.pretrain_corpus) // cfg.block_size)
                                 // cfg.batch_size))
    dtype = "bf16" if cfg.amp else "fp32"
    evals = lambda steps, batch: math.ceil(steps / cfg.eval_every) * (cfg.eval_bytes // (batch * cfg.block_size) + 1)  # noqa: E731
    seeds, rates = cfg.n_seeds, len(cfg.lr_factors)
    kp, kr = 3 * rates, 3 * (seeds - 1)  # the first seed's arms x rates; the other seeds' arms at the chosen rates
    (f, n, b), (fe, ne, be) = _gpt_group_step(kp, cfg, cfg.batch_size, cfg.p)
    k = len(full_runs(cfg)) * seeds
    (ff, nf, bf), (ffe, nfe, bfe) = _gpt_group_step(k, cfg, cfg.finetune_batch, cfg.p)
    with torch.device("meta"):
        m = _model(cfg, 0.0)
        add_lora(m, ("qkv",), r=cfg.lora_rank, alpha=2 * cfg.lora_rank, p=cfg.p)
        xf = torch.zeros(cfg.finetune_batch, cfg.block_size, dtype=torch.long)
        fl, nl, bl = _meta_step(m, xf, xf, loss=_ce, optimizer="adamw", clip=1.0, amp=cfg.amp, multi_tensor=True)
    groups = [Group("llm", f"{kp} GPTs {cfg.layers}x{cfg.dim} pretraining (arms x rates, first seed), batched", 1,
                    pretrain_steps, f, n, dtype, captured=True, models_per_step=kp, bytes_per_step=b),
              Group("llm", "pretraining evaluation", 1, evals(pretrain_steps, cfg.batch_size), fe, ne, dtype,
                    captured=True, models_per_step=kp, bytes_per_step=be)]
    if kr:
        (fr, nr, br), (fre, nre, bre) = _gpt_group_step(kr, cfg, cfg.batch_size, cfg.p)
        groups += [Group("llm", f"{kr} GPTs pretraining (arms x the other seeds, chosen rates), batched", 1,
                         pretrain_steps, fr, nr, dtype, captured=True, models_per_step=kr, bytes_per_step=br),
                   Group("llm", "pretraining evaluation (the other seeds)", 1, evals(pretrain_steps, cfg.batch_size),
                         fre, nre, dtype, captured=True, models_per_step=kr, bytes_per_step=bre)]
    return groups + [
            Group("llm", f"{k} GPTs full fine-tuning (rates x sizes x seeds), batched", 1, cfg.finetune_steps, ff, nf, dtype,
                  captured=True, models_per_step=k, bytes_per_step=bf),
            Group("llm", "fine-tuning evaluation", 1, evals(cfg.finetune_steps, cfg.finetune_batch)
                  + len(early_evals(cfg)) * (cfg.eval_bytes // (cfg.finetune_batch * cfg.block_size) + 1), ffe, nfe, dtype,
                  captured=True, models_per_step=k,
                  bytes_per_step=bfe),
            Group("llm", "LoRA fine-tuning runs (one at a time)", len(cfg.lora_rates) * seeds, cfg.finetune_steps, fl, nl,
                  dtype,
                  bytes_per_step=bl)]


def _llm_sequential(cfg, pretrain_steps: int | None = None) -> list[Group]:
    """Chapter 5 as it ran before the engine (each arm and fine-tuning run its own, compiled): what its stored
    full run measured."""
    from dropnotes.experiments.llm import _model

    # counted without the autocast casts: that run was compiled, and torch.compile fuses them into their neighbours
    with torch.device("meta"):
        m = _model(cfg, cfg.p)
        x = torch.zeros(cfg.batch_size, cfg.block_size, dtype=torch.long)
        f, n, b = _meta_step(m, x, x, loss=_ce, optimizer="adamw", clip=1.0)
        xf = torch.zeros(cfg.finetune_batch, cfg.block_size, dtype=torch.long)
        ff, nf, bf = _meta_step(m, xf, xf, loss=_ce, optimizer="adamw", clip=1.0)
    if pretrain_steps is None:  # capped at one pass over the corpus, as the chapter does (this machine's corpus)
        pretrain_steps = int(min(cfg.pretrain_steps, (_corpus_bytes(cfg.pretrain_corpus) // cfg.block_size)
                                 // cfg.batch_size))
    pre_steps = pretrain_steps
    finetunes = len(cfg.finetune_rates) + len(cfg.lora_rates) + sum(1 for s in cfg.sizes for _ in (0, 1)
                                                                   if s != cfg.finetune_bytes)
    dtype = "bf16" if cfg.amp else "fp32"
    return [Group("llm", f"GPT {cfg.layers}x{cfg.dim} pretraining (none, dropout, early)", 3, pre_steps, f, n, dtype,
                  bytes_per_step=b),
            Group("llm", "fine-tuning runs", finetunes, cfg.finetune_steps, ff, nf, dtype, bytes_per_step=bf)]


def _interactions(cfg) -> list[Group]:
    """Chapter 6 on the engine: the CNN arms x seeds as one StackedCNN, the MLP arms x seeds as one StackedMLP,
    each evaluated on train + validation every ``eval_every`` epochs and on the test set once."""
    from dropnotes.experiments.interactions import CNN_ARMS, mlp_arms

    dtype = "bf16" if cfg.amp else "fp32"
    groups = []
    for name, k, size, epochs, example in (
            ("CNN", len(CNN_ARMS) * cfg.n_seeds, cfg.cnn_train_size, cfg.cnn_epochs, (1, 28, 28)),
            ("MLP", len(mlp_arms(cfg)) * cfg.n_seeds, cfg.mlp_train_size, cfg.mlp_epochs, (1, 28, 28))):
        (f, n, b), model = _engine_step(k, cfg, cfg.n_seeds if name == "MLP" else 0, _interaction_model(cfg, name, k),
                                        example, weight_decay=name == "MLP")
        with torch.device("meta"):
            model.eval()
            fe, ne, be = _meta_forward(model, torch.empty(1000, *example), cfg.amp)
        evals = math.ceil(epochs / cfg.eval_every) * math.ceil((size + cfg.val_size) / 1000) + 10
        groups += [Group("interactions", f"{k} {name}s (arms x seeds), batched", 1, epochs * (size // cfg.batch_size),
                         f, n, dtype, captured=True, models_per_step=k, bytes_per_step=b),
                   Group("interactions", f"{name} evaluation (train, validation; test once)", 1, evals, fe, ne, dtype,
                         models_per_step=k, bytes_per_step=be)]
    return groups


def _interactions_sequential(cfg) -> list[Group]:
    """Chapter 6 as it ran before the engine (each arm and seed its own run, eager, fp32): what its stored
    full run measured, and the sequential reference of the batched groups."""
    from dropnotes.experiments.interactions import mlp
    from dropnotes.models import SmallCNN

    with torch.device("meta"):
        cnn = SmallCNN(placement="before-bn", p=cfg.p)
        fc, nc, bc = _meta_step(cnn, torch.empty(cfg.batch_size, 1, 28, 28), torch.zeros(cfg.batch_size, dtype=torch.long),
                            loss=F.cross_entropy)
        net = mlp("dropout", cfg.mlp_hidden, 0.5)
        fm, nm, bm = _meta_step(net, torch.empty(cfg.batch_size, 784), torch.zeros(cfg.batch_size, dtype=torch.long),
                            loss=F.cross_entropy)
    cnn_runs = 5 * cfg.n_seeds  # none, before/after BN, spatial, Gaussian
    mlp_runs = (1 + 3 + 2 + len(cfg.grid_rates) * len(cfg.grid_decays)) * cfg.n_seeds
    return [Group("interactions", "SmallCNN arms (sequential)", cnn_runs,
                  cfg.cnn_epochs * math.ceil(cfg.cnn_train_size / cfg.batch_size), fc, nc, bytes_per_step=bc),
            Group("interactions", f"MLP 2x{cfg.mlp_hidden} arms (sequential)", mlp_runs,
                  cfg.mlp_epochs * math.ceil(cfg.mlp_train_size / cfg.batch_size), fm, nm, bytes_per_step=bm)]


def _cost(cfg) -> list[Group]:
    from dropnotes import bench
    from dropnotes.experiments.cost import _models

    # Timed by torch.utils.benchmark: each call runs for at least its budget; every variant with a PyTorch
    # counterpart is timed twice per side (interleaved), plus the copy reference and SDPA's 3 kernels x 2 rates.
    calls = sum(4 if ref is not None else 1 for _, ref, _ in bench.VARIANTS.values()) * len(cfg.sizes) + 1 + 6
    groups = [Group("cost", "kernel benchmark and SDPA (timing budget)", 1, 0, 0.0, 0, fixed_s=calls * cfg.min_run_time)]
    dtype = "bf16" if cfg.amp else "fp32"
    with torch.device("meta"):
        for name, (model, x, y, loss_fn) in _models(dataclasses.replace(cfg, device="meta"), 0.1).items():
            if y is None:
                x, y = x[:, :-1], x[:, 1:]
            f, n, b = _meta_step(model, x, y, loss=lambda out, t, fn=loss_fn: fn(out.float(), t), optimizer="adamw",
                                 amp=cfg.amp)
            groups.append(Group("cost", f"{name} training step (3 variants, interleaved rounds)", 3,
                                cfg.rounds * cfg.steps_per_round + 3, f, n, dtype, bytes_per_step=b))
    return groups


GROUPS = {"mechanics": _mechanics, "ensembles": _ensembles, "variational": _variational, "droppath": _droppath,
          "llm": _llm, "interactions": _interactions, "cost": _cost}


def chapter_groups(chapter: str, cfg) -> list[Group]:
    return GROUPS[chapter](cfg)


def config_from_record(chapter: str, record: dict):
    """The config a stored run used, rebuilt from its ``params`` under their current names
    (:func:`dropnotes.experiments._base.record_config`)."""
    return record_config(chapter, record)
