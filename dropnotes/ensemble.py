"""K models of one architecture evaluated as one with ``torch.func.stack_module_state`` + ``vmap``, and
the measurement that chose the book's training engine: a training step of K members as a Python loop,
as one ``vmap``-ed step, and as one step of :mod:`dropnotes.stacked`'s stacked ``baddbmm`` MLPs.

Training lives in one place, :func:`dropnotes.stacked.fit_stacked`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state

from dropnotes.runtime import Timer, check_positive_int
from dropnotes.stacked import StackedMLP


class VmapEnsemble:
    """K members of one architecture with stacked parameters; ``__call__`` returns (K, N, ...) outputs."""

    def __init__(self, make_model: Callable[[], nn.Module], k: int) -> None:
        self.k = check_positive_int("k", k)
        members = [make_model() for _ in range(self.k)]
        params, buffers = stack_module_state(members)
        self.params = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
        self.buffers = buffers
        self.base = copy.deepcopy(members[0]).to("meta")

    def _call_one(self, params, buffers, x):
        return functional_call(self.base, (params, buffers), (x,))

    def __call__(self, x: torch.Tensor, per_member: bool = False) -> torch.Tensor:
        """Outputs of every member: ``x`` is shared (N, ...) or, with ``per_member``, (K, N, ...)."""
        in_dims = (0, 0, 0 if per_member else None)
        return torch.vmap(self._call_one, in_dims=in_dims)(self.params, self.buffers, x)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def member(self, i: int) -> nn.Module:
        """A standalone copy of member ``i`` (a regular ``nn.Module``)."""
        model = copy.deepcopy(self.base).to_empty(device=next(iter(self.params.values())).device)
        model.load_state_dict({**{n: p[i].detach() for n, p in self.params.items()},
                               **{n: b[i] for n, b in self.buffers.items()}})
        return model


def step_time_loop_vs_vmap(make_model: Callable[[], nn.Module], k: int, x: torch.Tensor, y: torch.Tensor,
                           batch_size: int, steps: int = 30) -> dict[str, float]:
    """Seconds per training step of K members three ways: a Python loop over K models, one ``vmap``-ed
    step (:class:`VmapEnsemble`), and one step of the batched engine's stacked ``baddbmm`` MLPs
    (:class:`dropnotes.stacked.StackedMLP`, for MLP members): the measurement behind the engine's design."""
    models = [make_model().to(x.device) for _ in range(k)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m in models]
    ens = VmapEnsemble(lambda: make_model().to(x.device), k)
    opt = torch.optim.SGD(ens.parameters(), lr=0.01, momentum=0.9)
    xb, yb = x[:batch_size], y[:batch_size]
    xk, yk = xb.expand(k, *xb.shape), yb.expand(k, *yb.shape)

    def loop_step():
        for m, o in zip(models, opts):
            loss = F.cross_entropy(m(xb), yb)
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()

    def vmap_step():
        loss = F.cross_entropy(ens(xk, per_member=True).flatten(0, 1), yk.flatten()) * k
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    steps_to_time = [("loop", loop_step), ("vmap", vmap_step)]
    if all(isinstance(m, nn.Linear) or not list(m.parameters()) for m in models[0].modules()
           if m is not models[0] and not list(m.children())):
        stacked = StackedMLP.from_models(models)
        sopt = torch.optim.SGD(stacked.parameters(), lr=0.01, momentum=0.9)
        xs = xb.flatten(1)

        def stacked_step():
            loss = F.cross_entropy(stacked(xs).flatten(0, 1), yk.flatten()) * k  # one batch shared by all
            sopt.zero_grad(set_to_none=True)
            loss.backward()
            sopt.step()

        steps_to_time.append(("stacked", stacked_step))
    out = {}
    for name, step in steps_to_time:
        for _ in range(3):  # warm-up
            step()
        with Timer(x.device) as t:
            for _ in range(steps):
                step()
        out[f"{name}_s_per_step"] = t.seconds / steps
    out["speedup"] = out["loop_s_per_step"] / out["vmap_s_per_step"]
    if "stacked_s_per_step" in out:
        out["speedup_stacked"] = out["loop_s_per_step"] / out["stacked_s_per_step"]
    return out
