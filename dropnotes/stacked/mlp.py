"""The stacked MLPs: :class:`StackedMLP` (batched matrix products, per-model unit noise or DropConnect) and
:class:`StackedSparseMLP` (sparse variational dropout, Molchanov et al. 2017), with their autograd Functions."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from dropnotes.amp import MetaAutocast
from dropnotes.runtime import check_choice, check_positive_int, check_probability
from dropnotes.stacked.noise import (_generators, _per_model, _seeded, _values, _weight, noise_constants, noise_plan,
                                     unit_noise)
from dropnotes.models import MLP
from dropnotes.layers import SparseVariationalLinear
from dropnotes.models import SparseMLP


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
        self._plans = {}  # each site's noise_plan (its index tensors kept as buffers that follow the device)
        for site, rate in (("input", p_input), ("hidden", p_hidden)):
            plan = noise_plan(_values(f"p_{site}", rate, k), [v == "gaussian" for v in kinds])
            self._plans[site] = plan is not None
            for kind, idx in zip(("bernoulli", "spatial", "gaussian"), plan or ()):
                self.register_buffer(f"plan_{site}_{kind}", torch.tensor(idx, dtype=torch.long), persistent=False)
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
        plan = tuple(getattr(self, f"plan_{site}_{kind}") for kind in ("bernoulli", "spatial", "gaussian")) \
            if self._plans[site] else None
        return unit_noise(h, getattr(self, f"p_{site}"), gaussian=self.gaussian if self._any_gaussian else None,
                          generator=generator, mask=mask, constants=getattr(self, f"noise_{site}"), plan=plan)

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
