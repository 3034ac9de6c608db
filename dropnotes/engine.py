"""The batched engine: K independent models of one architecture trained as one, in one step.

One small MLP cannot keep a GPU busy: its step is a few dozen tiny kernels, each costing more to
launch than to run. Stacking K models along a leading axis keeps the number of kernels per step
(one ``baddbmm`` instead of K ``addmm``) and multiplies the useful work by K, so the arms × seeds
of a chapter cost about as much as one model (see ``shared/design-notes``; measured by
``dropnotes estimate``).

Each of the K models has its own

* initialisation (stacked from K ordinary :class:`~dropnotes.models.MLP` modules, or drawn here),
* data order (a (K, N) permutation drawn per epoch),
* input and hidden drop rates, learning rate, weight decay, max-norm and gradient-clipping threshold,
* early-stopping record (its best parameters and epoch on the validation data), and
* life: a model whose loss stops being finite is frozen at that step and reported; the others go on.

The maths is exactly K separate trainings: the loss is the sum of the K mean losses, so each model's
gradient is its own; SGD with momentum is applied per element with per-model rates; Bernoulli masks
use per-model keep probabilities. The masks of the K models come from one generator per group (one
kernel per layer), so model k's masks depend on which models share its group: the group is recorded
in the history (``group``) so a number can be reproduced.

No host synchronisation happens inside an epoch: losses, errors and the alive flags stay on the
device and are read at the evaluation points only.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from dropnotes.runtime import check_positive_int, check_probability, progress


def _per_model(name: str, value, k: int, *, check=None) -> torch.Tensor:
    """A scalar or a length-K sequence as a (K,) float tensor."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    values = list(value) if isinstance(value, (list, tuple)) else [value] * k
    if len(values) != k:
        raise ValueError(f"{name} must have one value per model ({k}), got {len(values)}")
    if check is not None:
        values = [check(name, v) for v in values]
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


class StackedMLP(nn.Module):
    """K ReLU MLPs ``in -> hidden... -> out`` (Srivastava et al. 2014) with stacked parameters.

    ``weights[i]`` has shape (K, out_i, in_i) and ``biases[i]`` (K, out_i). ``forward`` takes one batch
    (B, ...) for all models, or each model's own (K, B, ...) with ``per_model=True``, and returns (K, B, out). In training,
    model k drops its inputs with rate ``p_input[k]`` and its hidden units with ``p_hidden[k]`` (inverted
    dropout: kept units scaled by 1/(1-p)); in eval mode it is deterministic.
    """

    def __init__(self, k: int, in_features: int, hidden: Sequence[int], out_features: int, *,
                 p_input=0.0, p_hidden=0.0, seeds: Sequence[int] | None = None) -> None:
        super().__init__()
        self.k = check_positive_int("k", k)
        widths = [check_positive_int("in_features", in_features)] + [check_positive_int("hidden", h) for h in hidden]
        widths.append(check_positive_int("out_features", out_features))
        self.register_buffer("p_input", _per_model("p_input", p_input, k, check=check_probability))
        self.register_buffer("p_hidden", _per_model("p_hidden", p_hidden, k, check=check_probability))
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            self.weights.append(nn.Parameter(torch.empty(k, fan_out, fan_in)))
            self.biases.append(nn.Parameter(torch.empty(k, fan_out)))
        self.reset_parameters(seeds)

    @torch.no_grad()
    def reset_parameters(self, seeds: Sequence[int] | None = None) -> None:
        """``nn.Linear``'s default initialisation, each model from its own seed (default 0..K-1), so that
        model k's initialisation does not depend on the group it is trained in."""
        seeds = list(seeds) if seeds is not None else list(range(self.k))
        if len(seeds) != self.k:
            raise ValueError(f"seeds must have one value per model ({self.k}), got {len(seeds)}")
        for i, s in enumerate(seeds):
            g = torch.Generator().manual_seed(int(s))
            for w, b in zip(self.weights, self.biases):
                bound = 1.0 / math.sqrt(w.shape[2])  # kaiming_uniform(a=sqrt(5)) and the bias rule of nn.Linear
                w[i].copy_(torch.empty(w.shape[1:]).uniform_(-bound, bound, generator=g))
                b[i].copy_(torch.empty(b.shape[1:]).uniform_(-bound, bound, generator=g))

    @classmethod
    def from_models(cls, models: Sequence[nn.Module], *, p_input=0.0, p_hidden=0.0) -> "StackedMLP":
        """Stack K models made of ``nn.Linear`` layers (e.g. :class:`~dropnotes.models.MLP`) into one group."""
        linears = [[m for m in model.modules() if isinstance(m, nn.Linear)] for model in models]
        widths = [linears[0][0].in_features] + [lin.out_features for lin in linears[0]]
        out = cls(len(models), widths[0], widths[1:-1], widths[-1], p_input=p_input, p_hidden=p_hidden)
        with torch.no_grad():
            for i, layers in enumerate(linears):
                for w, b, lin in zip(out.weights, out.biases, layers):
                    w[i].copy_(lin.weight)
                    b[i].copy_(lin.bias)
        return out.to(linears[0][0].weight.device)

    def model(self, i: int) -> nn.Module:
        """Model ``i`` as a standalone :class:`~dropnotes.models.MLP` (with its own drop rates), e.g. for
        MC-dropout prediction with :func:`dropnotes.mc.mc_predict`."""
        from dropnotes.models import MLP

        widths = [w.shape[1] for w in self.weights]
        net = MLP(self.weights[0].shape[2], tuple(widths[:-1]), widths[-1], p_input=float(self.p_input[i]),
                  p_hidden=float(self.p_hidden[i])).to(self.weights[0].device)
        with torch.no_grad():
            for lin, w, b in zip([m for m in net.modules() if isinstance(m, nn.Linear)], self.weights, self.biases):
                lin.weight.copy_(w[i])
                lin.bias.copy_(b[i])
        return net

    def select(self, index: Sequence[int]) -> "StackedMLP":
        """A group of the models at ``index`` (copies of their parameters), e.g. the members of an ensemble."""
        index = list(index)
        widths = [w.shape[1] for w in self.weights]
        out = StackedMLP(len(index), self.weights[0].shape[2], widths[:-1], widths[-1],
                         p_input=self.p_input[index].tolist(), p_hidden=self.p_hidden[index].tolist())
        with torch.no_grad():
            for w_out, b_out, w, b in zip(out.weights, out.biases, self.weights, self.biases):
                w_out.copy_(w[index])
                b_out.copy_(b[index])
        return out.to(self.weights[0].device)

    def extra_repr(self) -> str:
        shape = " -> ".join(str(w.shape[2]) for w in self.weights) + f" -> {self.weights[-1].shape[1]}"
        return f"k={self.k}, {shape}"

    def _drop(self, h: torch.Tensor, p: torch.Tensor, generator: torch.Generator | None,
              mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training:
            return h
        keep = (1.0 - p).to(h.dtype).view(-1, 1, 1)
        if mask is None:
            mask = torch.rand(h.shape, device=h.device, generator=generator) < keep
        return h * mask * (1.0 / keep)

    def forward(self, x: torch.Tensor, per_model: bool = False, generator: torch.Generator | None = None,
                masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """``x``: one batch (B, ...) for every model, or with ``per_model`` each model's own (K, B, ...).
        ``masks`` (optional, for tests): one boolean keep-mask per dropout site, (K, B, width)."""
        x = x.flatten(2) if per_model else x.flatten(1).unsqueeze(0).expand(self.k, x.shape[0], -1)
        masks = list(masks) if masks is not None else [None] * len(self.weights)
        h = self._drop(x, self.p_input, generator, masks[0])
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b.unsqueeze(1).to(h.dtype), h, w.transpose(1, 2).to(h.dtype))
            if i < last:
                h = self._drop(F.relu(h), self.p_hidden, generator, masks[i + 1])
        return h


@dataclass
class FitResult:
    """What :func:`fit_stacked` returns: the per-model history, each model's best epoch and error on the
    validation data, and the step at which a model died (-1 if it did not)."""

    history: pd.DataFrame
    best_epoch: list[int]
    best_val_error: list[float]
    died_at_step: list[int]


def epoch_orders(k: int, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """K independent permutations of ``range(n)`` as a (K, n) index tensor (one kernel)."""
    keys = torch.rand(k, n, generator=generator, device=generator.device)
    return keys.argsort(dim=1).to(device)


@torch.no_grad()
def evaluate_stacked(model: StackedMLP, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096,
                     amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and error rate of every model on (x, y), as (K,) device tensors (eval mode)."""
    was = model.training
    model.eval()
    loss = torch.zeros(model.k, device=x.device)
    wrong = torch.zeros(model.k, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        with (torch.autocast(x.device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()):
            logits = model(xb).float()
        ce = F.cross_entropy(logits.flatten(0, 1), yb.repeat(model.k), reduction="none").view(model.k, -1)
        loss += ce.sum(1)
        wrong += (logits.argmax(-1) != yb).sum(1)
    model.train(was)
    return loss / x.shape[0], wrong / x.shape[0]


def fit_stacked(model: StackedMLP, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
                y_val: torch.Tensor, *, epochs: int, batch_size: int, lr, momentum: float = 0.0,
                weight_decay=0.0, max_norm=None, clip=None, eval_every: int = 1, generator: torch.Generator | None = None,
                amp_dtype: torch.dtype | None = None, x_test: torch.Tensor | None = None,
                y_test: torch.Tensor | None = None, desc: str = "batched", restore_best: bool = False,
                capture: bool = True) -> FitResult:
    """Train the K models of ``model`` together with SGD (momentum, per-model ``lr``, ``weight_decay``,
    ``max_norm`` on incoming weight rows, ``clip`` on each model's gradient norm).

    Every ``eval_every`` epochs (and at the end) each model's train, validation (and test) loss and
    error are recorded; each model's best validation epoch is kept (and its parameters restored at the
    end with ``restore_best``). Model selection therefore never touches the test data.

    Each epoch takes ``N // batch_size`` full batches of freshly drawn orders. On CUDA the whole step
    (forward, backward, clipping, the SGD update and max-norm) is captured once as a CUDA graph and
    replayed (``capture=True``), its masks drawn from the device's default generator; if capture fails
    the step runs eagerly, with a warning."""
    k = model.k
    epochs, eval_every = check_positive_int("epochs", epochs), check_positive_int("eval_every", eval_every)
    batch_size = check_positive_int("batch_size", batch_size)
    dev = x_train.device
    if generator is None:
        generator = torch.Generator(dev).manual_seed(0)
    lr_k = _per_model("lr", lr, k).to(dev)
    wd_k = _per_model("weight_decay", weight_decay, k).to(dev)
    mn_k = None if max_norm is None else _per_model("max_norm", max_norm, k).to(dev)
    clip_k = None if clip is None else _per_model("clip", clip, k).to(dev)
    params = list(model.parameters())
    bufs = [torch.zeros_like(p) for p in params]
    alive = torch.ones(k, dtype=torch.bool, device=dev)
    died = torch.full((k,), -1, dtype=torch.long, device=dev)
    step_no = torch.zeros((), dtype=torch.long, device=dev)
    best_err = torch.full((k,), float("inf"), device=dev)
    best_epoch = torch.zeros(k, dtype=torch.long, device=dev)
    best_state = [p.detach().clone() for p in params] if restore_best else None
    n = x_train.shape[0]
    if n < batch_size:
        raise ValueError(f"batch_size must be <= the number of training examples ({n}), got {batch_size}")
    per_epoch = n // batch_size  # full batches only (the remainder differs every epoch: orders are redrawn)
    idx = torch.zeros(k, batch_size, dtype=torch.long, device=dev)  # the step's input: (K, B) example indices
    mask_gen = None if dev.type == "cuda" else generator  # CUDA graphs draw from the device's default generator
    step = make_step(model, x_train, y_train, idx, lr=lr_k, weight_decay=wd_k, momentum=momentum, max_norm=mn_k,
                     clip=clip_k, amp_dtype=amp_dtype, generator=mask_gen, bufs=bufs, alive=alive, died=died,
                     step_no=step_no)

    if dev.type == "cuda":
        torch.cuda.manual_seed(int(torch.randint(0, 2**62, (), generator=generator, device=generator.device)))
    state = params + bufs + [alive, died, step_no]
    run_step = _captured(step, state, dev) if dev.type == "cuda" and capture else step
    rows = []
    for epoch in progress(range(1, epochs + 1), desc):
        model.train()
        order = epoch_orders(k, n, generator, dev)
        for b in range(per_epoch):
            idx.copy_(order[:, b * batch_size:(b + 1) * batch_size])  # (K, B): each model's own batch
            run_step()
        if epoch % eval_every == 0 or epoch == epochs:
            tr_loss, tr_err = evaluate_stacked(model, x_train, y_train, amp_dtype=amp_dtype)
            va_loss, va_err = evaluate_stacked(model, x_val, y_val, amp_dtype=amp_dtype)
            better = alive & (va_err < best_err)
            best_err = torch.where(better, va_err, best_err)
            best_epoch = torch.where(better, torch.full_like(best_epoch, epoch), best_epoch)
            if best_state is not None:
                for b, p in zip(best_state, params):
                    b.copy_(torch.where(better.view(-1, *[1] * (p.dim() - 1)), p.detach(), b))
            cols = {"train_loss": tr_loss, "train_error": tr_err, "val_loss": va_loss, "val_error": va_err}
            if x_test is not None:
                te_loss, te_err = evaluate_stacked(model, x_test, y_test, amp_dtype=amp_dtype)
                cols.update(test_loss=te_loss, test_error=te_err)
            host = {name: t.tolist() for name, t in cols.items()}  # the one host read, at the evaluation
            alive_now = alive.tolist()
            for m in range(k):
                rows.append({"model": m, "epoch": epoch, **{c: v[m] for c, v in host.items()}, "alive": alive_now[m]})
    if best_state is not None:
        with torch.no_grad():
            for b, p in zip(best_state, params):
                p.copy_(b)
    hist = pd.DataFrame(rows)
    hist["group"] = k
    return FitResult(hist, best_epoch.tolist(), best_err.tolist(), died.tolist())


def make_step(model: StackedMLP, x_train: torch.Tensor, y_train: torch.Tensor, idx: torch.Tensor, *, lr: torch.Tensor,
              weight_decay: torch.Tensor, momentum: float, max_norm: torch.Tensor | None, clip: torch.Tensor | None,
              amp_dtype: torch.dtype | None, generator: torch.Generator | None, bufs: list[torch.Tensor],
              alive: torch.Tensor, died: torch.Tensor, step_no: torch.Tensor):
    """The engine's training step as a closure over static tensors (``idx`` holds the (K, B) example indices
    of the step): what :func:`fit_stacked` runs or captures, and what ``dropnotes estimate`` measures."""
    k = model.k
    params = list(model.parameters())
    dev_type = x_train.device.type

    def step() -> None:
        amp = (torch.autocast(dev_type, dtype=amp_dtype, cache_enabled=False) if amp_dtype is not None
               else contextlib.nullcontext())
        with amp:
            logits = model(x_train[idx], per_model=True, generator=generator).float()
        losses = F.cross_entropy(logits.flatten(0, 1), y_train[idx].flatten(), reduction="none")
        losses = losses.view(k, -1).mean(1)
        for p in params:
            p.grad = None
        losses.sum().backward()  # model k's gradient is the gradient of its own mean loss
        step_no.add_(1)
        finite = torch.isfinite(losses)
        died.copy_(torch.where(alive & ~finite, step_no.expand(k), died))
        alive.logical_and_(finite)
        _sgd_step(params, bufs, lr, weight_decay, momentum, alive, clip)
        if max_norm is not None:
            _max_norm_(model, max_norm)

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


@torch.no_grad()
def _sgd_step(params, bufs, lr, wd, momentum: float, alive: torch.Tensor, clip) -> None:
    """``torch.optim.SGD`` (momentum, dampening 0, weight decay added to the gradient), per model:
    lr, weight decay and the clipping threshold are (K,) tensors, and dead models are not updated."""
    shape = lambda p: (-1,) + (1,) * (p.dim() - 1)  # noqa: E731
    grads = [p.grad for p in params]
    if clip is not None:
        sq = sum(g.pow(2).flatten(1).sum(1) for g in grads)
        factor = (clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        grads = [g * factor.view(shape(g)) for g in grads]
    for p, g, buf in zip(params, grads, bufs):
        d = g + wd.view(shape(p)) * p
        if momentum:
            buf.mul_(momentum).add_(d)
            d = buf
        update = torch.where(alive.view(shape(p)), lr.view(shape(p)) * d, torch.zeros_like(d))
        p.sub_(update)


@torch.no_grad()
def _max_norm_(model: StackedMLP, max_norm: torch.Tensor) -> None:
    """Srivastava et al.'s max-norm, per model: every unit's incoming weight vector (each layer's rows, as
    :func:`dropnotes.train.max_norm_` does for ``nn.Linear``) is projected onto the ball of radius c_k."""
    for w in model.weights:
        norms = w.norm(dim=2, keepdim=True)
        w.mul_((max_norm.view(-1, 1, 1) / (norms + 1e-7)).clamp(max=1.0))
