"""Chapter 5's runs: pretraining the arms as one batched group (checkpoints cached by configuration), the fine-tuning
learning-rate pilot, full fine-tuning and LoRA, :func:`run` (the whole chapter, stored with its verdicts) and the
bf16 precision check."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import torch

from dropnotes import bench, data, results, stacked, train
from dropnotes.amp import autocast
from dropnotes.experiments.judging import judged
from dropnotes.experiments.store import finish
from dropnotes.experiments.llm.config import (
    ARMS,
    CHAPTER,
    LN2,
    PEAK_FLOPS,
    PROFILE_DEFAULTS,
    PROTOCOL,
    LLMConfig,
    _model,
    _optimizer,
    _set_p,
    configure,
    early_evals,
    full_runs,
    pretrain_lrs,
)
from dropnotes.experiments.llm.rules import verdicts, window_table
from dropnotes.layers import add_lora
from dropnotes.models import GPT
from dropnotes.runtime import Timer, atomic_write, progress, seed_everything


def mfu(cfg: LLMConfig, model: GPT, tokens_per_s: float) -> float | None:
    """Model FLOPs utilisation: achieved training FLOP/s over the device's dense bf16 peak (GPU only)."""
    if not cfg.device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(torch.device(cfg.device))
    peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
    return None if peak is None else model.flops_per_token() * tokens_per_s / peak


def train_speed(cfg: LLMConfig, model: GPT, run: dict) -> dict:
    """The pretraining group's achieved GFLOP/s (nanoGPT's FLOPs per token times the group's tokens/s; a stored
    run from the cache has no timing) beside this device's 2048³ product rate in the run's precision, measured now."""
    tps = run.get("group_tokens_per_s")
    if not tps or run.get("cached"):
        return {}
    return bench.speed(model.flops_per_token() * tps, 1.0, cfg.torch_device, cfg.amp)


def split_windows(windows) -> tuple:
    """The held-out windows' two halves: the first selects (validation: best step, best rate), the second judges
    (test: read at the selected step only). The halves are contiguous stretches of the held-out text."""
    n = len(windows) // 2
    if n == 0:
        raise ValueError(f"eval_bytes must give at least 2 held-out windows, got {len(windows)}")
    return windows[:n], windows[n:]


def _best_and_final(curve: list[dict], judged: dict) -> dict:
    """The early-stopped (best) evaluation chosen on the validation half, with its test-half windows, and the
    final evaluation's test-half windows; ``judged`` maps each evaluated step to its test-half windows."""
    best = min(curve, key=lambda c: c["valid_loss"])
    last = curve[-1]["step"]
    return {"best": {"valid_loss": best["valid_loss"], "step": best["step"], "windows": judged[best["step"]],
                     "test_loss": float(np.mean(judged[best["step"]]))},
            "final": {**curve[-1], "test_loss": float(np.mean(judged[last]))}, "final_windows": judged[last]}


def train_run(cfg: LLMConfig, model: GPT, stream: torch.Tensor, valid: torch.Tensor, *, steps: int, batch: int,
              lr: float, p_schedule, seed: int, label: str) -> dict:
    """Train ``model`` for ``steps`` on random non-overlapping windows of ``stream`` with a cosine learning
    rate (5 % warm-up); ``p_schedule(step)`` gives the dropout rate. Validation every ``eval_every`` steps;
    returns the curve, the best validation windows and throughput."""
    dev = torch.device(cfg.device)
    gen = torch.Generator().manual_seed(seed)
    runner = torch.compile(model) if cfg.compile else model
    opt = _optimizer(model, lr, dev)
    warm = max(steps // 20, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0)))))
    amp = torch.bfloat16 if cfg.amp else None
    curve, judged, train_s, current_p, rates = [], {}, 0.0, None, []
    early = set(early_evals(cfg))
    model.train()
    step = last = 0
    interval = Timer(dev).start()
    batches = train.window_batches(stream, batch, cfg.block_size, steps, gen)
    for x, y in progress(batches, label, total=steps, unit="step"):
        p = p_schedule(step)
        if p != current_p:
            _set_p(model, p)
            current_p = p
        with autocast(dev, amp):
            loss = train.lm_loss(runner(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        if step % cfg.eval_every == 0 or step == steps or step in early:
            dt = interval.elapsed()
            train_s += dt
            rates.append((step - last) * batch * cfg.block_size / dt)
            last = step
            windows, _ = train.lm_window_losses(model, valid, batch, cfg.block_size, amp_dtype=amp)
            select, judge = split_windows(windows.tolist())
            val = float(np.mean(select))
            curve.append({"run": label, "step": step, "train_loss": float(loss.detach()), "valid_loss": val,
                          "valid_bpb": val / LN2, "epochs": step * batch * cfg.block_size / stream.numel()})
            judged[step] = judge
            model.train()
            interval = Timer(dev).start()
    # Throughput: the median over evaluation intervals, so that the intervals holding torch.compile's
    # (re)compilations do not count; the overall rate, compilation included, is kept beside it.
    tps = float(np.median(rates))
    return {"curve": curve, **_best_and_final(curve, judged), "tokens_per_s": tps, "mfu": mfu(cfg, model, tps),
            "tokens_per_s_overall": steps * batch * cfg.block_size / train_s}


def _key(cfg: LLMConfig, arm: str, prov: dict, seed: int) -> str:
    fields = {k: v for k, v in asdict(cfg).items() if k in ("dim", "layers", "heads", "block_size", "batch_size",
                                                              "pretrain_steps", "pretrain_lr", "p", "early_fraction",
                                                              "eval_bytes", "eval_every", "amp", "n_seeds",
                                                              "lr_factors")}
    blob = json.dumps({"arm": arm, "corpus": prov, "trainer": "stacked group", "protocol": PROTOCOL, "seed": seed,
                       **fields}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrain_steps(cfg: LLMConfig, corpus: data.TokenSplits) -> int:
    """``cfg.pretrain_steps``, capped at one pass over the corpus: the claim is about single-epoch
    pretraining, so no window is ever repeated (the standard-library corpus holds about 30 MB)."""
    one_pass = ((corpus.train.numel() - 1) // cfg.block_size) // cfg.batch_size
    return max(1, min(cfg.pretrain_steps, one_pass))


def _cosine(steps: int):
    """The learning-rate factor of step s (0-based): 5 % linear warm-up, then cosine to 0."""
    warm = max(steps // 20, 1)
    return lambda s: min((s + 1) / warm, 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))


def _group_runs(cfg: LLMConfig, group: stacked.StackedGPT, fit: stacked.FitResult, labels: list[str], batch: int,
                stream_sizes: list[int]) -> list[dict]:
    """Each model's curve, best and final evaluation and throughput from :func:`fit_stacked_windows`."""
    h, steps = fit.history, sorted(fit.windows)
    intervals = np.diff([0] + steps)
    per_model_tps = [n * batch * cfg.block_size / dt for n, dt in zip(intervals, fit.seconds)]
    # Throughput: the median over evaluation intervals (the first holds the CUDA-graph capture); the
    # overall rate, capture included, beside it. Every model of the group trains at the group's rate.
    tps = float(np.median(per_model_tps))
    overall = steps[-1] * batch * cfg.block_size / sum(fit.seconds)
    one = group.model(0)
    out = []
    for m, label in enumerate(labels):
        halves = {s: split_windows(fit.windows[s][m].tolist()) for s in steps}
        curve = [{"run": label, "step": int(r.step), "train_loss": r.train_loss,
                  "valid_loss": float(np.mean(halves[int(r.step)][0])),
                  "valid_bpb": float(np.mean(halves[int(r.step)][0])) / LN2,
                  "epochs": r.step * batch * cfg.block_size / stream_sizes[m]}
                 for r in h[h.model == m].itertuples()]
        out.append({"curve": curve, **_best_and_final(curve, {s: judge for s, (_, judge) in halves.items()}),
                    "tokens_per_s": tps, "tokens_per_s_overall": overall,
                    "group_tokens_per_s": tps * group.k, "models": group.k,
                    "mfu": mfu(cfg, one, tps * group.k), "died_at_step": fit.died_at_step[m]})
    return out


def _label(prefix: str, cfg: LLMConfig, seed: int, lr: float | None = None) -> str:
    """A run's name; the seed and rate appear only where the profile trains several of them."""
    return prefix + (f" seed={seed}" if cfg.n_seeds > 1 else "") + (f" lr={lr:g}" if lr is not None and
                                                                    len(cfg.lr_factors) > 1 else "")


def _pretrain_group(cfg: LLMConfig, corpus: data.TokenSplits, spec: list[tuple[str, int, float]]) -> list[dict]:
    """Train the pretraining models ``spec`` = [(arm, seed, rate), ...] together as one
    :class:`~dropnotes.stacked.StackedGPT`: the models of one seed share their initialisation and batches, so arms
    differ only in their dropout schedules and rates only in their rate. Returns each model's run, with its model."""
    dev = torch.device(cfg.device)
    inits = {}
    for s in dict.fromkeys(s for _, s, _ in spec):
        seed_everything(s)
        inits[s] = _model(cfg, 0.0).to(dev)
    group = stacked.StackedGPT.from_models([inits[s] for _, s, _ in spec], max_rate=cfg.p_all)
    steps = pretrain_steps(cfg, corpus)
    cut = int(cfg.early_fraction * steps)
    p = cfg.p_all
    on = {"none": (0.0, 0.0), "dropout": (p, p), "early": (p, 0.0)}  # each arm's rate before and after the cut
    schedule = {0: [on[a][0] for a, _, _ in spec], cut: [on[a][1] for a, _, _ in spec]}
    rates = lambda t: dict(p_emb=schedule[t], p_attn=schedule[t], p_resid=schedule[t]) if t in schedule else None  # noqa: E731
    train_stream = corpus.train.to(dev)
    fit = stacked.fit_stacked_windows(group, [train_stream] * group.k, corpus.valid[: cfg.eval_bytes].to(dev),
                                     steps=steps, batch_size=cfg.batch_size, lr=[lr for _, _, lr in spec],
                                     lr_factor=_cosine(steps), weight_decay=0.1, betas=(0.9, 0.95), clip=1.0,
                                     rates=rates, eval_every=cfg.eval_every, seeds=[s for _, s, _ in spec],
                                     amp_dtype=torch.bfloat16 if cfg.amp else None,
                                     generator=torch.Generator(dev).manual_seed(spec[0][1]),
                                     desc=f"{group.k} GPTs pretraining (arms x seeds x rates)")
    runs = _group_runs(cfg, group, fit, [_label(f"pretrain {a}", cfg, s, lr) for a, s, lr in spec], cfg.batch_size,
                       [train_stream.numel()] * group.k)
    for i, ((arm, s, lr), r) in enumerate(zip(spec, runs)):
        r.update(arm=arm, seed=s, lr=lr, chosen=False, model=group.model(i))
    return runs


def pretrain(cfg: LLMConfig, corpus: data.TokenSplits) -> dict[str, list[dict]]:
    """The three pretraining arms (``none``, ``dropout``, ``early``) at every seed. Each arm's learning rate is
    chosen from :func:`pretrain_lrs` on the first seed, by the final loss on the validation half: that seed's
    arms x rates train as one group; the other seeds' arms then train, as a second group, at the rates chosen.
    Returns, per arm, one run per seed (at its chosen rate); every model trained is under ``"all"``. From the
    checkpoint cache when every kept model is there."""
    seeds, lrs = cfg.seeds, pretrain_lrs(cfg)
    paths = {(arm, s): results.checkpoint_dir() / CHAPTER / f"{arm}-{_key(cfg, arm, corpus.provenance, s)}.pt"
             for arm in ARMS for s in seeds}
    cached = {k: results.load_checkpoint(path, map_location=cfg.device) for k, path in paths.items()}
    if all(c is not None for c in cached.values()):
        out = {arm: [] for arm in ARMS}
        for (arm, s), (state, meta) in cached.items():
            model = _model(cfg, 0.0).to(cfg.device)
            model.load_state_dict(state)
            out[arm].append({**meta["result"], "model": model, "cached": True, "path": str(paths[arm, s])})
        out["all"] = [r for arm in ARMS for r in out[arm]]
        return out
    first = _pretrain_group(cfg, corpus, [(arm, seeds[0], lr) for lr in lrs for arm in ARMS])
    chosen = {}
    for arm in ARMS:  # chosen on the validation half, never on the test half that judges
        best = min((r for r in first if r["arm"] == arm), key=lambda r: r["final"]["valid_loss"])
        best["chosen"], chosen[arm] = True, best["lr"]
    rest = _pretrain_group(cfg, corpus, [(arm, s, chosen[arm]) for s in seeds[1:] for arm in ARMS]) if seeds[1:] else []
    for r in rest:
        r["chosen"] = True
    out = {arm: [] for arm in ARMS}
    for r in first + rest:
        if r["chosen"]:
            path = paths[r["arm"], r["seed"]]
            result = {k: v for k, v in r.items() if k != "model"}
            results.save_checkpoint(r["model"].state_dict(), {"result": result, "config": asdict(cfg)}, path)
            out[r["arm"]].append({**r, "cached": False, "path": str(path)})
    for arm in ARMS:
        out[arm].sort(key=lambda r: r["seed"])
    out["all"] = first + rest
    return out


def finetune_group(cfg: LLMConfig, bases: list[GPT], shakes: data.TokenSplits, runs: list[tuple[float, int]],
                   lr: float | list[float] | None = None) -> dict:
    """Full fine-tuning runs ``(p, size)`` of copies of each seed's pretrained ``bases[k]``, trained together as one
    :class:`~dropnotes.stacked.StackedGPT`: each on the first ``size`` bytes of tiny-shakespeare (0 = all of
    its training split) with dropout ``p``, on the batches its sequential run drew (its seed), at learning rate
    ``lr`` (default ``cfg.finetune_lr``; a list: one per run). Returns, per run, one result per seed."""
    dev = torch.device(cfg.device)
    lrs = [cfg.finetune_lr] * len(runs) if lr is None else [lr] * len(runs) if np.isscalar(lr) else list(lr)
    streams = {size: (shakes.train[:size] if size else shakes.train).to(dev) for _, size in runs}
    valid = shakes.valid[: cfg.eval_bytes].to(dev)
    spec = [(p, size, s, base) for s, base in zip(cfg.seeds, bases, strict=True) for p, size in runs]
    rates = [p for p, _, _, _ in spec]
    group = stacked.StackedGPT.from_models([base for *_, base in spec], p_emb=rates, p_attn=rates, p_resid=rates)
    fit = stacked.fit_stacked_windows(group, [streams[size] for _, size, _, _ in spec], valid, steps=cfg.finetune_steps,
                                     batch_size=cfg.finetune_batch, lr=lrs * len(bases),
                                     lr_factor=_cosine(cfg.finetune_steps), weight_decay=0.1, betas=(0.9, 0.95),
                                     clip=1.0, eval_every=cfg.eval_every, eval_also=early_evals(cfg),
                                     seeds=[s for _, _, s, _ in spec],
                                     amp_dtype=torch.bfloat16 if cfg.amp else None,
                                     generator=torch.Generator(dev).manual_seed(cfg.seed),
                                     desc=f"{group.k} GPTs fine-tuning (rates x sizes x seeds)")
    labels = [_label(f"full p={p:g} size={size or 'all'}", cfg, s) for p, size, s, _ in spec]
    out = _group_runs(cfg, group, fit, labels, cfg.finetune_batch, [streams[size].numel() for _, size, _, _ in spec])
    start = {s: _start_bpb(cfg, base, valid) for s, base in zip(cfg.seeds, bases)}
    done: dict = {}
    for (p, size, s, _), label, r in zip(spec, labels, out):
        n = streams[size].numel()
        done.setdefault(("full", p, size), []).append({**r, "seed": s, "row": {
            "run": label, "method": "full", "p": p, "size": size or n, "seed": s,
            "epochs": cfg.finetune_steps * cfg.finetune_batch * cfg.block_size / n, "start_bpb": start[s],
            **_judged_row(r),
            "trainable": sum(q.numel() for q in bases[0].parameters())}})
    return done


def finetune(cfg: LLMConfig, base: GPT, shakes: data.TokenSplits, *, size: int, p: float, seed: int = 0) -> dict:
    """LoRA fine-tuning of a copy of ``base`` on the first ``size`` bytes of tiny-shakespeare (0 = all of its
    training split): the attention's qkv adapted, with ``lora_dropout p`` (one model: its own step)."""
    seed_everything(seed)
    dev = torch.device(cfg.device)
    model = _model(cfg, 0.0).to(dev)
    model.load_state_dict(base.state_dict())
    stream = (shakes.train[:size] if size else shakes.train).to(dev)
    valid = shakes.valid[: cfg.eval_bytes].to(dev)
    add_lora(model, ("qkv",), r=cfg.lora_rank, alpha=2 * cfg.lora_rank, p=p)
    label = _label(f"LoRA p={p:g} size={size or 'all'}", cfg, seed)
    out = train_run(cfg, model, stream, valid, steps=cfg.finetune_steps, batch=cfg.finetune_batch, lr=cfg.lora_lr,
                    p_schedule=lambda s: 0.0, seed=seed, label=label)
    return {**out, "seed": seed, "row": {"run": label, "method": "LoRA", "p": p, "size": size or shakes.train.numel(),
                                         "seed": seed,
                           "epochs": cfg.finetune_steps * cfg.finetune_batch * cfg.block_size / stream.numel(),
                           "start_bpb": _start_bpb(cfg, base, valid), **_judged_row(out),
                           "trainable": sum(q.numel() for q in model.parameters() if q.requires_grad)}}


def _start_bpb(cfg: LLMConfig, base: GPT, valid: torch.Tensor) -> float:
    """The pretrained model's bits per byte on the test half of the held-out windows, before fine-tuning."""
    windows = train.lm_window_losses(base, valid, cfg.finetune_batch, cfg.block_size)[0].tolist()
    return float(np.mean(split_windows(windows)[1])) / LN2


def _judged_row(r: dict) -> dict:
    """A fine-tuning run's reported numbers, all on the test half: at the step chosen on the validation half
    (best), at the end (final), and the rise between them (overfitting)."""
    return {"best_bpb": r["best"]["test_loss"] / LN2, "best_step": r["best"]["step"],
            "final_bpb": r["final"]["test_loss"] / LN2,
            "overfit_bpb": (r["final"]["test_loss"] - r["best"]["test_loss"]) / LN2}


def select_finetune_lr(cfg: LLMConfig, base: GPT, shakes: data.TokenSplits) -> tuple[float, pd.DataFrame]:
    """The full fine-tuning learning rate, chosen on validation (protocol 5; widened at the grid's edge, protocol 6):
    the first seed's ``base`` fine-tuned on the main slice at every rate of ``finetune_rates`` and every candidate
    ``finetune_lr x finetune_lr_factors``, as one group; the candidate of the lowest mean best validation-half loss
    over the rates is used for every run, so that the arms differ only in their dropout. A choice on the grid's edge
    widens it one step of its ratio at a time (:func:`dropnotes.train.choose_on_grid`, twice at most); the pilot's
    table says which candidates were added (``widened``) and whether the choice is interior. The test half is not
    read. One candidate: no pilot."""
    lrs = [cfg.finetune_lr * f for f in cfg.finetune_lr_factors]
    if len(lrs) == 1:
        return lrs[0], pd.DataFrame(columns=["p", "lr", "best_step", "valid_bpb"])
    one = replace(cfg, n_seeds=1, seed=cfg.seeds[0])
    tables = []

    def evaluate(candidates: list[float]) -> pd.Series:
        runs = [(q, cfg.finetune_bytes) for _ in candidates for q in cfg.finetune_rates]
        ft = finetune_group(one, [base], shakes, runs, lr=[lr for lr in candidates for _ in cfg.finetune_rates])
        # runs of one rate at several learning rates share a key, in the order trained
        table = pd.DataFrame([{"p": q, "lr": lr, "best_step": r["best"]["step"],
                               "valid_bpb": r["best"]["valid_loss"] / LN2, "widened": bool(tables)}
                              for q in cfg.finetune_rates
                              for lr, r in zip(candidates, ft["full", q, cfg.finetune_bytes])])
        tables.append(table)
        return table.groupby("lr").valid_bpb.mean()

    lr, _, interior = train.choose_on_grid(evaluate, lrs)
    pilot = pd.concat(tables, ignore_index=True)
    pilot["interior"] = interior
    return lr, pilot


def run(cfg: LLMConfig, save: bool = True) -> dict:
    wall = Timer(cfg.torch_device).start()
    corpus = data.load_text(cfg.pretrain_corpus)
    shakes = data.load_tinyshakespeare()
    pre = pretrain(cfg, corpus)
    bases = [r["model"] for r in pre["none"]]  # each seed's pretrained net without dropout
    ft_lr, ft_pilot = select_finetune_lr(cfg, bases[0], shakes)
    ft = finetune_group(cfg, bases, shakes, full_runs(cfg), lr=ft_lr)  # 1. every rate on the main slice; 3. the crossing
    for p in cfg.lora_rates:  # 2. LoRA on the main slice
        ft["LoRA", p, cfg.finetune_bytes] = [finetune(cfg, base, shakes, size=cfg.finetune_bytes, p=p, seed=s)
                                             for s, base in zip(cfg.seeds, bases)]
    cached = all(r["cached"] for arm in ARMS for r in pre[arm])
    pre_rows = [{"arm": r["arm"], "seed": r["seed"], "lr": r["lr"], "chosen": r["chosen"],
                 "valid_bpb": r["final"]["valid_loss"] / LN2, "final_bpb": r["final"]["test_loss"] / LN2,
                 "tokens_per_s": r["tokens_per_s"], "tokens_per_s (with capture)": r.get("tokens_per_s_overall"),
                 "group tokens_per_s": r.get("group_tokens_per_s"), "models": r.get("models"), "mfu": r["mfu"],
                 "cached": cached} for r in pre["all"]]
    # each curve with its run's key, so that the rules find an arm's curves again (the plateau gate, rejudge)
    curves = [{**c, "chosen": r["chosen"], "seed": r["seed"], "method": "pretrain", "arm": r["arm"], "p": np.nan,
               "size": 0} for r in pre["all"] for c in r["curve"]]
    curves += [{**c, "chosen": True, "seed": r["seed"], "method": method, "arm": "", "p": q, "size": size}
               for (method, q, size), runs in ft.items() for r in runs for c in r["curve"]]
    rec = {"pretrain": pd.DataFrame(pre_rows), "curves": pd.DataFrame(curves),
           "finetune": pd.DataFrame([r["row"] for runs in ft.values() for r in runs]), "pre": pre, "ft": ft,
           "corpus": corpus.provenance, "pretrain_tokens": pretrain_steps(cfg, corpus) * cfg.batch_size * cfg.block_size,
           "corpus_tokens": int(corpus.train.numel()), "finetune_lr": ft_lr, "finetune_lr_pilot": ft_pilot,
           "windows": window_table(pre, ft)}  # what the rules read again (rejudge): per-window test-half losses
    rec["verdicts"] = judged(CHAPTER, cfg, verdicts(rec, cfg))
    rec["wall_time_s"] = wall.elapsed()
    if save:
        rec["path"] = finish(
            CHAPTER, cfg, PROFILE_DEFAULTS, wall_s=rec["wall_time_s"], dataset=cfg.pretrain_corpus,
            corpus=corpus.provenance, finetune_dataset="tinyshakespeare",
            metrics={"pretrain_bpb": {arm: float(np.mean([r["final"]["test_loss"] for r in pre[arm]])) / LN2
                                      for arm in ARMS},
                     "tokens_per_s": pre["none"][0]["tokens_per_s"], "mfu": pre["none"][0]["mfu"],
                     "pretrain_tokens": rec["pretrain_tokens"], "corpus_tokens": rec["corpus_tokens"],
                     **({"finetune_lr": ft_lr} if len(cfg.finetune_lr_factors) > 1 else {}),  # chosen by a pilot
                     **train_speed(cfg, bases[0], pre["none"][0])},
            tables={k: rec[k] for k in ("pretrain", "curves", "finetune", "finetune_lr_pilot", "windows",
                                        "verdicts")})
    return rec


def precision_check(seed: int = 0) -> dict:
    """Does bf16 keep chapter 5's laptop numbers? Seed ``seed``'s three pretraining arms of the laptop profile
    trained again in fp32 (one group of 3, the same initialisation and batches), their test-half bpb against the
    stored bf16 laptop run's same seed, beside the bf16 run's seed-to-seed standard deviation per arm. Written to
    ``results/llm/precision-check.json``."""
    from dataclasses import replace


    cfg = replace(configure("laptop", device="cpu", seed=0, n_seeds=1), amp=False)
    stored = pd.DataFrame(results.load_repo_result(CHAPTER, "laptop")["tables"]["pretrain"])
    stored = stored[stored.chosen]
    with Timer(cfg.torch_device) as timer:
        runs = _pretrain_group(cfg, data.load_text(cfg.pretrain_corpus), [(arm, seed, cfg.pretrain_lr) for arm in ARMS])
    rows = []
    for r in runs:
        bf16 = stored[stored.arm == r["arm"]]
        rows.append({"arm": r["arm"], "seed": seed, "fp32_bpb": r["final"]["test_loss"] / LN2,
                     "bf16_bpb": float(bf16[bf16.seed == seed].final_bpb.iloc[0]),
                     "bf16_seed_sd": float(bf16.final_bpb.std())})
    out = {"rows": rows, "fp32_seconds": timer.seconds, "steps": cfg.pretrain_steps,
           "max_abs_diff_bpb": max(abs(r["fp32_bpb"] - r["bf16_bpb"]) for r in rows)}
    atomic_write(results.REPO_RESULTS / CHAPTER / "precision-check.json", json.dumps(out, indent=1))
    return out
