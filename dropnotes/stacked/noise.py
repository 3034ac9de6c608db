"""Per-model helpers and the noise primitives of the stacked models: per-model values and generators, Bernoulli and
Gaussian unit noise with per-model rates."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


def _values(name: str, value, k: int, *, check=None) -> list:
    """A scalar or a length-K sequence as a list of K values, each checked."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    values = list(value) if isinstance(value, (list, tuple)) else [value] * k
    if len(values) != k:
        raise ValueError(f"{name} must have one value per model ({k}), got {len(values)}")
    return [check(name, v) for v in values] if check is not None else values


def _per_model(name: str, value, k: int, *, check=None) -> torch.Tensor:
    """A scalar or a length-K sequence as a (K,) float tensor."""
    return torch.tensor([float(v) for v in _values(name, value, k, check=check)], dtype=torch.float32)


def _generators(seeds: Sequence[int] | None, k: int) -> list[tuple[int, torch.Generator]]:
    """One CPU generator per model from ``seeds`` (default 0..K-1): model k's initialisation then does not
    depend on the group it is trained in."""
    seeds = list(seeds) if seeds is not None else list(range(k))
    if len(seeds) != k:
        raise ValueError(f"seeds must have one value per model ({k}), got {len(seeds)}")
    return [(i, torch.Generator().manual_seed(int(s))) for i, s in enumerate(seeds)]


def _seeded(seeds: Sequence[int] | None, k: int, make):
    """(i, model) for each of the K models: ``make()`` on the CPU under ``torch.manual_seed(seeds[i])``
    (default i), so a stacked model starts as its standalone model of that seed does."""
    for i, g in _generators(seeds, k):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(g.initial_seed())
            with torch.device("cpu"):
                m = make()
        yield i, m


def dropout_mult(h: torch.Tensor, p: torch.Tensor, *, model_dim: int = 0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverted dropout's multiplier for every element of ``h`` (its axis ``model_dim`` the K models): 0 or
    1/(1-p_k), Bernoulli(1-p_k), in ``h``'s dtype; what :func:`unit_noise` multiplies by."""
    view = [1] * h.dim()
    view[model_dim] = h.shape[model_dim]
    keep = (1.0 - p).view(view)
    return _keep_mult(h, keep, 1.0 / keep, generator)


def _keep_mult(h: torch.Tensor, keep: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """The Bernoulli(keep) multiplier times ``scale`` (1/keep), in ``h``'s dtype. ``keep`` stays in the rate's
    dtype (float32), so that a bf16 ``h`` is dropped at the exact rate, and only the (K, 1, ...) scale is cast:
    the full-size multiplier is written in ``h``'s dtype."""
    return (torch.rand(h.shape, device=h.device, generator=generator) < keep) * scale.to(h.dtype)


def noise_constants(p: torch.Tensor) -> torch.Tensor:
    """(K, 3): keep = 1 - p, its reciprocal and the Gaussian noise's sigma = sqrt(p / (1 - p)), per model; what
    :func:`unit_noise` computes from ``p`` unless given them (a group whose rates never change keeps them as a
    buffer: three small kernels fewer per noise site and step)."""
    keep = 1.0 - p
    return torch.stack([keep, 1.0 / keep, (p / keep).sqrt()], dim=1)


def noise_plan(p: Sequence[float], gaussian: Sequence[bool] | None = None,
               spatial: Sequence[bool] | None = None) -> tuple[list[int], list[int], list[int]] | None:
    """The models of a group with fixed rates that draw each kind of noise: the indices of those that draw per-element
    Bernoulli masks, per-channel (spatial) ones and Gaussian multipliers, for :func:`unit_noise` to draw each kind
    for its own models only (a model at ``p = 0`` draws nothing). None when every model draws per-element Bernoulli
    masks: one draw over the whole tensor is then the cheapest. Python values in, Python lists out (a group built on
    the meta device, as the estimator builds them, has no values in its buffers)."""
    k = len(p)
    g = [float(p[i]) > 0 and bool(gaussian[i]) if gaussian is not None else False for i in range(k)]
    sp = [float(p[i]) > 0 and bool(spatial[i]) and not g[i] if spatial is not None else False for i in range(k)]
    bern = [float(p[i]) > 0 and not g[i] and not sp[i] for i in range(k)]
    if all(bern):
        return None
    return tuple([i for i, on in enumerate(m) if on] for m in (bern, sp, g))


def _planned_mult(h: torch.Tensor, model_dim: int, plan, keep, scale, sigma, generator) -> torch.Tensor:
    """The multiplier of :func:`unit_noise` drawn kind by kind, each for its own models only (:func:`noise_plan`);
    a model that draws nothing multiplies by 1."""
    bern, spatial, gauss = plan
    mult = torch.ones_like(h)

    def shape(idx: torch.Tensor, shared: bool = False) -> list[int]:
        s = list(h.shape)
        s[model_dim] = idx.shape[0]
        return s[:3] + [1] * (h.dim() - 3) if shared else s

    if bern.shape[0]:
        k, sc = keep.index_select(model_dim, bern), scale.index_select(model_dim, bern)
        mult.index_copy_(model_dim, bern, (torch.rand(shape(bern), device=h.device, generator=generator) < k)
                         * sc.to(h.dtype))
    if spatial.shape[0]:
        k, sc = keep.index_select(model_dim, spatial), scale.index_select(model_dim, spatial)
        shared = torch.rand(shape(spatial, shared=True), device=h.device, generator=generator) < k
        mult.index_copy_(model_dim, spatial, (shared * sc.to(h.dtype)).expand(shape(spatial)))
    if gauss.shape[0]:
        sg = sigma.index_select(model_dim, gauss).to(h.dtype)
        mult.index_copy_(model_dim, gauss,
                         torch.randn(shape(gauss), device=h.device, generator=generator, dtype=h.dtype) * sg + 1.0)
    return mult


def unit_noise(h: torch.Tensor, p: torch.Tensor, *, model_dim: int = 0, gaussian: torch.Tensor | None = None,
               spatial: torch.Tensor | None = None, generator: torch.Generator | None = None,
               mask: torch.Tensor | None = None, constants: torch.Tensor | None = None,
               plan: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    r"""Per-model multiplicative noise on ``h``, whose axis ``model_dim`` indexes the K models.

    Model k multiplies each unit by :math:`m/(1-p_k)` with :math:`m \sim \mathrm{Bernoulli}(1-p_k)` (inverted
    dropout), or, where ``gaussian[k]``, by :math:`\xi \sim \mathcal{N}(1, p_k/(1-p_k))` (the same mean and
    variance, Srivastava et al. 2014, §10); where ``spatial[k]`` one Bernoulli value is shared by each
    (sample, channel), the first three axes of ``h`` being sample, model and channel in some order
    (Tompson et al. 2015). ``mask`` replaces the draw: a boolean keep-mask, or the multiplier itself.
    ``constants``: :func:`noise_constants` of ``p``, if kept. ``plan``: :func:`noise_plan` of the same rates and
    kinds, if kept: each kind of noise is then drawn for its own models only (the same distribution, other draws)."""
    view = [1] * h.dim()
    view[model_dim] = h.shape[model_dim]
    keep, scale, sigma = (None, None, None) if constants is None else (c.view(view) for c in constants.unbind(1))
    if keep is None:
        keep = (1.0 - p).view(view)
        scale = 1.0 / keep
    if mask is not None:
        return h * mask * scale.to(h.dtype) if mask.dtype == torch.bool else h * mask
    if plan is not None:
        if sigma is None:
            sigma = (p / (1.0 - p)).sqrt().view(view)
        return h * _planned_mult(h, model_dim, plan, keep, scale, sigma, generator)
    mult = _keep_mult(h, keep, scale, generator)
    if spatial is not None:
        shared = torch.rand(h.shape[:3] + (1,) * (h.dim() - 3), device=h.device, generator=generator) < keep
        mult = torch.where(spatial.view(view), (shared * scale.to(h.dtype)).expand_as(h), mult)
    if gaussian is not None:
        sigma = ((p / (1.0 - p)).sqrt() if sigma is None else sigma).to(h.dtype).view(view)
        xi = torch.randn(h.shape, device=h.device, generator=generator, dtype=h.dtype) * sigma + 1.0
        mult = torch.where(gaussian.view(view), xi, mult)
    return h * mult


def _weight(k: int, out_features: int, in_features: int) -> nn.Parameter:
    """K weight matrices (K, out, in), torch's layout, for ``x @ w.transpose(1, 2)``, stored with each model's
    matrix column-major (the memory of a (K, in, out) tensor). The ``bmm``'s gradient for its (K, in, out)
    operand is row-major, so it then arrives in the parameter's own strides; with row-major storage autograd
    copies every such gradient into the parameter's layout, one more pass over the weights at each step."""
    return nn.Parameter(torch.empty(k, in_features, out_features).transpose(1, 2))
