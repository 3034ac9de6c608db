"""Chapter 1's MNIST sweep: every rate's seeds as one batched group (:func:`stacked_group`: what the run trains
and the cost model counts), and :func:`run` (the whole chapter, stored with its verdicts)."""

from __future__ import annotations

import pandas as pd
import torch

from dropnotes import data, train
from dropnotes.experiments.judging import judged
from dropnotes.experiments.store import finish
from dropnotes.stacked import StackedMLP, fit_stacked
from dropnotes.stacked.fit import predict_stacked
from dropnotes.runtime import Timer, stream, stream_seed
from dropnotes import results
from dropnotes.experiments.mechanics.config import CHAPTER, MechanicsConfig, PROFILE_DEFAULTS, speed
from dropnotes.experiments.mechanics.rules import summarize, verdicts


# --------------------------------------------------------------------------- the MNIST sweep


def _load(cfg: MechanicsConfig, device: torch.device):
    splits = data.load_images(cfg.dataset)
    # One draw from the training set, the same for every arm and seed of the run: the first train_size
    # images train, the next val_size validate (disjoint); the 10,000 test images are used once.
    x, y = data.subset(splits.x_train, splits.y_train, cfg.train_size + cfg.val_size, stream(cfg.seed, "subset"))
    to = lambda t: train.images_to_float(t).flatten(1).to(device)  # noqa: E731
    n = cfg.train_size
    return (to(x[:n]), y[:n].to(device), to(x[n:]), y[n:].to(device), to(splits.x_test),
            splits.y_test.to(device))


def stacked_group(cfg: MechanicsConfig) -> StackedMLP:
    """Every rate x seed (:func:`arms`) as one :class:`StackedMLP`: what the run trains and the cost model counts."""
    group = arms(cfg)
    return StackedMLP(len(group), 784, cfg.hidden, 10, p_input=[cfg.p_input if r > 0 else 0.0 for r, _ in group],
                      p_hidden=[r for r, _ in group], seeds=[stream_seed(s, "init") for _, s in group])


def arms(cfg: MechanicsConfig) -> list[tuple[float, int]]:
    """The (rate, seed) of every model, in the order they are stacked in the batched group."""
    return [(rate, seed) for rate in cfg.p_hidden for seed in cfg.seeds]


def run_mnist_sweep(cfg: MechanicsConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train one MLP per (rate, seed), all of them as one batched group (:mod:`dropnotes.stacked`); each
    model's epoch is chosen on the validation split. Returns the learning curves and the final errors."""
    device = cfg.torch_device
    xtr, ytr, xva, yva, xte, yte = _load(cfg, device)
    group = arms(cfg)
    model = stacked_group(cfg).to(device)
    with Timer(device) as timer:
        fit = fit_stacked(model, xtr, ytr, xva, yva, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                          momentum=cfg.momentum, eval_every=cfg.eval_every, x_test=xte, y_test=yte,
                          amp_dtype=torch.bfloat16 if cfg.amp else None,
                          generator=stream(cfg.seed, "train", device), restore_best=True,
                          desc=f"{len(group)} MLPs (rates x seeds)")
    curves = fit.history.copy()
    curves.insert(0, "seed", [group[m][1] for m in curves.model])
    curves.insert(0, "p", [group[m][0] for m in curves.model])
    best = curves.merge(pd.DataFrame({"model": range(len(group)), "epoch": fit.best_epoch}), on=["model", "epoch"])
    finals = pd.DataFrame({"p": [r for r, _ in group], "seed": [s for _, s in group], "best_epoch": fit.best_epoch,
                           "val_error": fit.best_val_error,
                           "train_error": best.sort_values("model").train_error.to_numpy(),
                           "test_error": best.sort_values("model").test_error.to_numpy(),
                           "died_at_step": fit.died_at_step})
    finals.attrs["train_s"] = timer.seconds
    # each chosen model (its best validation epoch restored) on every test image: what the paired rule reads
    wrong = (predict_stacked(model, xte, amp_dtype=torch.bfloat16 if cfg.amp else None) != yte).cpu().numpy()
    finals["wrong"] = [results.pack_wrong(w) for w in wrong]
    return curves.drop(columns=["model", "alive", "group"]), finals


def run(cfg: MechanicsConfig, save: bool = True) -> dict:
    """Run the sweep, summarise it, compute the verdicts and store the result with provenance."""
    with Timer(cfg.torch_device) as wall:
        curves, finals = run_mnist_sweep(cfg)
        summary = summarize(finals)
        table = judged(CHAPTER, cfg, verdicts(summary, finals, curves))
    rate = speed(cfg, finals.attrs["train_s"])
    record = {"curves": curves, "finals": finals, "summary": summary, "verdicts": table,
              "wall_time_s": wall.seconds, "speed": rate}
    if save:
        record["path"] = finish(
            CHAPTER, cfg, PROFILE_DEFAULTS, wall_s=wall.seconds, dataset=cfg.dataset,
            metrics={**{f"test_error_p{r:g}": float(summary.loc[summary.p == r, "test error %"].iloc[0])
                        for r in cfg.p_hidden}, "train_s": finals.attrs["train_s"], **rate},
            tables={"summary": summary, "verdicts": table, "curves": curves, "finals": finals})
    return record
