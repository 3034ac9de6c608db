"""Chapter 3's runs: Penn Treebank, the learning-rate pilot (once per run in blocks), every dropout scheme's LSTM
language models as one batched group, MC averaging against weight scaling, the sparse variational LeNet, and
:func:`run` (the whole chapter, stored with its verdicts)."""

from __future__ import annotations

import math

import pandas as pd
import torch

from dropnotes import bench, data, train
from dropnotes.stacked import (StackedLSTMLM, StackedSparseMLP, evaluate_stacked, fit_stacked, fit_stacked_lm,
                              lm_window_losses_stacked, lm_windows, mc_window_losses)
from dropnotes.models import LSTMLM
from dropnotes.models.lstm_lm import SCHEMES
from dropnotes.experiments.judging import judged
from dropnotes.experiments.store import finish, once_per_run
from dropnotes.runtime import Timer, stream, stream_seed
from dropnotes.runtime import (seed_everything)
from dropnotes.stats import block_se
from dropnotes.experiments.variational.config import CHAPTER, PROFILE_DEFAULTS, VariationalConfig
from dropnotes.experiments.variational.rules import summarize, verdicts


def _lm_data(cfg: VariationalConfig) -> tuple[dict[str, torch.Tensor], int]:
    splits = data.load_ptb()
    if cfg.vocab_cap:
        splits = splits.capped(cfg.vocab_cap)
    cut = lambda t, n: t[:n] if n else t  # noqa: E731
    dev = torch.device(cfg.device)
    streams = {"train": cut(splits.train, cfg.train_tokens), "valid": cut(splits.valid, cfg.eval_tokens),
               "test": cut(splits.test, cfg.eval_tokens)}
    return {k: v.to(dev) for k, v in streams.items()}, splits.vocab_size


PILOT_SEED = 1000  # the pilot's models are initialised from this seed, apart from every evaluated seed


def _schedule(cfg: VariationalConfig, epochs: int):
    """The rate's factor per epoch: cosine annealing to zero over ``epochs`` (``cfg.schedule == "cosine"``, protocol
    8), else None (a constant rate, or SGD's decay)."""
    return train.cosine_factor(epochs) if cfg.schedule == "cosine" else None


def select_lr(cfg: VariationalConfig, d: dict, vocab: int) -> tuple[float, pd.DataFrame]:
    """The learning rate, chosen on validation (protocol 6; widened at the grid's edge, protocol 7): every scheme at
    every rate of ``cfg.lr_grid`` as one batched group from :data:`PILOT_SEED`'s initialisation, ``cfg.select_epochs``
    epochs (on a cosine schedule of that length under ``schedule="cosine"``, so that each rate is compared at the end
    of its annealing); the rate of the lowest mean validation cross-entropy over the schemes (each at its best epoch) is used
    for every scheme, so that the arms of a comparison differ only in their dropout. A choice on the grid's edge
    widens it one step of its ratio at a time (:func:`dropnotes.train.choose_on_grid`, twice at most); the pilot's
    table says which rates were added (``widened``) and whether the choice is interior. Each model's validation curve
    is kept (``curve``: the validation perplexity at every epoch). The test stream is not read. Without a grid:
    ``cfg.lr``."""
    if not cfg.lr_grid:
        return cfg.lr, pd.DataFrame(columns=["scheme", "lr", "best_epoch", "valid_ppl"])
    tables = []

    def evaluate(rates: list[float]) -> pd.Series:
        table = _pilot(cfg, d, vocab, rates)
        table["widened"] = bool(tables)  # the rates a widening added
        tables.append(table)
        return table.groupby("lr").valid_loss.mean()

    lr, _, interior = train.choose_on_grid(evaluate, cfg.lr_grid)
    pilot = pd.concat(tables, ignore_index=True)
    pilot["valid_ppl"] = pilot.valid_loss.map(math.exp)
    pilot["interior"] = interior
    return lr, pilot.drop(columns="valid_loss")


def _pilot(cfg: VariationalConfig, d: dict, vocab: int, rates: list[float]) -> pd.DataFrame:
    """Every scheme at each of ``rates``, one batched group from :data:`PILOT_SEED`'s initialisation, trained
    ``cfg.select_epochs`` epochs: one row per model with its best validation loss and epoch, and its curve."""
    dev = cfg.torch_device
    arms = [(scheme, lr) for lr in rates for scheme in SCHEMES]
    group = StackedLSTMLM(len(arms), vocab, cfg.dim, cfg.layers, scheme=[s for s, _ in arms], p_io=cfg.p_io,
                          p_rec=cfg.p_rec, p_emb=cfg.p_emb, init_range=cfg.init_range,
                          seeds=[stream_seed(PILOT_SEED, "init-lm") for _ in arms]).to(dev)
    fit = fit_stacked_lm(group, d["train"], d["valid"], epochs=cfg.select_epochs, batch_size=cfg.batch_size,
                         seq_len=cfg.seq_len, lr=[lr for _, lr in arms], clip=cfg.clip, optimizer=cfg.optimizer,
                         lr_schedule=_schedule(cfg, cfg.select_epochs),
                         amp_dtype=torch.bfloat16 if cfg.amp else None, restore_best=False,
                         generator=stream(PILOT_SEED, "train-lm", dev), desc=f"{group.k} LSTM LMs (lr pilot)")
    h = fit.history
    curve = [" ".join(f"{math.exp(v):.1f}" for v in h[h.model == m].sort_values("epoch").val_loss)
             for m in range(len(arms))]
    return pd.DataFrame({"scheme": [s for s, _ in arms], "lr": [lr for _, lr in arms], "best_epoch": fit.best_epoch,
                         "valid_loss": fit.best_val_error, "curve": curve})


def train_lms(cfg: VariationalConfig, d: dict, vocab: int, lr: float | None = None) -> dict:
    """Every scheme x seed as one batched group (:class:`dropnotes.stacked.StackedLSTMLM`): the schemes of a
    seed share its initialisation, so they differ only in where their masks go. Each model keeps its epoch
    of lowest validation perplexity (early stopping) and is tested there, on the same test windows. ``lr``:
    the learning rate (default ``cfg.lr``; :func:`select_lr` chooses it)."""
    dev = cfg.torch_device
    lr = cfg.lr if lr is None else lr
    arms = [(scheme, seed) for seed in cfg.seeds for scheme in SCHEMES]
    group = StackedLSTMLM(len(arms), vocab, cfg.dim, cfg.layers, scheme=[s for s, _ in arms], p_io=cfg.p_io,
                          p_rec=cfg.p_rec, p_emb=cfg.p_emb, init_range=cfg.init_range,
                          seeds=[stream_seed(seed, "init-lm") for _, seed in arms]).to(dev)
    amp = torch.bfloat16 if cfg.amp else None
    with Timer(dev) as timer:
        fit = fit_stacked_lm(group, d["train"], d["valid"], epochs=cfg.epochs, batch_size=cfg.batch_size,
                             seq_len=cfg.seq_len, lr=lr, lr_decay=cfg.lr_decay if cfg.optimizer == "sgd" else 1.0,
                             decay_after=cfg.decay_after, clip=cfg.clip, optimizer=cfg.optimizer, amp_dtype=amp,
                             lr_schedule=_schedule(cfg, cfg.epochs),
                             generator=stream(cfg.seed, "train-lm", dev), restore_best=True,
                             desc=f"{group.k} LSTM LMs (schemes x seeds)")
    losses, counts = lm_window_losses_stacked(group, d["test"], cfg.batch_size, cfg.seq_len, amp)
    rows, windows = [], {}
    for i, (scheme, seed) in enumerate(arms):
        test = float((losses[i] * counts).sum() / counts.sum())
        windows[scheme, seed] = losses[i].tolist()
        rows.append({"scheme": scheme, "seed": seed, "best_epoch": fit.best_epoch[i],
                     "valid_ppl": math.exp(fit.best_val_error[i]), "test_ppl": math.exp(test), "test_loss": test,
                     "test_loss_se": block_se(losses[i].tolist()), "died_at_step": fit.died_at_step[i]})
    h = fit.history
    curves = pd.DataFrame({"scheme": [arms[m][0] for m in h.model], "seed": [arms[m][1] for m in h.model],
                           "epoch": h.epoch, "train_ppl": h.train_loss.map(math.exp), "valid_ppl": h.val_loss.map(math.exp)})
    n_windows = lm_windows(d["train"], cfg.batch_size, cfg.seq_len)[0].shape[0]
    words = n_windows * cfg.batch_size * cfg.seq_len * cfg.epochs * group.k
    rate = bench.speed(bench.lstm_lm_flops(cfg.dim, cfg.layers, vocab, words), timer.seconds, dev, cfg.amp)
    return {"group": group, "runs": pd.DataFrame(rows), "curves": curves, "windows": windows,
            "training": {"models": group.k, "lr": lr, "seconds": timer.seconds, "model-words/s": words / timer.seconds},
            "speed": rate}


def scheme_speed(cfg: VariationalConfig, d: dict, vocab: int) -> pd.DataFrame:
    """Training words per second of one standalone LSTMLM per scheme (the fused ``nn.LSTM`` for none, naive
    and weight-drop; the time loop for the schemes that mask the recurrent state), over ``speed_steps`` windows
    after two of warm-up: the implementation cost of each scheme, apart from the batched training."""
    dev = cfg.torch_device
    rows = []
    for scheme in SCHEMES:
        seed_everything(stream_seed(cfg.seed, "speed"))
        model = LSTMLM(vocab, cfg.dim, cfg.layers, scheme, p_io=cfg.p_io, p_rec=cfg.p_rec, p_emb=cfg.p_emb,
                       init_range=cfg.init_range).to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr) if cfg.optimizer == "sgd" else \
            torch.optim.Adam(model.parameters(), lr=cfg.lr)
        amp = torch.bfloat16 if cfg.amp else None
        train.train_lm_epoch(model, opt, d["train"], cfg.batch_size, cfg.seq_len, clip=cfg.clip, amp_dtype=amp,
                             max_steps=2)
        with Timer(dev) as t:
            train.train_lm_epoch(model, opt, d["train"], cfg.batch_size, cfg.seq_len, clip=cfg.clip, amp_dtype=amp,
                                 max_steps=cfg.speed_steps)
        windows = min(cfg.speed_steps, lm_windows(d["train"], cfg.batch_size, cfg.seq_len)[0].shape[0] + 1)
        rows.append({"scheme": scheme, "kernel": "time loop" if SCHEMES[scheme].time_loop else "fused",
                     "words/s": windows * cfg.batch_size * cfg.seq_len / t.seconds})
    return pd.DataFrame(rows)


MC_CHUNK = 25  # MC passes run as one batched group (25 x the test batch of sequences at once)


def mc_versus_scaling(cfg: VariationalConfig, group: StackedLSTMLM, i: int, d: dict, ws_windows: torch.Tensor) -> dict:
    """Test perplexity of model ``i`` of the group with weight scaling and with MC averaging (paired, per
    window); the MC passes run ``MC_CHUNK`` at a time as one batched forward (:func:`mc_window_losses`)."""
    mc, _ = mc_window_losses(group, i, d["test"], cfg.batch_size, cfg.seq_len, samples=cfg.mc_samples, chunk=MC_CHUNK,
                             amp_dtype=torch.bfloat16 if cfg.amp else None,
                             generator=stream(cfg.seed, "mc-lm", cfg.torch_device))
    return {"ws_ppl": math.exp(float(ws_windows.mean())), "mc_ppl": math.exp(float(mc.mean())),
            "samples": cfg.mc_samples, "ws_windows": ws_windows.tolist(), "mc_windows": mc.tolist()}


def svd_schedules(epochs: int):
    """Molchanov et al.'s schedules for LeNet-300-100 (``bayesgroup/variational-dropout-sparsifies-dnn``,
    ``svdo-lasagne/nets/optpolicy.py``: ``lr_linear`` and ``rw_linear``, set at the start of each epoch), defined
    over 200 epochs and stretched to ``epochs``: the learning-rate factor (1 for the first half, then linear to
    0) and the KL weight (0 for the first 5 of 200 epochs, linear to 1 at epoch 20, then 1) of 0-based epoch e."""
    scale = 200 / epochs
    lr = lambda e: max(0.0, min(2.0 - e * scale / 100, 1.0))  # noqa: E731
    kl = lambda e: 0.0 if e * scale < 5 else min(1.0, (e * scale - 5) / 15)  # noqa: E731
    return lr, kl


def train_sparse_vd(cfg: VariationalConfig) -> dict:
    """LeNet-300-100 with sparse variational dropout on MNIST (Molchanov et al. 2017), one model per seed,
    trained together as one :class:`dropnotes.stacked.StackedSparseMLP`: Adam (lr 1e-3), batch 100, the authors'
    learning-rate and KL-weight schedules (:func:`svd_schedules`). The curve records each model's compression
    and its error on 10,000 of its training images; the test images are evaluated once, at the end."""
    dev = cfg.torch_device
    s = data.load_images("mnist")
    x, y = data.subset(s.x_train, s.y_train, cfg.svd_train_size, stream(cfg.seed, "subset"), "svd_train_size")
    x, y = train.images_to_float(x).to(dev), y.to(dev)
    xt, yt = train.images_to_float(s.x_test).to(dev), s.y_test.to(dev)
    group = StackedSparseMLP(len(cfg.seeds), seeds=[stream_seed(seed, "init-svd") for seed in cfg.seeds]).to(dev)
    lr, kl = svd_schedules(cfg.svd_epochs)

    def extra() -> dict[str, list]:
        sparsity = group.sparsity()
        return {"compression": group.compression(), **{f"sparsity_fc{j + 1}": v for j, v in enumerate(sparsity)}}

    with Timer(dev) as timer:
        fit = fit_stacked(group, x, y, x[:10000], y[:10000], epochs=cfg.svd_epochs, batch_size=100, lr=1e-3,
                          optimizer="adamw", lr_schedule=lr, penalty_weight=kl, on_eval=extra,
                          eval_every=max(1, cfg.svd_epochs // 20), generator=stream(cfg.seed, "train-svd", dev),
                          desc=f"{group.k} sparse VD nets (seeds)")
    _, test_error = evaluate_stacked(group, xt, yt)
    h = fit.history
    curve = pd.DataFrame({"seed": [cfg.seeds[m] for m in h.model], "epoch": h.epoch, "train_error": h.train_error,
                          "compression": h.compression,
                          **{c: h[c] for c in h.columns if c.startswith("sparsity_fc")}})
    last = h[h.epoch == cfg.svd_epochs].sort_values("model")
    final = pd.DataFrame({"seed": cfg.seeds, "epoch": cfg.svd_epochs, "test_error": test_error.tolist(),
                          "compression": last.compression.tolist(),
                          **{c: last[c].tolist() for c in h.columns if c.startswith("sparsity_fc")}})
    return {"group": group, "model": group.model(0), "curve": curve, "final": final, "seconds": timer.seconds}


def run(cfg: VariationalConfig, save: bool = True) -> dict:
    wall = Timer(cfg.torch_device).start()
    d, vocab = _lm_data(cfg)
    def pilot_run() -> dict:
        with Timer(cfg.torch_device) as pilot_timer:
            lr, table = select_lr(cfg, d, vocab)
        return {"lr": lr, "pilot": table, "seconds": pilot_timer.seconds}

    chosen = once_per_run(CHAPTER, cfg, "lr-pilot", pilot_run)  # no seed enters it: a run in blocks pays it once
    lr, pilot = chosen["lr"], chosen["pilot"]
    lms = train_lms(cfg, d, vocab, lr)
    lms["training"]["pilot_seconds"] = chosen["seconds"]
    rows, curves, windows = lms["runs"], lms["curves"], lms["windows"]
    mc = []
    for i, (scheme, seed) in enumerate((r.scheme, r.seed) for r in rows.itertuples()):
        if scheme == "variational":
            ws = torch.tensor(windows[scheme, seed], dtype=torch.float64)
            mc.append({"seed": seed, **mc_versus_scaling(cfg, lms["group"], i, d, ws)})
    speed = scheme_speed(cfg, d, vocab)
    svd = train_sparse_vd(cfg)
    mc_windows = {"ws": [m.pop("ws_windows") for m in mc], "mc": [m.pop("mc_windows") for m in mc]}
    rec = {"runs": rows, "curves": curves, "mc": pd.DataFrame(mc), "speed": speed, "lr_pilot": pilot, "lr": lr,
           "training": pd.DataFrame([lms["training"]]), "windows": windows, "mc_windows": mc_windows,
           "svd": svd["final"], "svd_curve": svd["curve"], "svd_model": svd["model"], "svd_seconds": svd["seconds"],
           "vocab": vocab,
           "tokens": {k: int(v.numel()) for k, v in d.items()}}
    rec["summary"] = summarize(rec["runs"], speed)
    rec["verdicts"] = judged(CHAPTER, cfg, verdicts(rec, cfg))
    rec["wall_time_s"] = wall.elapsed()
    if save:
        last = rec["svd"].mean(numeric_only=True)
        rec["path"] = finish(
            CHAPTER, cfg, PROFILE_DEFAULTS, wall_s=rec["wall_time_s"], dataset=cfg.dataset, vocab=vocab,
            tokens=rec["tokens"],
            metrics={"test_ppl": rec["summary"].set_index("scheme")["test ppl"].to_dict(),
                     **({"lr": lr} if cfg.lr_grid else {}),  # a rate a pilot chose (the page says so)
                     "svd_error": float(last.test_error), "svd_compression": float(last.compression),
                     # the LSTM group's training GFLOP/s (its validation passes' time counted, their FLOPs not)
                     **{("lstm_" + k if k != "precision" else k): v for k, v in lms["speed"].items()}},
            tables={**{k: rec[k] for k in ("runs", "curves", "mc", "speed", "training", "lr_pilot", "svd",
                                           "svd_curve", "summary", "verdicts")},
                    # what the paired rule reads: every model's loss on each test window, and MC against scaling
                    "windows": pd.DataFrame([{"scheme": k, "seed": s, "losses": v} for (k, s), v in windows.items()]),
                    "mc_windows": pd.DataFrame({"seed": rec["mc"].seed if len(rec["mc"]) else [],
                                                "ws": mc_windows["ws"], "mc": mc_windows["mc"]})})
    return rec
