"""Chapter 3's (variational) cost-model groups, counted on the meta device (why apart: the package docstring)."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from dropnotes.amp import autocast
from dropnotes.costmodel import (
    Group,
    TimedStep,
    dtype_of,
    engine_step,
    engine_step_fn,
    lm_compare,
    lm_cross_entropy,
    measure,
    meta_forward,
    meta_step,
    on,
)
from dropnotes.experiments.variational import MC_CHUNK, VariationalConfig
from dropnotes.models import LSTMLM, SparseMLP
from dropnotes.models.lstm_lm import SCHEMES
from dropnotes.stacked import StackedLSTMLM, StackedSparseMLP, make_lm_step

CUDNN_LSTM_KERNELS = 6  # one cuDNN LSTM layer, forward and backward (data and weights), with its copies
# The five schemes of the stored sequential run (before the ladder). Its "naive-recurrent" (fresh masks on the inputs
# and on h_{t-1}) is counted as "per-step-recurrent", whose kernels differ only in the input masks' shape.
STORED_SCHEMES = ("none", "naive", "per-step-recurrent", "variational", "weight-drop")


def svd_args(cfg: VariationalConfig) -> tuple:
    """The sparse VD group for :func:`dropnotes.costmodel.engine_step_fn`: the seeds' LeNet-300-100s, Adam, batch
    100, fp32."""
    ks = cfg.n_seeds
    return ((dataclasses.replace(cfg, batch_size=100, amp=False), 0, lambda: StackedSparseMLP(ks, seeds=[0] * ks), (784,)),
            dict(momentum=0.0, optimizer="adamw", penalty=True))


def lstm_step_fn(cfg: VariationalConfig, device="meta"):
    """The training step of every scheme x seed as one StackedLSTMLM on ``device``, as
    :func:`dropnotes.stacked.fit_stacked_lm` runs it (bf16 autocast with ``cfg.amp``, clipping, SGD);
    the step, the group and the tensors it updates."""
    vocab, k = cfg.vocab_cap or 10000, len(SCHEMES) * cfg.n_seeds
    group = on(device, lambda: StackedLSTMLM(k, vocab, cfg.dim, cfg.layers, scheme=list(SCHEMES) * cfg.n_seeds,
                                             p_io=cfg.p_io, p_rec=cfg.p_rec, p_emb=cfg.p_emb, seeds=[0] * k)).train()
    dev = torch.device(device)
    with dev:
        ids = torch.randint(0, vocab, (cfg.batch_size, cfg.seq_len))
        tgt = torch.randint(0, vocab, (cfg.batch_size, cfg.seq_len))
        params = list(group.parameters())
        alive, clip = torch.ones(k, dtype=torch.bool), torch.full((k,), float(cfg.clip or 5.0))
        died, step_no, total = torch.full((k,), -1, dtype=torch.long), torch.zeros((), dtype=torch.long), torch.zeros(k)
        lr = torch.full((k,), float(cfg.lr))
        hs = [torch.zeros(k, cfg.batch_size, cfg.dim) for _ in range(cfg.layers)]
        cs = [torch.zeros_like(h) for h in hs]
        moments = [(torch.zeros_like(q), torch.zeros_like(q)) for q in params] if cfg.optimizer == "adam" else []
    # the engine's own step (the one fit_stacked_lm trains with): the dead-model marking, the carried state and the
    # loss total included
    step = make_lm_step(group, ids, tgt, hs, cs, lr=lr, clip=clip, optimizer=cfg.optimizer, moments=moments,
                        amp_dtype=torch.bfloat16 if cfg.amp else None, generator=None, alive=alive, died=died,
                        step_no=step_no, total=total)
    return step, group, params + hs + cs + [alive, died, step_no, total] + [t for mv in moments for t in mv]


def groups(cfg: VariationalConfig) -> list[Group]:
    """Every scheme x seed as one StackedLSTMLM (one batched cell per time step, the step graph-captured), its
    validation and test passes, one standalone model per scheme timed for ``speed_steps`` windows, MC dropout per
    variational model (its passes ``MC_CHUNK`` at a time as one group), and the sparse VD seeds as one captured
    StackedSparseMLP."""
    tokens = cfg.train_tokens or 929589
    windows = (tokens - 1) // cfg.batch_size // cfg.seq_len
    k = len(SCHEMES) * cfg.n_seeds
    dtype = dtype_of(cfg)
    step, group, _ = lstm_step_fn(cfg)
    with torch.device("meta"):
        ids = torch.zeros(cfg.batch_size, cfg.seq_len, dtype=torch.long)
        f, n, b = measure(step)
        group.eval()

        def window():  # what lm_window_losses_stacked runs per window: the forward and each model's loss
            with torch.no_grad(), autocast("meta", torch.bfloat16 if cfg.amp else None):
                logits, _ = group(ids)
                F.cross_entropy(logits.float().flatten(0, 2), ids.expand(k, -1, -1).flatten(), reduction="none")

        fe, ne, be = measure(window)
        chunk = min(cfg.mc_samples, MC_CHUNK)
        reps = group.replicas(list(SCHEMES).index("variational"), chunk).train()
        fm, nm, bm = meta_forward(reps, ids, cfg.amp)
    eval_windows = 2 * ((cfg.eval_tokens or 82430) // (cfg.batch_size * cfg.seq_len) + 1)  # validation, test
    out = [Group("variational", f"{k} LSTM LMs {cfg.layers}x{cfg.dim} (schemes x seeds), batched", 1,
                 windows * cfg.epochs, f, n, dtype, captured=True, models_per_step=k, bytes_per_step=b),
           Group("variational", "evaluation (validation every epoch, test once)", 1, eval_windows * cfg.epochs // 2
                 + eval_windows // 2, fe, ne, dtype, captured=True, models_per_step=k, bytes_per_step=be)]
    for g in sequential_groups(dataclasses.replace(cfg, epochs=1), schemes=tuple(SCHEMES)):
        if g.group.startswith("LSTM "):  # the speed table: speed_steps + 2 windows of one model per scheme
            out.append(dataclasses.replace(g, group=f"speed: {g.group.split(' ', 2)[2]} (one model)", runs=1,
                                           steps=cfg.speed_steps + 2))
    test_windows = (cfg.eval_tokens or 82430) // (cfg.batch_size * cfg.seq_len) + 1
    out.append(Group("variational", f"MC dropout ({cfg.mc_samples} passes, {chunk} per batched forward)",
                     cfg.n_seeds, test_windows * math.ceil(cfg.mc_samples / chunk), fm, nm, dtype,
                     models_per_step=chunk, bytes_per_step=bm))
    ks = cfg.n_seeds
    a, kw = svd_args(cfg)
    (fs, ns, bs), _ = engine_step(ks, *a, **kw)
    out.append(Group("variational", f"sparse VD LeNet-300-100, {ks} seeds, batched", 1,
                     cfg.svd_epochs * (cfg.svd_train_size // 100), fs, ns, captured=True, models_per_step=ks,
                     bytes_per_step=bs))
    return out


def sequential_groups(cfg: VariationalConfig, schemes: tuple[str, ...] = STORED_SCHEMES) -> list[Group]:
    """The chapter as it ran before the batched group (each scheme and seed its own training): what its stored
    full run measured (its wall time and the words/s of the fused and the time-loop schemes); ``schemes``:
    those of that run (or, for the speed table, the chapter's ladder)."""
    vocab = cfg.vocab_cap or 10000
    tokens = cfg.train_tokens or 929589
    steps = (tokens - 1) // (cfg.batch_size * cfg.seq_len) * cfg.epochs
    out = []
    with torch.device("meta"):  # what nn.LSTM decomposes into here (cuDNN runs it as a few kernels per layer)
        lstm = nn.LSTM(cfg.dim, cfg.dim, batch_first=True)
        _, per_layer, _ = measure(lambda: lstm(torch.empty(cfg.batch_size, cfg.seq_len, cfg.dim,
                                                        requires_grad=True))[0].sum().backward())
    for scheme in schemes:
        with torch.device("meta"):
            m = LSTMLM(vocab, cfg.dim, cfg.layers, scheme, p_io=cfg.p_io, p_rec=cfg.p_rec, p_emb=cfg.p_emb)
            x = torch.zeros(cfg.batch_size, cfg.seq_len, dtype=torch.long)
            f, n, b = meta_step(m, x, x, loss=lm_cross_entropy, clip=cfg.clip)
        fused = any(isinstance(r, nn.LSTM) or isinstance(getattr(r, "module", None), nn.LSTM) for r in m.rnns)
        if fused and not SCHEMES[scheme].time_loop:
            n = n - cfg.layers * per_layer + cfg.layers * CUDNN_LSTM_KERNELS
        out.append(Group("variational", f"LSTM {cfg.layers}x{cfg.dim} {scheme}", cfg.n_seeds, steps, f, n,
                         bytes_per_step=b))
    with torch.device("meta"):
        m = LSTMLM(vocab, cfg.dim, cfg.layers, "variational", p_io=cfg.p_io, p_rec=cfg.p_rec, p_emb=cfg.p_emb)
        m.train()
        fe, ne, be = meta_forward(m, torch.zeros(cfg.batch_size, cfg.seq_len, dtype=torch.long))
        sv = SparseMLP()
        fs, ns, bs = meta_step(sv, torch.empty(100, 784), torch.zeros(100, dtype=torch.long), loss=F.cross_entropy,
                               optimizer="adamw")
    test_windows = (cfg.eval_tokens or 82430) // (cfg.batch_size * cfg.seq_len)
    return out + [
        Group("variational", f"MC dropout ({cfg.mc_samples} passes)", cfg.n_seeds, cfg.mc_samples * test_windows, fe, ne,
              bytes_per_step=be),
        Group("variational", "sparse VD LeNet-300-100", 1, cfg.svd_epochs * math.ceil(cfg.svd_train_size / 100), fs, ns,
              bytes_per_step=bs)]


def timed_steps(cfg: VariationalConfig) -> list[TimedStep]:
    k, (a, kw) = len(SCHEMES) * cfg.n_seeds, svd_args(cfg)
    return [TimedStep(f"{k} LSTM LMs {cfg.layers}x{cfg.dim}", k, dtype_of(cfg), lambda dev: lstm_step_fn(cfg, dev)),
            TimedStep(f"sparse VD, {cfg.n_seeds} LeNet-300-100", cfg.n_seeds, "fp32",
                      lambda dev: engine_step_fn(cfg.n_seeds, *a, **kw, device=dev))]


def compare_steps(cfg: VariationalConfig, gen: torch.Generator) -> list[tuple]:
    vocab = cfg.vocab_cap or 10000
    schemes = list(SCHEMES) * cfg.n_seeds
    nets = [LSTMLM(vocab, cfg.dim, cfg.layers, s, p_io=cfg.p_io, p_rec=cfg.p_rec, p_emb=cfg.p_emb).train()
            for s in schemes]
    group = StackedLSTMLM.from_models(nets).train()
    sgd = cfg.optimizer == "sgd"
    lr = 1.0 if sgd else 1e-3
    make_opt = ((lambda m: torch.optim.SGD(m.parameters(), lr=lr, foreach=False)) if sgd
                else (lambda m: torch.optim.Adam(m.parameters(), lr=lr, foreach=False)))
    return [lm_compare("LSTM LMs (schemes x seeds)", nets, group, make_opt, vocab, cfg.batch_size, cfg.seq_len,
                       getattr(cfg, "clip", 1.0), gen, sgd=sgd)]


def calibration_points(cfg: VariationalConfig, record: dict) -> list[dict]:
    """What a stored full run measured that the time model predicts: its wall time (a run stored before the batched
    group: against the sequential groups) and the words/s of the fused and the time-loop schemes."""
    found = sequential_groups(cfg) if "speed" not in record["tables"] else groups(cfg)
    points = [{"what": "wall time (s)", "measured": record["provenance"]["wall_time_s"],
               "predict": lambda f, c, gs=found: sum(x.predicted_s(f, c) for x in gs)}]
    runs = record["tables"]["runs"]
    for scheme, label in (("weight-drop", "cuDNN"), ("variational", "time loop")):
        # the sequential groups end in the scheme's name; the batched record's speed table names it "speed: ..."
        g = next(x for x in found if x.group.endswith(f" {scheme}") or x.group == f"speed: {scheme} (one model)")
        wps = float(runs[runs.scheme == scheme].words_per_s.mean())
        words = cfg.batch_size * cfg.seq_len
        points.append({"what": f"words/s, {scheme} ({label})", "measured": wps,
                       "predict": lambda f, c, g=g, w=words: w / g.step_s(f, c)})
    return points
