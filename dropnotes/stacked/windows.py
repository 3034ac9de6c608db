"""Training K stacked GPTs on windows of their own token streams (:func:`make_window_step`,
:func:`fit_stacked_windows`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F

from dropnotes.amp import autocast
from dropnotes.runtime import Timer, check_positive_int, progress
from dropnotes.stacked.fit import FitResult, _captured, _mark_dead
from dropnotes.stacked.lstm_lm import lm_window_losses_stacked
from dropnotes.stacked.noise import _per_model
from dropnotes.stacked.optim import _adam_step, _flat
from dropnotes.stacked.transformer import StackedGPT
from dropnotes.train import window_table


def window_orders(counts: Sequence[int], steps: int, batch_size: int, seeds: Sequence[int]) -> torch.Tensor:
    """Each model's window indices for ``steps`` batches, (K, steps, B), drawn as
    :func:`dropnotes.train.window_batches` draws them (random permutations of the model's ``counts[k]``
    windows, each window once before any repeats) from a generator seeded ``seeds[k]``: models of one seed
    and stream see the same batches, as their sequential runs did."""
    out = []
    for n, seed in zip(counts, seeds):
        g = torch.Generator().manual_seed(int(seed))
        perms, have = [], 0
        while have < steps * batch_size:
            perms.append(torch.randperm(n, generator=g))
            have += n
        out.append(torch.cat(perms)[: steps * batch_size].view(steps, batch_size))
    return torch.stack(out)


def make_window_step(model: StackedGPT, table: torch.Tensor, idx: torch.Tensor, *, lr: torch.Tensor,
                     weight_decay: torch.Tensor | None, betas: tuple[float, float], clip: torch.Tensor | None,
                     amp_dtype: torch.dtype | None, generator: torch.Generator | None, moments: list,
                     alive: torch.Tensor, died: torch.Tensor, step_no: torch.Tensor,
                     last: torch.Tensor | None = None) -> Callable[[], None]:
    """One training step of every model of ``model`` (what :func:`fit_stacked_windows` runs, and what
    ``dropnotes estimate`` counts): gather each model's windows ``table[idx]`` ((K, B) rows of
    (T + 1) tokens), the forward in ``amp_dtype``, the per-model mean loss, the backward, the dead-model
    marking (which advances ``step_no``), clipping and AdamW at the per-model rates ``lr``; the losses go to
    ``last``. Every tensor it reads or writes is an argument, so the step can be captured as a CUDA graph."""
    k, dev, params = model.k, table.device, list(model.parameters())

    def step() -> None:
        w = table[idx]  # (K, B, T + 1): each model's own windows
        with autocast(dev.type, amp_dtype, cache_enabled=False):
            logits = model(w[..., :-1], per_model=True, generator=generator)
        losses = F.cross_entropy(logits.float().flatten(0, -2), w[..., 1:].flatten(), reduction="none")
        losses = losses.view(k, -1).mean(1)
        for p in params:
            p.grad = None
        losses.sum().backward()
        _mark_dead(losses, alive, died, step_no)
        _adam_step(params, moments, step_no, lr, alive, clip, betas=betas, weight_decay=weight_decay)
        if last is not None:
            last.copy_(losses.detach())

    return step


def fit_stacked_windows(model: StackedGPT, streams: Sequence[torch.Tensor], valid: torch.Tensor, *, steps: int,
                        batch_size: int, lr, lr_factor: Callable[[int], float], weight_decay=0.0,
                        betas: tuple[float, float] = (0.9, 0.999), clip=None,
                        rates: Callable[[int], dict | None] | None = None, eval_every: int,
                        seeds: Sequence[int], amp_dtype: torch.dtype | None = None,
                        generator: torch.Generator | None = None, capture: bool = True,
                        desc: str = "GPTs", eval_also: Sequence[int] = ()) -> FitResult:
    """Train the K language models of ``model`` together on windows of their own token streams (model k on
    ``streams[k]``, batches from :func:`window_orders`), with AdamW per model (``lr``, decoupled
    ``weight_decay``, ``betas``, gradient clipping at ``clip[k]``), the rate multiplied by ``lr_factor(step)``
    (0-based) and the dropout rates set by ``rates(step)`` (keyword arguments of :meth:`StackedGPT.set_rates`,
    or None to leave them) before each step.

    Every ``eval_every`` steps, at the steps ``eval_also`` and at the end, each model's per-window validation losses
    on ``valid`` are
    measured in eval mode (the one host read). On CUDA the step (gather, forward, backward, clipping, AdamW) is
    captured once as a CUDA graph and replayed; the schedules write into tensors the graph reads. Returns the
    history (``model``, ``step``, ``train_loss`` of that step, ``valid_loss``), each evaluation's (K, windows)
    losses, the seconds of training between evaluations and the step at which a model died (-1 if not), as a
    :class:`~dropnotes.stacked.fit.FitResult` (its best step: the lowest mean validation loss)."""

    k = model.k
    steps, eval_every = check_positive_int("steps", steps), check_positive_int("eval_every", eval_every)
    batch_size = check_positive_int("batch_size", batch_size)
    extra = {check_positive_int("eval_also", int(t)) for t in eval_also}
    if len(streams) != k:
        raise ValueError(f"streams must give one token stream per model ({k}), got {len(streams)}")
    dev = valid.device
    table, offsets, counts = window_table(streams, model.block_size)
    orders = (window_orders(counts, steps, batch_size, seeds) + torch.tensor(offsets).view(k, 1, 1)).to(dev)
    lr_k = _per_model("lr", lr, k).to(dev)
    lr_now = lr_k.clone()
    wd_k = _per_model("weight_decay", weight_decay, k)
    wd_k = wd_k.to(dev) if bool(wd_k.any()) else None
    clip_k = None if clip is None else _per_model("clip", clip, k).to(dev)
    params = list(model.parameters())
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    alive = torch.ones(k, dtype=torch.bool, device=dev)
    died = torch.full((k,), -1, dtype=torch.long, device=dev)
    step_no = torch.zeros((), dtype=torch.long, device=dev)
    last = torch.zeros(k, device=dev)
    idx = torch.zeros(k, batch_size, dtype=torch.long, device=dev)
    mask_gen = None if dev.type == "cuda" else generator

    step = make_window_step(model, table, idx, lr=lr_now, weight_decay=wd_k, betas=betas, clip=clip_k,
                            amp_dtype=amp_dtype, generator=mask_gen, moments=moments, alive=alive, died=died,
                            step_no=step_no, last=last)
    if dev.type == "cuda" and generator is not None:
        torch.cuda.manual_seed(int(torch.randint(0, 2**62, (), generator=generator, device=generator.device)))
    state = params + list(model.buffers()) + _flat(moments) + [alive, died, step_no, last]
    run_step = _captured(step, state, dev) if dev.type == "cuda" and capture else step
    runs = model.attention_runs
    rows, evals, seconds = [], {}, []
    model.train()
    timer = Timer(dev).start()
    for s in progress(range(steps), desc, unit="step"):
        if rates is not None and (new := rates(s)) is not None:
            model.set_rates(**new)
            if run_step is not step and model.attention_runs != runs:  # the attention's rates are in the graph
                runs = model.attention_runs
                run_step = _captured(step, state, dev)
        torch.mul(lr_k, float(lr_factor(s)), out=lr_now)
        idx.copy_(orders[:, s])
        run_step()
        if (s + 1) % eval_every == 0 or s + 1 == steps or s + 1 in extra:
            seconds.append(timer.elapsed())
            losses, _ = lm_window_losses_stacked(model, valid, batch_size, model.block_size, amp_dtype)
            evals[s + 1] = losses
            mean, train_loss = losses.mean(1).tolist(), last.tolist()
            for m in range(k):
                rows.append({"model": m, "step": s + 1, "train_loss": train_loss[m], "valid_loss": mean[m]})
            model.train()
            timer = Timer(dev).start()
    history = pd.DataFrame(rows)
    best = history.loc[history.groupby("model").valid_loss.idxmin()].sort_values("model")
    return FitResult(history, best.step.tolist(), best.valid_loss.tolist(), died.tolist(), windows=evals, seconds=seconds)
