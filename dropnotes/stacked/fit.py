"""Training K stacked classifiers as one: the step (:func:`make_step`), the loop (:func:`fit_stacked`), evaluation,
early-stopping records and CUDA-graph capture."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from dropnotes.amp import autocast
from dropnotes.runtime import check_choice, check_positive_int, progress
from dropnotes.stacked.mlp import StackedMLP
from dropnotes.stacked.noise import _per_model
from dropnotes.stacked.optim import _adam_step, _flat, _max_norm_, _sgd_step


@dataclass
class FitResult:
    """What every loop of the engine returns (:func:`fit_stacked`, :func:`~dropnotes.stacked.fit_stacked_lm`,
    :func:`~dropnotes.stacked.fit_stacked_windows`): the per-model history, each model's best epoch (or step) and
    its validation error (or loss) there, and the step at which a model died (-1 if it did not). The window
    loop adds each evaluation's per-window validation losses (``windows``: step -> (K, windows)) and the
    seconds of training between evaluations (``seconds``)."""

    history: pd.DataFrame
    best_epoch: list[int]
    best_val_error: list[float]
    died_at_step: list[int]
    windows: dict | None = None
    seconds: list[float] | None = None


class _BestEpochs:
    """Each model's best validation value and epoch (the lowest, among the epochs it was alive), and with
    ``restore`` its state then (the tensors ``tracked``), put back at the end by :meth:`result`."""

    def __init__(self, tracked: list[torch.Tensor], k: int, device, restore: bool) -> None:
        self.tracked = tracked
        self.value = torch.full((k,), float("inf"), device=device)
        self.epoch = torch.zeros(k, dtype=torch.long, device=device)
        self.state = [t.detach().clone() for t in tracked] if restore else None

    def update(self, value: torch.Tensor, alive: torch.Tensor, epoch: int) -> None:
        better = alive & (value < self.value)
        self.value = torch.where(better, value, self.value)
        self.epoch = torch.where(better, torch.full_like(self.epoch, epoch), self.epoch)
        if self.state is not None:
            for b, t in zip(self.state, self.tracked):
                b.copy_(torch.where(better.view(-1, *[1] * (t.dim() - 1)), t.detach(), b))

    def result(self, rows: list[dict], died: torch.Tensor) -> "FitResult":
        if self.state is not None:
            with torch.no_grad():
                for b, t in zip(self.state, self.tracked):
                    t.copy_(b)
        hist = pd.DataFrame(rows)
        hist["group"] = len(self.value)
        return FitResult(hist, self.epoch.tolist(), self.value.tolist(), died.tolist())


def _mark_dead(losses: torch.Tensor, alive: torch.Tensor, died: torch.Tensor, step_no: torch.Tensor) -> None:
    """Advance the step count; a model whose loss is not finite dies at this step (on the device, no sync)."""
    step_no.add_(1)
    finite = torch.isfinite(losses)
    died.copy_(torch.where(alive & ~finite, step_no.expand(len(losses)), died))
    alive.logical_and_(finite)


def epoch_orders(k: int, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """K independent permutations of ``range(n)`` as a (K, n) index tensor (one kernel)."""
    keys = torch.rand(k, n, generator=generator, device=generator.device)
    return keys.argsort(dim=1).to(device)


def _stacked_logits(model: nn.Module, x: torch.Tensor, batch_size: int, amp_dtype: torch.dtype | None):
    """Every model's logits on ``x`` in eval mode, batch by batch: yields (start, (K, B, classes) float)."""
    was = model.training
    model.eval()
    try:
        for start in range(0, x.shape[0], batch_size):
            with autocast(x.device.type, amp_dtype):
                yield start, model(x[start:start + batch_size]).float()
    finally:
        model.train(was)


@torch.no_grad()
def evaluate_stacked(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096,
                     amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and error rate of every model on (x, y), as (K,) device tensors (eval mode)."""
    loss = torch.zeros(model.k, device=x.device)
    wrong = torch.zeros(model.k, device=x.device)
    for start, logits in _stacked_logits(model, x, batch_size, amp_dtype):
        yb = y[start:start + batch_size]
        ce = F.cross_entropy(logits.flatten(0, 1), yb.repeat(model.k), reduction="none").view(model.k, -1)
        loss += ce.sum(1)
        wrong += (logits.argmax(-1) != yb).sum(1)
    return loss / x.shape[0], wrong / x.shape[0]


@torch.no_grad()
def predict_stacked(model: nn.Module, x: torch.Tensor, batch_size: int = 4096,
                    amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Every model's predicted class for every example of ``x``, as a (K, N) device tensor (eval mode): what a
    paired comparison of two models on the same examples needs."""
    return torch.cat([logits.argmax(-1) for _, logits in _stacked_logits(model, x, batch_size, amp_dtype)], dim=1)


def _per_model_state(model: nn.Module) -> list[torch.Tensor]:
    """What defines the K models' current state: the parameters and the floating-point (K, ...) buffers
    (a CNN's batch-norm running statistics)."""
    bufs = [b for b in model.buffers() if b.is_floating_point() and b.dim() >= 2 and b.shape[0] == model.k]
    return list(model.parameters()) + bufs


def fit_stacked(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
                y_val: torch.Tensor, *, epochs: int, batch_size: int, lr, momentum: float = 0.0,
                weight_decay=0.0, max_norm=None, clip=None, eval_every: int = 1, generator: torch.Generator | None = None,
                amp_dtype: torch.dtype | None = None, x_test: torch.Tensor | None = None,
                y_test: torch.Tensor | None = None, desc: str = "batched", restore_best: bool = False,
                capture: bool = True, eval_batch_size: int = 4096, optimizer: str = "sgd",
                betas: tuple[float, float] = (0.9, 0.999), lr_schedule: Callable[[int], float] | None = None,
                transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                penalty_weight: Callable[[int], float] | None = None,
                on_eval: Callable[[], dict[str, list]] | None = None) -> FitResult:
    """Train the K models of ``model`` (a :class:`StackedMLP`, :class:`StackedCNN` or :class:`StackedViT`)
    together with SGD (momentum, per-model ``lr``, ``weight_decay``, ``max_norm`` on an MLP's incoming weight
    rows, ``clip`` on each model's gradient norm), or with ``optimizer="adamw"`` (``torch.optim.AdamW``'s
    update: ``betas``, decoupled per-model ``weight_decay``).

    ``lr_schedule(epoch)`` (0-based) multiplies every model's rate during that epoch, as an epoch-wise
    ``torch.optim.lr_scheduler`` does (e.g. ``CosineAnnealingLR``); ``transform`` (data augmentation) is
    applied to the K batches of a step, every image drawn on its own. ``penalty_weight(epoch)`` (0-based)
    weighs the model's ``penalty()`` (K,), divided by the number of training examples, in each model's loss
    (a variational bound's KL term); ``on_eval()`` returns extra per-model columns for the history.

    Every ``eval_every`` epochs (and at the end) each model's train, validation (and test) loss and
    error are recorded; each model's best validation epoch is kept (and its parameters restored at the
    end with ``restore_best``). Model selection therefore never touches the test data.

    Each epoch takes ``N // batch_size`` full batches of freshly drawn orders. On CUDA the whole step
    (forward, backward, clipping, the SGD update and max-norm) is captured once as a CUDA graph and
    replayed (``capture=True``), its masks drawn from the device's default generator; if capture fails
    the step runs eagerly, with a warning."""
    k = model.k
    epochs, eval_every = check_positive_int("epochs", epochs), check_positive_int("eval_every", eval_every)
    optimizer = check_choice("optimizer", optimizer, ("sgd", "adamw"))
    batch_size = check_positive_int("batch_size", batch_size)
    eval_batch_size = check_positive_int("eval_batch_size", eval_batch_size)
    if max_norm is not None and not isinstance(model, StackedMLP):
        raise ValueError(f"max_norm applies to a StackedMLP's weight rows; got a {type(model).__name__}")
    dev = x_train.device
    if generator is None:
        generator = torch.Generator(dev).manual_seed(0)
    lr_k = _per_model("lr", lr, k).to(dev)
    lr_now = lr_k.clone()  # the rate of the current epoch (the schedule's factor applied), read by the step
    wd_k = _per_model("weight_decay", weight_decay, k)
    wd_k = wd_k.to(dev) if bool(wd_k.any()) else None  # no model decays: no pass over the parameters
    mn_k = mn_index = None
    if max_norm is not None:  # only the models with a finite radius are projected
        radii = _per_model("max_norm", max_norm, k)
        constrained = torch.isfinite(radii).nonzero().flatten()
        if len(constrained):
            mn_k, mn_index = radii[constrained].to(dev), (None if len(constrained) == k else constrained.to(dev))
    clip_k = None if clip is None else _per_model("clip", clip, k).to(dev)
    params = list(model.parameters())
    if optimizer == "adamw":
        bufs = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    else:
        bufs = [torch.zeros_like(p) for p in params] if momentum else [None] * len(params)
    alive = torch.ones(k, dtype=torch.bool, device=dev)
    died = torch.full((k,), -1, dtype=torch.long, device=dev)
    step_no = torch.zeros((), dtype=torch.long, device=dev)
    best = _BestEpochs(_per_model_state(model), k, dev, restore_best)  # parameters and BN statistics
    n = x_train.shape[0]
    if n < batch_size:
        raise ValueError(f"batch_size must be <= the number of training examples ({n}), got {batch_size}")
    per_epoch = n // batch_size  # full batches only (the remainder differs every epoch: orders are redrawn)
    idx = torch.zeros(k, batch_size, dtype=torch.long, device=dev)  # the step's input: (K, B) example indices
    mask_gen = None if dev.type == "cuda" else generator  # CUDA graphs draw from the device's default generator
    pw = None if penalty_weight is None else torch.zeros((), device=dev)  # the epoch's weight / N, read by the step
    step = make_step(model, x_train, y_train, idx, lr=lr_now, weight_decay=wd_k, momentum=momentum, max_norm=mn_k,
                     max_norm_index=mn_index, clip=clip_k, amp_dtype=amp_dtype, generator=mask_gen, bufs=bufs,
                     alive=alive, died=died, step_no=step_no, optimizer=optimizer, betas=betas, transform=transform,
                     penalty=pw)

    if dev.type == "cuda":
        torch.cuda.manual_seed(int(torch.randint(0, 2**62, (), generator=generator, device=generator.device)))
    state = params + list(model.buffers()) + _flat(bufs) + [alive, died, step_no]
    run_step = _captured(step, state, dev) if dev.type == "cuda" and capture else step
    rows = []
    for epoch in progress(range(1, epochs + 1), desc):
        model.train()
        if lr_schedule is not None:
            lr_now.copy_(lr_k * float(lr_schedule(epoch - 1)))
        if pw is not None:
            pw.fill_(float(penalty_weight(epoch - 1)) / n)
        order = epoch_orders(k, n, generator, dev)
        for b in range(per_epoch):
            idx.copy_(order[:, b * batch_size:(b + 1) * batch_size])  # (K, B): each model's own batch
            run_step()
        if epoch % eval_every == 0 or epoch == epochs:
            tr_loss, tr_err = evaluate_stacked(model, x_train, y_train, eval_batch_size, amp_dtype)
            va_loss, va_err = evaluate_stacked(model, x_val, y_val, eval_batch_size, amp_dtype)
            best.update(va_err, alive, epoch)
            cols = {"train_loss": tr_loss, "train_error": tr_err, "val_loss": va_loss, "val_error": va_err}
            if x_test is not None:
                te_loss, te_err = evaluate_stacked(model, x_test, y_test, eval_batch_size, amp_dtype)
                cols.update(test_loss=te_loss, test_error=te_err)
            host = {name: t.tolist() for name, t in cols.items()}  # the one host read, at the evaluation
            if on_eval is not None:
                host.update(on_eval())
            alive_now = alive.tolist()
            for m in range(k):
                rows.append({"model": m, "epoch": epoch, **{c: v[m] for c, v in host.items()}, "alive": alive_now[m]})
    return best.result(rows, died)


def make_step(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, idx: torch.Tensor, *, lr: torch.Tensor,
              weight_decay: torch.Tensor | None, momentum: float, max_norm: torch.Tensor | None,
              clip: torch.Tensor | None, amp_dtype: torch.dtype | None, generator: torch.Generator | None,
              bufs: list, alive: torch.Tensor, died: torch.Tensor, step_no: torch.Tensor,
              max_norm_index: torch.Tensor | None = None, optimizer: str = "sgd",
              betas: tuple[float, float] = (0.9, 0.999), transform: Callable | None = None,
              penalty: torch.Tensor | None = None):
    """The engine's training step as a closure over static tensors (``idx`` holds the (K, B) example indices
    of the step): what :func:`fit_stacked` runs or captures, and what ``dropnotes estimate`` measures.
    ``weight_decay`` None: no model decays; ``max_norm``: the radii of the models at ``max_norm_index``
    (None: of all K); ``bufs``: each parameter's momentum buffer (SGD; None without momentum) or its
    (m, v) pair (AdamW); ``penalty``: a 0-dim tensor weighing ``model.penalty()`` in every model's loss."""
    k = model.k
    params = list(model.parameters())
    dev_type = x_train.device.type

    def step() -> None:
        amp = autocast(dev_type, amp_dtype, cache_enabled=False)
        xb = x_train[idx]
        if transform is not None:
            xb = transform(xb.flatten(0, 1)).view_as(xb)
        with amp:
            logits = model(xb, per_model=True, generator=generator).float()
        losses = F.cross_entropy(logits.flatten(0, 1), y_train[idx].flatten(), reduction="none")
        losses = losses.view(k, -1).mean(1)
        if penalty is not None:
            losses = losses + penalty * model.penalty()
        for p in params:
            p.grad = None
        losses.sum().backward()  # model k's gradient is the gradient of its own mean loss
        _mark_dead(losses, alive, died, step_no)
        if optimizer == "adamw":
            _adam_step(params, bufs, step_no, lr, alive, clip, betas=betas, weight_decay=weight_decay)
        else:
            _sgd_step(params, bufs, lr, weight_decay, momentum, alive, clip)
        if max_norm is not None:
            _max_norm_(model, max_norm, max_norm_index)

    return step


def _captured(step, state: list[torch.Tensor], device: torch.device):
    """``step`` captured as a CUDA graph (after warm-up steps on a side stream, as PyTorch's whole-network
    capture recipe does), or ``step`` itself if capture is not possible here. The warm-up steps really
    run, so every tensor of the training ``state`` is restored afterwards: capture trains nothing."""
    import warnings

    saved = [t.detach().clone() for t in state]
    graph = torch.cuda.CUDAGraph()
    try:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up: allocations, cuBLAS workspaces
                step()
        torch.cuda.current_stream(device).wait_stream(side)
        with torch.cuda.graph(graph):
            step()
    except Exception as err:  # noqa: BLE001 - any capture failure falls back to the eager step
        warnings.warn(f"CUDA graph capture of the batched step failed ({type(err).__name__}: {err}); "
                      "running it eagerly", RuntimeWarning, stacklevel=3)
        graph = None
    with torch.no_grad():
        for t, s in zip(state, saved):
            t.copy_(s)
    return step if graph is None else graph.replay
