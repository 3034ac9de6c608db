"""Mixed precision: the one ``autocast`` of the package, for training, evaluation and the cost model alike.

On CPU and CUDA it is ``torch.autocast``; on the meta device, where ``dropnotes estimate`` counts a step's kernels
and bytes, it is :class:`MetaAutocast`, which casts as autocast does on a GPU.
"""

from __future__ import annotations

import contextlib

import torch

# torch.autocast's op lists for CUDA (the "CUDA Ops that can autocast" tables of PyTorch's AMP documentation):
# these run in the low-precision dtype, casting float32 inputs; those of _AUTOCAST_FP32 run in float32.
_AUTOCAST_LOW = {"mm", "bmm", "baddbmm", "addmm", "addbmm", "addmv", "addr", "matmul", "__matmul__", "__rmatmul__",
                 "mv", "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                 "conv_transpose3d", "prelu", "scaled_dot_product_attention", "chain_matmul", "multi_dot"}
_AUTOCAST_FP32 = {"__pow__", "__rdiv__", "__rpow__", "__rtruediv__", "acos", "asin", "cosh", "erfinv", "exp", "expm1",
                  "log", "log10", "log1p", "log2", "pow", "prod", "reciprocal", "rsqrt", "sinh", "tan", "sum", "cumsum",
                  "cumprod", "norm", "renorm", "dist", "cdist", "pdist", "softmax", "softmin", "log_softmax",
                  "softplus", "layer_norm", "group_norm", "normalize", "cross_entropy", "nll_loss", "kl_div",
                  "mse_loss", "l1_loss", "smooth_l1_loss", "binary_cross_entropy_with_logits", "cosine_similarity"}


class MetaAutocast(torch.overrides.TorchFunctionMode):
    """``torch.autocast`` with its cache disabled, for the meta device (which autocast does not support): what
    ``dropnotes estimate`` runs a bf16 step under, so that it counts the casts a GPU performs and every tensor
    at the dtype it has there. Each operation of autocast's low-precision list casts its float32 tensor
    arguments (each use again, as with ``cache_enabled=False``), those of its float32 list cast low-precision
    arguments up, and the others run as they come (type promotion, as under autocast)."""

    def __init__(self, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.dtype = dtype

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _AUTOCAST_LOW:
            src, dst = (torch.float32,), self.dtype
        elif name in _AUTOCAST_FP32:
            src, dst = (torch.float16, torch.bfloat16), torch.float32
        else:
            return func(*args, **kwargs)
        cast = lambda a: a.to(dst) if isinstance(a, torch.Tensor) and a.dtype in src else a  # noqa: E731
        return func(*[cast(a) for a in args], **{k: cast(v) for k, v in kwargs.items()})


def autocast(device: torch.device | str, dtype: torch.dtype | None, cache_enabled: bool = True):
    """``torch.autocast`` for ``dtype`` on ``device`` (a device or its type, ``"cuda"``); a no-op when ``dtype`` is
    None; on the meta device (``dropnotes estimate``), :class:`MetaAutocast`."""
    device_type = device if isinstance(device, str) else device.type
    if dtype is None:
        return contextlib.nullcontext()
    if device_type == "meta":
        return MetaAutocast(dtype)
    return torch.autocast(device_type, dtype=dtype, cache_enabled=cache_enabled)
