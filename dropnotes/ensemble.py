"""Explicit ensembles trained in one vectorised pass (``torch.func.stack_module_state`` + ``vmap``).

K copies of a model, each with its own initialisation and its own mini-batch order, are trained
together: their parameters are stacked along a leading K axis and one ``vmap``-ed forward and
backward serves all members. Summing the members' losses keeps their gradients independent, and
SGD with momentum acts elementwise, so this is K independent trainings done at once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state

from dropnotes.runtime import Timer, check_positive_int, progress


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


def fit_ensemble(ens: VmapEnsemble, x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int,
                 lr: float, momentum: float, generator: torch.Generator | None = None) -> None:
    """Train every member for ``epochs`` with its own shuffling; plain SGD with momentum."""
    opt = torch.optim.SGD(ens.parameters(), lr=lr, momentum=momentum)
    n = x.shape[0]
    gen_device = generator.device if generator is not None else x.device
    batch_size = check_positive_int("batch_size", batch_size)
    for _ in progress(range(check_positive_int("epochs", epochs)), f"ensemble of {ens.k}"):
        orders = torch.stack([torch.randperm(n, generator=generator, device=gen_device)
                              for _ in range(ens.k)]).to(x.device)
        for start in range(0, n, batch_size):
            idx = orders[:, start:start + batch_size]  # (K, B): each member's own batch
            logits = ens(x[idx], per_member=True)
            loss = F.cross_entropy(logits.flatten(0, 1), y[idx].flatten(), reduction="mean") * ens.k
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def step_time_loop_vs_vmap(make_model: Callable[[], nn.Module], k: int, x: torch.Tensor, y: torch.Tensor,
                           batch_size: int, steps: int = 30) -> dict[str, float]:
    """Seconds per training step of K members: a Python loop over K models versus one vmapped step."""
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

    out = {}
    for name, step in (("loop", loop_step), ("vmap", vmap_step)):
        for _ in range(3):  # warm-up
            step()
        with Timer(x.device) as t:
            for _ in range(steps):
                step()
        out[f"{name}_s_per_step"] = t.seconds / steps
    out["speedup"] = out["loop_s_per_step"] / out["vmap_s_per_step"]
    return out
