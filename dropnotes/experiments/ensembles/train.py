"""Chapter 2's runs: every seed's members and dropout net as one batched group (:func:`stacked_group`), its curves,
and :func:`run` (the whole chapter, stored with its verdicts)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from dropnotes import bench
from dropnotes.ensemble import step_time_loop_vs_vmap
from dropnotes.experiments.judging import judged
from dropnotes.experiments.store import finish
from dropnotes.experiments.ensembles.config import CHAPTER, DROPOUT_NET, PROFILE_DEFAULTS, EnsemblesConfig
from dropnotes.experiments.ensembles.evaluate import _prepare, evaluate_seed, regression_gap, rotated_digit
from dropnotes.experiments.ensembles.rules import summarize_ood, summarize_quality, summarize_sweep, verdicts
from dropnotes.models import MLP
from dropnotes.results import pack_values, pack_wrong
from dropnotes.runtime import Timer, stream, stream_seed
from dropnotes.stacked import StackedMLP, fit_stacked
from dropnotes.train import cosine_factor

# --------------------------------------------------------------------------- training


def _plain(cfg: EnsemblesConfig) -> nn.Module:
    return MLP(784, cfg.hidden, 10)


def stacked_group(cfg: EnsemblesConfig) -> StackedMLP:
    """Every seed's members and dropout net (:func:`arms`) as one :class:`StackedMLP`: what the run trains and the
    cost model counts."""
    group = arms(cfg)
    return StackedMLP(len(group), 784, cfg.hidden, 10, p_input=[a["p_input"] for a in group],
                      p_hidden=[a["p_hidden"] for a in group], seeds=[stream_seed(a["seed"], a["init"]) for a in group])


def arms(cfg: EnsemblesConfig) -> list[dict]:
    """Every model of the batched group, in stacking order, with what it is trained with: per seed, ``members``
    plain nets (``member 0`` ...) and the dropout net. The dropout net differs from a member in ``p_input`` and
    ``p_hidden`` only (and, as any two members do, in its initialisation's seed): the same learning rate, momentum,
    batch size, schedule and epoch selection, and no max-norm or weight decay for any of them."""
    out = []
    for seed in cfg.seeds:
        for m in range(cfg.members + 1):
            net = m == cfg.members
            out.append({"seed": seed, "arm": DROPOUT_NET if net else f"member {m}", "init": f"init-{m}",
                        "p_input": cfg.p_input if net else 0.0, "p_hidden": cfg.p_hidden if net else 0.0,
                        "lr": cfg.lr, "momentum": cfg.momentum, "weight_decay": 0.0, "max_norm": None})
    return out


def train_all(cfg: EnsemblesConfig, d: dict) -> tuple[list[tuple[StackedMLP, nn.Module]], dict]:
    """Every seed's K plain members and its dropout net, all trained as one batched group
    (:mod:`dropnotes.stacked`; the models of :func:`arms`). Returns, per seed, (members, dropout net), and the
    timing, each model's best epoch and its learning curve (validation error and loss, and the training error, at
    every evaluation)."""
    device = cfg.torch_device
    per_seed = cfg.members + 1
    group = arms(cfg)
    model = stacked_group(cfg).to(device)
    with Timer(device) as timer:
        fit = fit_stacked(model, d["x_train"].flatten(1), d["y_train"], d["x_val"].flatten(1), d["y_val"],
                          epochs=cfg.epochs, batch_size=cfg.batch_size, momentum=cfg.momentum,
                          eval_every=cfg.eval_every or cfg.epochs, restore_best=cfg.eval_every > 0,
                          lr=[a["lr"] for a in group], generator=stream(cfg.seed, "train", device),
                          desc=f"{len(group)} MLPs (members + dropout nets)",
                          lr_schedule=cosine_factor(cfg.epochs) if cfg.schedule == "cosine" else None,
                          amp_dtype=torch.bfloat16 if cfg.amp else None)
    out = []
    for k in range(cfg.n_seeds):
        first = k * per_seed
        out.append((model.select(range(first, first + cfg.members)).eval(), model.model(first + cfg.members)))
    best = pd.DataFrame({"seed": [a["seed"] for a in group], "model": [a["arm"] for a in group],
                         "best_epoch": fit.best_epoch})
    return out, {"group": len(group), "train_s": timer.seconds, "best": best, "curves": curves(fit.history, group)}


def curves(history: pd.DataFrame, group: list[dict]) -> pd.DataFrame:
    """Every model's learning curve from the trainer's history: one row per model and evaluation, with its seed,
    arm (``member i`` or ``dropout net``), index in the group, epoch, validation error and loss, and training
    error."""
    h = history
    return pd.DataFrame({"seed": [group[m]["seed"] for m in h.model], "arm": [group[m]["arm"] for m in h.model],
                         "model": h.model.to_numpy(), "epoch": h.epoch.to_numpy(), "val_error": h.val_error.to_numpy(),
                         "val_loss": h.val_loss.to_numpy(), "train_error": h.train_error.to_numpy()})


# --------------------------------------------------------------------------- the whole chapter


def train_speed(cfg: EnsemblesConfig, train_s: float) -> dict:
    """The batched group's achieved training GFLOP/s (its evaluations included in ``train_s``) beside this device's
    2048³ product rate in the run's precision, measured now."""
    steps = cfg.epochs * (cfg.train_size // cfg.batch_size)
    flops = bench.mlp_flops([784, *cfg.hidden, 10], cfg.batch_size * steps) * cfg.n_seeds * (cfg.members + 1)
    return bench.speed(flops, train_s, cfg.torch_device, cfg.amp)


def run(cfg: EnsemblesConfig, save: bool = True) -> dict:
    wall = Timer(cfg.torch_device).start()
    device = cfg.torch_device
    d = _prepare(cfg, device)
    trained, timing = train_all(cfg, d)
    timings = [{"seed": "all", "models": timing["group"], "train_s (one batched group)": timing["train_s"]}]
    outs = [evaluate_seed(cfg, d, ens, net, seed) for seed, (ens, net) in zip(cfg.seeds, trained)]
    ens0, net0 = trained[0]
    rot = rotated_digit(cfg, d, net0, ens0)
    speed = step_time_loop_vs_vmap(lambda: _plain(cfg), cfg.members, d["x_train"], d["y_train"], cfg.batch_size)
    regs = [regression_gap(s, cfg.device, steps=cfg.regression_steps) for s in cfg.seeds]
    reg = regs[0]  # the figure's seed
    cat = lambda key: pd.concat([o[key] for o in outs], ignore_index=True)  # noqa: E731
    rec = {"quality": cat("quality"), "sweep": cat("sweep"), "ood": cat("ood"), "ood_pairs": cat("ood_pairs"),
           "rotation_pairs": pd.DataFrame([o["rotation_pairs"] for o in outs]),
           "wrong": [o["wrong"] for o in outs], "calibration": [o["calibration"] for o in outs],
           "timings": pd.DataFrame(timings), "best_epochs": timing["best"], "curves": timing["curves"],
           "wrong_packed": packed_mistakes(cfg.seeds, [o["test_wrong"] for o in outs]), "vmap_speed": speed,
           "reliability": outs[0]["reliability"],
           "rotation": rot, "regression": reg,
           "regression_seeds": pd.DataFrame([{"seed": s, **r["std_by_region"]} for s, r in zip(cfg.seeds, regs)])}
    rec["summary"] = summarize_quality(rec["quality"])
    rec["mc_curve"] = summarize_sweep(rec["sweep"])
    rec["ood_summary"] = summarize_ood(rec["ood"])
    rec["verdicts"] = judged(CHAPTER, cfg, verdicts(rec, cfg))
    rec["wall_time_s"] = wall.elapsed()
    if save:
        rot_table = rot.drop(columns=["logits", "probs"])
        rec["path"] = finish(
            CHAPTER, cfg, PROFILE_DEFAULTS, wall_s=rec["wall_time_s"], dataset=cfg.dataset,
            ood_dataset=cfg.ood_dataset,
            metrics={"vmap_speedup": speed["speedup"], "regression_std": reg["std_by_region"],
                     **train_speed(cfg, timing["train_s"])},
            tables={"summary": rec["summary"], "mc_curve": rec["mc_curve"], "ood_summary": rec["ood_summary"],
                    "ood_pairs": rec["ood_pairs"], "rotation_pairs": rec["rotation_pairs"], "rotation": rot_table,
                    "verdicts": rec["verdicts"], "quality": rec["quality"],
                    "regression_seeds": rec["regression_seeds"], "best_epochs": rec["best_epochs"],
                    "sweep": rec["sweep"], "ood": rec["ood"],  # per seed: what the summaries average (blocks merge)
                    "curves": rec["curves"], "wrong": rec["wrong_packed"],
                    # the MC passes' mistakes (mean over repeats) per seed and k: MC against weight scaling judged
                    # again from the record
                    "mc_wrong": pd.DataFrame([{"seed": seed, "k": str(k), "packed": pack_values(w)}
                                              for seed, w in zip(cfg.seeds, rec["wrong"]) for k, w in w.items()]),
                    # per test image and seed, the NLL of the single nets with temperature (their mean) and of MC
                    # dropout: the temperature row judged again from the record (protocol 5)
                    "nll": packed_nll(cfg.seeds, rec["calibration"])})
    return rec


def packed_mistakes(seeds: list[int], per_seed: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    """The stored table ``wrong``: one row per trained model (arm ``member i`` or ``dropout net``, and seed), its
    per-example mistakes on the test set packed by :func:`dropnotes.results.pack_wrong` (read back with
    ``unpack_wrong``), in the test set's order, so that any two models can be compared image by image."""
    return pd.DataFrame([{"arm": arm, "seed": seed, "packed": pack_wrong(w)}
                         for seed, wrong in zip(seeds, per_seed) for arm, w in wrong.items()])


def packed_nll(seeds: list[int], per_seed: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    """The stored table ``nll``: one row per seed and model of the temperature row (``single net + temperature``, the
    members' mean per test image, and ``dropout, MC``), its per-example test NLL in nats packed by
    :func:`dropnotes.results.pack_values`, in the test set's order."""
    return pd.DataFrame([{"seed": seed, "model": model, "packed": pack_values(v)}
                         for seed, cal in zip(seeds, per_seed) for model, v in cal.items()])
