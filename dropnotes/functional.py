r"""Dropout variants as pure functions.

Every function takes the *drop* probability ``p`` in [0, 1) (PyTorch's convention; Srivastava et
al. 2014 and Wan et al. 2013 write the *keep* probability), returns its input unchanged — with no
random numbers drawn — when ``training`` is false or ``p == 0``, and draws its masks from torch's
default generator of the input's device, so ``torch.manual_seed`` fixes them.

Masks are built at the reduced shape each variant shares them over (per channel, per sequence,
per sample, per word type) and broadcast, so no tensor of the input's size is kept that autograd
does not need.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dropnotes.runtime import check_flag, check_positive_int, check_probability

__all__ = [
    "dropout", "gaussian_dropout", "dropconnect", "spatial_dropout", "variational_dropout",
    "embedding_dropout", "drop_path", "drop_path_skip", "drop_block", "concrete_dropout",
]


def _keep_mask(shape: tuple[int, ...], keep: float, like: torch.Tensor, scale: bool = True) -> torch.Tensor:
    """Bernoulli(keep) mask of ``shape`` in ``like``'s dtype and device, divided by ``keep`` if ``scale``."""
    mask = torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(keep)
    return mask.div_(keep) if scale else mask


class _MaskedScale(torch.autograd.Function):
    """``x * mask * scale`` with a bool ``mask`` and a 0-d ``scale``, keeping only the 1-byte mask (and the
    scalar) for the backward, as ``F.dropout`` does, instead of a mask in ``x``'s dtype."""

    generate_vmap_rule = True  # torch.func.vmap (dropnotes.ensemble) batches it like any elementwise op

    @staticmethod
    def forward(x: torch.Tensor, mask: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        # one new tensor, then an in-place scaling: a bool operand in a product takes a slow casting path on CPU
        return torch.where(mask, x, 0.0).mul_(scale)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, mask, scale = inputs
        ctx.save_for_backward(mask, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        mask, scale = ctx.saved_tensors
        return torch.where(mask, grad, 0.0).mul_(scale), None, None


def _apply_keep(x: torch.Tensor, keep: float, shape: tuple[int, ...] | None = None, scale: bool = True) -> torch.Tensor:
    """``x`` times a Bernoulli(``keep``) mask of ``shape`` (``x``'s by default; broadcast), divided by ``keep`` if
    ``scale``. The mask is drawn exactly as :func:`_keep_mask` draws it (the same random numbers, the same
    values), but autograd keeps it as one byte per element of ``x`` at most: a full-size mask as bools, a broadcast
    one (smaller than ``x``) in ``x``'s dtype."""
    shape = tuple(x.shape if shape is None else shape)
    if math.prod(shape) < x.numel():  # a broadcast mask (spatial, variational, drop-path): small; one product is fastest
        return x * _keep_mask(shape, keep, x, scale)
    # drawn straight into a bool tensor: the same draws as in x's dtype (checked in tests/test_variants.py)
    mask = torch.empty(shape, dtype=torch.bool, device=x.device).bernoulli_(keep)
    factor = torch.ones((), dtype=x.dtype, device=x.device)
    if scale:
        factor.div_(keep)
    return _MaskedScale.apply(x, mask, factor)


def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True, inverted: bool = True) -> torch.Tensor:
    r"""Standard (Bernoulli) dropout, Srivastava et al. (2014).

    Each element is kept with probability :math:`1-p`. ``inverted=True`` (the modern form) scales
    kept units by :math:`1/(1-p)` in training so that :math:`\mathbb{E}[y] = x` and eval is the
    identity. ``inverted=False`` (the paper's form) does not scale in training; at test time the
    output is multiplied by :math:`1-p` ("weight scaling"). Both give the same expected activation.
    """
    p, training, inverted = check_probability("p", p), check_flag("training", training), check_flag("inverted", inverted)
    if p == 0.0:
        return x
    if inverted:
        return _apply_keep(x, 1.0 - p) if training else x
    return _apply_keep(x, 1.0 - p, scale=False) if training else x * (1.0 - p)


def gaussian_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    r"""Multiplicative Gaussian noise :math:`y = x\,\xi`, :math:`\xi \sim \mathcal{N}(1, p/(1-p))`.

    Same mean and variance as inverted Bernoulli dropout with rate ``p`` (Srivastava et al. 2014, §10).
    """
    p, training = check_probability("p", p), check_flag("training", training)
    if not training or p == 0.0:
        return x
    noise = torch.randn_like(x).mul_(math.sqrt(p / (1.0 - p))).add_(1.0)
    return x * noise


def dropconnect(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, p: float,
                training: bool = True) -> torch.Tensor:
    r"""A linear layer whose *weights* are dropped, Wan et al. (2013).

    :math:`y = x (M \odot W)^\top / (1-p) + b`, with one mask :math:`M` per call (shared by the
    mini-batch); unbiased in training, exactly ``F.linear`` in eval. The bias is not masked.
    """
    p, training = check_probability("p", p), check_flag("training", training)
    if not training or p == 0.0:
        return F.linear(x, weight, bias)
    return F.linear(x, _apply_keep(weight, 1.0 - p), bias)


def spatial_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    r"""Drop whole feature maps, Tompson et al. (2015): one mask value per (sample, channel).

    ``x`` has shape (N, C, \*); the mask has shape (N, C, 1, ..., 1) and is shared over all
    spatial positions, scaled by :math:`1/(1-p)`.
    """
    p, training = check_probability("p", p), check_flag("training", training)
    if x.dim() < 2:
        raise ValueError(f"spatial_dropout expects x of shape (N, C, *), got {tuple(x.shape)}")
    if not training or p == 0.0:
        return x
    return _apply_keep(x, 1.0 - p, x.shape[:2] + (1,) * (x.dim() - 2))


def variational_dropout(x: torch.Tensor, p: float, training: bool = True, batch_first: bool = True) -> torch.Tensor:
    r"""The same mask at every time step, Gal & Ghahramani (2016) ("locked" dropout).

    ``x`` is (N, T, D) when ``batch_first`` else (T, N, D); the mask is (N, 1, D) or (1, N, D):
    one per (sequence, feature), scaled by :math:`1/(1-p)`.
    """
    p, training = check_probability("p", p), check_flag("training", training)
    if x.dim() != 3:
        raise ValueError(f"variational_dropout expects a 3-D sequence batch, got shape {tuple(x.shape)}")
    if not training or p == 0.0:
        return x
    n, t, d = x.shape if batch_first else (x.shape[1], x.shape[0], x.shape[2])
    shape = (n, 1, d) if batch_first else (1, n, d)
    return _apply_keep(x, 1.0 - p, shape)


def embedding_dropout(input_ids: torch.Tensor, weight: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    r"""Drop whole word *types*, Gal & Ghahramani (2016): every occurrence of a dropped word is zero.

    One Bernoulli draw per vocabulary row (per call); kept rows are scaled by :math:`1/(1-p)`.
    Eval returns ``weight[input_ids]``.
    """
    p, training = check_probability("p", p), check_flag("training", training)
    out = F.embedding(input_ids, weight)
    if not training or p == 0.0:
        return out
    row_mask = _keep_mask((weight.shape[0],), 1.0 - p, weight)
    return out * row_mask[input_ids].unsqueeze(-1)


def drop_path(x: torch.Tensor, p: float, training: bool = True, scale_by_keep: bool = True) -> torch.Tensor:
    r"""Stochastic depth, Huang et al. (2016): one draw per sample (dim 0).

    Applied to a residual branch :math:`f(x)`: the whole branch of a sample is kept, scaled by
    :math:`1/(1-p)` when ``scale_by_keep``, or zeroed. The mask has shape (N, 1, ..., 1).
    """
    p, training = check_probability("p", p), check_flag("training", training)
    if not training or p == 0.0:
        return x
    return _apply_keep(x, 1.0 - p, (x.shape[0],) + (1,) * (x.dim() - 1), scale=scale_by_keep)


def drop_path_skip(x: torch.Tensor, branch, p: float, training: bool = True) -> torch.Tensor:
    r"""The residual step ``x + drop_path(f(x))``, computing ``f`` only for kept samples.

    Draws the same per-sample mask as :func:`drop_path` (same shape of random draws, so the same
    seed gives the same result), runs ``branch`` on the kept samples alone, and adds its output,
    scaled by :math:`1/(1-p)`, back into their rows. This saves the dropped fraction of the
    branch's compute, as the original stochastic-depth implementation did by skipping blocks
    (Huang et al. 2016). ``branch`` must treat samples independently (no batch statistics).
    """
    p, training = check_probability("p", p), check_flag("training", training)
    if not training or p == 0.0:
        return x + branch(x)
    keep = _keep_mask((x.shape[0],) + (1,) * (x.dim() - 1), 1.0 - p, x, scale=False).flatten()
    idx = keep.nonzero().squeeze(1)
    if idx.numel() == 0:
        return x
    return x.index_add(0, idx, branch(x.index_select(0, idx)) / (1.0 - p))


def drop_block(x: torch.Tensor, p: float, block_size: int, training: bool = True) -> torch.Tensor:
    r"""DropBlock, Ghiasi et al. (2018): drop contiguous ``block_size`` squares of (N, C, H, W) maps.

    Block corners are drawn per (sample, channel) with rate
    :math:`\gamma = \frac{p}{b^2}\frac{HW}{(H-b+1)(W-b+1)}` over the positions where a whole block
    fits, each seed grows into a :math:`b\times b` square, and the kept activations are rescaled by
    ``count(mask) / count_ones(mask)`` as in the paper's Algorithm 1. Overlapping blocks make the
    dropped fraction somewhat below ``p``. ``block_size`` is clipped to the map size.
    """
    p, training = check_probability("p", p), check_flag("training", training)
    block_size = check_positive_int("block_size", block_size)
    if x.dim() != 4:
        raise ValueError(f"drop_block expects x of shape (N, C, H, W), got {tuple(x.shape)}")
    if not training or p == 0.0:
        return x
    n, c, h, w = x.shape
    b = min(block_size, h, w)
    gamma = min(1.0, p * h * w / (b * b * (h - b + 1) * (w - b + 1)))
    with torch.no_grad():
        seeds = torch.empty((n, c, h - b + 1, w - b + 1), dtype=x.dtype, device=x.device).bernoulli_(gamma)
        dropped = F.max_pool2d(F.pad(seeds, (b - 1, b - 1, b - 1, b - 1)), kernel_size=b, stride=1)
        keep = dropped == 0
        scale = keep.numel() / keep.sum().to(x.dtype).clamp_min(1.0)  # count(mask) / count_ones(mask)
    return _MaskedScale.apply(x, keep, scale)


def concrete_dropout(x: torch.Tensor, p: torch.Tensor, temperature: float = 0.1, training: bool = True,
                     eps: float = 1e-7) -> torch.Tensor:
    r"""Concrete (relaxed Bernoulli) dropout with a *differentiable* rate, Gal, Hron & Kendall (2017).

    The drop mask and the output are

    .. math::

        z = \sigma\big((\log p - \log(1-p) + \log u - \log(1-u))/t\big), \quad u \sim U(0, 1);
        \qquad x (1-z) / (1-p).

    ``p`` is a tensor so that
    gradients reach it (a float is taken as a constant rate). Eval is the identity. A rate outside (0, 1) is
    refused by name (for a learned tensor rate, whose range its parametrisation keeps, the check is skipped so
    that no step waits on the device).
    """
    training = check_flag("training", training)
    if not isinstance(p, torch.Tensor):
        value = check_probability("p", p)
        if value == 0.0:
            raise ValueError(f"p must be in (0, 1), got {p!r}")
        p = torch.tensor(value, dtype=x.dtype, device=x.device)
    elif not p.requires_grad and not bool(((p > 0) & (p < 1)).all()):
        raise ValueError(f"p must be in (0, 1), got {p.detach().cpu().tolist()}")
    if not training:
        return x
    u = torch.rand_like(x).clamp_(eps, 1 - eps)
    logits = (torch.log(p + eps) - torch.log1p(-p + eps) + torch.log(u) - torch.log1p(-u)) / temperature
    return x * (1.0 - torch.sigmoid(logits)) / (1.0 - p)
