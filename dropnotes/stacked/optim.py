"""Per-model optimisers of the stacked groups: SGD with momentum, AdamW, clipping and max-norm, element-wise with
per-model rates and a per-model alive flag."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from dropnotes.stacked.mlp import StackedMLP


def _flat(bufs: list) -> list[torch.Tensor]:
    """The optimizer's state tensors: momentum buffers, or each (m, v) pair's two (None entries left out)."""
    return [t for b in bufs for t in (b if isinstance(b, tuple) else (b,)) if t is not None]


def _per_model_shape(p: torch.Tensor) -> tuple[int, ...]:
    """The shape that broadcasts a (K,) vector over a (K, ...) tensor."""
    return (-1,) + (1,) * (p.dim() - 1)


def _clip_factor(grads, clip: torch.Tensor | None) -> torch.Tensor | None:
    """Each model's clipping factor ``min(1, clip[k] / |g_k|)`` over all its gradients (as ``clip_grad_norm_``
    computes for one model); the norms read each gradient once. None without clipping."""
    if clip is None:
        return None
    # over each model's dims in place (flattening a weight stored column-major would copy it; see _weight)
    grads = [g if g.dim() > 1 else g.unsqueeze(1) for g in grads]  # a (K,) parameter: K norms, not one
    sq = sum(torch.linalg.vector_norm(g, dim=tuple(range(1, g.dim()))).square() for g in grads)
    return (clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)


def _clipped_grads(params, clip: torch.Tensor | None) -> list[torch.Tensor]:
    """The parameters' gradients, each model's scaled in place to norm at most ``clip[k]``."""
    grads = [p.grad for p in params]
    factor = _clip_factor(grads, clip)
    if factor is not None:
        grads = [g.mul_(factor.view(_per_model_shape(g))) for g in grads]
    return grads


@torch.no_grad()
def _sgd_step(params, bufs, lr, wd, momentum: float, alive: torch.Tensor, clip) -> None:
    """``torch.optim.SGD`` (momentum, dampening 0, weight decay added to the gradient), per model (``bufs``
    holds each momentum buffer times ``1 - momentum``):
    lr, weight decay (None: none) and the clipping threshold are (K,) tensors, and dead models are not
    updated (their rate is 0; a non-finite gradient can still turn a dead model's parameters NaN, which
    touches no other model, and its best validation state is kept). In place, to keep the passes over the
    parameters few: the step is memory-bound when the models are wide and the batch small."""
    rate = lr * alive  # a dead model's learning rate is 0 (a (K,) product: no pass over the parameters)
    if wd is None and not momentum:  # plain SGD: the clipping factor joins the rate, no pass to scale the gradients
        grads = [p.grad for p in params]
        factor = _clip_factor(grads, clip)
        rate = rate if factor is None else rate * factor
    else:
        grads = _clipped_grads(params, clip)
    ds = grads if wd is None else [g.addcmul_(wd.view(_per_model_shape(p)), p) for p, g in zip(params, grads)]
    if momentum:
        # torch.optim.SGD's buffer b <- momentum * b + d, kept as (1 - momentum) * b: then the update is one
        # lerp over all parameters at once (multi-tensor kernels, one pass), and the step divides by 1 - momentum
        torch._foreach_lerp_(bufs, ds, 1.0 - momentum)
        ds, rate = bufs, rate / (1.0 - momentum)
    for p, d in zip(params, ds):  # a per-model rate broadcasts differently for every shape: one kernel each
        p.addcmul_(rate.view(_per_model_shape(p)), d, value=-1.0)  # p -= lr * d


@torch.no_grad()
def _adam_step(params, moments, step: torch.Tensor, lr: torch.Tensor, alive: torch.Tensor, clip,
               betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
               weight_decay: torch.Tensor | None = None) -> None:
    """``torch.optim.Adam`` per model, or ``torch.optim.AdamW`` with a (K,) ``weight_decay`` (decoupled:
    each parameter first shrinks by ``1 - lr_k * wd_k``): lr and the clipping threshold are (K,) tensors;
    ``moments`` holds each parameter's (m, v); ``step`` is the step count, already advanced. The moment
    updates run over all parameters at once (multi-tensor ``torch._foreach_*`` kernels, as
    ``torch.optim.Adam(foreach=True)`` does); only the per-model rates take one kernel per parameter."""
    grads = _clipped_grads(params, clip)
    b1, b2 = betas
    t = step.to(torch.float32)
    correction1, correction2 = 1 - torch.pow(b1, t), 1 - torch.pow(b2, t)
    shrink = None if weight_decay is None else 1 - lr * alive * weight_decay  # (K,)
    rate = lr * alive / correction1  # (K,): a dead model's rate is 0
    ms, vs = [m for m, _ in moments], [v for _, v in moments]
    torch._foreach_lerp_(ms, grads, 1 - b1)
    torch._foreach_mul_(vs, b2)
    torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
    denoms = torch._foreach_div(vs, correction2)
    torch._foreach_sqrt_(denoms)
    torch._foreach_add_(denoms, eps)
    updates = torch._foreach_div(ms, denoms)  # m / (sqrt(v / c2) + eps)
    for p, u in zip(params, updates):
        if shrink is not None:
            p.mul_(shrink.view(_per_model_shape(p)))
        p.addcmul_(rate.view(_per_model_shape(p)), u, value=-1.0)


@torch.no_grad()
def _max_norm_(model: "StackedMLP", max_norm: torch.Tensor, index: torch.Tensor | None = None) -> None:
    """Srivastava et al.'s max-norm, per model: every unit's incoming weight vector (each layer's rows, as
    :func:`dropnotes.train.max_norm_` does for ``nn.Linear``) is projected onto the ball of radius c_k;
    ``index``: the models the radii belong to (None: all)."""
    for w in model.weights:
        sub = w if index is None else w[index]
        norms = sub.norm(dim=2, keepdim=True)
        factor = (max_norm.view(-1, 1, 1) / (norms + 1e-7)).clamp(max=1.0)
        if index is None:
            w.mul_(factor)
        else:
            w.index_copy_(0, index, sub * factor)
