"""Chapter 6, "Dropout's interactions": batch norm (variance shift), noise shape in CNNs, DropConnect,
Gaussian dropout, max-norm and weight decay.

Part A trains :class:`dropnotes.models.SmallCNN` on a Fashion-MNIST subset with dropout placed
before batch norm, after the last batch norm, or nowhere, and with per-pixel against channel-wise
(spatial) noise. Part B trains fully connected nets on an MNIST subset with each noise on the
hidden units or weights, max-norm, and a dropout x weight-decay grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from dropnotes import data, train
from dropnotes import functional as DF
from dropnotes.layers import DropConnectLinear, Dropout, GaussianDropout
from dropnotes.models import SmallCNN
from dropnotes.experiments._base import (DEVICE, PROFILE, SEED, ChapterConfig, Knobs, check_seed_block, finish, rate_knob,
                                        size_knob)
from dropnotes.experiments._base import stored_full as _stored_full
from dropnotes.runtime import Timer, stream, stream_seed
from dropnotes.runtime import profile_config, seed_everything, select_device
from dropnotes.stats import compare_errors

CHAPTER = "interactions"
LI_DENSENET = (77.42, 68.55)  # Li et al. 2019, Fig. 1: DenseNet CIFAR-100 test accuracy without / with dropout 0.5


@dataclass(frozen=True)
class InteractionsConfig(ChapterConfig):
    n_seeds: int
    p: float
    cnn_train_size: int
    cnn_epochs: int
    mlp_train_size: int
    mlp_hidden: int
    mlp_epochs: int
    lr: float
    max_norm: float
    grid_rates: tuple[float, ...]
    grid_decays: tuple[float, ...]
    batch_size: int


PROFILE_DEFAULTS = {
    # CPU, about two minutes: 2,000-image subsets so that the plain nets overfit.
    "quick": dict(cnn_train_size=2000, cnn_epochs=15, mlp_train_size=2000, mlp_hidden=512, mlp_epochs=40, n_seeds=1,
                  grid_rates=(0.0, 0.5), grid_decays=(0.0, 5e-4, 5e-3), batch_size=64),
    # One GPU: full training sets, 3 seeds.
    "full": dict(cnn_train_size=60000, cnn_epochs=30, mlp_train_size=60000, mlp_hidden=1024, mlp_epochs=100,
                 n_seeds=3, grid_rates=(0.0, 0.2, 0.35, 0.5), grid_decays=(0.0, 1e-4, 5e-4, 2e-3), batch_size=128),
}


KNOBS = Knobs(
    PROFILE, SEED, DEVICE,
    rate_knob("p", 0.3, "the CNN's dropout rate, > 0 (the MLPs use 0.5, Srivastava et al.'s hidden rate)", low_open=True),
    size_knob("n_seeds", "quick: 1; full: 3", high=100),
    size_knob("cnn_epochs", "quick: 15; full: 30", high=10000),
    size_knob("mlp_epochs", "quick: 40; full: 100", high=10000),
)


def configure(profile: str = "auto", device: str = "auto", seed: int = 0, p: float = 0.3, n_seeds: int | None = None,
              cnn_epochs: int | None = None, mlp_epochs: int | None = None) -> InteractionsConfig:
    """Validate the notebook's parameters and fill in the profile's defaults (``None`` = default)."""
    v = KNOBS.check(locals())
    dev = select_device(v["device"])
    resolved, d = profile_config(v["profile"], PROFILE_DEFAULTS, dev, n_seeds=v["n_seeds"],
                                 cnn_epochs=v["cnn_epochs"], mlp_epochs=v["mlp_epochs"])
    check_seed_block(v["seed"], d["n_seeds"])
    return InteractionsConfig(profile=resolved, device=str(dev), seed=v["seed"], p=v["p"], lr=0.05, max_norm=3.0,
                              **d)


# ------------------------------------------------------------------ the variance shift, analytically

def variance_shift_check(c: float = 0.5, v: float = 1.0, p: float = 0.3, n: int = 2_000_000, seed: int = 0) -> dict:
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

def _subset(name: str, size: int, seed: int, device: str, standardize: bool = True) -> dict[str, torch.Tensor]:
    s = data.load_images(name)
    x, y = data.subset(s.x_train, s.y_train, size, stream(seed, f"subset-{name}"))
    x, xt = train.images_to_float(x), train.images_to_float(s.x_test)
    mean, std = (float(x.mean()), float(x.std())) if standardize else (0.0, 1.0)
    return {"x_train": ((x - mean) / std).to(device), "y_train": y.to(device),
            "x_test": ((xt - mean) / std).to(device), "y_test": s.y_test.to(device)}


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


def train_cnn(cfg: InteractionsConfig, d: dict, placement: str, noise: str, seed: int) -> tuple[SmallCNN, dict]:
    gen = seed_everything(seed)
    model = SmallCNN(placement=placement, p=cfg.p, noise=noise).to(cfg.device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)
    with Timer(cfg.torch_device) as timer:
        hist = train.fit_classifier(model, d["x_train"], d["y_train"], d["x_test"], d["y_test"],
                                    epochs=cfg.cnn_epochs, batch_size=cfg.batch_size, optimizer=opt,
                                    eval_every=cfg.cnn_epochs, generator=gen, desc=f"cnn {placement} {noise}")
    last = hist.iloc[-1]
    shift = bn_shift(model, d["x_test"])
    return model, {"arm": f"{placement} ({noise})" if placement != "none" else "none", "placement": placement,
                   "noise": noise, "seed": seed, "train_error": last.train_error, "test_error": last.test_error,
                   "bn1 shift": shift[0], "bn2 shift": shift[1], "seconds": timer.seconds}


# ------------------------------------------------------------------ part B: fully connected nets

def mlp(kind: str, hidden: int, p: float) -> nn.Sequential:
    """784-h-h-10 ReLU: ``kind`` in none / dropout / gaussian (same variance) / dropconnect (one weight
    mask per mini-batch, on both hidden layers' weights)."""
    if kind == "dropconnect":
        return nn.Sequential(nn.Flatten(), DropConnectLinear(784, hidden, p=p), nn.ReLU(),
                             DropConnectLinear(hidden, hidden, p=p), nn.ReLU(), nn.Linear(hidden, 10))
    noise = {"none": lambda: nn.Identity(), "dropout": lambda: Dropout(p), "gaussian": lambda: GaussianDropout(p)}[kind]
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), noise(), nn.Linear(hidden, hidden), nn.ReLU(),
                         noise(), nn.Linear(hidden, 10))


def train_mlp(cfg: InteractionsConfig, d: dict, kind: str, p: float, seed: int, weight_decay: float = 0.0,
              max_norm: float | None = None, lr_scale: float = 1.0) -> dict:
    gen = seed_everything(seed)
    model = mlp(kind, cfg.mlp_hidden, p).to(cfg.device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr * lr_scale, momentum=0.9, weight_decay=weight_decay)
    with Timer(cfg.torch_device) as timer:
        hist = train.fit_classifier(model, d["x_train"], d["y_train"], d["x_test"], d["y_test"],
                                    epochs=cfg.mlp_epochs, batch_size=cfg.batch_size, optimizer=opt,
                                    eval_every=cfg.mlp_epochs, generator=gen, max_norm=max_norm,
                                    desc=f"mlp {kind} p={p} wd={weight_decay}")
    seconds = timer.seconds
    last = hist.iloc[-1]
    steps = cfg.mlp_epochs * math.ceil(d["x_train"].shape[0] / cfg.batch_size)
    return {"kind": kind, "p": p, "weight_decay": weight_decay, "max_norm": max_norm or 0.0, "lr": cfg.lr * lr_scale,
            "seed": seed,
            "train_error": last.train_error, "test_error": last.test_error, "seconds": seconds,
            "ms per step (incl. eval)": 1000 * seconds / steps}


def run(cfg: InteractionsConfig, save: bool = True) -> dict:
    wall = Timer(cfg.torch_device).start()
    seeds = cfg.seeds
    cnn_data = _subset("fashion-mnist", cfg.cnn_train_size, cfg.seed, cfg.device)
    cnn_rows, reest = [], []
    for seed in seeds:
        for placement, noise in (("none", "pixel"), ("before-bn", "pixel"), ("after-bn", "pixel"),
                                 ("after-bn", "spatial"), ("before-bn", "gaussian")):
            model, row = train_cnn(cfg, cnn_data, placement, noise, seed)
            cnn_rows.append(row)
            if placement == "before-bn" and noise == "pixel":
                reestimate_bn(model, cnn_data["x_train"])
                ev = train.evaluate_classifier(model, cnn_data["x_test"], cnn_data["y_test"])
                reest.append({"seed": seed, "test_error": ev["error"], "bn2 shift": bn_shift(model, cnn_data["x_test"])[1]})
    mlp_data = _subset("mnist", cfg.mlp_train_size, cfg.seed, cfg.device, standardize=False)  # pixels in [0, 1]
    mlp_rows = []
    for seed in seeds:
        mlp_rows.append(train_mlp(cfg, mlp_data, "none", 0.0, seed))
        for kind in ("dropout", "gaussian", "dropconnect"):
            mlp_rows.append(train_mlp(cfg, mlp_data, kind, 0.5, seed))
        for max_norm in (None, cfg.max_norm):  # Srivastava et al.: max-norm permits a 10x learning rate
            mlp_rows.append(train_mlp(cfg, mlp_data, "dropout", 0.5, seed, max_norm=max_norm, lr_scale=10.0))
        for p in cfg.grid_rates:
            for wd in cfg.grid_decays:
                if not (wd == 0.0 and p in (0.0, 0.5)):  # already trained above
                    mlp_rows.append(train_mlp(cfg, mlp_data, "dropout" if p else "none", p, seed, weight_decay=wd))
    rec = {"shift_check": pd.DataFrame([variance_shift_check(c, 1.0, cfg.p) for c in (0.0, 0.5, 1.0)]),
           "cnn": pd.DataFrame(cnn_rows), "reestimated": pd.DataFrame(reest), "mlp": pd.DataFrame(mlp_rows)}
    rec["grid"] = grid(rec["mlp"])
    rec["verdicts"] = verdicts(rec, cfg)
    rec["wall_time_s"] = wall.elapsed()
    if save:
        rec["path"] = finish(CHAPTER, cfg, PROFILE_DEFAULTS, wall_s=rec["wall_time_s"],
                                          dataset="fashion-mnist (CNN), mnist (MLP)",
                                          metrics={"bn2_shift_before_bn": float(
                                              rec["cnn"].loc[rec["cnn"].arm == "before-bn (pixel)", "bn2 shift"].mean())},
                                          tables={k: rec[k] for k in ("shift_check", "cnn", "reestimated", "mlp",
                                                                      "grid", "verdicts")})
    return rec


def grid(mlp_runs: pd.DataFrame) -> pd.DataFrame:
    """Mean test error (%) of the plain-dropout MLPs, rows = dropout rate, columns = weight decay."""
    sel = mlp_runs[mlp_runs.kind.isin(["none", "dropout"]) & (mlp_runs.lr == mlp_runs.lr.min())]
    return (100 * sel.pivot_table(index="p", columns="weight_decay", values="test_error", aggfunc="mean")).round(2)


def _err(runs: pd.DataFrame, **where) -> list[float]:
    sel = runs
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return sel.sort_values("seed").test_error.tolist()


def verdicts(rec: dict, cfg: InteractionsConfig) -> pd.DataFrame:
    """The closing table, from the measurements, with the rules stated in the chapter."""
    cnn, mlp_runs, n = rec["cnn"], rec["mlp"], 10_000
    rows = []
    shift = cnn.groupby("arm")["bn2 shift"].mean()
    chk = rec["shift_check"]
    rel = float((chk["train var (measured)"] / chk["train var (predicted)"] - 1).abs().max())
    ok = shift["before-bn (pixel)"] >= 1.3 and shift["none"] <= 1.1 and shift["after-bn (pixel)"] <= 1.1 and rel < 0.1
    rows.append({"claim": "dropout before batch norm shifts the variance BN sees between training and test",
                 "source": "Li et al. 2019", "paper": "shift ratio up to about 3 per BN layer (DenseNet, CIFAR-100)",
                 "ours": (f"median per-channel ratio at BN2: before-BN {shift['before-bn (pixel)']:.2f}, after-BN "
                          f"{shift['after-bn (pixel)']:.2f}, none {shift['none']:.2f}; Gaussian before-BN "
                          f"{shift['before-bn (gaussian)']:.2f}; formula within {100 * rel:.1f} %"),
                 "verdict": "reproduced" if ok else "not reproduced"})
    before, after = _err(cnn, arm="before-bn (pixel)"), _err(cnn, arm="after-bn (pixel)")
    diff, se, v = compare_errors(before, after, n)
    re = rec["reestimated"].sort_values("seed").test_error.tolist()
    rec_frac = (np.mean(before) - np.mean(re)) / (np.mean(before) - np.mean(after)) if diff > 0 else float("nan")
    rows.append({"claim": "dropout after the last BN (or re-estimated BN statistics) beats dropout before BN",
                 "source": "Li et al. 2019", "paper": f"DenseNet CIFAR-100 {LI_DENSENET[1]} % with dropout before BN vs "
                 f"{LI_DENSENET[0]} % without",
                 "ours": (f"error before-BN {100 * np.mean(before):.2f} %, after-BN {100 * np.mean(after):.2f} % "
                          f"({100 * diff:+.2f} ± {100 * se:.2f} pt); BN re-estimated {100 * np.mean(re):.2f} %"
                          + (f" ({100 * rec_frac:.0f} % of the gap recovered)" if diff > 0 else "")),
                 "verdict": v})
    pixel, spatial = _err(cnn, arm="after-bn (pixel)"), _err(cnn, arm="after-bn (spatial)")
    diff, se, v = compare_errors(pixel, spatial, n)
    gap = cnn.assign(gap=cnn.test_error - cnn.train_error).groupby("arm").gap.mean()
    rows.append({"claim": "channel-wise (spatial) dropout regularises conv features better than per-pixel dropout",
                 "source": "Tompson et al. 2015", "paper": "qualitative (FLIC pose estimation)",
                 "ours": (f"error per-pixel {100 * np.mean(pixel):.2f} %, spatial {100 * np.mean(spatial):.2f} % "
                          f"({100 * diff:+.2f} ± {100 * se:.2f} pt); train-test gap {100 * gap['after-bn (pixel)']:.1f} vs "
                          f"{100 * gap['after-bn (spatial)']:.1f} pt"), "verdict": v})
    none = _err(mlp_runs, kind="none", weight_decay=0.0)
    base_lr = mlp_runs.lr.min()
    drop = _err(mlp_runs[mlp_runs.lr == base_lr], kind="dropout", p=0.5, weight_decay=0.0)
    dc = _err(mlp_runs, kind="dropconnect")
    d1, s1, v1 = compare_errors(none, dc, n)
    d2, s2, v2 = compare_errors(drop, dc, n)
    t = mlp_runs.groupby("kind")["ms per step (incl. eval)"].mean()
    rows.append({"claim": "DropConnect regularises like dropout (Wan et al.: slightly better)",
                 "source": "Wan et al. 2013", "paper": "MNIST 2 x 800: no-drop > dropout > DropConnect in error (Table 3)",
                 "ours": (f"error none {100 * np.mean(none):.2f} %, dropout {100 * np.mean(drop):.2f} %, DropConnect (one mask "
                          f"per batch) {100 * np.mean(dc):.2f} %; DC vs none {100 * d1:+.2f} ± {100 * s1:.2f}, DC vs dropout "
                          f"{100 * d2:+.2f} ± {100 * s2:.2f} pt; {t['dropconnect'] / t['dropout']:.2f}x dropout's step time"),
                 "verdict": "reproduced (DC < none)" if v1.startswith("reproduced") else v1})
    gauss = _err(mlp_runs, kind="gaussian")
    d, se, _ = compare_errors(drop, gauss, n)
    rows.append({"claim": "Gaussian dropout with variance p/(1-p) performs like Bernoulli dropout",
                 "source": "Srivastava et al. 2014 (Section 10)", "paper": "MNIST: about equal (Table 10)",
                 "ours": f"Bernoulli {100 * np.mean(drop):.2f} %, Gaussian {100 * np.mean(gauss):.2f} % ({100 * d:+.2f} ± {100 * se:.2f} pt)",
                 "verdict": "reproduced (within 2 SE)" if abs(d) <= 2 * se else "not reproduced"})
    hi = mlp_runs[mlp_runs.lr > base_lr]
    free, mn = _err(hi[hi.max_norm == 0], kind="dropout"), _err(hi[hi.max_norm > 0], kind="dropout")
    d, se, v = compare_errors(free, mn, n)
    d0, se0, _ = compare_errors(drop, mn, n)
    rows.append({"claim": "max-norm lets dropout nets train at a high learning rate, to a lower error",
                 "source": "Srivastava et al. 2014 (Section 5.1, Table 9)",
                 "paper": "dropout + L2 1.25 % vs dropout + max-norm 1.05 % (secondary sources)",
                 "ours": (f"lr {hi.lr.max():g}: without max-norm {100 * np.mean(free):.2f} %, with max-norm {cfg.max_norm:g} "
                          f"{100 * np.mean(mn):.2f} % ({100 * d:+.2f} ± {100 * se:.2f} pt); dropout at lr {base_lr:g}: "
                          f"{100 * np.mean(drop):.2f} % ({100 * d0:+.2f} ± {100 * se0:.2f} pt for max-norm)"),
                 "verdict": v if min(np.mean(free), np.mean(mn)) < 0.5 else
                 "not measured (both nets diverged at this learning rate)"})
    g = rec["grid"]
    best_both = g.loc[g.index > 0, g.columns > 0].stack().idxmin()
    best_p = g.loc[g.index > 0, 0.0].idxmin()
    best_wd = g.loc[0.0, g.columns > 0].idxmin()
    sel = lambda p, wd: _err(mlp_runs[(mlp_runs.lr == base_lr) & mlp_runs.kind.isin(["none", "dropout"])], p=p,  # noqa: E731
                             weight_decay=wd)
    single = min([(best_p, 0.0), (0.0, best_wd)], key=lambda k: np.mean(sel(*k)))
    d, se, v = compare_errors(sel(*single), sel(*best_both), n)
    rows.append({"claim": "dropout and weight decay are complementary",
                 "source": "Srivastava et al. 2014 (Table 9)", "paper": "dropout + L2 1.25 % < L2 alone 1.62 %",
                 "ours": (f"best with both: p={best_both[0]:g}, wd={best_both[1]:g} {g.loc[best_both]:.2f} %; best with one: "
                          f"p={single[0]:g}, wd={single[1]:g} {np.mean(sel(*single)) * 100:.2f} % ({100 * d:+.2f} ± {100 * se:.2f} pt)"),
                 "verdict": v})
    return pd.DataFrame(rows)


def plot_grid(g: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    im = ax.imshow(g.values, cmap="viridis_r")
    ax.set_xticks(range(g.shape[1]), [f"{c:g}" for c in g.columns])
    ax.set_yticks(range(g.shape[0]), [f"{r:g}" for r in g.index])
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            ax.text(j, i, f"{g.values[i, j]:.2f}", ha="center", va="center", color="w", fontsize=9)
    ax.set(xlabel="weight decay", ylabel="dropout rate (hidden)")
    fig.colorbar(im, ax=ax, label="test error (%)")
    fig.tight_layout()
    return fig


def stored_full() -> dict | None:
    return _stored_full(CHAPTER)

