"""The batched engine's training steps as the cost model builds them: one step of a group of K models made by the
engine's own step factory (:func:`dropnotes.stacked.make_step`), on the meta device to be counted or on a real one
to be timed, and the same K models trained one at a time, for ``dropnotes estimate --compare``. The chapters build
their groups from these (their ``groups``, ``timed_steps`` and ``compare_steps``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from dropnotes import train
from dropnotes.costmodel.counter import Cost, KernelCounter, measure
from dropnotes.stacked import StackedMLP, _adam_step, _flat, _sgd_step, make_step


class TimedStep(NamedTuple):
    """A chapter's batched training step that carries its predicted time: its group's name, the models it trains,
    the precision, and ``build(device) -> (step, group, state)``, the function the prediction counts (on "meta")
    and the device check and the laptop prediction time (on a real device)."""

    name: str
    models: int
    dtype: str
    build: Callable


def on(device, make: Callable[[], nn.Module]) -> nn.Module:
    """``make()`` on ``device``: built on the meta device directly, else on the CPU (the groups seed their
    initialisation with CPU generators) and moved."""
    if str(device) == "meta":
        with torch.device("meta"):
            return make()
    return make().to(device)


def dtype_of(cfg) -> str:
    """The precision a config's steps run in: "bf16" under autocast (``cfg.amp``), else "fp32"."""
    return "bf16" if getattr(cfg, "amp", False) else "fp32"


def engine_step_fn(k: int, cfg, max_norm: int, make_model: Callable[[], nn.Module] | None = None, example=(784,),
                   momentum: float | None = None, weight_decay: bool = False, optimizer: str = "sgd",
                   transform=None, penalty: bool = False, device="meta"):
    """One step of the batched engine for a group of K models (``make_model()``; by default K MLPs of
    ``cfg.hidden`` with input and hidden dropout) on ``device``, as a chapter runs it
    (:func:`dropnotes.stacked.make_step`, bf16 autocast with ``cfg.amp``); ``max_norm`` of them are projected,
    and the group decays or not. Returns the step, the group and the tensors the step updates."""
    if make_model is None:
        make_model = lambda: StackedMLP(k, 784, cfg.hidden, 10, p_input=0.2, p_hidden=0.5, seeds=[0] * k)  # noqa: E731
    model = on(device, make_model).train()
    with torch.device(device):
        x, y = torch.rand(cfg.batch_size * 2, *example), torch.zeros(cfg.batch_size * 2, dtype=torch.long)
        idx = torch.randint(0, cfg.batch_size * 2, (k, cfg.batch_size))
        vec = torch.full((k,), 1e-3)
        index = None if max_norm in (0, k) else torch.arange(max_norm)
        params = list(model.parameters())
        bufs = ([(torch.zeros_like(p), torch.zeros_like(p)) for p in params] if optimizer == "adamw"
                else [torch.zeros_like(p) for p in params])
        alive, died = torch.ones(k, dtype=torch.bool), torch.full((k,), -1, dtype=torch.long)
        step_no = torch.zeros((), dtype=torch.long)
        step = make_step(model, x, y, idx, lr=vec, weight_decay=vec if weight_decay else None,
                         momentum=cfg.momentum if momentum is None else momentum,
                         max_norm=torch.ones(max_norm) if max_norm else None, max_norm_index=index, clip=None,
                         amp_dtype=torch.bfloat16 if getattr(cfg, "amp", False) else None, generator=None, bufs=bufs,
                         alive=alive, died=died, step_no=step_no, optimizer=optimizer, transform=transform,
                         penalty=torch.ones(()) if penalty else None)
    return step, model, params + _flat(bufs) + list(model.buffers()) + [alive, died, step_no]


def engine_step(k: int, cfg, max_norm: int, make_model: Callable[[], nn.Module] | None = None, example=(784,),
                **kw) -> tuple[Cost, nn.Module]:
    """FLOPs, kernels and bytes of :func:`engine_step_fn`'s step on the meta device, and the group."""
    step, model, _ = engine_step_fn(k, cfg, max_norm, make_model, example, **kw)
    with torch.device("meta"):
        return measure(step), model


# ------------------------------------------------------------------ the engine against its models one at a time

def sequential_classifier_step(nets, x, y, optimizer: str = "sgd", transform=None):
    """One training step of each of K ordinary models in turn (``torch.optim``), on one shared batch."""
    if optimizer == "adamw":
        opts = [torch.optim.AdamW(n.parameters(), lr=1e-3, weight_decay=0.05, foreach=False) for n in nets]
    else:
        opts = [torch.optim.SGD(n.parameters(), lr=0.01, momentum=0.9, foreach=False) for n in nets]

    def step():
        for net, opt in zip(nets, opts):
            xb = x if transform is None else transform(x)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(xb), y).backward()
            opt.step()
    return step


def classifier_compare(name: str, k: int, single: Callable[[], nn.Module], stacked: Callable[[], nn.Module],
                       example: tuple, constrained: int, cfg, gen: torch.Generator, optimizer: str = "sgd",
                       transform=None) -> tuple:
    """(name, K, batch, sequential step, batched step) of K classifiers (``single()`` each, one at a time) against
    their batched group (``stacked()``), ``constrained`` of them max-norm projected, on random data."""
    b = cfg.batch_size
    x, y = torch.rand(b, *example, generator=gen), torch.randint(0, 10, (b,), generator=gen)
    sequential = sequential_classifier_step([single().train() for _ in range(k)], x, y, optimizer, transform)
    group = stacked().train()
    xs, ys = torch.rand(2 * b, *example, generator=gen), torch.randint(0, 10, (2 * b,), generator=gen)
    idx = torch.randint(0, 2 * b, (k, b), generator=gen)
    vec = torch.full((k,), 0.01)
    bufs = ([(torch.zeros_like(p), torch.zeros_like(p)) for p in group.parameters()] if optimizer == "adamw"
            else [torch.zeros_like(p) for p in group.parameters()])
    batched = make_step(group, xs, ys, idx, lr=vec, weight_decay=vec if optimizer == "adamw" else None,
                        momentum=0.9, max_norm=torch.full((constrained,), 3.0) if constrained else None,
                        max_norm_index=torch.arange(constrained) if constrained else None, clip=None, amp_dtype=None,
                        generator=gen, bufs=bufs, alive=torch.ones(k, dtype=torch.bool), died=torch.full((k,), -1),
                        step_no=torch.zeros((), dtype=torch.long), optimizer=optimizer, transform=transform)
    return name, k, b, sequential, batched


def lm_compare(name: str, nets: list[nn.Module], group: nn.Module, make_opt: Callable, vocab: int, batch: int,
               length: int, clip: float, gen: torch.Generator, sgd: bool = False,
               weight_decay: float | None = None) -> tuple:
    """(name, K, batch, sequential step, batched step) of K language models (``nets``, each with its optimizer
    ``make_opt(net)``) against their batched ``group`` (plain SGD with ``sgd``, else AdamW), on random tokens."""
    k = len(nets)
    x, y = torch.randint(0, vocab, (batch, length), generator=gen), torch.randint(0, vocab, (batch, length), generator=gen)
    opts = [make_opt(n) for n in nets]
    params = list(group.parameters())
    moments = [(torch.zeros_like(q), torch.zeros_like(q)) for q in params]
    ones, alive, step_no = torch.ones(k), torch.ones(k, dtype=torch.bool), torch.zeros((), dtype=torch.long)

    def sequential():
        for net, opt in zip(nets, opts):
            out = net(x)
            opt.zero_grad(set_to_none=True)
            train.lm_loss(out[0] if isinstance(out, tuple) else out, y).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip, foreach=False)
            opt.step()

    def batched():
        out = group(x, generator=gen)
        logits = out[0] if isinstance(out, tuple) else out
        losses = F.cross_entropy(logits.flatten(0, -2), y.expand(k, -1, -1).flatten(), reduction="none")
        for q in params:
            q.grad = None
        losses.view(k, -1).mean(1).sum().backward()
        step_no.add_(1)
        if sgd:
            _sgd_step(params, [None] * len(params), ones, None, 0.0, alive, ones * clip)
        else:
            _adam_step(params, moments, step_no, ones * 1e-3, alive, ones * clip, betas=(0.9, 0.95),
                       weight_decay=None if weight_decay is None else ones * weight_decay)

    return name, k, batch, sequential, batched


def time_compare(steps: list[tuple], chapter: str, repeats: int = 3) -> list[dict]:
    """Kernels and the fastest of ``repeats`` CPU times per step of each (name, K, batch, sequential, batched)."""
    rows = []
    for name, k, b, sequential, batched in steps:
        row = {"chapter": chapter, "group": f"{k} {name}", "models": k, "batch": b}
        for label, step in (("sequential", sequential), ("batched", batched)):
            with KernelCounter() as counter:
                step()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            row[f"{label} kernels/step"] = counter.count
            row[f"{label} CPU s/step"] = min(times)
        rows.append(row)
    return rows
