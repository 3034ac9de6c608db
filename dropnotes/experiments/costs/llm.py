"""Chapter 5's (llm) cost-model groups, counted on the meta device (why apart: the package docstring)."""

from __future__ import annotations

import math
import sysconfig
from pathlib import Path

import torch

from dropnotes.costmodel import (
    Cost,
    Group,
    TimedStep,
    dtype_of,
    lm_compare,
    lm_cross_entropy,
    measure,
    meta_forward,
    meta_step,
    on,
)
from dropnotes.data import held_out_file, python_source_files
from dropnotes.experiments.llm.config import LLMConfig, _model, early_evals, full_runs
from dropnotes.layers import add_lora
from dropnotes.stacked import StackedGPT, _flat, make_window_step


def _stdlib_bytes() -> int:
    """The size of this machine's standard-library corpus (file sizes only; nothing is read)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return sum(p.stat().st_size for p in stdlib.rglob("*.py")
               if "site-packages" not in p.parts and "dist-packages" not in p.parts)


def corpus_bytes(name: str) -> int:
    """The training split of a pretraining corpus on this machine, in bytes (file sizes only; nothing is read)."""
    if name == "python-stdlib":
        return int(_stdlib_bytes() * 0.95)
    if name == "python-sources":
        files, _ = python_source_files()
        return sum(p.stat().st_size for i, (_, p) in enumerate(files) if not held_out_file(i))
    return 90_000_000  # enwik8


def gpt_step_fn(k: int, cfg: LLMConfig, batch: int, p: float, device="meta"):
    """The training step of K GPTs as one StackedGPT on ``device``, as :func:`dropnotes.stacked.fit_stacked_windows`
    runs it (each model's windows gathered, bf16 autocast with ``cfg.amp``, clipping, AdamW); the step, the group
    and the tensors it updates."""
    rates = [0.0] * (k // 3) + [p] * (k - k // 3)  # as the arms: a third without dropout, two runs of SDPA calls
    group = on(device, lambda: StackedGPT(k, block_size=cfg.block_size, dim=cfg.dim, layers=cfg.layers,
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


def _gpt_group_step(k: int, cfg: LLMConfig, batch: int, p: float) -> tuple[Cost, Cost]:
    """One training step of a K-model StackedGPT (gather, forward, loss, backward, clipping, AdamW) and one
    evaluation forward, on meta tensors."""
    step, group, _ = gpt_step_fn(k, cfg, batch, p)
    with torch.device("meta"):
        train_cost = measure(step)
        group.eval()
        eval_cost = meta_forward(group, torch.zeros(batch, cfg.block_size, dtype=torch.long), cfg.amp)
    return train_cost, eval_cost


def _pretrain_steps(cfg: LLMConfig) -> int:
    """Pretraining steps capped at one pass over the corpus, as the chapter does (this machine's corpus)."""
    return int(min(cfg.pretrain_steps, (corpus_bytes(cfg.pretrain_corpus) // cfg.block_size) // cfg.batch_size))


def groups(cfg: LLMConfig, pretrain_steps: int | None = None) -> list[Group]:
    """The pretraining arms x seeds x rates as one captured StackedGPT, the full fine-tuning runs x seeds as
    another, each evaluated every ``eval_every`` steps; the LoRA runs one at a time."""
    pretrain_steps = _pretrain_steps(cfg) if pretrain_steps is None else pretrain_steps
    dtype = dtype_of(cfg)
    evals = lambda steps, batch: math.ceil(steps / cfg.eval_every) * (cfg.eval_bytes // (batch * cfg.block_size) + 1)  # noqa: E731
    seeds, rates = cfg.n_seeds, len(cfg.lr_factors)
    kp, kr = 3 * rates, 3 * (seeds - 1)  # the first seed's arms x rates; the other seeds' arms at the chosen rates
    (f, n, b), (fe, ne, be) = _gpt_group_step(kp, cfg, cfg.batch_size, cfg.p_all)
    k = len(full_runs(cfg)) * seeds
    (ff, nf, bf), (ffe, nfe, bfe) = _gpt_group_step(k, cfg, cfg.finetune_batch, cfg.p_all)
    with torch.device("meta"):
        m = _model(cfg, 0.0)
        add_lora(m, ("qkv",), r=cfg.lora_rank, alpha=2 * cfg.lora_rank, p=cfg.p_all)
        xf = torch.zeros(cfg.finetune_batch, cfg.block_size, dtype=torch.long)
        fl, nl, bl = meta_step(m, xf, xf, loss=lm_cross_entropy, optimizer="adamw", clip=1.0, amp=cfg.amp,
                               multi_tensor=True)
    out = [Group("llm", f"{kp} GPTs {cfg.layers}x{cfg.dim} pretraining (arms x rates, first seed), batched", 1,
                 pretrain_steps, f, n, dtype, captured=True, models_per_step=kp, bytes_per_step=b),
           Group("llm", "pretraining evaluation", 1, evals(pretrain_steps, cfg.batch_size), fe, ne, dtype,
                 captured=True, models_per_step=kp, bytes_per_step=be)]
    if kr:
        (fr, nr, br), (fre, nre, bre) = _gpt_group_step(kr, cfg, cfg.batch_size, cfg.p_all)
        out += [Group("llm", f"{kr} GPTs pretraining (arms x the other seeds, chosen rates), batched", 1,
                      pretrain_steps, fr, nr, dtype, captured=True, models_per_step=kr, bytes_per_step=br),
                Group("llm", "pretraining evaluation (the other seeds)", 1, evals(pretrain_steps, cfg.batch_size),
                      fre, nre, dtype, captured=True, models_per_step=kr, bytes_per_step=bre)]
    return out + [
        Group("llm", f"{k} GPTs full fine-tuning (rates x sizes x seeds), batched", 1, cfg.finetune_steps, ff, nf, dtype,
              captured=True, models_per_step=k, bytes_per_step=bf),
        Group("llm", "fine-tuning evaluation", 1, evals(cfg.finetune_steps, cfg.finetune_batch)
              + len(early_evals(cfg)) * (cfg.eval_bytes // (cfg.finetune_batch * cfg.block_size) + 1), ffe, nfe, dtype,
              captured=True, models_per_step=k, bytes_per_step=bfe),
        Group("llm", "LoRA fine-tuning runs (one at a time)", len(cfg.lora_rates) * seeds, cfg.finetune_steps, fl, nl,
              dtype, bytes_per_step=bl)]


def sequential_groups(cfg: LLMConfig, pretrain_steps: int | None = None) -> list[Group]:
    """The chapter as it ran before the engine (each arm and fine-tuning run its own, compiled): what its stored
    full run measured."""
    # counted without the autocast casts: that run was compiled, and torch.compile fuses them into their neighbours
    with torch.device("meta"):
        m = _model(cfg, cfg.p_all)
        x = torch.zeros(cfg.batch_size, cfg.block_size, dtype=torch.long)
        f, n, b = meta_step(m, x, x, loss=lm_cross_entropy, optimizer="adamw", clip=1.0)
        xf = torch.zeros(cfg.finetune_batch, cfg.block_size, dtype=torch.long)
        ff, nf, bf = meta_step(m, xf, xf, loss=lm_cross_entropy, optimizer="adamw", clip=1.0)
    pre_steps = _pretrain_steps(cfg) if pretrain_steps is None else pretrain_steps
    finetunes = len(cfg.finetune_rates) + len(cfg.lora_rates) + sum(1 for s in cfg.sizes for _ in (0, 1)
                                                                   if s != cfg.finetune_bytes)
    dtype = dtype_of(cfg)
    return [Group("llm", f"GPT {cfg.layers}x{cfg.dim} pretraining (none, dropout, early)", 3, pre_steps, f, n, dtype,
                  bytes_per_step=b),
            Group("llm", "fine-tuning runs", finetunes, cfg.finetune_steps, ff, nf, dtype, bytes_per_step=bf)]


def calibration_points(cfg: LLMConfig, record: dict) -> list[dict]:
    """What a stored full run measured that the time model predicts: its wall time over the steps it really ran
    (one pass over that machine's corpus), and the pretraining tokens/s."""
    curves = record["tables"]["curves"]
    ran = int(curves[curves.run == "pretrain none"].step.max())
    found = groups(cfg, ran) if "models" in record["tables"]["pretrain"] else sequential_groups(cfg, ran)
    g = found[0]
    tps = float(record["tables"]["pretrain"].iloc[-1]["tokens_per_s"])  # the early arm: compiled graphs reused
    tokens = cfg.batch_size * cfg.block_size
    return [{"what": "wall time (s)", "measured": record["provenance"]["wall_time_s"],
             "predict": lambda f, c, gs=found: sum(x.predicted_s(f, c) for x in gs)},
            {"what": "tokens/s, pretraining", "measured": tps,
             "predict": lambda f, c, g=g, t=tokens: t / g.step_s(f, c)}]


def timed_steps(cfg: LLMConfig) -> list[TimedStep]:
    k = 3 * len(cfg.lr_factors)
    return [TimedStep(f"{k} GPTs {cfg.layers}x{cfg.dim} pretraining", k, dtype_of(cfg),
                      lambda dev: gpt_step_fn(k, cfg, cfg.batch_size, cfg.p_all, dev))]


def compare_steps(cfg: LLMConfig, gen: torch.Generator) -> list[tuple]:
    nets = [_model(cfg, cfg.p_all).train() for _ in range(3)]
    group = StackedGPT.from_models(nets, p_emb=cfg.p_all, p_attn=cfg.p_all, p_resid=cfg.p_all).train()
    make_opt = lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1,  # noqa: E731
                                           foreach=False)
    return [lm_compare("GPTs (pretraining arms)", nets, group, make_opt, 256, cfg.batch_size, cfg.block_size,
                       getattr(cfg, "clip", 1.0), gen, weight_decay=0.1)]
