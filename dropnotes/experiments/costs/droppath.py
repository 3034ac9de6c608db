"""Chapter 4's (droppath) cost-model groups, counted on the meta device (why apart: the package docstring)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dropnotes import stacked
from dropnotes.costmodel import (
    Group,
    TimedStep,
    classifier_compare,
    dtype_of,
    engine_step,
    engine_step_fn,
    meta_forward,
    meta_step,
)
from dropnotes.experiments.droppath import EVAL_BATCH, DropPathConfig, arms, augment
from dropnotes.models import ViT


def vit_args(cfg: DropPathConfig, depth: int, k: int) -> tuple:
    """The group of ``k`` ViTs of one depth for :func:`dropnotes.costmodel.engine_step_fn` (AdamW, decay,
    augmentation)."""
    return ((lambda: stacked.StackedViT(k, dim=cfg.dim, depth=depth, heads=cfg.heads, p_path=0.1, seeds=[0] * k),
             (3, 32, 32)),
            dict(momentum=0.0, weight_decay=True, optimizer="adamw", transform=augment))


def groups(cfg: DropPathConfig) -> list[Group]:
    """The arms x seeds of each depth as one StackedViT (AdamW, augmentation, the step graph-captured), evaluated
    once on train, validation and test; and the single-ViT speed table."""
    steps = cfg.epochs * (cfg.train_size // cfg.batch_size)
    dtype = dtype_of(cfg)
    out = []
    for depth, models in arms(cfg, 0.1).items():
        k = len(models)
        a, kw = vit_args(cfg, depth, k)
        (f, n, b), group = engine_step(k, cfg, 0, *a, **kw)
        with torch.device("meta"):
            group.eval()
            fe, ne, be = meta_forward(group, torch.empty(EVAL_BATCH, 3, 32, 32), cfg.amp)
        evals = sum(math.ceil(size / EVAL_BATCH) for size in (cfg.train_size, cfg.val_size, cfg.test_size))
        out += [Group("droppath", f"{k} ViTs depth {depth} dim {cfg.dim} (arms x seeds), batched", 1, steps, f, n, dtype,
                      captured=True, models_per_step=k, bytes_per_step=b),
                Group("droppath", f"depth {depth} evaluation (train, validation, test once)", 1, evals, fe, ne, dtype,
                      models_per_step=k, bytes_per_step=be)]
    with torch.device("meta"):  # the speed table: 3 variants x 28 steps of one deep ViT, eager
        m = ViT(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, p_path=0.5)
        f, n, b = meta_step(m, torch.empty(cfg.batch_size, 3, 32, 32), torch.zeros(cfg.batch_size, dtype=torch.long),
                            loss=F.cross_entropy, optimizer="adamw", amp=cfg.amp)
    out.append(Group("droppath", "speed: one deep ViT, 3 variants", 3, 28, f, n, dtype, bytes_per_step=b))
    return out


def sequential_groups(cfg: DropPathConfig) -> list[Group]:
    """The chapter as it ran before the engine (each arm and seed its own eager run): what its stored full run
    measured."""
    steps = cfg.epochs * math.ceil(cfg.train_size / cfg.batch_size)
    out = []
    for depth, runs in ((cfg.depth, len(cfg.rates) + 1), (cfg.shallow_depth, 2)):
        with torch.device("meta"):
            m = ViT(dim=cfg.dim, depth=depth, heads=cfg.heads, p_path=0.1)
            f, n, b = meta_step(m, torch.empty(cfg.batch_size, 3, 32, 32), torch.zeros(cfg.batch_size, dtype=torch.long),
                                loss=F.cross_entropy, optimizer="adamw", amp=cfg.amp)
        out.append(Group("droppath", f"ViT depth {depth} dim {cfg.dim}", runs * cfg.n_seeds, steps, f, n,
                         dtype=dtype_of(cfg), bytes_per_step=b))
    return out


def timed_steps(cfg: DropPathConfig) -> list[TimedStep]:
    out = []
    for depth, models in arms(cfg, 0.1).items():
        k, (a, kw) = len(models), vit_args(cfg, depth, len(models))
        out.append(TimedStep(f"{k} ViTs depth {depth} dim {cfg.dim}", k, dtype_of(cfg),
                             lambda dev, k=k, a=a, kw=kw: engine_step_fn(k, cfg, 0, *a, **kw, device=dev)))
    return out


def compare_steps(cfg: DropPathConfig, gen: torch.Generator) -> list[tuple]:
    k = len(arms(cfg, 0.1)[cfg.depth])
    return [classifier_compare(f"ViTs of depth {cfg.depth} (arms x seeds)", k,
                               lambda: ViT(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, p_path=0.1),
                               lambda: stacked.StackedViT(k, dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, p_path=0.1),
                               (3, 32, 32), 0, cfg, gen, optimizer="adamw", transform=augment)]


def calibration_points(cfg: DropPathConfig, record: dict) -> list[dict]:
    """A stored full run's wall time against its groups (a run stored before the engine: the sequential ones)."""
    found = sequential_groups(cfg) if "val_size" not in record["params"] else groups(cfg)
    return [{"what": "wall time (s)", "measured": record["provenance"]["wall_time_s"],
             "predict": lambda f, c, gs=found: sum(x.predicted_s(f, c) for x in gs)}]
