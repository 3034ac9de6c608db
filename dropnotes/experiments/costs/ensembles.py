"""Chapter 2's (ensembles) cost-model groups, counted on the meta device (why apart: the package docstring)."""

from __future__ import annotations

import math

import torch

from dropnotes.costmodel import Group, TimedStep, classifier_compare, dtype_of, engine_step, engine_step_fn, meta_forward
from dropnotes.experiments.ensembles import ROTATION_ANGLES, ROTATION_SAMPLES, EnsemblesConfig, stacked_group
from dropnotes.models import MLP
from dropnotes.stacked import StackedMLP


def groups(cfg: EnsemblesConfig) -> list[Group]:
    """Every seed's members and dropout net as one batched group of MLPs, its evaluations, and the MC-dropout
    passes of the dropout nets."""
    k = cfg.n_seeds * (cfg.members + 1)
    # the run's own group; one factor: no net is max-norm constrained (protocol 4)
    (f, n, b), group = engine_step(k, cfg, 0, lambda: stacked_group(cfg))
    with torch.device("meta"):
        net = MLP(784, cfg.hidden, 10, p_input=cfg.p_input, p_hidden=cfg.p_hidden).train()
        fe, ne, be = meta_forward(net, torch.empty(4096, 784))
        group.eval()
        fv, nv, bv = meta_forward(group, torch.empty(4096, 784), cfg.amp)
    # the group's evaluations on train and validation every eval_every epochs (at the end only when 0)
    evals = math.ceil(cfg.epochs / (cfg.eval_every or cfg.epochs)) * math.ceil((cfg.train_size + cfg.val_size) / 4096)
    # MC passes per seed over 10,000 test images, the in- and out-of-distribution sets, the k-sweep and the
    # rotated digits (batches of 4,096 images), and the one rotated digit of the figure.
    images = (cfg.mc_samples * (10000 + 3 * cfg.ood_size) + cfg.mc_repeats * max(cfg.mc_ks) * cfg.mc_test_size
              + ROTATION_SAMPLES * len(ROTATION_ANGLES) * cfg.rotation_digits)
    passes = cfg.n_seeds * math.ceil(images / 4096) + len(ROTATION_ANGLES)
    dtype = dtype_of(cfg)
    return [Group("ensembles", f"{k} MLPs (members + dropout nets), batched", 1,
                  cfg.epochs * (cfg.train_size // cfg.batch_size), f, n, dtype, captured=True, models_per_step=k,
                  bytes_per_step=b),
            Group("ensembles", "evaluation of the group (train, validation)", 1, evals, fv, nv, dtype, models_per_step=k,
                  bytes_per_step=bv),
            Group("ensembles", "MC-dropout evaluation", 1, passes, fe, ne, bytes_per_step=be)]


def timed_steps(cfg: EnsemblesConfig) -> list[TimedStep]:
    k = cfg.n_seeds * (cfg.members + 1)  # no max-norm (protocol 4)
    return [TimedStep(f"{k} MLPs {cfg.hidden}", k, dtype_of(cfg),
                      lambda dev: engine_step_fn(k, cfg, 0, lambda: stacked_group(cfg), device=dev))]


def compare_steps(cfg: EnsemblesConfig, gen: torch.Generator) -> list[tuple]:
    k = cfg.n_seeds * (cfg.members + 1)
    return [classifier_compare("MLPs", k, lambda: MLP(784, cfg.hidden, 10, p_input=cfg.p_input, p_hidden=cfg.p_hidden),
                               lambda: StackedMLP(k, 784, cfg.hidden, 10, p_input=cfg.p_input, p_hidden=cfg.p_hidden),
                               (784,), cfg.n_seeds, cfg, gen)]  # one max-norm model per seed, as the comparison stood
