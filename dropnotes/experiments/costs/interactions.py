"""Chapter 6's (interactions) cost-model groups, counted on the meta device (why apart: the package docstring)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

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
from dropnotes.experiments.interactions import CNN_ARMS, InteractionsConfig, cnn_group, mlp, mlp_arms, mlp_group
from dropnotes.models import SmallCNN
from dropnotes.stacked import StackedCNN, StackedMLP


def _group_model(cfg: InteractionsConfig, name: str):
    """A factory of the run's own CNN or MLP group (:func:`cnn_group`, :func:`mlp_group`: every arm x seed with its
    noise kind and rate), so that the counted and timed step is the one the chapter trains."""
    return (lambda: cnn_group(cfg)) if name == "CNN" else (lambda: mlp_group(cfg))


def _sizes(cfg: InteractionsConfig) -> tuple[int, int]:
    return len(CNN_ARMS) * cfg.n_seeds, len(mlp_arms(cfg)) * cfg.n_seeds


def groups(cfg: InteractionsConfig) -> list[Group]:
    """The CNN arms x seeds as one StackedCNN, the MLP arms x seeds as one StackedMLP, each evaluated on train +
    validation every ``eval_every`` epochs and on the test set once."""
    dtype = dtype_of(cfg)
    kc, km = _sizes(cfg)
    out = []
    for name, k, size, epochs in (("CNN", kc, cfg.cnn_train_size, cfg.cnn_epochs),
                                  ("MLP", km, cfg.mlp_train_size, cfg.mlp_epochs)):
        (f, n, b), model = engine_step(k, cfg, cfg.n_seeds if name == "MLP" else 0, _group_model(cfg, name),
                                       (1, 28, 28), weight_decay=name == "MLP")
        with torch.device("meta"):
            model.eval()
            fe, ne, be = meta_forward(model, torch.empty(1000, 1, 28, 28), cfg.amp)
        evals = math.ceil(epochs / cfg.eval_every) * math.ceil((size + cfg.val_size) / 1000) + 10
        out += [Group("interactions", f"{k} {name}s (arms x seeds), batched", 1, epochs * (size // cfg.batch_size),
                      f, n, dtype, captured=True, models_per_step=k, bytes_per_step=b),
                Group("interactions", f"{name} evaluation (train, validation; test once)", 1, evals, fe, ne, dtype,
                      models_per_step=k, bytes_per_step=be)]
    return out


def sequential_groups(cfg: InteractionsConfig) -> list[Group]:
    """The chapter as it ran before the engine (each arm and seed its own run, eager, fp32): what its stored full
    run measured, and the sequential reference of the batched groups."""
    with torch.device("meta"):
        cnn = SmallCNN(placement="before-bn", p=cfg.p_cnn)
        fc, nc, bc = meta_step(cnn, torch.empty(cfg.batch_size, 1, 28, 28), torch.zeros(cfg.batch_size, dtype=torch.long),
                               loss=F.cross_entropy)
        net = mlp("dropout", cfg.mlp_hidden, 0.5)
        fm, nm, bm = meta_step(net, torch.empty(cfg.batch_size, 784), torch.zeros(cfg.batch_size, dtype=torch.long),
                               loss=F.cross_entropy)
    cnn_runs = 5 * cfg.n_seeds  # none, before/after BN, spatial, Gaussian
    mlp_runs = (1 + 3 + 2 + len(cfg.grid_rates) * len(cfg.grid_decays)) * cfg.n_seeds
    return [Group("interactions", "SmallCNN arms (sequential)", cnn_runs,
                  cfg.cnn_epochs * math.ceil(cfg.cnn_train_size / cfg.batch_size), fc, nc, bytes_per_step=bc),
            Group("interactions", f"MLP 2x{cfg.mlp_hidden} arms (sequential)", mlp_runs,
                  cfg.mlp_epochs * math.ceil(cfg.mlp_train_size / cfg.batch_size), fm, nm, bytes_per_step=bm)]


def calibration_points(cfg: InteractionsConfig, record: dict) -> list[dict]:
    """A stored full run's wall time against its groups (a run stored before the engine: the sequential ones)."""
    found = sequential_groups(cfg) if "val_size" not in record["params"] else groups(cfg)
    return [{"what": "wall time (s)", "measured": record["provenance"]["wall_time_s"],
             "predict": lambda f, c, gs=found: sum(x.predicted_s(f, c) for x in gs)}]


def timed_steps(cfg: InteractionsConfig) -> list[TimedStep]:
    kc, km = _sizes(cfg)
    dtype = dtype_of(cfg)
    return [TimedStep(f"{kc} CNNs", kc, dtype, lambda dev: engine_step_fn(kc, cfg, 0, _group_model(cfg, "CNN"),
                                                                         (1, 28, 28), device=dev)),
            TimedStep(f"{km} MLPs", km, dtype, lambda dev: engine_step_fn(km, cfg, cfg.n_seeds, _group_model(cfg, "MLP"),
                                                                         (1, 28, 28), weight_decay=True, device=dev))]


def compare_steps(cfg: InteractionsConfig, gen: torch.Generator) -> list[tuple]:
    kc, km = _sizes(cfg)
    return [classifier_compare("CNNs", kc, lambda: SmallCNN(placement="before-bn", p=cfg.p_cnn),
                               lambda: StackedCNN(kc, p_before_bn=cfg.p_cnn, p_after_bn=cfg.p_cnn), (1, 28, 28), 0, cfg, gen),
            classifier_compare("MLPs", km, lambda: mlp("dropout", cfg.mlp_hidden, 0.5),
                               lambda: StackedMLP(km, 784, (cfg.mlp_hidden, cfg.mlp_hidden), 10, p_hidden=0.5,
                                                  p_connect=[0.5] + [0.0] * (km - 1)), (1, 28, 28), cfg.n_seeds, cfg,
                               gen)]
