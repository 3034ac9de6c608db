"""Counting one training step on the meta device: its FLOPs (torch's FlopCounterMode), the kernels it launches
and the bytes they move (:class:`KernelCounter`), attention counted as the fused kernels a GPU runs."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from dropnotes.amp import autocast

_NO_LAUNCH = {"view", "_unsafe_view", "t", "transpose", "permute", "expand", "detach", "alias", "as_strided",
              "unsqueeze", "squeeze", "reshape", "slice", "select", "split", "split_with_sizes", "unbind",
              "chunk", "narrow", "view_as", "_reshape_alias", "lift_fresh", "_to_copy_meta", "empty",
              "empty_like", "empty_strided", "new_empty", "new_empty_strided", "_local_scalar_dense", "is_same_size",
              "sym_size", "sym_stride", "numel", "dim", "size", "stride", "_has_compatible_shallow_copy_type",
              "set_", "resize_", "contiguous", "_record_function_enter_new", "_record_function_exit"}


class KernelCounter(TorchDispatchMode):
    """Counts the aten operations dispatched inside it that launch device work."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.bytes = 0
        self.by_op: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        out = func(*args, **(kwargs or {}))
        if name not in _NO_LAUNCH:
            launches = _foreach_launches(name, args) if name.startswith("_foreach_") else 1
            self.count += launches
            self.by_op[name] = self.by_op.get(name, 0) + launches
            self.bytes += _moved_bytes(name, args, kwargs or {}, out)
        return out


# PyTorch's multi-tensor apply (ATen/native/cuda/MultiTensorApply.cuh, 4 KB kernel arguments): one launch serves
# up to this many tensors per list depth (the lists a kernel reads and writes), and 320 blocks of 65,536 elements.
_MTA_MAX_TENSORS = {1: 110, 2: 64, 3: 48, 4: 36, 5: 30}
_MTA_MAX_BLOCKS, _MTA_CHUNK = 320, 65536


def _foreach_launches(name: str, args) -> int:
    """The kernels a ``torch._foreach_*`` operation launches on a GPU. Its fast path (every list one dtype, each
    position's tensors of one shape) packs the lists into multi-tensor launches; otherwise it falls back to
    one kernel per tensor."""
    lists = [a for a in args if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor)]
    if not lists:  # empty lists: nothing to launch
        return 0
    first = lists[0]
    fast = all(len(lst) == len(first) and all(t.shape == u.shape and t.dtype == first[0].dtype
                                               for t, u in zip(lst, first)) for lst in lists)
    if not fast:
        return len(first)
    depth = min(len(lists) + (0 if name.endswith("_") else 1), 5)  # an out-of-place op writes one more list
    chunks = sum(math.ceil(t.numel() / _MTA_CHUNK) for t in first)
    return max(math.ceil(len(first) / _MTA_MAX_TENSORS[depth]), math.ceil(chunks / _MTA_MAX_BLOCKS), 1)


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _tensors(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _tensors(item)


_GATHERS = {"index", "index_select", "gather", "embedding"}  # read only the rows they return
_SCATTERS = {"index_copy_", "index_put_", "index_add_", "index_fill_"}  # in place: touch only the rows they write
# Write their output without reading their first argument (a template of shape and dtype, or the destination).
_WRITE_ONLY = {"new_zeros", "new_ones", "new_full", "new_empty", "zeros_like", "ones_like", "full_like", "rand_like",
               "randn_like", "fill_", "zero_", "uniform_", "normal_", "copy_"}


def _moved_bytes(name: str, args, kwargs: dict, out) -> int:
    """A kernel's bytes: its tensor arguments read and its outputs written (an ``out=`` argument counted
    as the output); a gather reads the rows it returns, not its whole source."""
    kwargs = {k: v for k, v in kwargs.items() if k != "out"}
    size = _distinct_bytes
    written = sum(size(t) for t in _tensors(out))
    if name.startswith("_foreach_") and name.endswith("_"):  # in place: returns nothing, writes its first list
        written = sum(size(t) for t in _tensors(args[0]))
    if name in _SCATTERS:
        return 2 * sum(size(t) for t in _tensors(args[1:]))
    if name in _GATHERS:
        read = written + sum(size(t) for t in _tensors(args[1:]))
    elif name in _WRITE_ONLY:  # copy_ reads its source (args[1]); the others read nothing
        read = sum(size(t) for t in _tensors((args[1:], kwargs)))
    else:
        read = sum(size(t) for t in _tensors((args, kwargs)))
    return read + written


def _distinct_bytes(t: torch.Tensor) -> int:
    """The bytes a kernel must move for ``t`` at least: its distinct elements (a broadcast axis, stride 0,
    is read once), at its dtype (a bf16 step runs under :class:`~dropnotes.amp.MetaAutocast`)."""
    return t.element_size() * math.prod(n for n, st in zip(t.shape, t.stride()) if st != 0)


@dataclass
class Cost:
    """What one step costs: FLOPs, launched kernels and the bytes they move through device memory (each
    kernel's inputs read once and outputs written once: a floor)."""

    flops: float
    kernels: int
    bytes: float

    def __iter__(self):
        return iter((self.flops, self.kernels, self.bytes))


def _fused_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """``scaled_dot_product_attention`` as a GPU runs it: one fused kernel forward and one backward (PyTorch's
    memory-efficient attention; flash attention in bf16 moves the same tensors). On the meta device PyTorch
    would pick its math fallback instead, which writes out the (N, heads, T, T) scores and their softmax.
    Dropout on the probabilities is drawn inside the fused kernels too."""
    if attn_mask is not None or enable_gqa:
        return _SDPA(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                     enable_gqa=enable_gqa)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    return torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, None, grad, float(dropout_p),
                                                                   is_causal, scale=scale)[0]


_SDPA = F.scaled_dot_product_attention


def measure(step: Callable[[], None]) -> Cost:
    """FLOPs, launched kernels and bytes moved of one call of ``step`` (run it on meta tensors; a bf16 step
    enters :func:`dropnotes.amp.autocast` on the meta device, which counts the casts and every tensor at
    its dtype). Attention is counted as the fused kernels a GPU runs (:func:`_fused_sdpa`)."""
    F.scaled_dot_product_attention = _fused_sdpa
    try:
        with FlopCounterMode(display=False) as flops, KernelCounter() as kernels:
            step()
    finally:
        F.scaled_dot_product_attention = _SDPA
    return Cost(float(flops.get_total_flops()), kernels.count, float(kernels.bytes))



# ------------------------------------------------------------------------------------------ measuring steps

def meta_step(model: nn.Module, inputs, targets, *, loss: Callable, optimizer: str = "sgd", amp: bool = False,
              clip: float | None = None, multi_tensor: bool = False) -> Cost:
    """FLOPs and kernels of forward + loss + backward + (clip) + optimizer step of ``model`` on meta tensors
    (with ``amp``, the forward under bf16 autocast; with ``multi_tensor``, torch.optim's multi-tensor
    implementation, which stands for the fused AdamW a chapter runs on CUDA, a few launches fewer). The
    optimizer's state is created by a first, unmeasured step."""
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=1e-3, foreach=multi_tensor)
    else:
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, foreach=multi_tensor)

    def step():
        with autocast("meta", torch.bfloat16 if amp else None):
            out = model(*inputs) if isinstance(inputs, tuple) else model(inputs)
        out = out[0] if isinstance(out, tuple) else out
        value = loss(out, targets)
        opt.zero_grad(set_to_none=True)
        value.backward()
        if clip is not None:
            if multi_tensor:  # clip_grad_norm_'s CUDA path (its foreach flag is refused on the meta device)
                grads = [q.grad for q in params]
                norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
                torch._foreach_mul_(grads, (clip / (norm + 1e-6)).clamp(max=1.0))
            else:
                torch.nn.utils.clip_grad_norm_(params, clip, foreach=False)
        opt.step()

    step()
    return measure(step)


def meta_forward(model: nn.Module, inputs, amp: bool = False) -> Cost:
    def step():
        with torch.no_grad(), autocast("meta", torch.bfloat16 if amp else None):
            model(inputs)
    return measure(step)


def lm_cross_entropy(out, y):
    """The language models' loss over every position (logits (..., V) against targets (...)), in fp32."""
    return F.cross_entropy(out.flatten(0, -2).float(), y.flatten())
