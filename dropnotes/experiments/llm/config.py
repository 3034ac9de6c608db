"""Chapter 5's configuration: the protocol and its changes, the papers' settings, the profiles, the knobs and
``configure``, and the small helpers every part uses (the model, its optimizer, the arms, the evaluation steps)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch

from dropnotes.experiments._base import ChapterConfig
from dropnotes.experiments.knobs import Knobs, knob, rate_knob, size_knob
from dropnotes.models import GPT

CHAPTER = "llm"
# The protocol's version, stored with each result (see judging.protocol); version 2 (2026-12-02): the pretraining
# arms and the full fine-tuning runs as batched groups (the same initialisation and batches as before; the
# dropout masks drawn differently). Version 3 (2026-12-02): the held-out windows are split in two, the first half
# selects (the best step, the best rate) and the second half judges, so no selection touches the judging data;
# the python-sources corpus (the standard library, torch, numpy, matplotlib; every 20th file held out); in full,
# a model sized for it (about 20 tokens per parameter), 3 seeds, and each arm's learning rate chosen on validation.
PROTOCOL = 6
PROTOCOL_CHANGES = {6: "a fine-tuning pilot whose learning rate is the largest or smallest of its grid widens the grid "
                       "one step of its ratio, twice at most (protocol 5's laptop pilot chose 3e-4, the lowest of "
                       "its three), and records whether the choice is interior",
                    5: "the full fine-tuning learning rate chosen on validation by a pilot on the first seed's base (every "
                       "rate of the main slice at each candidate learning rate; one learning rate for every run)",
                    4: "verdicts read at the run's scale (both signs alike), t intervals over seeds (the crossing "
                       "rule too); LoRA dropout labelled a rule of thumb"}
# The papers' settings, declared once (dropnotes.verdict reads a run below them "at reduced scale").
# Xue et al. 2023 test dropout against repeated data in *pretraining*, not in fine-tuning: the fine-tuning rows are a
# rule of thumb (nanoGPT) and the crossing over slice sizes is this book's test, judged against their setting's scale.
PAPER_SETTINGS = {"Liu et al. 2025": {"model": "Pythia 160M or larger"},
                  "Xue et al. 2023": {"model": "T5-base or larger"}}


def measured_setting(cfg: "LLMConfig") -> dict:
    """The run's values of what :data:`PAPER_SETTINGS` names."""
    return {"model": f"byte-level GPT, {cfg.layers} x {cfg.dim}"}
LN2 = math.log(2)
CORPORA = ("python-sources", "python-stdlib", "enwik8")
# Dense bf16 peak FLOP/s, for MFU (vendor datasheets); devices not listed report no MFU.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


@dataclass(frozen=True)
class LLMConfig(ChapterConfig):
    RENAMED: ClassVar[Mapping[str, str]] = {"p": "p_all"}  # before 2026-12-07

    pretrain_corpus: str = knob("str", "python-sources", '"python-sources" (the standard library, torch, numpy and '
                                'matplotlib; offline), "python-stdlib" (offline) or "enwik8" (downloaded)',
                                choices=CORPORA)
    dim: int
    layers: int
    heads: int
    block_size: int
    batch_size: int
    pretrain_steps: int = size_knob("pretraining steps, never more than one pass over the corpus", high=10**6)
    pretrain_lr: float
    # the standard dropout rate (embedding, attention and residual alike)
    p_all: float = rate_knob(0.1, "the dropout rate under test at every site (embedding, attention, residual), in "
                                  "(0, 0.5); fine-tuning also tries twice it", low_open=True, high=0.5)
    early_fraction: float  # early dropout: rate p for this fraction of pretraining, then 0
    finetune_steps: int = size_knob("fine-tuning steps", high=10**6)
    finetune_batch: int
    finetune_lr: float
    # the main fine-tuning slice of tiny-shakespeare, whose training split holds 1,003,854 bytes; a slice needs at least
    # a few 256-byte windows
    finetune_bytes: int = size_knob("the main fine-tuning slice in bytes", low=2048, high=1003854)
    finetune_rates: tuple[float, ...]
    sizes: tuple[int, ...]  # slices for the crossing experiment (0 = all of the training split)
    lora_rank: int
    lora_lr: float
    lora_rates: tuple[float, ...]
    eval_bytes: int
    eval_every: int
    amp: bool
    compile: bool
    # seeds of every pretraining arm and fine-tuning run (block ``seed``, see ChapterConfig.seeds)
    n_seeds: int = knob("int", None, "seeds of every arm", low=1, high=20, profile_default=True, field_default=1)
    lr_factors: tuple[float, ...] = (1.0,)  # pretraining: each arm's rate is chosen on validation from pretrain_lr x these
    finetune_lr_factors: tuple[float, ...] = (1.0,)  # full fine-tuning: one rate, chosen on validation from finetune_lr x these


PROFILE_DEFAULTS = {
    # Seconds on a CPU: the quick profile's code path at the smallest sizes (does the environment work?); its
    # verdicts are labelled as a smoke run and never reach the scorecard.
    "smoke": dict(dim=16, layers=1, heads=1, block_size=16, batch_size=4, pretrain_steps=4, pretrain_lr=3e-3,
                  finetune_steps=4, finetune_batch=4, finetune_lr=3e-3, finetune_bytes=1000,
                  sizes=(500, 1000, 0), lora_rank=2, lora_lr=1e-2, eval_bytes=512, eval_every=2,
                  amp=False, compile=False, n_seeds=1, lr_factors=(1.0,), finetune_lr_factors=(1.0,)),
    # CPU, about two minutes: a 2-layer, 64-wide GPT, 400 pretraining steps of 32 x 64 bytes; 300 fine-tuning
    # steps of 16 x 64 bytes, i.e. about 31 epochs of the 10 kB slice, so that the plain net overfits.
    "quick": dict(dim=64, layers=2, heads=2, block_size=64, batch_size=32, pretrain_steps=400, pretrain_lr=3e-3,
                  finetune_steps=300, finetune_batch=16, finetune_lr=3e-3, finetune_bytes=10000,
                  sizes=(2500, 10000, 0), lora_rank=4, lora_lr=1e-2, eval_bytes=16384, eval_every=10,
                  amp=False, compile=False, n_seeds=1, lr_factors=(1.0,), finetune_lr_factors=(1.0,)),
    # This 2-core CPU, up to 45 minutes (measured alone): the quick profile's GPT (2 x 64, about 0.12 M parameters)
    # pretrained compute-optimally (1,200 steps of 32 x 64 bytes, about 20 tokens per parameter), 3 seeds; fine-tuning
    # 600 steps of 16 x 64 bytes on the 10 kB slice (about 61 epochs) and the crossing's slices, 3 seeds. The
    # fine-tuning rate comes from a pilot on validation (protocol 5) among 3e-4, 1e-3 and 3e-3: at 3e-3 alone,
    # protocol 4's runs had their best step within the first 60 of 600.
    "laptop": dict(dim=64, layers=2, heads=2, block_size=64, batch_size=32, pretrain_steps=1200, pretrain_lr=3e-3,
                   finetune_steps=600, finetune_batch=16, finetune_lr=3e-3, finetune_bytes=10000,
                   sizes=(2500, 10000, 40000, 0), lora_rank=4, lora_lr=1e-2, eval_bytes=32768, eval_every=20,
                   amp=True, compile=False, n_seeds=3, lr_factors=(1.0,), finetune_lr_factors=(0.1, 0.3, 1.0)),
    # One GPU: a GPT of 6 layers, width 192 and 3 heads (block 256; `dropnotes estimate` and the chapter give its
    # parameter count) sized for one pass over the python-sources corpus (about 20 tokens per parameter), bf16; 3 seeds,
    # and each arm's learning rate chosen on
    # validation from 3 rates: the 3 arms x 3 seeds x 3 rates as one batched group, and the full fine-tuning runs
    # (100 kB of tiny-shakespeare and the crossing's slices) x 3 seeds as another, each step graph-captured; the
    # LoRA runs compiled.
    "full": dict(dim=192, layers=6, heads=3, block_size=256, batch_size=64, pretrain_steps=3400, pretrain_lr=1e-3,
                 finetune_steps=1000, finetune_batch=32, finetune_lr=3e-4, finetune_bytes=100000,
                 sizes=(20000, 100000, 400000, 0), lora_rank=8, lora_lr=1e-3, eval_bytes=262144, eval_every=50,
                 amp=True, compile=True, n_seeds=3, lr_factors=(0.5, 1.0, 2.0), finetune_lr_factors=(1.0,)),
}


def _derive(d: dict, profile: str, device) -> None:
    """The fields set from the knobs: the fine-tuning rates (0, p, 2p), LoRA's (0, p), early dropout's fraction;
    ``torch.compile`` only in the full profile on a GPU."""
    p = d["p_all"]
    d.update(early_fraction=0.2, finetune_rates=(0.0, p, 2 * p), lora_rates=(0.0, p))
    if profile != "full" and device.type != "cuda":
        d["compile"] = False


KNOBS = Knobs.of(LLMConfig)
configure = KNOBS.configurer(LLMConfig, PROFILE_DEFAULTS, _derive)


def _model(cfg: LLMConfig, p: float) -> GPT:
    return GPT(256, cfg.block_size, cfg.dim, cfg.layers, cfg.heads, p_emb=p, p_attn=p, p_resid=p)


def _set_p(model: torch.nn.Module, p: float) -> None:
    getattr(model, "_orig_mod", model).set_dropout(p, p, p)


def _optimizer(model: torch.nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    params = [q for q in model.parameters() if q.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.1, betas=(0.9, 0.95), fused=device.type == "cuda")


def early_evals(cfg: LLMConfig) -> list[int]:
    """Fine-tuning's extra evaluations before the first regular one (at 20, 40, 60 and 80 % of ``eval_every``):
    a run that overfits within its first steps has its minimum resolved, not stuck on the first evaluation."""
    return sorted({max(1, round(cfg.eval_every * f)) for f in (0.2, 0.4, 0.6, 0.8)} - {cfg.eval_every})


def first_eval(cfg: LLMConfig) -> int:
    """The first step at which fine-tuning evaluates."""
    return min(early_evals(cfg) + [cfg.eval_every])


ARMS = ("none", "dropout", "early")


def pretrain_lrs(cfg: LLMConfig) -> list[float]:
    """The pretraining learning rates each arm chooses from (on the validation half): ``pretrain_lr`` x factors."""
    return [cfg.pretrain_lr * f for f in cfg.lr_factors]


def full_runs(cfg: LLMConfig) -> list[tuple[float, int]]:
    """The full fine-tuning runs (p, size): every rate on the main slice, then the crossing (0 and p at every
    size), each once."""
    runs = [(q, cfg.finetune_bytes) for q in cfg.finetune_rates]
    runs += [(q, size) for size in cfg.sizes for q in (0.0, cfg.p_all) if (q, size) not in runs]
    return runs
