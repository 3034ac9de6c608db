"""Chapter 4's runs: CIFAR-10 with light augmentation, every depth's drop-path rates and seeds as one batched ViT
group, the step times with and without skipped blocks, and :func:`run` (the whole chapter, stored with its
verdicts)."""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from dropnotes.amp import autocast
from dropnotes import data, results, stacked, train
from dropnotes.layers import drop_path_rates
from dropnotes.models import ViT
from dropnotes.experiments.judging import judged
from dropnotes.experiments.store import finish
from dropnotes.runtime import Timer, stream
from dropnotes.runtime import seed_everything
from dropnotes.stacked.fit import predict_stacked
from dropnotes.experiments.droppath.config import CHAPTER, DropPathConfig, PROFILE_DEFAULTS
from dropnotes.experiments.droppath.rules import middle_rate, summarize, verdicts


MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


def _prepare(cfg: DropPathConfig) -> dict[str, torch.Tensor]:
    splits = data.load_images(cfg.dataset)
    # One draw: its first train_size images train, the next val_size validate (none is in the training subset).
    x, y = data.subset(splits.x_train, splits.y_train, cfg.train_size + cfg.val_size, stream(cfg.seed, "subset"))
    (x, xv), (y, yv) = x.split([cfg.train_size, cfg.val_size]), y.split([cfg.train_size, cfg.val_size])
    # A random test subset: the JPEG copy's test split is sorted by class, so a prefix would be one class.
    xt, yt = data.subset(splits.x_test, splits.y_test, cfg.test_size, stream(cfg.seed, "test-subset"), "test_size")
    dev = cfg.torch_device
    norm = lambda x: ((train.images_to_float(x) - MEAN) / STD).to(dev)  # noqa: E731
    return {"x_train": norm(x), "y_train": y.to(dev), "x_val": norm(xv), "y_val": yv.to(dev), "x_test": norm(xt),
            "y_test": yt.to(dev)}


def augment(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Random horizontal flip and random crop after zero padding, per image, on x's device."""
    n, _, h, w = x.shape
    flip = torch.rand(n, device=x.device) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), device=x.device)
    return _crop(F.pad(x, (pad, pad, pad, pad)), dy, dx, h, w)


def _crop(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    n, c = padded.shape[:2]
    rows = (dy.view(n, 1) + torch.arange(h, device=padded.device)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w, device=padded.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=padded.device).view(n, 1, 1, 1)
    chan = torch.arange(c, device=padded.device).view(1, c, 1, 1)
    return padded[batch, chan, rows, cols]


def arms(cfg: DropPathConfig, mid: float) -> dict[int, list[tuple[float, str, int]]]:
    """The (rate, schedule, seed) of every model, per depth: the deep net at every rate of the sweep (linear
    schedule) and uniform at ``mid / 2`` (the linear schedule to ``mid``'s expected depth); the shallow net at
    rate 0 and at ``mid``."""
    deep = [(r, "linear", s) for s in cfg.seeds for r in cfg.rates] + [(mid / 2, "uniform", s) for s in cfg.seeds]
    shallow = [(r, "linear", s) for s in cfg.seeds for r in sorted({0.0, mid})]
    return {cfg.depth: deep, cfg.shallow_depth: shallow}


def train_group(cfg: DropPathConfig, d: dict, depth: int, models: list[tuple[float, str, int]]) -> tuple[pd.DataFrame, float]:
    """Train the ViTs of one depth together (one :class:`~dropnotes.stacked.StackedViT`): each model's
    final train, validation and test error, and the group's wall time."""
    dev = cfg.torch_device
    rates = [drop_path_rates(depth, r, s) for r, s, _ in models]
    group = stacked.StackedViT(len(models), dim=cfg.dim, depth=depth, heads=cfg.heads, p_path=rates,
                              seeds=[s for *_, s in models]).to(dev)
    cosine = train.cosine_factor(cfg.epochs)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + depth)
    with Timer(dev) as timer:
        fit = stacked.fit_stacked(group, d["x_train"], d["y_train"], d["x_val"], d["y_val"], epochs=cfg.epochs,
                                 batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, optimizer="adamw",
                                 lr_schedule=cosine, transform=augment, eval_every=cfg.epochs, generator=gen,
                                 amp_dtype=torch.bfloat16 if cfg.amp else None, x_test=d["x_test"],
                                 y_test=d["y_test"], eval_batch_size=EVAL_BATCH, desc=f"{len(models)} ViTs, depth {depth}")
    last = fit.history[fit.history.epoch == cfg.epochs].set_index("model")
    # each model (its final weights, the ones test_error measures) on every test image: what the paired rules read
    wrong = (predict_stacked(group, d["x_test"], EVAL_BATCH, torch.bfloat16 if cfg.amp else None)
             != d["y_test"]).cpu().numpy()
    rows = [{"depth": depth, "rate": r, "schedule": s, "seed": seed, "train_error": last.train_error[i],
             "val_error": last.val_error[i], "test_error": last.test_error[i], "died_at_step": fit.died_at_step[i],
             "wrong": results.pack_wrong(wrong[i])}
            for i, (r, s, seed) in enumerate(models)]
    return pd.DataFrame(rows), timer.seconds


EVAL_BATCH = 500  # images per evaluation batch and model (K x 500 images of activations at once)


def step_times(cfg: DropPathConfig, rate: float = 0.5, steps: int = 25) -> pd.DataFrame:
    """Median seconds per training step of the deep ViT: no DropPath, masked DropPath (timm's form),
    and DropPath that skips the dropped samples' branches; linear schedule up to ``rate``."""
    dev = torch.device(cfg.device)
    x = torch.randn(cfg.batch_size, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (cfg.batch_size,), device=dev)
    rows = []
    for name, kw in (("no DropPath", dict(p_path=0.0)), ("masked", dict(p_path=rate)),
                     ("skip dropped", dict(p_path=rate, skip_dropped=True))):
        torch.manual_seed(cfg.seed)
        model = ViT(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, **kw).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        times = []
        for i in range(steps + 3):
            with Timer(dev) as t:
                with autocast(dev, torch.bfloat16 if cfg.amp else None):
                    loss = F.cross_entropy(model(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if i >= 3:  # warm-up steps excluded
                times.append(t.seconds)
        rows.append({"variant": name, "ms per step": 1000 * float(pd.Series(times).median())})
    out = pd.DataFrame(rows)
    out["relative to masked"] = out["ms per step"] / out.loc[out.variant == "masked", "ms per step"].iloc[0]
    out.attrs["mean_rate"] = rate / 2  # the linear schedule's mean over blocks
    return out


def run(cfg: DropPathConfig, save: bool = True) -> dict:
    wall = Timer(cfg.torch_device).start()
    d = _prepare(cfg)
    mid = middle_rate(cfg.rates)  # a middle rate of the sweep
    seed_everything(cfg.seed)  # the augmentation's draws
    tables, timing = [], []
    for depth, models in arms(cfg, mid).items():
        table, seconds = train_group(cfg, d, depth, models)
        tables.append(table)
        timing.append({"group": f"{len(models)} ViTs of depth {depth}, batched", "models": len(models),
                       "epochs": cfg.epochs, "seconds": seconds, "seconds per model": seconds / len(models)})
    table = pd.concat(tables, ignore_index=True)
    speed = step_times(cfg)
    rec = {"runs": table, "speed": speed, "mid": mid, "training": pd.DataFrame(timing)}
    rec["sweep"] = summarize(table[(table.depth == cfg.depth) & (table.schedule == "linear")], ["rate"])
    rec["verdicts"] = judged(CHAPTER, cfg, verdicts(rec, cfg))
    rec["wall_time_s"] = wall.elapsed()
    if save:
        rec["path"] = finish(
            CHAPTER, cfg, PROFILE_DEFAULTS, wall_s=rec["wall_time_s"], dataset=cfg.dataset,
            metrics={"skip_speedup": float(1 / speed.loc[speed.variant == "skip dropped", "relative to masked"].iloc[0])},
            tables={"runs": table, "sweep": rec["sweep"], "speed": speed, "training": rec["training"],
                    "verdicts": rec["verdicts"]})
    return rec
