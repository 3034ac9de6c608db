"""Chapter 1's (mechanics) cost-model groups, counted on the meta device (why apart: the package docstring)."""

from __future__ import annotations

import math

import torch

from dropnotes.costmodel import Group, TimedStep, classifier_compare, dtype_of, engine_step, engine_step_fn, meta_forward
from dropnotes.experiments.mechanics import MechanicsConfig, stacked_group
from dropnotes.models import MLP
from dropnotes.stacked import StackedMLP


def groups(cfg: MechanicsConfig) -> list[Group]:
    """The rates x seeds as one batched group of MLPs, and its evaluation passes (train, validation, test)."""
    k = len(cfg.p_hidden) * cfg.n_seeds
    (f, n, b), model = engine_step(k, cfg, 0, lambda: stacked_group(cfg))  # the run's own group
    with torch.device("meta"):
        model.eval()
        fe, ne, be = meta_forward(model, torch.empty(4096, 784), cfg.amp)
    evals = math.ceil(cfg.epochs / cfg.eval_every) * math.ceil((cfg.train_size + cfg.val_size + 10000) / 4096)
    dtype = dtype_of(cfg)
    return [Group("mechanics", f"{k} MLPs {cfg.hidden} (rates x seeds), batched", 1,
                  cfg.epochs * (cfg.train_size // cfg.batch_size),
                  f, n, dtype, captured=True, models_per_step=k, bytes_per_step=b),
            Group("mechanics", "evaluation (train, validation, test)", 1, evals, fe, ne, dtype, models_per_step=k,
                  bytes_per_step=be)]


def timed_steps(cfg: MechanicsConfig) -> list[TimedStep]:
    k = len(cfg.p_hidden) * cfg.n_seeds
    return [TimedStep(f"{k} MLPs {cfg.hidden}", k, dtype_of(cfg),
                      lambda dev: engine_step_fn(k, cfg, 0, lambda: stacked_group(cfg), device=dev))]


def compare_steps(cfg: MechanicsConfig, gen: torch.Generator) -> list[tuple]:
    k = len(cfg.p_hidden) * cfg.n_seeds
    return [classifier_compare("MLPs", k, lambda: MLP(784, cfg.hidden, 10, p_input=cfg.p_input, p_hidden=0.5),
                               lambda: StackedMLP(k, 784, cfg.hidden, 10, p_input=cfg.p_input, p_hidden=0.5), (784,),
                               0, cfg, gen)]
