"""The batched engine: K independent models of one architecture trained as one, in one step.

One small MLP cannot keep a GPU busy: its step is a few dozen tiny kernels, each costing more to
launch than to run. Stacking K models along a leading axis keeps the number of kernels per step
(one ``baddbmm`` instead of K ``addmm``) and multiplies the useful work by K, so the arms × seeds
of a chapter cost about as much as one model (see ``shared/design-notes``; measured by
``dropnotes estimate``).

Each of the K models has its own

* initialisation (stacked from K ordinary :class:`~dropnotes.models.MLP` modules, or drawn here),
* data order (a (K, N) permutation drawn per epoch),
* noise: input and hidden drop rates, the noise's kind (Bernoulli or Gaussian units, DropConnect on the
  weights; pixel-wise or channel-wise in a CNN),
* learning rate, weight decay, max-norm and gradient-clipping threshold,
* early-stopping record (its best parameters and epoch on the validation data), and
* life: a model whose loss stops being finite is frozen at that step and reported; the others go on.

The maths is exactly K separate trainings: the loss is the sum of the K mean losses, so each model's
gradient is its own; SGD with momentum is applied per element with per-model rates; Bernoulli masks
use per-model keep probabilities. The masks of the K models come from one generator per group (one
kernel per layer), so model k's masks depend on which models share its group: the group is recorded
in the history (``group``) so a number can be reproduced.

Four architectures are stacked: :class:`StackedMLP` (batched matrix products), :class:`StackedCNN`
(chapter 6's batch-norm CNN as grouped convolutions: model k owns channel block k of every layer, so its
batch-norm statistics are its own), :class:`StackedLSTMLM` (chapter 3's language models, each with its
own dropout scheme, one batched LSTM cell per time step; trained by :func:`fit_stacked_lm`) and
:class:`StackedViT` (chapter 4's Vision Transformers, each with its own per-block drop-path rates; trained
by :func:`fit_stacked` with AdamW, a per-epoch schedule and augmentation).

No host synchronisation happens inside an epoch: losses, errors and the alive flags stay on the
device and are read at the evaluation points only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from dropnotes.models.lstm_lm import SCHEMES, scheme_rates
from dropnotes.runtime import MetaAutocast, Timer, autocast, check_choice, check_positive_int, check_probability, progress


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


def unit_noise(h: torch.Tensor, p: torch.Tensor, *, model_dim: int = 0, gaussian: torch.Tensor | None = None,
               spatial: torch.Tensor | None = None, generator: torch.Generator | None = None,
               mask: torch.Tensor | None = None, constants: torch.Tensor | None = None) -> torch.Tensor:
    r"""Per-model multiplicative noise on ``h``, whose axis ``model_dim`` indexes the K models.

    Model k multiplies each unit by :math:`m/(1-p_k)` with :math:`m \sim \mathrm{Bernoulli}(1-p_k)` (inverted
    dropout), or, where ``gaussian[k]``, by :math:`\xi \sim \mathcal{N}(1, p_k/(1-p_k))` (the same mean and
    variance, Srivastava et al. 2014, §10); where ``spatial[k]`` one Bernoulli value is shared by each
    (sample, channel), the first three axes of ``h`` being sample, model and channel in some order
    (Tompson et al. 2015). ``mask`` replaces the draw: a boolean keep-mask, or the multiplier itself.
    ``constants``: :func:`noise_constants` of ``p``, if kept."""
    view = [1] * h.dim()
    view[model_dim] = h.shape[model_dim]
    keep, scale, sigma = (None, None, None) if constants is None else (c.view(view) for c in constants.unbind(1))
    if keep is None:
        keep = (1.0 - p).view(view)
        scale = 1.0 / keep
    if mask is not None:
        return h * mask * scale.to(h.dtype) if mask.dtype == torch.bool else h * mask
    mult = _keep_mult(h, keep, scale, generator)
    if spatial is not None:
        shared = torch.rand(h.shape[:3] + (1,) * (h.dim() - 3), device=h.device, generator=generator) < keep
        mult = torch.where(spatial.view(view), (shared * scale.to(h.dtype)).expand_as(h), mult)
    if gaussian is not None:
        sigma = ((p / (1.0 - p)).sqrt() if sigma is None else sigma).to(h.dtype).view(view)
        xi = torch.randn(h.shape, device=h.device, generator=generator, dtype=h.dtype) * sigma + 1.0
        mult = torch.where(gaussian.view(view), xi, mult)
    return h * mult


class StackedMLP(nn.Module):
    """K ReLU MLPs ``in -> hidden... -> out`` (Srivastava et al. 2014) with stacked parameters.

    ``weights[i]`` has shape (K, out_i, in_i) and ``biases[i]`` (K, out_i). ``forward`` takes one batch
    (B, ...) for all models, or each model's own (K, B, ...) with ``per_model=True``, and returns (K, B, out). In training,
    model k drops its inputs with rate ``p_input[k]`` and its hidden units with ``p_hidden[k]`` (inverted
    dropout: kept units scaled by 1/(1-p)), or with ``noise[k] = "gaussian"`` multiplies them by
    N(1, p/(1-p)) noise instead; ``p_connect[k]`` drops the *weights* of every hidden layer (all but the
    output layer) with one mask per mini-batch (DropConnect, Wan et al. 2013, scaled by 1/(1-p)). In eval
    mode every model is deterministic. The noise settings are fixed at construction.
    """

    NOISES = ("bernoulli", "gaussian")

    def __init__(self, k: int, in_features: int, hidden: Sequence[int], out_features: int, *,
                 p_input=0.0, p_hidden=0.0, noise="bernoulli", p_connect=0.0,
                 seeds: Sequence[int] | None = None) -> None:
        super().__init__()
        self.k = check_positive_int("k", k)
        widths = [check_positive_int("in_features", in_features)] + [check_positive_int("hidden", h) for h in hidden]
        widths.append(check_positive_int("out_features", out_features))
        self.register_buffer("p_input", _per_model("p_input", p_input, k, check=check_probability))
        self.register_buffer("p_hidden", _per_model("p_hidden", p_hidden, k, check=check_probability))
        for site in ("input", "hidden"):  # the rates are fixed: their noise constants kept
            self.register_buffer(f"noise_{site}", noise_constants(getattr(self, f"p_{site}")))
        kinds = _values("noise", noise, k, check=lambda n, v: check_choice(n, v, self.NOISES))
        self.noise = tuple(kinds)
        self._any_gaussian = "gaussian" in kinds
        self._sites = {site: any(float(v) > 0 for v in _values(f"p_{site}", rate, k))  # a site no model uses is skipped
                       for site, rate in (("input", p_input), ("hidden", p_hidden))}
        self.register_buffer("gaussian", torch.tensor([v == "gaussian" for v in kinds]))
        connect = _values("p_connect", p_connect, k, check=check_probability)
        self.register_buffer("p_connect", torch.tensor([float(v) for v in connect]))
        self._connected = [i for i, v in enumerate(connect) if v > 0]
        self.register_buffer("connect_index", torch.tensor(self._connected, dtype=torch.long))
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
        for i, g in _generators(seeds, self.k):
            for w, b in zip(self.weights, self.biases):
                bound = 1.0 / math.sqrt(w.shape[2])  # kaiming_uniform(a=sqrt(5)) and the bias rule of nn.Linear
                w[i].copy_(torch.empty(w.shape[1:]).uniform_(-bound, bound, generator=g))
                b[i].copy_(torch.empty(b.shape[1:]).uniform_(-bound, bound, generator=g))

    @classmethod
    def from_models(cls, models: Sequence[nn.Module], *, p_input=0.0, p_hidden=0.0, noise="bernoulli",
                    p_connect=0.0) -> "StackedMLP":
        """Stack K models made of ``nn.Linear`` layers (e.g. :class:`~dropnotes.models.MLP`) into one group."""
        linears = [[m for m in model.modules() if isinstance(m, nn.Linear)] for model in models]
        widths = [linears[0][0].in_features] + [lin.out_features for lin in linears[0]]
        out = cls(len(models), widths[0], widths[1:-1], widths[-1], p_input=p_input, p_hidden=p_hidden, noise=noise,
                  p_connect=p_connect)
        with torch.no_grad():
            for i, layers in enumerate(linears):
                for w, b, lin in zip(out.weights, out.biases, layers):
                    w[i].copy_(lin.weight)
                    b[i].copy_(lin.bias)
        return out.to(linears[0][0].weight.device)

    def model(self, i: int) -> nn.Module:
        """Model ``i`` as a standalone :class:`~dropnotes.models.MLP` (with its own drop rates), e.g. for
        MC-dropout prediction with :func:`dropnotes.mc.mc_predict`. Bernoulli unit dropout only: a Gaussian or
        DropConnect model has no standalone :class:`~dropnotes.models.MLP` form."""
        from dropnotes.models import MLP

        if self.noise[i] != "bernoulli" or float(self.p_connect[i]) > 0:
            raise ValueError(f"model {i} uses {self.noise[i]} noise / DropConnect; model(i) takes Bernoulli-dropout models")

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
                         p_input=self.p_input[index].tolist(), p_hidden=self.p_hidden[index].tolist(),
                         noise=[self.noise[i] for i in index], p_connect=self.p_connect[index].tolist())
        with torch.no_grad():
            for w_out, b_out, w, b in zip(out.weights, out.biases, self.weights, self.biases):
                w_out.copy_(w[index])
                b_out.copy_(b[index])
        return out.to(self.weights[0].device)

    def extra_repr(self) -> str:
        shape = " -> ".join(str(w.shape[2]) for w in self.weights) + f" -> {self.weights[-1].shape[1]}"
        return f"k={self.k}, {shape}"

    def _drop(self, h: torch.Tensor, site: str, generator: torch.Generator | None,
              mask: torch.Tensor | None = None) -> torch.Tensor:
        """The noise of dropout site ``site`` ("input" or "hidden"), in training only."""
        if not self.training or (mask is None and not self._sites[site]):
            return h
        return unit_noise(h, getattr(self, f"p_{site}"), gaussian=self.gaussian if self._any_gaussian else None,
                          generator=generator, mask=mask, constants=getattr(self, f"noise_{site}"))

    def _layer(self, i: int, h: torch.Tensor, generator, connect_mask) -> torch.Tensor:
        # (W h^T + b)^T rather than h W^T + b: the weight gradient then comes out in the weights' own layout,
        # which saves a full copy of every weight gradient per step (the step is memory-bound)
        if not (self.training and self._connected and i < len(self.weights) - 1):
            w, b = self.weights[i].to(h.dtype), self.biases[i].unsqueeze(2).to(h.dtype)
            return torch.baddbmm(b, w, h.transpose(1, 2)).transpose(1, 2)
        ci = self.connect_index  # DropConnect: the connected models' weights masked, one mask per mini-batch
        keep = (1.0 - self.p_connect[ci]).view(-1, 1, 1)
        if connect_mask is None:
            shape = (len(self._connected),) + self.weights[i].shape[1:]
            connect_mask = torch.rand(shape, device=h.device, generator=generator) < keep
        return _ConnectedLinear.apply(h, self.weights[i], self.biases[i], ci, connect_mask * (1.0 / keep))

    def forward(self, x: torch.Tensor, per_model: bool = False, generator: torch.Generator | None = None,
                masks: Sequence[torch.Tensor] | None = None,
                connect_masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """``x``: one batch (B, ...) for every model, or with ``per_model`` each model's own (K, B, ...).
        ``masks`` (optional, for tests): one boolean keep-mask (or multiplier) per dropout site, (K, B, width);
        ``connect_masks``: one boolean weight keep-mask per hidden layer for the DropConnect models,
        (number of them, out, in)."""
        x = x.flatten(2) if per_model else x.flatten(1).unsqueeze(0).expand(self.k, x.shape[0], -1)
        masks = list(masks) if masks is not None else [None] * len(self.weights)
        connect_masks = list(connect_masks) if connect_masks is not None else [None] * len(self.weights)
        h = self._drop(x, "input", generator, masks[0])
        last = len(self.weights) - 1
        for i in range(len(self.weights)):
            h = self._layer(i, h, generator, connect_masks[i])
            if i < last:
                h = self._drop(F.relu(h), "hidden", generator, masks[i + 1])
        return h


class StackedSparseMLP(nn.Module):
    r"""K ReLU nets of sparse variational layers (:class:`~dropnotes.models.SparseMLP`, Molchanov et al. 2017)
    with stacked parameters: per-weight Gaussian dropout rates :math:`\alpha` learned with the local
    reparameterisation trick, weights of :math:`\log\alpha >` ``threshold`` pruned in eval mode, exactly as
    :class:`~dropnotes.layers.SparseVariationalLinear` computes them. :meth:`penalty` is each model's KL term
    (K,), which :func:`fit_stacked` adds to the loss with ``penalty_weight``."""

    def __init__(self, k: int, in_features: int = 784, hidden: Sequence[int] = (300, 100), out_features: int = 10,
                 seeds: Sequence[int] | None = None) -> None:
        super().__init__()
        from dropnotes.layers import SparseVariationalLinear

        self.k = check_positive_int("k", k)
        self.widths = [in_features, *hidden, out_features]
        self.threshold = 3.0
        self.kl_consts = (SparseVariationalLinear.K1, SparseVariationalLinear.K2, SparseVariationalLinear.K3)
        self.weights, self.log_sigma2, self.biases = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        for a, b in zip(self.widths[:-1], self.widths[1:]):
            self.weights.append(_weight(k, b, a))  # both stored for the bmms (see _weight)
            self.log_sigma2.append(_weight(k, b, a))
            self.biases.append(nn.Parameter(torch.empty(k, b)))
        self.reset_parameters(seeds)

    @torch.no_grad()
    def reset_parameters(self, seeds: Sequence[int] | None = None) -> None:
        """Model k initialised as ``SparseMLP(...)`` is under ``torch.manual_seed(seeds[k])`` (default k)."""
        from dropnotes.models import SparseMLP

        for i, m in _seeded(seeds, self.k, lambda: SparseMLP(self.widths[0], tuple(self.widths[1:-1]), self.widths[-1])):
            self._copy(m, i, into_group=True)

    def _copy(self, m: nn.Module, i: int, into_group: bool) -> None:
        for layer, w, s, b in zip(m.layers, self.weights, self.log_sigma2, self.biases):
            for mine, theirs in ((w, layer.weight), (s, layer.log_sigma2), (b, layer.bias)):
                (mine[i].copy_(theirs) if into_group else theirs.copy_(mine[i]))

    @classmethod
    def from_models(cls, models: Sequence[nn.Module]) -> "StackedSparseMLP":
        first = models[0]
        out = cls(len(models), first.layers[0].in_features, tuple(lin.out_features for lin in first.layers[:-1]),
                  first.layers[-1].out_features)
        with torch.no_grad():
            for i, m in enumerate(models):
                out._copy(m, i, into_group=True)
        return out.to(first.layers[0].weight.device)

    def model(self, i: int) -> nn.Module:
        """Model ``i`` as a standalone :class:`~dropnotes.models.SparseMLP`."""
        from dropnotes.models import SparseMLP

        m = SparseMLP(self.widths[0], tuple(self.widths[1:-1]), self.widths[-1]).to(self.weights[0].device)
        with torch.no_grad():
            self._copy(m, i, into_group=False)
        return m

    def extra_repr(self) -> str:
        return f"k={self.k}, widths={self.widths}, threshold={self.threshold}"

    def log_alpha(self, j: int) -> torch.Tensor:
        return (self.log_sigma2[j] - torch.log(self.weights[j] ** 2 + 1e-8)).clamp(-10.0, 10.0)

    def forward(self, x: torch.Tensor, per_model: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x``: (N, ...) for every model or, with ``per_model``, each model's own (K, N, ...); logits (K, N, out).
        In training, the layers' KL terms are computed with the variances (:class:`_SparseWeights`) and kept
        for the next :meth:`penalty` of the same weights."""
        h = x.flatten(2) if per_model else x.flatten(1).unsqueeze(0).expand(self.k, -1, -1)
        last = len(self.weights) - 1
        kls = []
        for j, (w, b) in enumerate(zip(self.weights, self.biases)):
            if self.training:  # local reparameterisation: Gaussian pre-activations
                w_var, kl = _SparseWeights.apply(w, self.log_sigma2[j], self.kl_consts)
                kls.append(kl)
                mean = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
                var = torch.bmm(h * h, w_var.transpose(1, 2))
                noise = torch.randn(mean.shape, device=mean.device, generator=generator, dtype=mean.dtype)
                h = torch.addcmul(mean, torch.sqrt(var + 1e-8), noise)
            else:
                h = torch.baddbmm(b.unsqueeze(1), h, (w * (self.log_alpha(j) < self.threshold)).transpose(1, 2))
            if j < last:
                h = torch.relu(h)
        self._kl = (kls, self._versions()) if self.training else None
        return h

    def _versions(self) -> list[int]:
        """The in-place versions of the tensors the KL terms depend on (an optimizer step changes them)."""
        return [t._version for t in (*self.weights, *self.log_sigma2)]

    def penalty(self) -> torch.Tensor:
        """Each model's KL term (nats), Molchanov et al.'s approximation under the log-uniform prior: (K,).
        After a training forward of the same weights, its terms are reused (no second pass over them)."""
        kept = getattr(self, "_kl", None)
        if kept is not None and kept[1] == self._versions():
            self._kl = None
            return sum(kept[0])
        return sum(_SparseWeights.apply(w, s, self.kl_consts)[1] for w, s in zip(self.weights, self.log_sigma2))

    @torch.no_grad()
    def sparsity(self) -> list[list[float]]:
        """Per model, the fraction of weights pruned in each layer."""
        return [[float(v) for v in (self.log_alpha(j) >= self.threshold).float().flatten(1).mean(1)]
                for j in range(len(self.weights))]

    @torch.no_grad()
    def compression(self) -> list[float]:
        """Per model, all weights over the weights kept in eval mode."""
        kept = sum((self.log_alpha(j) < self.threshold).flatten(1).sum(1) for j in range(len(self.weights)))
        total = sum(w[0].numel() for w in self.weights)
        return [total / max(int(n), 1) for n in kept]


class _SparseWeights(torch.autograd.Function):
    r"""What a sparse variational layer computes from its weights ``w`` and ``log_sigma2`` (K, out, in), in one
    pass with a written-out backward: the weight variances :math:`\alpha w^2` that the local reparameterisation
    trick needs, and each model's KL term (K,) of Molchanov et al.'s approximation,
    :math:`-\sum [k_1 \sigma(k_2 + k_3 \log\alpha) - \tfrac12 \log(1 + \alpha^{-1}) - k_1]`, with
    :math:`\log\alpha = \mathrm{clamp}(\log\sigma^2 - \log(w^2 + 10^{-8}), -10, 10)` (as
    :class:`~dropnotes.layers.SparseVariationalLinear`). Autograd's own backward of these few lines launches
    about three times the kernels, which bounds the step's time on a GPU."""

    @staticmethod
    def forward(ctx, w, log_sigma2, consts):
        k1, k2, k3 = consts
        s = w * w
        s_eps = s + 1e-8
        u = log_sigma2 - torch.log(s_eps)
        la = u.clamp(-10.0, 10.0)
        e = torch.exp(la)
        w_var = e * s
        z = torch.sigmoid(la * k3 + k2)
        # 0.5 log(1 + 1/alpha) = -0.5 log(sigmoid(log alpha)); the sum of -0.5 (logsigmoid + 2 k1 z), plus k1 each
        kl = torch.add(F.logsigmoid(la), z, alpha=2.0 * k1).sum(tuple(range(1, la.dim()))) * -0.5 + k1 * la[0].numel()
        ctx.save_for_backward(w, s_eps, u, la, e, w_var, z)
        ctx.k1k3 = k1 * k3
        return w_var, kl

    @staticmethod
    def backward(ctx, g_var, g_kl):
        w, s_eps, u, la, e, w_var, z = ctx.saved_tensors
        d_la = torch.zeros_like(la) if g_var is None else g_var * w_var  # d(alpha w^2)/d log(alpha) = alpha w^2
        if g_kl is not None:  # d KL / d log(alpha) = -(k1 k3 z (1 - z) + sigma(-log alpha) / 2)
            slope = torch.addcmul(0.5 * torch.sigmoid(-la), z, 1.0 - z, value=ctx.k1k3)
            d_la = torch.addcmul(d_la, slope, g_kl.view(-1, *(1,) * (la.dim() - 1)), value=-1.0)
        d_u = d_la * (u == la)  # the clamp passes the gradient inside its range, bounds included
        d_s = -d_u / s_eps if g_var is None else torch.addcdiv(g_var * e, d_u, s_eps, value=-1.0)
        return torch.mul(w, d_s).mul_(2.0), d_u, None


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype in force for ``device_type``, or None (also for devices autocast does not know)."""
    if device_type == "meta":  # `dropnotes estimate`: the emulated autocast, if one is active
        modes = [m for m in torch.overrides._get_current_function_mode_stack() if isinstance(m, MetaAutocast)]
        return modes[-1].dtype if modes else None
    try:
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    except RuntimeError:  # a device autocast does not know
        return None


class _ConnectedLinear(torch.autograd.Function):
    """K stacked linear layers, the models at ``index`` with their weights multiplied by ``scale`` (DropConnect's
    mask / keep). Written out so that the backward pass writes the connected models' weight gradients in
    place: through autograd, indexing the weights would add a zero-filled full-size gradient every step."""

    @staticmethod
    def forward(ctx, h, w, b, index, scale):
        dtype = _autocast_dtype(h.device.type) or h.dtype
        hd, wd, bd, sd = h.to(dtype), w.to(dtype), b.to(dtype), scale.to(dtype)
        out = torch.baddbmm(bd.unsqueeze(2), wd, hd.transpose(1, 2))  # (K, out, B)
        masked = wd.index_select(0, index) * sd
        out.index_copy_(0, index, torch.baddbmm(bd.index_select(0, index).unsqueeze(2), masked,
                                                hd.index_select(0, index).transpose(1, 2)))
        ctx.save_for_backward(hd, wd, index, sd)
        ctx.dtypes = (h.dtype, w.dtype, b.dtype)
        return out.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad):
        hd, wd, index, sd = ctx.saved_tensors
        g = grad.to(hd.dtype)
        grad_h = None
        if ctx.needs_input_grad[0]:  # not for the first layer: the inputs need no gradient
            grad_h = torch.bmm(g, wd)  # dL/dh = g W, the connected models' with their masked W
            grad_h.index_copy_(0, index, torch.bmm(g.index_select(0, index), wd.index_select(0, index) * sd))
            grad_h = grad_h.to(ctx.dtypes[0])
        grad_w = torch.bmm(g.transpose(1, 2), hd)  # (K, out, in), the weights' layout
        grad_w.index_copy_(0, index, grad_w.index_select(0, index) * sd)  # dL/dW = (dL/dW_masked) * scale
        _, w_dtype, b_dtype = ctx.dtypes
        return grad_h, grad_w.to(w_dtype), g.sum(1).to(b_dtype), None, None


class StackedCNN(nn.Module):
    """K :class:`~dropnotes.models.SmallCNN` (conv-BN-ReLU-pool, twice, and a linear head) as one group.

    Every convolution is one grouped convolution over the K models' channel blocks, and every batch-norm
    layer normalises each model's channels over that model's own batch, so the group computes exactly
    the K separate networks. Model k applies noise with rate ``p1[k]`` directly before the second BN layer
    (after the second convolution: SmallCNN's ``"before-bn"`` placement) and ``p2[k]`` after block 2 (after
    the last BN: ``"after-bn"``);
    ``noise[k]`` is ``"pixel"`` (Bernoulli per unit), ``"spatial"`` (per channel) or ``"gaussian"``.
    Parameters have shape (K, ...); the BN running statistics are (K, channels) buffers.
    """

    NOISES = ("pixel", "spatial", "gaussian")

    def __init__(self, k: int, in_channels: int = 1, classes: int = 10, channels: tuple[int, int] = (16, 32),
                 image_size: int = 28, *, p1=0.0, p2=0.0, noise="pixel", seeds: Sequence[int] | None = None) -> None:
        super().__init__()
        self.k = check_positive_int("k", k)
        self.in_channels, self.classes = check_positive_int("in_channels", in_channels), check_positive_int("classes", classes)
        self.channels = tuple(check_positive_int("channels", c) for c in channels)
        self.image_size = check_positive_int("image_size", image_size, minimum=4)
        c1, c2 = self.channels
        p1v, p2v = (_values(n, v, k, check=check_probability) for n, v in (("p1", p1), ("p2", p2)))
        kinds = _values("noise", noise, k, check=lambda n, v: check_choice(n, v, self.NOISES))
        self.noise = tuple(kinds)
        self._sites = (any(v > 0 for v in p1v), any(v > 0 for v in p2v))
        self._kinds = ("spatial" in kinds, "gaussian" in kinds)
        self.register_buffer("p1", torch.tensor([float(v) for v in p1v]))
        self.register_buffer("p2", torch.tensor([float(v) for v in p2v]))
        self.register_buffer("noise1", noise_constants(self.p1))  # the rates are fixed: their noise constants kept
        self.register_buffer("noise2", noise_constants(self.p2))
        self.register_buffer("spatial", torch.tensor([v == "spatial" for v in kinds]))
        self.register_buffer("gaussian", torch.tensor([v == "gaussian" for v in kinds]))
        self.conv1 = nn.Parameter(torch.empty(k, c1, in_channels, 3, 3))
        self.conv2 = nn.Parameter(torch.empty(k, c2, c1, 3, 3))
        self.bn1_weight, self.bn1_bias = nn.Parameter(torch.ones(k, c1)), nn.Parameter(torch.zeros(k, c1))
        self.bn2_weight, self.bn2_bias = nn.Parameter(torch.ones(k, c2)), nn.Parameter(torch.zeros(k, c2))
        features = c2 * (image_size // 4) ** 2
        self.head_weight = nn.Parameter(torch.empty(k, classes, features))
        self.head_bias = nn.Parameter(torch.empty(k, classes))
        for i, c in ((1, c1), (2, c2)):
            self.register_buffer(f"running_mean{i}", torch.zeros(k, c))
            self.register_buffer(f"running_var{i}", torch.ones(k, c))
        self.reset_parameters(seeds)

    @torch.no_grad()
    def reset_parameters(self, seeds: Sequence[int] | None = None) -> None:
        """PyTorch's default initialisation of each :class:`SmallCNN`, model k from its own seed."""
        for i, g in _generators(seeds, self.k):
            for w in (self.conv1, self.conv2, self.head_weight):
                fan_in = math.prod(w.shape[2:])
                bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)), as nn.Conv2d and nn.Linear
                w[i].copy_(torch.empty(w.shape[1:]).uniform_(-bound, bound, generator=g))
            bound = 1.0 / math.sqrt(self.head_weight.shape[2])
            self.head_bias[i].copy_(torch.empty(self.classes).uniform_(-bound, bound, generator=g))

    @staticmethod
    def _noise_of(module: nn.Module) -> tuple[float, str | None]:
        from dropnotes.layers import Dropout, GaussianDropout, SpatialDropout

        for cls, kind in ((SpatialDropout, "spatial"), (GaussianDropout, "gaussian"), (Dropout, "pixel")):
            if isinstance(module, cls):
                return module.p, kind
        return 0.0, None

    @classmethod
    def from_models(cls, models: Sequence[nn.Module]) -> "StackedCNN":
        """Stack K :class:`~dropnotes.models.SmallCNN` (their weights, BN statistics, placements and noise)."""
        first = models[0]
        conv1, conv2 = first.features[0], first.features[4]
        sites = [(cls._noise_of(m.features[5]), cls._noise_of(m.features[9])) for m in models]
        kinds = [s1[1] or s2[1] or "pixel" for s1, s2 in sites]
        out = cls(len(models), conv1.in_channels, first.head.out_features, (conv1.out_channels, conv2.out_channels),
                  int(math.isqrt(first.head.in_features // conv2.out_channels)) * 4,
                  p1=[s1[0] for s1, _ in sites], p2=[s2[0] for _, s2 in sites], noise=kinds)
        with torch.no_grad():
            for i, m in enumerate(models):
                bn1, bn2 = m.bn_layers
                for dst, src in ((out.conv1, m.features[0].weight), (out.conv2, m.features[4].weight),
                                 (out.bn1_weight, bn1.weight), (out.bn1_bias, bn1.bias), (out.bn2_weight, bn2.weight),
                                 (out.bn2_bias, bn2.bias), (out.head_weight, m.head.weight), (out.head_bias, m.head.bias),
                                 (out.running_mean1, bn1.running_mean), (out.running_var1, bn1.running_var),
                                 (out.running_mean2, bn2.running_mean), (out.running_var2, bn2.running_var)):
                    dst[i].copy_(src)
        return out.to(first.head.weight.device)

    def model(self, i: int) -> nn.Module:
        """Model ``i`` as a standalone :class:`~dropnotes.models.SmallCNN` with its weights and BN statistics
        (e.g. to measure its variance shift or re-estimate its BN statistics)."""
        from dropnotes.models import SmallCNN

        p1, p2 = float(self.p1[i]), float(self.p2[i])
        if p1 > 0 and p2 > 0:
            raise ValueError(f"model {i} has noise at both sites (p1={p1:g}, p2={p2:g}): a SmallCNN has one dropout layer")
        placement = "before-bn" if p1 > 0 else "after-bn" if p2 > 0 else "none"
        net = SmallCNN(self.in_channels, self.classes, self.channels, placement=placement, p=max(p1, p2),
                       noise=self.noise[i], image_size=self.image_size).to(self.conv1.device)
        bn1, bn2 = net.bn_layers
        with torch.no_grad():
            for dst, src in ((net.features[0].weight, self.conv1), (net.features[4].weight, self.conv2),
                             (bn1.weight, self.bn1_weight), (bn1.bias, self.bn1_bias), (bn2.weight, self.bn2_weight),
                             (bn2.bias, self.bn2_bias), (net.head.weight, self.head_weight),
                             (net.head.bias, self.head_bias), (bn1.running_mean, self.running_mean1),
                             (bn1.running_var, self.running_var1), (bn2.running_mean, self.running_mean2),
                             (bn2.running_var, self.running_var2)):
                dst.copy_(src[i])
        return net

    def extra_repr(self) -> str:
        c1, c2 = self.channels
        return f"k={self.k}, {self.in_channels} -> {c1} -> {c2} channels, {self.image_size}px -> {self.classes}"

    def _site(self, h: torch.Tensor, i: int, generator, mask) -> torch.Tensor:
        if not (self.training and self._sites[i]):
            return h
        b, _, height, width = h.shape
        h5 = h.view(b, self.k, -1, height, width)  # (B, K, C, H, W): the model axis is 1
        out = unit_noise(h5, self.p1 if i == 0 else self.p2, model_dim=1, generator=generator, mask=mask,
                         spatial=self.spatial if self._kinds[0] else None,
                         gaussian=self.gaussian if self._kinds[1] else None,
                         constants=self.noise1 if i == 0 else self.noise2)
        return out.view(h.shape)

    def _block(self, h: torch.Tensor, conv: torch.Tensor, i: int, noise=None) -> torch.Tensor:
        h = F.conv2d(h, conv.flatten(0, 1).to(h.dtype), padding=1, groups=self.k)
        if noise is not None:  # the site directly before this block's BN
            h = noise(h)
        weight, bias = (self.bn1_weight, self.bn1_bias) if i == 1 else (self.bn2_weight, self.bn2_bias)
        mean, var = getattr(self, f"running_mean{i}"), getattr(self, f"running_var{i}")
        h = F.batch_norm(h, mean.view(-1), var.view(-1), weight.flatten(), bias.flatten(), self.training, 0.1, 1e-5)
        return F.max_pool2d(F.relu(h), 2)

    def forward(self, x: torch.Tensor, per_model: bool = False, generator: torch.Generator | None = None,
                masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """``x``: one batch (B, C, H, W) for every model, or with ``per_model`` each model's own (K, B, C, H, W);
        returns (K, B, classes). ``masks`` (optional, for tests): the two sites' keep-masks or multipliers,
        (B, K, C, H, W): directly before BN 2 (C = c2 at half resolution) and after block 2."""
        k = self.k
        masks = list(masks) if masks is not None else [None, None]
        if per_model:
            h = x.transpose(0, 1).flatten(1, 2)  # (B, K*C, H, W): model k owns channel block k
        else:
            h = x.repeat(1, k, 1, 1)
        h = self._block(h, self.conv1, 1)
        h = self._site(self._block(h, self.conv2, 2, noise=lambda t: self._site(t, 0, generator, masks[0])), 1,
                       generator, masks[1])
        h = h.view(h.shape[0], k, -1).transpose(0, 1)  # (K, B, features), SmallCNN's flatten order per model
        return torch.baddbmm(self.head_bias.unsqueeze(2).to(h.dtype), self.head_weight.to(h.dtype),
                             h.transpose(1, 2)).transpose(1, 2)  # (W h^T + b)^T: see StackedMLP._layer


@dataclass
class FitResult:
    """What :func:`fit_stacked` returns: the per-model history, each model's best epoch and error on the
    validation data, and the step at which a model died (-1 if it did not)."""

    history: pd.DataFrame
    best_epoch: list[int]
    best_val_error: list[float]
    died_at_step: list[int]


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


def _flat(bufs: list) -> list[torch.Tensor]:
    """The optimizer's state tensors: momentum buffers, or each (m, v) pair's two (None entries left out)."""
    return [t for b in bufs for t in (b if isinstance(b, tuple) else (b,)) if t is not None]


def _weight(k: int, out_features: int, in_features: int) -> nn.Parameter:
    """K weight matrices (K, out, in), torch's layout, for ``x @ w.transpose(1, 2)``, stored with each model's
    matrix column-major (the memory of a (K, in, out) tensor). The ``bmm``'s gradient for its (K, in, out)
    operand is row-major, so it then arrives in the parameter's own strides; with row-major storage autograd
    copies every such gradient into the parameter's layout, one more pass over the weights at each step."""
    return nn.Parameter(torch.empty(k, in_features, out_features).transpose(1, 2))


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
def _max_norm_(model: StackedMLP, max_norm: torch.Tensor, index: torch.Tensor | None = None) -> None:
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


# ------------------------------------------------------------------ the LSTM language models of chapter 3

LM_SCHEMES = SCHEMES  # chapter 3's ladder of dropout schemes


class StackedLSTMLM(nn.Module):
    """K word-level LSTM language models (:class:`~dropnotes.models.LSTMLM`), each with its own dropout
    scheme, as one group: every time step of every layer is one batched cell (a ``bmm`` over the models).

    Model k's ``scheme`` sets where its noise goes, exactly as in :class:`~dropnotes.models.LSTMLM`
    (:data:`~dropnotes.models.lstm_lm.SCHEMES`: masks on the non-recurrent connections fresh at every step or
    tied in time, rate ``p_io``; masks on :math:`h_{t-1}` fresh or tied, or DropConnect on W_hh with one mask
    per window, ``p_rec``; word types dropped from the embedding, ``p_emb``). Parameters have shape (K, ...);
    the state of each layer is a pair of (K, N, dim) tensors, carried from one BPTT window to the next by
    the caller.
    """

    def __init__(self, k: int, vocab_size: int, dim: int, layers: int, *, scheme="none", p_io=0.0, p_rec=0.0,
                 p_emb=0.0, init_range: float = 0.1, seeds: Sequence[int] | None = None) -> None:
        super().__init__()
        self.k = check_positive_int("k", k)
        self.vocab, self.dim = check_positive_int("vocab_size", vocab_size), check_positive_int("dim", dim)
        self.layers = check_positive_int("layers", layers)
        self.schemes = tuple(_values("scheme", scheme, k, check=lambda n, v: check_choice(n, v, LM_SCHEMES)))
        rates = {n: _values(n, v, k, check=check_probability) for n, v in (("p_io", p_io), ("p_rec", p_rec),
                                                                            ("p_emb", p_emb))}
        for i, s in enumerate(self.schemes):  # the rates a scheme does not use are 0, as in LSTMLM
            rates["p_io"][i], rates["p_rec"][i], rates["p_emb"][i] = scheme_rates(
                LM_SCHEMES[s], rates["p_io"][i], rates["p_rec"][i], rates["p_emb"][i])
        for name, values in rates.items():
            self.register_buffer(name, torch.tensor([float(v) for v in values]))
        self._rates = {name: [float(v) for v in values] for name, values in rates.items()}  # on the host
        for name, (site, kind) in self._FLAGS.items():
            self.register_buffer(name, torch.tensor([getattr(LM_SCHEMES[s], site) == kind for s in self.schemes]))
        per_model = [self._uses_of(i) for i in range(k)]
        self._uses = {site: any(u[site] for u in per_model) for site in per_model[0]}  # sites some model uses
        # the models with DropConnect on W_hh: their masks are drawn and applied to their weights only
        self.register_buffer("wd_index", torch.tensor([i for i, u in enumerate(per_model) if u["w_hh"]], dtype=torch.long),
                             persistent=False)  # follows from the schemes: not part of the state
        d, g = dim, 4 * dim
        self.embed = nn.Parameter(torch.empty(k, vocab_size, d))
        self.w_ih, self.w_hh = nn.ParameterList(), nn.ParameterList()
        self.b_ih, self.b_hh = nn.ParameterList(), nn.ParameterList()
        for _ in range(layers):
            self.w_ih.append(_weight(k, g, d))  # stored for its bmm (see _weight); W_hh's gradient is _LSTMLayer's
            self.w_hh.append(nn.Parameter(torch.empty(k, g, d)))
            self.b_ih.append(nn.Parameter(torch.empty(k, g)))
            self.b_hh.append(nn.Parameter(torch.empty(k, g)))
        self.dec_w, self.dec_b = _weight(k, vocab_size, d), nn.Parameter(torch.empty(k, vocab_size))
        self.init_range = init_range
        self.reset_parameters(seeds)

    @torch.no_grad()
    def reset_parameters(self, seeds: Sequence[int] | None = None) -> None:
        """Zaremba et al.'s uniform initialisation, model k from its own seed."""
        for i, g in _generators(seeds, self.k):
            for p in self.parameters():
                p[i].copy_(torch.empty(p.shape[1:]).uniform_(-self.init_range, self.init_range, generator=g))

    def _pairs(self, m: nn.Module):
        """(group parameter, the LSTMLM's tensor) for every parameter of one LSTMLM."""
        out = [(self.embed, m.embed.weight), (self.dec_w, m.decoder.weight), (self.dec_b, m.decoder.bias)]
        for i, lstm in enumerate(m.lstms):
            out += [(self.w_ih[i], lstm.weight_ih_l0), (self.w_hh[i], lstm.weight_hh_l0),
                    (self.b_ih[i], lstm.bias_ih_l0), (self.b_hh[i], lstm.bias_hh_l0)]
        return out

    @classmethod
    def from_models(cls, models: Sequence[nn.Module]) -> "StackedLSTMLM":
        """Stack K :class:`~dropnotes.models.LSTMLM` (untied weights) with their schemes and rates."""
        first = models[0]
        out = cls(len(models), first.embed.num_embeddings, first.embed.embedding_dim, len(first.lstms),
                  scheme=[m.scheme for m in models], p_io=[m.p_io for m in models], p_rec=[m.p_rec for m in models],
                  p_emb=[m.p_emb for m in models])
        with torch.no_grad():
            for i, m in enumerate(models):
                for dst, src in out._pairs(m):
                    dst[i].copy_(src)
        return out.to(first.embed.weight.device)

    def model(self, i: int) -> nn.Module:
        """Model ``i`` as a standalone :class:`~dropnotes.models.LSTMLM` (e.g. for MC-dropout evaluation)."""
        from dropnotes.models import LSTMLM

        m = LSTMLM(self.vocab, self.dim, self.layers, self.schemes[i], p_io=float(self.p_io[i]),
                   p_rec=float(self.p_rec[i]), p_emb=float(self.p_emb[i])).to(self.embed.device)
        with torch.no_grad():
            for src, dst in self._pairs(m):
                dst.copy_(src[i])
        return m

    def extra_repr(self) -> str:
        return f"k={self.k}, vocab={self.vocab}, {self.layers} x {self.dim}, schemes={list(self.schemes)}"

    def replicas(self, i: int, s: int) -> "StackedLSTMLM":
        """``s`` copies of model ``i`` as a group that shares its weights (expanded views: no copy), each copy
        drawing its own masks: MC dropout's ``s`` stochastic passes as one batched forward (inference only)."""
        i, s = int(i), check_positive_int("s", s)
        if not 0 <= i < self.k:
            raise ValueError(f"i must be in [0, {self.k - 1}], got {i}")
        with torch.device("meta"):  # the structure only; its parameters are replaced below
            out = StackedLSTMLM(1, self.vocab, self.dim, self.layers, scheme=self.schemes[i], init_range=self.init_range)
        out.k, out.schemes, out._uses = s, (self.schemes[i],) * s, self._uses_of(i)
        out._rates = {name: [values[i]] * s for name, values in self._rates.items()}
        for name, _ in list(out.named_buffers()):
            if name != "wd_index":
                setattr(out, name, getattr(self, name)[i:i + 1].expand(s).clone())
        out.wd_index = torch.arange(s if out._uses["w_hh"] else 0, device=self.wd_index.device)
        view = lambda p: p.detach()[i:i + 1].expand(s, *p.shape[1:])  # noqa: E731
        for name in ("embed", "dec_w", "dec_b"):
            delattr(out, name)
            setattr(out, name, view(getattr(self, name)))
        for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
            tensors = [view(p) for p in getattr(self, name)]
            delattr(out, name)
            setattr(out, name, tensors)
        return out

    # A flag buffer per kind of noise: (the Scheme field, its value), and the rate it uses.
    _FLAGS = {"io_step": ("io", "step"), "locked": ("io", "tied"), "h_step": ("rec", "step"), "h_tied": ("rec", "tied"),
              "weight_drop": ("rec", "weight")}
    _RATE = {"io": "p_io", "rec": "p_rec"}

    def _uses_of(self, i: int) -> dict[str, bool]:
        """Which noise sites model ``i`` uses; ``_uses`` records those some model of the group uses."""
        scheme, rate = LM_SCHEMES[self.schemes[i]], {n: values[i] for n, values in self._rates.items()}
        uses = {name: getattr(scheme, site) == kind and rate[self._RATE[site]] > 0
                for name, (site, kind) in self._FLAGS.items()}
        uses["w_hh"] = uses.pop("weight_drop")
        return {"emb": scheme.emb and rate["p_emb"] > 0, **uses}

    def _time_mask(self, p: torch.Tensor, step: str, tied: str, shape, dtype, device, generator) -> torch.Tensor | None:
        """A (K, N, T or 1, D) multiplier: a fresh mask at every step for the models flagged ``step``, one mask
        per sequence for those flagged ``tied`` (Bernoulli, scaled by 1/(1-p)), 1 for the others; None when
        no model uses either."""
        k, n, t, d = shape
        keep = (1.0 - p).to(dtype).view(k, 1, 1, 1)
        one = torch.ones((), dtype=dtype, device=device)
        draw = lambda steps: (torch.rand((k, n, steps, d), device=device, generator=generator) < keep) * (1.0 / keep)  # noqa: E731
        mult = None
        if self._uses[step]:
            mult = torch.where(getattr(self, step).view(k, 1, 1, 1), draw(t), one)
        if self._uses[tied]:
            flag = getattr(self, tied).view(k, 1, 1, 1)
            tied_mult = torch.where(flag, draw(1), one)
            mult = tied_mult if mult is None else torch.where(flag, tied_mult.expand(k, n, t, d), mult)
        return mult

    def draw_masks(self, n: int, t: int, generator: torch.Generator | None = None, dtype=torch.float32) -> dict:
        """Every multiplier of one training window of N sequences of T steps (what :meth:`forward` draws when
        none are given): ``emb`` (K, V), ``io`` one per site (inputs of each layer, then the decoder's input),
        ``h`` and ``w_hh`` one per layer (``w_hh``: (len(wd_index), 4D, D), the models with DropConnect on W_hh
        only, in the order of ``wd_index``). A site that no model uses is None."""
        dev, k, d = self.embed.device, self.k, self.dim
        emb = None
        if self._uses["emb"]:
            keep = (1.0 - self.p_emb).to(dtype).view(k, 1)
            emb = (torch.rand((k, self.vocab), device=dev, generator=generator) < keep) * (1.0 / keep)
        io = [self._time_mask(self.p_io, "io_step", "locked", (k, n, t, d), dtype, dev, generator)
              for _ in range(self.layers + 1)]
        h = [self._time_mask(self.p_rec, "h_step", "h_tied", (k, n, t, d), dtype, dev, generator)
             for _ in range(self.layers)]
        w_hh = []
        for _ in range(self.layers):
            if not self._uses["w_hh"]:
                w_hh.append(None)
                continue
            keep = (1.0 - self.p_rec[self.wd_index]).to(dtype).view(-1, 1, 1)
            w_hh.append((torch.rand((len(keep), 4 * d, d), device=dev, generator=generator) < keep) * (1.0 / keep))
        return {"emb": emb, "io": io, "h": h, "w_hh": w_hh}

    def forward(self, ids: torch.Tensor, state: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                generator: torch.Generator | None = None, masks: dict | None = None):
        """``ids``: (N, T) for every model, or each model's own (K, N, T); returns logits (K, N, T, V) and the
        final state of every layer. In training, ``masks`` (from :meth:`draw_masks`) replace the draw."""
        k = self.k
        if ids.dim() == 2:
            ids = ids.unsqueeze(0).expand(k, -1, -1)
        _, n, t = ids.shape
        if self.training and masks is None:
            masks = self.draw_masks(n, t, generator)
        if not self.training:
            masks = None
        x = torch.gather(self.embed, 1, ids.reshape(k, -1, 1).expand(-1, -1, self.dim)).view(k, n, t, self.dim)
        if masks is not None and masks["emb"] is not None:  # word types dropped: every occurrence of a word
            x = x * torch.gather(masks["emb"], 1, ids.reshape(k, -1)).view(k, n, t, 1)
        new_state = []
        for layer in range(self.layers):
            if masks is not None and masks["io"][layer] is not None:
                x = x * masks["io"][layer]
            s = state[layer] if state is not None else None
            x, s = self._lstm(layer, x, s, masks)
            new_state.append(s)
        if masks is not None and masks["io"][-1] is not None:
            x = x * masks["io"][-1]
        logits = torch.baddbmm(self.dec_b.unsqueeze(1).to(x.dtype), x.flatten(1, 2), self.dec_w.transpose(1, 2).to(x.dtype))
        return logits.view(k, n, t, self.vocab), new_state

    def _lstm(self, layer: int, x: torch.Tensor, state, masks):
        k, n, t, d = x.shape
        w_ih = self.w_ih[layer].to(x.dtype)
        bias = (self.b_ih[layer] + self.b_hh[layer]).to(x.dtype).unsqueeze(1)
        h_mask = masks["h"][layer] if masks is not None else None
        gates_x = torch.baddbmm(bias, x.flatten(1, 2), w_ih.transpose(1, 2)).view(k, n, t, 4 * d)
        h, c = state if state is not None else (x.new_zeros(k, n, d), x.new_zeros(k, n, d))
        # under autocast W_hh is cast once per window, not at every step; DropConnect on W_hh (one mask per
        # window) scales the weights of the models that use it, before the cast
        if masks is not None and masks["w_hh"][layer] is not None:
            w_hh = _ScaledRowsCast.apply(self.w_hh[layer], gates_x.dtype, self.wd_index, masks["w_hh"][layer])
        else:
            w_hh = self.w_hh[layer].to(gates_x.dtype)
        out, h, c = _LSTMLayer.apply(gates_x, h, c, w_hh, h_mask, torch.is_grad_enabled())
        return out, (h, c)


class _ScaledRowsCast(torch.autograd.Function):
    """``w`` (K, ...) cast to ``dtype``, with the models ``index`` first multiplied elementwise by ``mult``
    (len(index), ...): DropConnect on some models of a group, the product in ``w``'s dtype and rounded once.
    The scaling is diagonal, so the backward casts the gradient back and scales the same rows: one pass over
    the (K, ...) tensor each way, where autograd's index_select and index_copy would add a second gradient of
    W's full size and sum the two."""

    @staticmethod
    def forward(ctx, w, dtype, index, mult):
        ctx.save_for_backward(index, mult)
        ctx.w_dtype = w.dtype
        out = w.to(dtype, copy=True)
        return out.index_copy_(0, index, (w.index_select(0, index) * mult).to(dtype))

    @staticmethod
    def backward(ctx, g):
        index, mult = ctx.saved_tensors
        gw = g.to(ctx.w_dtype, copy=True)
        return gw.index_copy_(0, index, gw.index_select(0, index) * mult), None, None, None


class _LSTMLayer(torch.autograd.Function):
    r"""One LSTM layer of K models over a window: the time loop written out forward and backward.

    Forward, per step: :math:`g = G^x_t + (h_{t-1} \odot m_t) W_{hh}^\top` (one ``baddbmm``), then the gates
    (PyTorch's order i, f, g, o), :math:`c_t = f c_{t-1} + i \tanh g`, :math:`h_t = o \tanh c_t`. Backward runs
    the recurrence in reverse with one ``bmm`` per step for :math:`\partial h_{t-1}`, and computes the weight
    gradient :math:`\partial W_{hh} = \sum_t \partial g_t^\top (h_{t-1} \odot m_t)` once per window, as one
    ``bmm`` over all steps, instead of accumulating one outer product per step as autograd does: that
    accumulation read and wrote a full copy of W_hh's gradient 35 times per window. ``gates_x``: (K, N, T, 4D),
    the input projections with both biases; ``h_mask``: (K, N, T or 1, D) or None; ``w``: (K, 4D, D)."""

    @staticmethod
    def forward(ctx, gates_x, h, c, w, h_mask, save=True):
        k, n, t_len, d = *gates_x.shape[:3], h.shape[-1]
        w_t = w.transpose(1, 2)
        dev, g_dtype = w.device, torch.result_type(gates_x, w)  # the dtype the baddbmm returns
        u_dtype = torch.promote_types(g_dtype, c.dtype)
        # what the backward reads, written in place step by step (no per-step copies, no stacking): every
        # step's gates, [tanh g, c_{t-1}, i] (what d c multiplies into d i, d f, d tanh g), tanh c and the masked
        # h_{t-1} that met W_hh (in W's dtype: the product and the cast are one kernel)
        out = torch.empty(k, n, t_len, d, dtype=u_dtype, device=dev)
        if save:
            acts = torch.empty(k, n, t_len, 4 * d, dtype=g_dtype, device=dev)
            us = torch.empty(k, n, t_len, 3 * d, dtype=u_dtype, device=dev)
            tcs = torch.empty(k, n, t_len, d, dtype=u_dtype, device=dev)
            hms = torch.empty(k, n, t_len, d, dtype=w.dtype, device=dev)
            us[:, :, 0, d:2 * d].copy_(c)
        for step in range(t_len):
            m = None if h_mask is None else h_mask[:, :, min(step, h_mask.shape[2] - 1)]
            if save:
                hm = hms[:, :, step]
                torch.mul(h, m, out=hm) if m is not None else hm.copy_(h)
            else:
                hm = (h if m is None else h * m).to(w.dtype)
            g = torch.baddbmm(gates_x[:, :, step], hm, w_t)
            a = torch.sigmoid(g, out=acts[:, :, step]) if save else torch.sigmoid(g)  # i, f, o (the g slot unused)
            tg = torch.tanh(g[..., 2 * d:3 * d], out=us[:, :, step, :d]) if save else torch.tanh(g[..., 2 * d:3 * d])
            nxt = us[:, :, step + 1, d:2 * d] if save and step + 1 < t_len else None  # c_t, read by the next step
            c = torch.addcmul(a[..., d:2 * d] * c, a[..., :d], tg, out=nxt)
            if save:
                us[:, :, step, 2 * d:].copy_(a[..., :d])
            tc = torch.tanh(c, out=tcs[:, :, step]) if save else torch.tanh(c)
            h = torch.mul(a[..., 3 * d:], tc, out=out[:, :, step])
        if save:
            ctx.save_for_backward(w, h_mask, acts, us, tcs, hms)
        ctx.dtypes = (gates_x.dtype, h.dtype, c.dtype)
        return out, h.clone(), c  # h is a view of out; the last step's c is its own tensor

    @staticmethod
    def backward(ctx, d_out, d_h, d_c):
        w, h_mask, acts, us, tcs, hms = ctx.saved_tensors
        gx_dtype, h_dtype, c_dtype = ctx.dtypes
        k, n, t_len, d = tcs.shape
        one = torch.ones((), dtype=acts.dtype, device=w.device)
        # the nonlinearities' derivatives need no recurrence: once for the whole window, not once per step.
        # sigmoid' = a (1 - a) for i, f, o; tanh' = 1 - tanh^2 for the g slot and for c
        deriv = torch.addcmul(acts, acts, acts, value=-1)
        torch.addcmul(one, us[..., :d], us[..., :d], value=-1, out=deriv[..., 2 * d:3 * d])
        dtanh_c = torch.addcmul(one, tcs, tcs, value=-1)
        d_gates = torch.empty_like(acts)  # (K, N, T, 4D), filled step by step
        dh, dc = d_h, d_c
        for step in range(t_len - 1, -1, -1):  # few kernels per step: the loop is launch-bound on a GPU
            a, tc = acts[:, :, step], tcs[:, :, step]
            dht = d_out[:, :, step] + dh
            dc = torch.addcmul(dc, dht * a[..., 3 * d:], dtanh_c[:, :, step])
            ds = d_gates[:, :, step]  # d i, d f, d tanh(g), d o, each before its nonlinearity's derivative
            torch.mul(us[:, :, step].view(k, n, 3, d), dc.unsqueeze(2), out=ds[..., :3 * d].view(k, n, 3, d))
            torch.mul(dht, tc, out=ds[..., 3 * d:])
            dg = ds.mul_(deriv[:, :, step])
            dc = dc * a[..., d:2 * d]
            dhm = torch.bmm(dg.to(w.dtype), w)
            dh = dhm if h_mask is None else dhm * h_mask[:, :, min(step, h_mask.shape[2] - 1)]
        dw = torch.bmm(d_gates.flatten(1, 2).transpose(1, 2).to(w.dtype), hms.flatten(1, 2))
        return d_gates.to(gx_dtype), dh.to(h_dtype), dc.to(c_dtype), dw, None, None


def lm_windows(tokens: torch.Tensor, batch_size: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The stream cut into ``batch_size`` rows (as :func:`dropnotes.train.lm_batches` does) and read as its
    full windows: inputs and targets of shape (windows, N, T). The last, shorter window is left out, so
    that every training step has one shape (a CUDA graph replays one shape)."""
    n, t = check_positive_int("batch_size", batch_size), check_positive_int("seq_len", seq_len)
    rows = (tokens.numel() - 1) // n
    windows = rows // t
    if windows < 1:
        raise ValueError(f"the token stream ({tokens.numel()} tokens) holds no window of {n} x {t}")
    x, y = tokens[: rows * n].view(n, rows), tokens[1: rows * n + 1].view(n, rows)
    cut = lambda a: a[:, : windows * t].reshape(n, windows, t).transpose(0, 1)  # noqa: E731
    return cut(x), cut(y)


def _graphed(fn: Callable, inputs: Sequence[torch.Tensor], capture: bool) -> Callable:
    """``fn`` of static copies of ``inputs``: ``call(*new)`` copies ``new`` into them and runs ``fn``, or, with
    ``capture`` (CUDA), replays ``fn`` captured once as a CUDA graph and returns its static outputs (valid
    until the next call). The same copies run on every device, so the CPU exercises the data flow the GPU
    replays; ``fn`` must draw no random numbers and keep no Python state."""
    import warnings

    static = [t.clone() for t in inputs]
    graph, out = None, None
    if capture:
        try:
            dev = static[0].device
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for _ in range(2):
                    fn(*static)
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = fn(*static)
        except Exception as err:  # noqa: BLE001 - any capture failure falls back to the eager function
            warnings.warn(f"CUDA graph capture of an evaluation pass failed ({type(err).__name__}: {err}); "
                          "running it eagerly", RuntimeWarning, stacklevel=3)
            graph = None

    def call(*new: torch.Tensor):
        for s, t in zip(static, new):
            s.copy_(t)
        if graph is None:
            return fn(*static)
        graph.replay()
        return out

    return call


@torch.no_grad()
def lm_window_losses_stacked(model: StackedLSTMLM, tokens: torch.Tensor, batch_size: int, seq_len: int,
                             amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every model's mean next-token cross-entropy (nats) per window over a token stream, in eval mode, an
    LSTM group's state carried across windows (the windows of :func:`dropnotes.train.lm_batches`, the last one
    included): (K, windows) losses and each window's token count. On CUDA the pass over one full window is
    captured once as a CUDA graph (:func:`_graphed`) and replayed for each; a shorter last window runs eagerly."""
    from dropnotes.train import lm_batches

    was = model.training
    model.eval()
    k = model.k
    recurrent = isinstance(model, StackedLSTMLM)  # a GPT group has no state: each window on its own

    def window(x: torch.Tensor, y: torch.Tensor, *flat: torch.Tensor):
        state = [(flat[2 * j], flat[2 * j + 1]) for j in range(len(flat) // 2)] if recurrent else None
        with autocast(x.device.type, amp_dtype, cache_enabled=False):
            logits, new = model(x, state) if recurrent else (model(x), [])
        ce = F.cross_entropy(logits.float().flatten(0, 2), y.expand(k, -1, -1).flatten(), reduction="none")
        return (ce.view(k, -1).mean(1), *[t for pair in new for t in pair])

    batches = list(lm_batches(tokens, batch_size, seq_len))
    losses, counts, run = [], [], None
    state = []
    if recurrent and batches:
        n = batches[0][0].shape[0]
        state = [tokens.new_zeros((k, n, model.dim), dtype=torch.float32) for _ in range(2 * model.layers)]
    for x, y in batches:
        if x.shape == batches[0][0].shape:
            run = run or _graphed(window, [x, y, *state], capture=x.is_cuda)
            out = run(x, y, *state)
        else:
            out = window(x, y, *state)
        losses.append(out[0].clone())
        state = list(out[1:])
        counts.append(y.numel())
    model.train(was)
    return torch.stack(losses, 1).double().cpu(), torch.tensor(counts, dtype=torch.float64)


@torch.no_grad()
def mc_window_losses(model: StackedLSTMLM, i: int, tokens: torch.Tensor, batch_size: int, seq_len: int, *,
                     samples: int, chunk: int = 25, amp_dtype: torch.dtype | None = None,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MC dropout for model ``i`` (Gal & Ghahramani 2016): ``samples`` stochastic passes over the stream, each
    with its own masks and its own state carried across windows, the *probabilities* of each target
    averaged before the log. The passes run ``chunk`` at a time as one group (:meth:`StackedLSTMLM.replicas`),
    so a window costs one batched forward per chunk instead of one per pass. Returns the per-window mean
    cross-entropy (nats) and each window's token count, as :func:`dropnotes.train.lm_window_losses` does."""
    from dropnotes.train import lm_batches

    samples, chunk = check_positive_int("samples", samples), check_positive_int("chunk", chunk)
    sizes = [min(chunk, samples - start) for start in range(0, samples, chunk)]
    per_chunk, counts = [], []
    for s in sizes:
        group = model.replicas(i, s).train()  # training mode: the masks are on
        state, lse = None, []
        for x, y in lm_batches(tokens, batch_size, seq_len):
            with autocast(x.device.type, amp_dtype):
                logits, state = group(x, state, generator=generator)
            logp = torch.log_softmax(logits.float(), -1).gather(-1, y.expand(s, -1, -1).unsqueeze(-1)).squeeze(-1)
            lse.append(torch.logsumexp(logp, 0))  # (N, T): log of the summed probabilities of this chunk
            if len(per_chunk) == 0:
                counts.append(y.numel())
        per_chunk.append(lse)
    losses = [-(torch.logsumexp(torch.stack(parts), 0) - math.log(samples)).mean() for parts in zip(*per_chunk)]
    return torch.stack(losses).double().cpu(), torch.tensor(counts, dtype=torch.float64)


def make_lm_step(model: StackedLSTMLM, ids: torch.Tensor, tgt: torch.Tensor, hs: list[torch.Tensor],
                 cs: list[torch.Tensor], *, lr: torch.Tensor, clip: torch.Tensor | None, optimizer: str, moments: list,
                 amp_dtype: torch.dtype | None, generator: torch.Generator | None, alive: torch.Tensor,
                 died: torch.Tensor, step_no: torch.Tensor, total: torch.Tensor) -> Callable[[], None]:
    """One truncated-BPTT step of every model of ``model`` (what :func:`fit_stacked_lm` runs, and what ``dropnotes
    estimate`` counts): the window ``ids`` -> ``tgt`` ((B, T), shared by the models) from the carried state
    (``hs``, ``cs``: per layer (K, B, dim)), the per-model mean loss, the backward, the dead-model marking (which
    advances ``step_no``), clipping, SGD (or Adam with ``moments``) at the per-model rates ``lr``, the new state
    written back, and the losses added to ``total``. Every tensor it touches is an argument (graph capture)."""
    k, dev, params = model.k, ids.device, list(model.parameters())

    def step() -> None:
        with autocast(dev.type, amp_dtype, cache_enabled=False):
            logits, new = model(ids, list(zip(hs, cs)), generator=generator)
        losses = F.cross_entropy(logits.float().flatten(0, 2), tgt.expand(k, -1, -1).flatten(), reduction="none")
        losses = losses.view(k, -1).mean(1)
        for p in params:
            p.grad = None
        losses.sum().backward()
        _mark_dead(losses, alive, died, step_no)
        if optimizer == "adam":
            _adam_step(params, moments, step_no, lr, alive, clip)
        else:
            _sgd_step(params, [None] * len(params), lr, None, 0.0, alive, clip)
        with torch.no_grad():
            for (h, c), h_static, c_static in zip(new, hs, cs):  # the state carried to the next window
                h_static.copy_(h)
                c_static.copy_(c)
            total.add_(losses.detach())

    return step


def fit_stacked_lm(model: StackedLSTMLM, train_tokens: torch.Tensor, valid_tokens: torch.Tensor, *, epochs: int,
                   batch_size: int, seq_len: int, lr, lr_decay: float = 1.0, decay_after: int = 0, clip=None,
                   optimizer: str = "sgd", amp_dtype: torch.dtype | None = None,
                   generator: torch.Generator | None = None, restore_best: bool = True, capture: bool = True,
                   desc: str = "LSTM LMs") -> FitResult:
    """Truncated BPTT for the K language models of ``model`` together (Zaremba et al. 2014): plain SGD (or
    ``optimizer="adam"``, ``torch.optim.Adam``'s update) with per-model learning rates, divided by
    ``lr_decay`` every epoch after ``decay_after``; each model's gradient clipped to norm ``clip[k]``; the
    state carried across the windows of an epoch (zero at its start).

    After every epoch each model's validation loss is measured (eval mode) and its best epoch kept
    (restored at the end with ``restore_best``); a model whose loss stops being finite is frozen and
    reported, as in :func:`fit_stacked`. On CUDA the whole step (forward over the window, backward,
    clipping, SGD, the state carried) is captured once as a CUDA graph and replayed. Nothing is read
    back to the host inside an epoch. The history's losses are in nats (``train_loss``, ``val_loss``)."""
    k = model.k
    epochs = check_positive_int("epochs", epochs)
    optimizer = check_choice("optimizer", optimizer, ("sgd", "adam"))
    dev = train_tokens.device
    if generator is None:
        generator = torch.Generator(dev).manual_seed(0)
    xs, ys = lm_windows(train_tokens, batch_size, seq_len)
    lr_k = _per_model("lr", lr, k).to(dev)
    lr_now = lr_k.clone()
    clip_k = None if clip is None else _per_model("clip", clip, k).to(dev)
    params = list(model.parameters())
    alive = torch.ones(k, dtype=torch.bool, device=dev)
    died = torch.full((k,), -1, dtype=torch.long, device=dev)
    step_no = torch.zeros((), dtype=torch.long, device=dev)
    ids, tgt = torch.zeros_like(xs[0]), torch.zeros_like(ys[0])
    hs = [torch.zeros(k, batch_size, model.dim, device=dev) for _ in range(model.layers)]
    cs = [torch.zeros_like(h) for h in hs]
    total = torch.zeros(k, device=dev)
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params] if optimizer == "adam" else []
    mask_gen = None if dev.type == "cuda" else generator  # CUDA graphs draw from the device's default generator

    step = make_lm_step(model, ids, tgt, hs, cs, lr=lr_now, clip=clip_k, optimizer=optimizer, moments=moments,
                        amp_dtype=amp_dtype, generator=mask_gen, alive=alive, died=died, step_no=step_no, total=total)
    if dev.type == "cuda":
        torch.cuda.manual_seed(int(torch.randint(0, 2**62, (), generator=generator, device=generator.device)))
    state = params + list(model.buffers()) + hs + cs + [alive, died, step_no, total] + [t for mv in moments for t in mv]
    run_step = _captured(step, state, dev) if dev.type == "cuda" and capture else step
    best = _BestEpochs(list(model.parameters()), k, dev, restore_best)
    rows = []
    for epoch in progress(range(1, epochs + 1), desc):
        model.train()
        lr_now.copy_(lr_k / lr_decay ** max(0, epoch - decay_after))
        for t in hs + cs + [total]:
            t.zero_()
        for w in range(xs.shape[0]):
            ids.copy_(xs[w])
            tgt.copy_(ys[w])
            run_step()
        losses, counts = lm_window_losses_stacked(model, valid_tokens, batch_size, seq_len, amp_dtype)
        val = ((losses * counts).sum(1) / counts.sum()).float().to(dev)
        best.update(val, alive, epoch)
        train_loss, val_host, alive_now = (total / xs.shape[0]).tolist(), val.tolist(), alive.tolist()
        for m in range(k):
            rows.append({"model": m, "epoch": epoch, "train_loss": train_loss[m], "val_loss": val_host[m],
                         "alive": alive_now[m]})
    return best.result(rows, died)


# ------------------------------------------------------------------ the transformers of chapters 4 and 5

def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Each model's ``nn.Linear``: x (K, M, in), w (K, out, in) in torch's layout, b (K, out) -> (K, M, out)."""
    if b is None:
        return torch.bmm(x, w.transpose(1, 2))
    return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


def _norm_linear(x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""Each model's ``nn.Linear(nn.LayerNorm(x))``, the norm's (K, D) affine folded into the linear layer:
    :math:`(\hat x \odot \gamma + \beta) W^\top + c = \hat x (W \odot \gamma)^\top + (W\beta + c)`. The same
    function, with one pass fewer over the (K, M, D) activations forward and backward (the products with
    the weights are (K, out, D), a small fraction of them); gradients reach gamma and beta through the fold."""
    w_folded = w * ln_w.unsqueeze(1)
    b_folded = torch.baddbmm(b.unsqueeze(1), ln_b.unsqueeze(1), w.transpose(1, 2)).squeeze(1)  # w's gradient column-major
    return torch.baddbmm(b_folded.unsqueeze(1), F.layer_norm(x, x.shape[-1:]), w_folded.transpose(1, 2))


def _drop_path_mult(rate: torch.Tensor, n: int, device, generator) -> torch.Tensor | None:
    """Stochastic depth per model and sample: a (K, N, 1) multiplier, 0 or 1/(1-r_k) (Huang et al. 2016);
    None when no model drops."""
    return unit_noise(torch.ones(len(rate), n, 1, device=device), rate.to(device), generator=generator)


_BLOCK_TENSORS = ("ln1_w", "ln1_b", "qkv_w", "qkv_b", "proj_w", "proj_b", "ln2_w", "ln2_b", "fc1_w", "fc1_b",
                  "fc2_w", "fc2_b")


class _StackedTransformer(nn.Module):
    """What :class:`StackedViT` and :class:`StackedGPT` share: ``depth`` pre-norm blocks of K models,
    ``x + branch(Attn(LN(x)))`` then ``x + branch(MLP(LN(x)))``, every linear layer a ``bmm`` over the models
    and the attention of all K x N sequences one ``scaled_dot_product_attention`` call (one per run of models
    sharing an attention-dropout rate). Activations are (K, N·T, D)."""

    def _add_blocks(self, k: int, depth: int, d: int) -> None:
        shapes = {"ln1_w": (d,), "ln1_b": (d,), "qkv_w": (3 * d, d), "qkv_b": (3 * d,), "proj_w": (d, d),
                  "proj_b": (d,), "ln2_w": (d,), "ln2_b": (d,), "fc1_w": (4 * d, d), "fc1_b": (4 * d,),
                  "fc2_w": (d, 4 * d), "fc2_b": (d,)}
        for j in range(depth):
            for name in _BLOCK_TENSORS:  # the linear layers' weights stored for their bmm (see _weight)
                shape = shapes[name]
                self.register_parameter(f"b{j}_{name}", _weight(k, *shape) if len(shape) == 2 else
                                        nn.Parameter(torch.empty(k, *shape)))

    def _single(self) -> nn.Module:
        """One standalone model of the group's shape (its own initialisation)."""
        raise NotImplementedError

    @torch.no_grad()
    def reset_parameters(self, seeds: Sequence[int] | None = None) -> None:
        """Model k initialised as its standalone model is under ``torch.manual_seed(seeds[k])`` (default k)."""
        for i, m in _seeded(seeds, self.k, self._single):
            self._copy_in(m, i)

    @torch.no_grad()
    def _copy_in(self, m: nn.Module, i: int) -> None:
        """Model ``i`` of the group becomes the standalone model ``m``."""
        for name, t in self._tensors(m).items():
            getattr(self, name)[i].copy_(t)

    @torch.no_grad()
    def _copy_out(self, m: nn.Module, i: int) -> nn.Module:
        """The standalone model ``m`` becomes model ``i`` of the group; returns it."""
        for name, t in self._tensors(m).items():
            t.copy_(getattr(self, name)[i])
        return m

    @staticmethod
    def _block_tensors(j: int, ln1, ln2, attn, fc1, fc2) -> dict[str, torch.Tensor]:
        tensors = (ln1.weight, ln1.bias, attn.qkv.weight, attn.qkv.bias, attn.proj.weight, attn.proj.bias, ln2.weight,
                   ln2.bias, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
        return {f"b{j}_{name}": t for name, t in zip(_BLOCK_TENSORS, tensors)}

    def _attention(self, h: torch.Tensor, j: int, n: int, t: int, causal: bool, attn_runs: tuple | None) -> torch.Tensor:
        """Attention of the block's first layer norm of ``h``; ``attn_runs``: the models' attention-dropout
        rates as runs (first model, end, rate) of neighbours with one rate, each run one fused SDPA call."""
        k, d, heads = self.k, self.dim, self.heads
        g = lambda name: getattr(self, f"b{j}_{name}")  # noqa: E731
        qkv = _norm_linear(h, g("ln1_w"), g("ln1_b"), g("qkv_w"), g("qkv_b"))
        q, key, v = qkv.view(k * n, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        if attn_runs is None:
            y = F.scaled_dot_product_attention(q, key, v, is_causal=causal)
        else:  # SDPA takes one rate: one call per run of models sharing one (model-major rows: slices, no copies)
            parts = [F.scaled_dot_product_attention(q[a * n:b * n], key[a * n:b * n], v[a * n:b * n], dropout_p=p,
                                                    is_causal=causal) for a, b, p in attn_runs]
            y = parts[0] if len(parts) == 1 else torch.cat(parts, 0)
        y = y.transpose(1, 2).reshape(k, n * t, d)
        return _linear(y, getattr(self, f"b{j}_proj_w"), getattr(self, f"b{j}_proj_b"))

    def _block(self, h: torch.Tensor, j: int, n: int, t: int, *, causal: bool, residual=None,
               attn_runs: tuple | None = None) -> torch.Tensor:
        """One block; ``residual(h, out, which)`` adds the attention (0) or MLP (1) branch ``out`` to ``h`` with
        the models' noise on it (None: plain sums)."""
        g = lambda name: getattr(self, f"b{j}_{name}")  # noqa: E731
        add = residual or (lambda h_, out, _: h_ + out)
        h = add(h, self._attention(h, j, n, t, causal, attn_runs), 0)
        m = _linear(F.gelu(_norm_linear(h, g("ln2_w"), g("ln2_b"), g("fc1_w"), g("fc1_b"))), g("fc2_w"), g("fc2_b"))
        return add(h, m, 1)


class StackedViT(_StackedTransformer):
    """K Vision Transformers (:class:`~dropnotes.models.ViT`: patch embedding, learned positions, pre-norm
    blocks, mean pooling, a linear head) as one group, every linear layer a ``bmm`` over the models and the
    attention of all K x N images one call of ``scaled_dot_product_attention``.

    Model k drops the branches of block j with rate ``rates[k][j]`` (stochastic depth, one draw per model,
    sample and branch, as :class:`~dropnotes.layers.DropPath`), so depth-wise schedules and rates differ per
    model. Parameters have shape (K, ...) in torch's layout (a linear weight is (K, out, in)); activations
    are (K, N·T, D). Attention and MLP dropout are not stacked (chapter 4 trains without them).
    """

    def __init__(self, k: int, *, image_size: int = 32, patch: int = 4, channels: int = 3, classes: int = 10,
                 dim: int = 192, depth: int = 12, heads: int = 3, rates=0.0, seeds: Sequence[int] | None = None) -> None:
        super().__init__()
        from dropnotes.models import ViT

        self.k = check_positive_int("k", k)
        self.depth, self.heads, self.dim = check_positive_int("depth", depth), heads, dim
        self._shape = dict(image_size=image_size, patch=patch, channels=channels, classes=classes, dim=dim,
                           depth=depth, heads=heads)
        with torch.device("meta"):
            ViT(**self._shape, drop_path_rate=0.0)  # validates the shape arguments
        per_model = _values("rates", rates, k)
        table = [[check_probability("rates", float(r)) for r in (row if isinstance(row, (list, tuple)) else [row] * depth)]
                 for row in per_model]
        if any(len(row) != depth for row in table):
            raise ValueError(f"rates must give one rate per block ({depth}) for each model")
        if any(r >= 1.0 for row in table for r in row):
            raise ValueError("rates must be < 1 (a branch dropped always has no gradient)")
        self.register_buffer("rates", torch.tensor(table, dtype=torch.float32))  # (K, depth)
        self._drops = any(r > 0 for row in table for r in row)  # known on the host: no sync in the step
        self.patch, self.tokens = patch, (image_size // patch) ** 2
        d, e = dim, channels * patch * patch
        for name, shape in {"embed_w": (d, e), "embed_b": (d,), "pos": (self.tokens, d), "norm_w": (d,),
                            "norm_b": (d,), "head_w": (classes, d), "head_b": (classes,)}.items():
            linear = name in ("embed_w", "head_w")  # stored for their bmm (see _weight)
            self.register_parameter(name, _weight(k, *shape) if linear else nn.Parameter(torch.empty(k, *shape)))
        self._add_blocks(k, depth, d)
        self.reset_parameters(seeds)

    @classmethod
    def _tensors(cls, m: nn.Module) -> dict[str, torch.Tensor]:
        """One ViT's tensors under the group's names, as views in the group's per-model shapes."""
        out = {"embed_w": m.embed.weight.view(m.embed.weight.shape[0], -1), "embed_b": m.embed.bias, "pos": m.pos[0],
               "norm_w": m.norm.weight, "norm_b": m.norm.bias, "head_w": m.head.weight, "head_b": m.head.bias}
        for j, b in enumerate(m.blocks):
            out.update(cls._block_tensors(j, b.norm1, b.norm2, b.attn, b.mlp[0], b.mlp[3]))
        return out

    def _single(self) -> nn.Module:
        from dropnotes.models import ViT

        return ViT(**self._shape, drop_path_rate=0.0)

    @classmethod
    def from_models(cls, models: Sequence[nn.Module]) -> "StackedViT":
        """Stack K :class:`~dropnotes.models.ViT` of one shape, each with its blocks' drop-path rates."""
        first = models[0]
        for m in models:
            if any(b.attn.attn_p > 0 or b.mlp[2].p > 0 or b.skip_dropped for b in m.blocks):
                raise ValueError("StackedViT stacks drop-path only: attn_p, p and skip_dropped must be 0/False")
        blocks = first.blocks[0]
        out = cls(len(models), image_size=int(math.isqrt(first.pos.shape[1])) * first.embed.stride[0],
                  patch=first.embed.stride[0], channels=first.embed.in_channels, classes=first.head.out_features,
                  dim=first.pos.shape[2], depth=len(first.blocks), heads=blocks.attn.heads,
                  rates=[[b.drop_path.p for b in m.blocks] for m in models])
        for i, m in enumerate(models):
            out._copy_in(m, i)
        return out.to(first.pos.device)

    def model(self, i: int) -> nn.Module:
        """Model ``i`` as a standalone :class:`~dropnotes.models.ViT` with its per-block rates."""
        m = self._single().to(self.pos.device)
        for block, r in zip(m.blocks, self.rates[i].tolist()):
            block.drop_path.p = r
        return self._copy_out(m, i)

    def extra_repr(self) -> str:
        return f"k={self.k}, depth={self.depth}, dim={self.dim}, heads={self.heads}, tokens={self.tokens}"

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) or (K, N, C, H, W) -> (K or 1, N·T, C·p·p), in the order of the patch conv."""
        p = self.patch
        *lead, c, h, w = x.shape
        x = x.reshape(-1, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (KN, H/p, W/p, C, p, p)
        return x.reshape(lead[0] if len(lead) == 2 else 1, -1, c * p * p)

    def forward(self, x: torch.Tensor, per_model: bool = False, generator: torch.Generator | None = None,
                masks: list | None = None) -> torch.Tensor:
        """``x``: images (N, C, H, W) for every model, or with ``per_model`` each model's own (K, N, C, H, W);
        returns logits (K, N, classes). In training, ``masks`` (2 per block, each (K, N, 1)) replace the
        drop-path draws."""
        k, t, d = self.k, self.tokens, self.dim
        n = x.shape[1] if per_model else x.shape[0]
        h = _linear(self._patches(x).expand(k, -1, -1), self.embed_w, self.embed_b)
        h = (h.view(k, n, t, d) + self.pos.unsqueeze(1)).view(k, n * t, d)
        drops = self.training and (self._drops or masks is not None)
        for j in range(self.depth):
            def residual(h: torch.Tensor, out: torch.Tensor, which: int) -> torch.Tensor:
                mult = masks[2 * j + which] if masks is not None else _drop_path_mult(
                    self.rates[:, j], n, out.device, generator)  # (K, N, 1): one draw per model and sample
                return torch.addcmul(h.view(k, n, t * d), out.view(k, n, t * d), mult.to(out.dtype)).view(k, n * t, d)

            h = self._block(h, j, n, t, causal=False, residual=residual if drops else None)
        # the final norm's affine commutes with the mean over tokens: applied to the (K, N, D) pooled features
        pooled = F.layer_norm(h, (d,)).view(k, n, t, d).mean(2)
        return _linear(torch.addcmul(self.norm_b.unsqueeze(1), pooled, self.norm_w.unsqueeze(1)), self.head_w, self.head_b)


def _runs(rates: Sequence[float]) -> tuple[tuple[int, int, float], ...]:
    """Runs (first, end, rate) of neighbouring models that share one rate."""
    out: list[list] = []
    for i, r in enumerate(rates):
        if out and out[-1][2] == r:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1, r])
    return tuple(tuple(run) for run in out)


class StackedGPT(_StackedTransformer):
    """K byte-level GPTs (:class:`~dropnotes.models.GPT`: token and position embeddings, pre-norm causal
    blocks, a head tied to the token embedding) as one group, for chapter 5's pretraining and fine-tuning
    arms. Model k has its own dropout rates on the embedding (``p_emb``), the attention probabilities
    (``p_attn``) and the residual branches (``p_resid``), held in (K,) buffers that :meth:`set_rates` changes
    in place during training (early dropout). The attention's rates are also kept on the host as runs of
    models sharing one (``attention_runs``): each run is one fused SDPA call with its ``dropout_p``, drawn from
    the device's default generator, so a captured step is captured again when they change. The noise sites
    are those of :class:`~dropnotes.models.GPT`; a site no model will ever use (``max_rate`` 0) is skipped."""

    def __init__(self, k: int, *, vocab_size: int = 256, block_size: int = 64, dim: int = 64, layers: int = 2,
                 heads: int = 2, p_emb=0.0, p_attn=0.0, p_resid=0.0, max_rate: float | None = None,
                 seeds: Sequence[int] | None = None) -> None:
        super().__init__()
        from dropnotes.models import GPT

        self.k = check_positive_int("k", k)
        self._shape = dict(vocab_size=vocab_size, block_size=block_size, dim=dim, layers=layers, heads=heads)
        with torch.device("meta"):
            GPT(**self._shape)  # validates the shape arguments
        self.vocab, self.block_size, self.dim, self.depth, self.heads = vocab_size, block_size, dim, layers, heads
        rates = {n: _values(n, v, k, check=check_probability) for n, v in (("p_emb", p_emb), ("p_attn", p_attn),
                                                                            ("p_resid", p_resid))}
        for name, values in rates.items():
            self.register_buffer(name, torch.tensor([float(v) for v in values]))
        self.attention_runs = _runs([float(v) for v in rates["p_attn"]])
        top = max(v for values in rates.values() for v in values) if max_rate is None else float(max_rate)
        self._drops = top > 0  # the noise sites exist in the step (their rates may later be 0)
        for name, shape in {"tok": (vocab_size, dim), "pos": (block_size, dim), "lnf_w": (dim,), "lnf_b": (dim,)}.items():
            self.register_parameter(name, nn.Parameter(torch.empty(k, *shape)))
        self._add_blocks(k, layers, dim)
        self.reset_parameters(seeds)

    @classmethod
    def _tensors(cls, m: nn.Module) -> dict[str, torch.Tensor]:
        out = {"tok": m.tok.weight, "pos": m.pos.weight, "lnf_w": m.ln_f.weight, "lnf_b": m.ln_f.bias}
        for j, b in enumerate(m.blocks):
            out.update(cls._block_tensors(j, b.ln1, b.ln2, b.attn, b.mlp[0], b.mlp[2]))
        return out

    def _single(self) -> nn.Module:
        from dropnotes.models import GPT

        return GPT(**self._shape)

    @classmethod
    def from_models(cls, models: Sequence[nn.Module], *, p_emb=0.0, p_attn=0.0, p_resid=0.0,
                    max_rate: float | None = None) -> "StackedGPT":
        """Stack K :class:`~dropnotes.models.GPT` of one shape (copies of one checkpoint for fine-tuning), with
        the group's per-model rates."""
        first = models[0]
        out = cls(len(models), vocab_size=first.tok.num_embeddings, block_size=first.block_size,
                  dim=first.tok.embedding_dim, layers=len(first.blocks), heads=first.blocks[0].attn.heads,
                  p_emb=p_emb, p_attn=p_attn, p_resid=p_resid, max_rate=max_rate)
        for i, m in enumerate(models):
            out._copy_in(m, i)
        return out.to(first.tok.weight.device)

    def model(self, i: int) -> nn.Module:
        """Model ``i`` as a standalone :class:`~dropnotes.models.GPT` (dropout off)."""
        return self._copy_out(self._single().to(self.tok.device), i)

    def set_rates(self, p_emb=None, p_attn=None, p_resid=None) -> None:
        """Change the per-model rates in place (a scalar or one per model; None leaves one unchanged)."""
        for name, value in (("p_emb", p_emb), ("p_attn", p_attn), ("p_resid", p_resid)):
            if value is not None:
                values = _per_model(name, value, self.k, check=check_probability)
                if bool((values > 0).any()) and not self._drops:
                    raise ValueError(f"{name}: this group was built without noise sites (max_rate 0)")
                getattr(self, name).copy_(values)
                if name == "p_attn":  # on the host: the attention's calls (a captured step must be captured again)
                    self.attention_runs = _runs(values.tolist())

    def extra_repr(self) -> str:
        return f"k={self.k}, layers={self.depth}, dim={self.dim}, heads={self.heads}, block_size={self.block_size}"

    def forward(self, ids: torch.Tensor, per_model: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """``ids``: (N, T) for every model, or each model's own (K, N, T); returns logits (K, N, T, V)."""
        k, d = self.k, self.dim
        ids = ids if per_model else ids.unsqueeze(0).expand(k, -1, -1)
        _, n, t = ids.shape
        if t > self.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size={self.block_size}")
        x = torch.gather(self.tok, 1, ids.reshape(k, -1, 1).expand(-1, -1, d)).view(k, n, t, d)
        x = x + self.pos[:, :t].unsqueeze(1)
        drops = self.training and self._drops
        if drops:
            x = unit_noise(x, self.p_emb, generator=generator)
        h = x.view(k, n * t, d)
        residual = None
        if drops:
            residual = lambda h_, out, _: torch.addcmul(h_, out, dropout_mult(out, self.p_resid, generator=generator))  # noqa: E731
        for j in range(self.depth):
            h = self._block(h, j, n, t, causal=True, residual=residual, attn_runs=self.attention_runs if drops else None)
        # the head is tied to the token embedding; the final norm's affine folded into it (its bias: tok @ beta)
        return _norm_linear(h, self.lnf_w, self.lnf_b, self.tok, torch.zeros_like(self.tok[..., 0])).view(
            k, n, t, self.vocab)


def window_orders(counts: Sequence[int], steps: int, batch_size: int, seeds: Sequence[int]) -> torch.Tensor:
    """Each model's window indices for ``steps`` batches, (K, steps, B), drawn as
    :func:`dropnotes.train.window_batches` draws them (random permutations of the model's ``counts[k]``
    windows, each window once before any repeats) from a generator seeded ``seeds[k]``: models of one seed
    and stream see the same batches, as their sequential runs did."""
    out = []
    for n, seed in zip(counts, seeds):
        g = torch.Generator().manual_seed(int(seed))
        perms, have = [], 0
        while have < steps * batch_size:
            perms.append(torch.randperm(n, generator=g))
            have += n
        out.append(torch.cat(perms)[: steps * batch_size].view(steps, batch_size))
    return torch.stack(out)


def make_window_step(model: StackedGPT, table: torch.Tensor, idx: torch.Tensor, *, lr: torch.Tensor,
                     weight_decay: torch.Tensor | None, betas: tuple[float, float], clip: torch.Tensor | None,
                     amp_dtype: torch.dtype | None, generator: torch.Generator | None, moments: list,
                     alive: torch.Tensor, died: torch.Tensor, step_no: torch.Tensor,
                     last: torch.Tensor | None = None) -> Callable[[], None]:
    """One training step of every model of ``model`` (what :func:`fit_stacked_windows` runs, and what
    ``dropnotes estimate`` counts): gather each model's windows ``table[idx]`` ((K, B) rows of
    (T + 1) tokens), the forward in ``amp_dtype``, the per-model mean loss, the backward, the dead-model
    marking (which advances ``step_no``), clipping and AdamW at the per-model rates ``lr``; the losses go to
    ``last``. Every tensor it reads or writes is an argument, so the step can be captured as a CUDA graph."""
    k, dev, params = model.k, table.device, list(model.parameters())

    def step() -> None:
        w = table[idx]  # (K, B, T + 1): each model's own windows
        with autocast(dev.type, amp_dtype, cache_enabled=False):
            logits = model(w[..., :-1], per_model=True, generator=generator)
        losses = F.cross_entropy(logits.float().flatten(0, -2), w[..., 1:].flatten(), reduction="none")
        losses = losses.view(k, -1).mean(1)
        for p in params:
            p.grad = None
        losses.sum().backward()
        _mark_dead(losses, alive, died, step_no)
        _adam_step(params, moments, step_no, lr, alive, clip, betas=betas, weight_decay=weight_decay)
        if last is not None:
            last.copy_(losses.detach())

    return step


def fit_stacked_windows(model: StackedGPT, streams: Sequence[torch.Tensor], valid: torch.Tensor, *, steps: int,
                        batch_size: int, lr, lr_factor: Callable[[int], float], weight_decay=0.0,
                        betas: tuple[float, float] = (0.9, 0.999), clip=None,
                        rates: Callable[[int], dict | None] | None = None, eval_every: int,
                        seeds: Sequence[int], amp_dtype: torch.dtype | None = None,
                        generator: torch.Generator | None = None, capture: bool = True,
                        desc: str = "GPTs", eval_also: Sequence[int] = ()) -> dict:
    """Train the K language models of ``model`` together on windows of their own token streams (model k on
    ``streams[k]``, batches from :func:`window_orders`), with AdamW per model (``lr``, decoupled
    ``weight_decay``, ``betas``, gradient clipping at ``clip[k]``), the rate multiplied by ``lr_factor(step)``
    (0-based) and the dropout rates set by ``rates(step)`` (keyword arguments of :meth:`StackedGPT.set_rates`,
    or None to leave them) before each step.

    Every ``eval_every`` steps, at the steps ``eval_also`` and at the end, each model's per-window validation losses
    on ``valid`` are
    measured in eval mode (the one host read). On CUDA the step (gather, forward, backward, clipping, AdamW) is
    captured once as a CUDA graph and replayed; the schedules write into tensors the graph reads. Returns the
    history (``model``, ``step``, ``train_loss`` of that step, ``valid_loss``), each evaluation's (K, windows)
    losses, the seconds of training between evaluations and the step at which a model died (-1 if not)."""
    from dropnotes.train import window_table

    k = model.k
    steps, eval_every = check_positive_int("steps", steps), check_positive_int("eval_every", eval_every)
    batch_size = check_positive_int("batch_size", batch_size)
    extra = {check_positive_int("eval_also", int(t)) for t in eval_also}
    if len(streams) != k:
        raise ValueError(f"streams must give one token stream per model ({k}), got {len(streams)}")
    dev = valid.device
    table, offsets, counts = window_table(streams, model.block_size)
    orders = (window_orders(counts, steps, batch_size, seeds) + torch.tensor(offsets).view(k, 1, 1)).to(dev)
    lr_k = _per_model("lr", lr, k).to(dev)
    lr_now = lr_k.clone()
    wd_k = _per_model("weight_decay", weight_decay, k)
    wd_k = wd_k.to(dev) if bool(wd_k.any()) else None
    clip_k = None if clip is None else _per_model("clip", clip, k).to(dev)
    params = list(model.parameters())
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    alive = torch.ones(k, dtype=torch.bool, device=dev)
    died = torch.full((k,), -1, dtype=torch.long, device=dev)
    step_no = torch.zeros((), dtype=torch.long, device=dev)
    last = torch.zeros(k, device=dev)
    idx = torch.zeros(k, batch_size, dtype=torch.long, device=dev)
    mask_gen = None if dev.type == "cuda" else generator

    step = make_window_step(model, table, idx, lr=lr_now, weight_decay=wd_k, betas=betas, clip=clip_k,
                            amp_dtype=amp_dtype, generator=mask_gen, moments=moments, alive=alive, died=died,
                            step_no=step_no, last=last)
    if dev.type == "cuda" and generator is not None:
        torch.cuda.manual_seed(int(torch.randint(0, 2**62, (), generator=generator, device=generator.device)))
    state = params + list(model.buffers()) + _flat(moments) + [alive, died, step_no, last]
    run_step = _captured(step, state, dev) if dev.type == "cuda" and capture else step
    runs = model.attention_runs
    rows, evals, seconds = [], {}, []
    model.train()
    timer = Timer(dev).start()
    for s in progress(range(steps), desc, unit="step"):
        if rates is not None and (new := rates(s)) is not None:
            model.set_rates(**new)
            if run_step is not step and model.attention_runs != runs:  # the attention's rates are in the graph
                runs = model.attention_runs
                run_step = _captured(step, state, dev)
        torch.mul(lr_k, float(lr_factor(s)), out=lr_now)
        idx.copy_(orders[:, s])
        run_step()
        if (s + 1) % eval_every == 0 or s + 1 == steps or s + 1 in extra:
            seconds.append(timer.elapsed())
            losses, _ = lm_window_losses_stacked(model, valid, batch_size, model.block_size, amp_dtype)
            evals[s + 1] = losses
            mean, train_loss = losses.mean(1).tolist(), last.tolist()
            for m in range(k):
                rows.append({"model": m, "step": s + 1, "train_loss": train_loss[m], "valid_loss": mean[m]})
            model.train()
            timer = Timer(dev).start()
    return {"history": pd.DataFrame(rows), "windows": evals, "seconds": seconds, "died_at_step": died.tolist()}
