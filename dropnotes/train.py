"""A plain, readable training loop for classification and language modelling.

Data stay where they are (on the GPU when the model is there): batches are index slices of whole
tensors, shuffled with ``torch.randperm`` on the data's device, so there is no per-batch Python
data loading. The loop does not synchronise with the device per step: losses are summed on the
device and read once per epoch. Progress: a tqdm bar on a terminal, a line to stderr at most every 30 s
elsewhere, nothing inside a notebook kernel or with ``DROPNOTES_PROGRESS=0``
(:func:`dropnotes.runtime.progress`).

Under ``torchrun`` the same code trains data-parallel: once the process group is initialised
(:func:`dropnotes.runtime.init_distributed`), :func:`fit_classifier` wraps the model in
``DistributedDataParallel`` and every rank takes its slice of each (identically shuffled) batch,
so the gradient is that of the whole batch, as in a single process.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from dropnotes.amp import autocast
from dropnotes.runtime import check_positive_int, progress, show_progress  # noqa: F401  (show_progress: API)

Batch = tuple[torch.Tensor, torch.Tensor]


def images_to_float(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``uint8`` images to floats in [0, 1]."""
    return x.to(dtype) / 255.0


def world() -> tuple[int, int]:
    """(rank, world size) of the current process group, or (0, 1) outside one."""
    import torch.distributed as dist

    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def classification_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = True,
                           generator: torch.Generator | None = None,
                           shard: tuple[int, int] = (0, 1)) -> Iterator[Batch]:
    """Mini-batches of ``(x, y)`` by index; the permutation is drawn on the data's device. With
    ``shard=(rank, world)`` each batch is cut into ``world`` interleaved parts and part ``rank`` is yielded."""
    n = x.shape[0]
    if shuffle:  # draw on the generator's device (a CPU generator cannot feed a CUDA randperm)
        gen_device = generator.device if generator is not None else x.device
        order = torch.randperm(n, device=gen_device, generator=generator).to(x.device)
    else:
        order = torch.arange(n, device=x.device)
    rank, size = shard
    batch_size = check_positive_int("batch_size", batch_size)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size][rank::size]
        yield x[idx], y[idx]


def lm_batches(tokens: torch.Tensor, batch_size: int, seq_len: int) -> Iterator[Batch]:
    """Contiguous language-model batches: the stream is cut into ``batch_size`` rows (Zaremba et al. 2014)
    and windows of ``seq_len`` are read left to right, targets shifted by one token."""
    batch_size, seq_len = check_positive_int("batch_size", batch_size), check_positive_int("seq_len", seq_len)
    rows = (tokens.numel() - 1) // batch_size
    data = tokens[: rows * batch_size + 1]
    x = data[:-1].view(batch_size, rows)
    y = data[1:].view(batch_size, rows)
    for start in range(0, rows, seq_len):
        yield x[:, start:start + seq_len], y[:, start:start + seq_len]


def window_batches(tokens: torch.Tensor, batch_size: int, block_size: int, steps: int,
                   generator: torch.Generator | None = None) -> Iterator[Batch]:
    """``steps`` batches of non-overlapping windows (inputs and targets shifted by one) in random order.

    Each window of the stream is used once before any is repeated, so ``steps * batch_size`` windows
    up to the number available is exactly one epoch (single-epoch pretraining); beyond it, the
    windows are reshuffled and repeated (multi-epoch training on a small set).
    """
    batch_size, block_size = check_positive_int("batch_size", batch_size), check_positive_int("block_size", block_size)
    n = (tokens.numel() - 1) // block_size
    if n < 1:
        raise ValueError(f"the token stream ({tokens.numel()} tokens) is shorter than block_size={block_size} + 1")
    starts = torch.arange(n, device=tokens.device) * block_size
    offsets = torch.arange(block_size + 1, device=tokens.device)
    order = torch.empty(0, dtype=torch.long, device=tokens.device)
    for _ in range(check_positive_int("steps", steps)):
        while order.numel() < batch_size:
            perm = torch.randperm(n, generator=generator).to(tokens.device)
            order = torch.cat([order, perm])
        idx, order = order[:batch_size], order[batch_size:]
        w = tokens[starts[idx, None] + offsets]
        yield w[:, :-1], w[:, 1:]


def window_table(streams, block_size: int) -> tuple[torch.Tensor, list[int], list[int]]:
    """The non-overlapping windows (``block_size + 1`` tokens: inputs and targets) of several token streams as one
    (windows, block_size + 1) table, with each stream's first row and its number of windows (the windows
    :func:`window_batches` draws from)."""
    block_size = check_positive_int("block_size", block_size)
    parts, offsets, counts, seen = [], [], [], {}
    for tokens in streams:
        if id(tokens) in seen:  # the same stream for several models: its windows once
            offsets.append(seen[id(tokens)][0])
            counts.append(seen[id(tokens)][1])
            continue
        n = (tokens.numel() - 1) // block_size
        if n < 1:
            raise ValueError(f"the token stream ({tokens.numel()} tokens) is shorter than block_size={block_size} + 1")
        starts = torch.arange(n, device=tokens.device) * block_size
        offsets.append(sum(len(part) for part in parts))
        counts.append(n)
        seen[id(tokens)] = (offsets[-1], n)
        parts.append(tokens[starts[:, None] + torch.arange(block_size + 1, device=tokens.device)])
    return torch.cat(parts), offsets, counts


def cosine_factor(epochs: int) -> Callable[[int], float]:
    """The learning-rate factor of epoch ``e`` (0-based) under cosine annealing from 1 to 0 over ``epochs``
    (``torch.optim.lr_scheduler.CosineAnnealingLR`` stepped per epoch, ``eta_min=0``): ``(1 + cos(pi e / epochs)) / 2``.
    Loshchilov & Hutter 2017 (SGDR), without restarts."""
    epochs = check_positive_int("epochs", epochs)
    return lambda e: 0.5 * (1 + math.cos(math.pi * e / epochs))


def choose_on_grid(evaluate: Callable[[list[float]], pd.Series], grid: Iterable[float], *,
                   widen: int = 2) -> tuple[float, pd.Series, bool]:
    """A value (a learning rate) chosen on validation over ``grid``, widened where the choice sits on its edge: a pilot
    whose best value is the grid's largest or smallest has not chosen. ``evaluate(values)`` trains and scores the
    given values (a Series of validation scores indexed by value, lower is better); while the best value is the
    largest (smallest) one tried, the next value one step of the grid's own ratio beyond it is evaluated, at most
    ``widen`` times (never past a grid value of 0 or below, which has no ratio). Returns the chosen value, every score
    (by value) and whether the choice is interior (a grid of one value: True)."""
    widen = check_positive_int("widen", widen, minimum=0)
    scores = evaluate(sorted(set(map(float, grid))))

    def edge(scores: pd.Series) -> str:
        values, best = sorted(scores.index), scores.idxmin()
        return "" if len(values) < 2 or values[0] < best < values[-1] else ("high" if best == values[-1] else "low")

    for _ in range(widen):
        side = edge(scores)
        if not side:
            break
        values = sorted(scores.index)
        near, far = (values[-2], values[-1]) if side == "high" else (values[1], values[0])
        if near <= 0 or far <= 0:  # no ratio to step by (a grid with 0): the choice stays on the edge, and says so
            break
        scores = pd.concat([scores, evaluate([far * far / near])])
    scores = scores.sort_index()
    return float(scores.idxmin()), scores, not edge(scores)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of (N, T, V) logits against (N, T) targets."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[Batch],
                loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy, *,
                after_step: Callable[[nn.Module], None] | None = None, amp_dtype: torch.dtype | None = None) -> float:
    """One pass over ``batches``; returns the mean training loss (one device sync, at the end)."""
    model.train()
    device = next(model.parameters()).device
    total, count = torch.zeros((), device=device), 0
    for x, y in batches:
        with autocast(device, amp_dtype):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step(model)
        total += loss.detach() * y.shape[0]
        count += y.shape[0]
    if world()[1] > 1:  # the mean over every rank's examples
        import torch.distributed as dist

        stats = torch.stack([total, torch.tensor(float(count), device=device)])
        dist.all_reduce(stats)
        total, count = stats[0], int(stats[1])
    return float(total) / max(count, 1)


@torch.no_grad()
def evaluate_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096,
                        amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Mean cross-entropy and error rate (fraction) of ``model`` in eval mode on ``(x, y)``."""
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=x.device)
    wrong = torch.zeros((), device=x.device, dtype=torch.long)
    for xb, yb in classification_batches(x, y, batch_size, shuffle=False):
        with autocast(x.device, amp_dtype):
            logits = model(xb).float()
        loss += F.cross_entropy(logits, yb, reduction="sum")
        wrong += (logits.argmax(-1) != yb).sum()
    model.train(was_training)
    n = y.shape[0]
    return {"loss": float(loss) / n, "error": float(wrong) / n}


def _logits_and_state(out):
    """A language model returns logits, or (logits, state) when it carries a state across windows."""
    return out if isinstance(out, tuple) else (out, None)


def _detach(state):
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(_detach(s) for s in state)


def train_lm_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, tokens: torch.Tensor, batch_size: int,
                   seq_len: int, *, clip: float | None = None, amp_dtype: torch.dtype | None = None,
                   max_steps: int | None = None) -> float:
    """One pass of truncated BPTT over a token stream (:func:`lm_batches`); a recurrent model's state
    (returned as ``(logits, state)``) is carried across windows and detached. Gradients are clipped to
    norm ``clip`` when given. Returns the mean training loss in nats."""
    model.train()
    total, count, state = torch.zeros((), device=tokens.device), 0, None
    for step, (x, y) in enumerate(lm_batches(tokens, batch_size, seq_len)):
        if max_steps is not None and step >= max_steps:
            break
        with autocast(tokens.device, amp_dtype):
            logits, state = _logits_and_state(model(x) if state is None else model(x, state))
            loss = lm_loss(logits, y)
        state = _detach(state)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        total += loss.detach() * y.numel()
        count += y.numel()
    return float(total) / max(count, 1)


@torch.no_grad()
def lm_window_losses(model: nn.Module, tokens: torch.Tensor, batch_size: int, seq_len: int, *, mc_samples: int = 0,
                     amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-window mean next-token cross-entropy (nats) over a token stream, and each window's token count.

    A recurrent model's state (returned as ``(logits, state)``) is carried across windows. With
    ``mc_samples = 0`` the model runs in eval mode (weight scaling). With ``mc_samples = k`` it runs
    in training mode, as MC dropout (Gal & Ghahramani 2016): ``k`` stochastic passes over the stream,
    each carrying its own state, with the *probabilities* of each target averaged before the log.
    Training mode suits models without batch norm, such as the LSTM LM. The mode is restored.
    """
    samples = check_positive_int("mc_samples", mc_samples, minimum=0)
    was_training = model.training
    model.train(samples > 0)
    losses, counts, states = [], [], [None] * max(samples, 1)
    for x, y in lm_batches(tokens, batch_size, seq_len):
        logp = []
        for k in range(len(states)):
            with autocast(tokens.device, amp_dtype):
                logits, states[k] = _logits_and_state(model(x) if states[k] is None else model(x, states[k]))
            logp.append(torch.log_softmax(logits.float(), -1).gather(-1, y.unsqueeze(-1)).squeeze(-1))
        mean_logp = torch.logsumexp(torch.stack(logp), 0) - math.log(len(logp))
        losses.append(-mean_logp.mean())
        counts.append(y.numel())
    model.train(was_training)
    return torch.stack(losses).double().cpu(), torch.tensor(counts, dtype=torch.float64)


def evaluate_lm(model: nn.Module, tokens: torch.Tensor, batch_size: int, seq_len: int, *, mc_samples: int = 0,
                amp_dtype: torch.dtype | None = None) -> float:
    """Mean next-token cross-entropy (nats) over a token stream: eval mode, or MC dropout with
    ``mc_samples`` passes (see :func:`lm_window_losses`)."""
    losses, counts = lm_window_losses(model, tokens, batch_size, seq_len, mc_samples=mc_samples, amp_dtype=amp_dtype)
    return float((losses * counts).sum() / counts.sum())


def max_norm_(model: nn.Module, max_norm: float) -> None:
    """Project each unit's incoming weight vector (rows of every ``nn.Linear``) onto a ball of radius
    ``max_norm`` (Srivastava et al. 2014, §5.1)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.renorm(m.weight, p=2, dim=0, maxnorm=max_norm))


def fit_classifier(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                   y_test: torch.Tensor, *, epochs: int, batch_size: int, optimizer: torch.optim.Optimizer,
                   eval_every: int = 1, max_norm: float | None = None, generator: torch.Generator | None = None,
                   amp_dtype: torch.dtype | None = None, desc: str = "train",
                   transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> pd.DataFrame:
    """Train for ``epochs``; every ``eval_every`` epochs (and at the end) record train and test loss and
    error, measured in eval mode. ``transform`` (data augmentation) is applied to each training batch;
    ``scheduler`` is stepped once per epoch. Returns the per-epoch history as a DataFrame."""
    epochs = check_positive_int("epochs", epochs)
    eval_every = check_positive_int("eval_every", eval_every)
    batch_size = check_positive_int("batch_size", batch_size)
    after = (lambda m: max_norm_(m, max_norm)) if max_norm else None
    rank, size = world()
    net = model
    if size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model)
    rows = []
    epoch_range = range(1, epochs + 1)
    for epoch in (progress(epoch_range, desc) if rank == 0 else epoch_range):
        batches = classification_batches(x_train, y_train, batch_size, generator=generator, shard=(rank, size))
        if transform is not None:
            batches = ((transform(xb), yb) for xb, yb in batches)
        train_loss = train_epoch(net, optimizer, batches, after_step=after, amp_dtype=amp_dtype)
        if scheduler is not None:
            scheduler.step()
        if epoch % eval_every == 0 or epoch == epochs:
            tr = evaluate_classifier(model, x_train, y_train, amp_dtype=amp_dtype)
            te = evaluate_classifier(model, x_test, y_test, amp_dtype=amp_dtype)
            rows.append({"epoch": epoch, "train_loss_running": train_loss, "train_loss": tr["loss"],
                         "train_error": tr["error"], "test_loss": te["loss"], "test_error": te["error"]})
    return pd.DataFrame(rows)
