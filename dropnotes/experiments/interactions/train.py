"""Chapter 6's runs: the variance shift checked analytically, part A's CNNs and part B's MLPs each as one batched
group (:func:`cnn_group`, :func:`mlp_group`: what the run trains and the cost model counts), their per-example
mistakes, and :func:`run` (the whole chapter, stored with its verdicts)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from dropnotes import bench, data, train
from dropnotes.results import pack_wrong
from dropnotes import functional as DF
from dropnotes.stacked import StackedCNN, StackedMLP, fit_stacked, predict_stacked
from dropnotes.layers import DropConnectLinear, Dropout, GaussianDropout
from dropnotes.models import SmallCNN
from dropnotes.experiments.judging import judged
from dropnotes.experiments.store import finish
from dropnotes.runtime import Timer, stream, stream_seed
from dropnotes.experiments.interactions.config import (CHAPTER, CNN_ARMS, InteractionsConfig, PROFILE_DEFAULTS,
                                                       TRAIN_IMAGES)
from dropnotes.experiments.interactions.rules import curves, grid, verdicts


# ------------------------------------------------------------------ the variance shift, analytically

def variance_shift_check(c: float = 0.5, v: float = 1.0, p: float = 0.5, n: int = 2_000_000, seed: int = 0) -> dict:
    """A unit x ~ N(c, v) through inverted dropout (keep q = 1-p): the train-mode variance is
    (c² + v)/q - c²; eval-mode variance is v. Returns the analytic and the measured values."""
    x = c + math.sqrt(v) * torch.randn(n, generator=stream(seed, "inputs"), dtype=torch.float64)
    torch.manual_seed(stream_seed(seed, "masks"))  # its own stream: x's would correlate the mask with x
    y = DF.dropout(x, p, training=True)
    q = 1 - p
    predicted = (c * c + v) / q - c * c
    return {"c": c, "v": v, "p": p, "train var (predicted)": predicted, "train var (measured)": float(y.var()),
            "eval var": float(x.var()), "shift ratio eval/train (predicted)": v / predicted,
            "shift ratio (measured)": float(x.var() / y.var())}


# ------------------------------------------------------------------ part A: CNN

def _split(name: str, size: int, val_size: int, seed: int, device: str, standardize: bool = True,
           test_size: int = 10000):
    """One draw from the training set, the same for every arm and seed: ``size`` images train, the next
    ``val_size`` validate; the 10,000 test images are used once. Standardised with the training images'
    mean and standard deviation (or pixels in [0, 1])."""
    if size + val_size > TRAIN_IMAGES:
        raise ValueError(f"the training size must be <= {TRAIN_IMAGES - val_size:,} ({TRAIN_IMAGES:,} images less the "
                         f"{val_size:,} held out for validation), got {size}")
    s = data.load_images(name)
    x, y = data.subset(s.x_train, s.y_train, size + val_size, stream(seed, f"subset-{name}"))
    xt, yt = s.x_test, s.y_test
    if test_size < len(yt):  # the smoke profile only
        xt, yt = data.subset(xt, yt, test_size, stream(seed, f"subset-test-{name}"))
    x, xt = train.images_to_float(x), train.images_to_float(xt)
    mean, std = (float(x[:size].mean()), float(x[:size].std())) if standardize else (0.0, 1.0)
    norm = lambda t: ((t - mean) / std).to(device)  # noqa: E731
    return (norm(x[:size]), y[:size].to(device), norm(x[size:]), y[size:].to(device), norm(xt), yt.to(device))


@torch.no_grad()
def bn_shift(model: SmallCNN, x: torch.Tensor) -> list[float]:
    """Li et al.'s statistic for every BN layer, median over channels: max(real/moving, moving/real), where
    'real' is the variance of the layer's input in eval mode on ``x`` and 'moving' its running variance."""
    model.eval()
    seen = []
    hooks = [bn.register_forward_hook(lambda m, inp, out: seen.append(inp[0].var(dim=(0, 2, 3), unbiased=False)))
             for bn in model.bn_layers]
    model(x)
    for h in hooks:
        h.remove()
    out = []
    for bn, real in zip(model.bn_layers, seen):
        r = real / bn.running_var
        out.append(float(torch.maximum(r, 1 / r).median()))
    return out


@torch.no_grad()
def reestimate_bn(model: SmallCNN, x: torch.Tensor, batch_size: int = 500) -> SmallCNN:
    """Recompute BN running statistics with dropout off (cumulative average over ``x``), in place."""
    for bn in model.bn_layers:
        bn.reset_running_stats()
        bn.momentum = None
    model.eval()
    for bn in model.bn_layers:
        bn.train()
    for start in range(0, x.shape[0], batch_size):
        model(x[start:start + batch_size])
    model.eval()
    return model


def _fit(cfg: InteractionsConfig, group: torch.nn.Module, d, name: str, **hyper):
    """Train one group on (train, validation), restore each model's best validation epoch, and test once; returns
    the per-model table, the history, the timing and each model's per-example test mistakes ((K, N) bool, for
    paired comparisons)."""
    xtr, ytr, xva, yva, xte, yte = d
    steps = (xtr.shape[0] // cfg.batch_size) * hyper["epochs"]
    amp = torch.bfloat16 if cfg.amp else None
    with Timer(cfg.torch_device) as timer:
        fit = fit_stacked(group, xtr, ytr, xva, yva, batch_size=cfg.batch_size, momentum=cfg.momentum,
                          eval_every=cfg.eval_every, generator=stream(cfg.seed, f"train-{name}", cfg.torch_device),
                          amp_dtype=amp, restore_best=True, eval_batch_size=1000,
                          desc=f"{group.k} {name}s (arms x seeds)", **hyper)
        test_wrong = (predict_stacked(group, xte, 1000, amp) != yte).cpu()
    test_err = test_wrong.float().mean(1)
    h = fit.history.set_index(["model", "epoch"])
    at_best = [h.loc[(m, e)] if e > 0 else None for m, e in enumerate(fit.best_epoch)]
    cols = pd.DataFrame({"best_epoch": fit.best_epoch, "val_error": fit.best_val_error,
                         "train_error": [float("nan") if r is None else r.train_error for r in at_best],
                         "test_error": [float("nan") if e == 0 else v for e, v in zip(fit.best_epoch, test_err.tolist())],
                         "died_at_step": fit.died_at_step})
    timing = {"group": name, "models": group.k, "steps": steps, "seconds (incl. evaluation)": timer.seconds,
              "ms per step (incl. evaluation)": 1000 * timer.seconds / max(steps, 1)}
    return cols, fit.history, timing, test_wrong.numpy()


def cnn_arms(cfg: InteractionsConfig) -> list[tuple[str, str, int]]:
    """The CNN models in stacking order: (placement, noise, seed) for every arm of :data:`CNN_ARMS` x seed."""
    return [(placement, noise, seed) for seed in cfg.seeds for placement, noise in CNN_ARMS]


def cnn_group(cfg: InteractionsConfig) -> StackedCNN:
    """Every CNN arm x seed as one :class:`StackedCNN` (on the CPU, or on the meta device inside
    ``torch.device("meta")``): what the run trains and the cost model counts."""
    arms = cnn_arms(cfg)
    return StackedCNN(len(arms), p_before_bn=[cfg.p_cnn if pl == "before-bn" else 0.0 for pl, _, _ in arms],
                      p_after_bn=[cfg.p_cnn if pl == "after-bn" else 0.0 for pl, _, _ in arms], noise=[nz for _, nz, _ in arms],
                      seeds=[stream_seed(s, "init-cnn") for _, _, s in arms])


def run_cnns(cfg: InteractionsConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict, np.ndarray]:
    """Every CNN arm x seed as one :class:`StackedCNN`; then each model's BN shift on the test set, and the
    before-BN (pixel) models re-evaluated after re-estimating their BN statistics with dropout off. Returns the
    per-model table, the re-estimated models, the learning curves, the timing and each model's per-example test
    mistakes ((K, N), in the table's row order)."""
    d = _split("fashion-mnist", cfg.cnn_train_size, cfg.val_size, cfg.seed, cfg.device, test_size=cfg.test_size)
    arms = cnn_arms(cfg)
    group = cnn_group(cfg).to(cfg.device)
    cols, history, timing, wrong = _fit(cfg, group, d, "CNN", epochs=cfg.cnn_epochs, lr=cfg.lr)
    rows, reest = [], []
    for i, (placement, noise, seed) in enumerate(arms):
        net = group.model(i)
        shift = bn_shift(net, d[4])
        rows.append({"arm": f"{placement} ({noise})" if placement != "none" else "none", "placement": placement,
                     "noise": noise, "seed": seed, **{c: cols[c].iloc[i] for c in cols}, "bn1 shift": shift[0],
                     "bn2 shift": shift[1]})
        if placement == "before-bn" and noise == "pixel" and cols.best_epoch[i] > 0:
            reestimate_bn(net, d[0])
            ev = train.evaluate_classifier(net, d[4], d[5])
            reest.append({"seed": seed, "test_error": ev["error"], "bn2 shift": bn_shift(net, d[4])[1]})
    history.insert(0, "arm", [rows[m]["arm"] for m in history.model])
    history.insert(0, "seed", [rows[m]["seed"] for m in history.model])
    return pd.DataFrame(rows), pd.DataFrame(reest), history, timing, wrong


# ------------------------------------------------------------------ part B: fully connected nets

def mlp(kind: str, hidden: int, p: float) -> nn.Sequential:
    """One MLP arm as a standalone network, 784-h-h-10 ReLU: ``kind`` in none / dropout / gaussian (same
    variance) / dropconnect (one weight mask per mini-batch, on both hidden layers' weights). The chapter
    trains these arms stacked (:func:`mlp_arms`); this is the one-model form (and what ``dropnotes
    estimate`` times as the sequential reference)."""
    if kind == "dropconnect":
        return nn.Sequential(nn.Flatten(), DropConnectLinear(784, hidden, p=p), nn.ReLU(),
                             DropConnectLinear(hidden, hidden, p=p), nn.ReLU(), nn.Linear(hidden, 10))
    noise = {"none": lambda: nn.Identity(), "dropout": lambda: Dropout(p), "gaussian": lambda: GaussianDropout(p)}[kind]
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), noise(), nn.Linear(hidden, hidden), nn.ReLU(),
                         noise(), nn.Linear(hidden, 10))


def mlp_arms(cfg: InteractionsConfig) -> list[dict]:
    """The MLP arms of one seed, in stacking order: the three noises against none, the dropout net with max-norm
    (it differs from the second arm, the dropout net, in ``max_norm`` only: one factor, at the base learning rate
    where the net without max-norm trains), and the dropout x weight-decay grid (its (0, 0) and (0.5, 0) cells are
    the first two arms). Every arm has the same learning rate; each names itself in ``arm``."""
    base = dict(weight_decay=0.0, max_norm=0.0, lr=cfg.lr)
    arms = [dict(kind="none", p=0.0, **base)] + [dict(kind=k, p=0.5, **base) for k in ("dropout", "gaussian",
                                                                                      "dropconnect")]
    arms += [dict(kind="dropout", p=0.5, weight_decay=0.0, max_norm=cfg.max_norm, lr=cfg.lr)]
    arms += [dict(kind="dropout" if p else "none", p=p, weight_decay=wd, max_norm=0.0, lr=cfg.lr)
             for p in cfg.grid_rates for wd in cfg.grid_decays if not (wd == 0.0 and p in (0.0, 0.5))]
    return [dict(arm=mlp_label(a), **a) for a in arms]


def mlp_label(arm: dict) -> str:
    """An MLP arm's name, unique within a seed: its noise (and rate), weight decay and max-norm."""
    name = arm["kind"] + (f" {arm['p']:g}" if arm["kind"] != "none" else "")
    return (name + (f", wd {arm['weight_decay']:g}" if arm["weight_decay"] else "")
            + (f", max-norm {arm['max_norm']:g}" if arm["max_norm"] else ""))


def mlp_group(cfg: InteractionsConfig) -> StackedMLP:
    """Every MLP arm x seed (:func:`mlp_arms`, seed-major) as one :class:`StackedMLP` with per-model noise and
    rate: what the run trains and the cost model counts."""
    arms = [dict(arm, seed=seed) for seed in cfg.seeds for arm in mlp_arms(cfg)]
    return StackedMLP(len(arms), 784, (cfg.mlp_hidden, cfg.mlp_hidden), 10,
                      p_hidden=[a["p"] if a["kind"] in ("dropout", "gaussian") else 0.0 for a in arms],
                      noise=["gaussian" if a["kind"] == "gaussian" else "bernoulli" for a in arms],
                      p_connect=[a["p"] if a["kind"] == "dropconnect" else 0.0 for a in arms],
                      seeds=[stream_seed(a["seed"], "init-mlp") for a in arms])


def run_mlps(cfg: InteractionsConfig) -> tuple[pd.DataFrame, pd.DataFrame, dict, np.ndarray]:
    """Every MLP arm x seed as one :class:`StackedMLP` (per-model noise, rate, learning rate, weight decay and
    max-norm); the last value holds each model's per-example test mistakes, in the table's row order."""
    d = _split("mnist", cfg.mlp_train_size, cfg.val_size, cfg.seed, cfg.device, standardize=False,  # pixels in [0, 1]
               test_size=cfg.test_size)
    arms = [dict(arm, seed=seed) for seed in cfg.seeds for arm in mlp_arms(cfg)]
    group = mlp_group(cfg).to(cfg.device)
    cols, history, timing, wrong = _fit(cfg, group, d, "MLP", epochs=cfg.mlp_epochs, lr=[a["lr"] for a in arms],
                                 weight_decay=[a["weight_decay"] for a in arms],
                                 max_norm=[a["max_norm"] or math.inf for a in arms])
    runs = pd.concat([pd.DataFrame(arms), cols], axis=1)
    history.insert(0, "arm", [arms[m]["arm"] for m in history.model])
    history.insert(0, "seed", [arms[m]["seed"] for m in history.model])
    return runs, history, timing, wrong


def packed_mistakes(cnn: pd.DataFrame, cnn_wrong: np.ndarray, mlp_runs: pd.DataFrame,
                    mlp_wrong: np.ndarray) -> pd.DataFrame:
    """The stored table ``wrong``: one row per model (part, arm, seed; the arm as in the part's table), its
    per-example mistakes on the test set packed by :func:`dropnotes.results.pack_wrong` (``unpack_wrong`` reads
    them back), in the test set's order, so that any two models can be compared image by image."""
    rows = [{"part": part, "arm": r.arm, "seed": r.seed, "packed": pack_wrong(w[i])}
            for part, runs, w in (("cnn", cnn, cnn_wrong), ("mlp", mlp_runs, mlp_wrong))
            for i, r in enumerate(runs.itertuples())]
    return pd.DataFrame(rows)


def run(cfg: InteractionsConfig, save: bool = True) -> dict:
    wall = Timer(cfg.torch_device).start()
    cnn, reest, cnn_curves, cnn_timing, cnn_wrong = run_cnns(cfg)
    mlp_runs, mlp_curves, mlp_timing, mlp_wrong = run_mlps(cfg)
    rec = {"shift_check": pd.DataFrame([variance_shift_check(c, 1.0, cfg.p_cnn) for c in (0.0, 0.5, 1.0)]),
           "cnn": cnn, "reestimated": reest, "mlp": mlp_runs, "mlp_wrong": mlp_wrong, "cnn_wrong": cnn_wrong,
           "timing": pd.DataFrame([cnn_timing, mlp_timing]), "curves": curves(cnn_curves, mlp_curves),
           "wrong": packed_mistakes(cnn, cnn_wrong, mlp_runs, mlp_wrong)}
    rec["grid"] = grid(rec["mlp"])
    rec["speed"] = mlp_speed(cfg, mlp_timing)
    rec["verdicts"] = judged(CHAPTER, cfg, verdicts(rec, cfg))
    rec["wall_time_s"] = wall.elapsed()
    if save:
        rec["path"] = finish(CHAPTER, cfg, PROFILE_DEFAULTS, wall_s=rec["wall_time_s"],
                             dataset="fashion-mnist (CNN), mnist (MLP)",
                             metrics={**rec["speed"], "bn2_shift_before_bn": float(
                                 rec["cnn"].loc[rec["cnn"].arm == "before-bn (pixel)", "bn2 shift"].mean())},
                             tables={k: rec[k] for k in ("shift_check", "cnn", "reestimated", "mlp", "grid", "timing",
                                                         "verdicts", "curves", "wrong")})
    return rec


def mlp_speed(cfg: InteractionsConfig, timing: dict) -> dict:
    """Part B's achieved training GFLOP/s (its dense products; evaluation's time counted, its FLOPs not) beside the
    2048³ product rate of this device in the run's precision, measured in the same run."""
    examples = cfg.batch_size * timing["steps"] * timing["models"]
    flops = bench.mlp_flops([784, cfg.mlp_hidden, cfg.mlp_hidden, 10], examples)
    return {"mlp_" + k if k != "precision" else k: v
            for k, v in bench.speed(flops, timing["seconds (incl. evaluation)"], cfg.torch_device, cfg.amp).items()}
