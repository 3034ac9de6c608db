"""The stacked batch-norm CNN of chapter 6 (:class:`StackedCNN`): grouped convolutions, one channel block per model."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from dropnotes.runtime import check_choice, check_positive_int, check_probability
from dropnotes.stacked.noise import _generators, _values, noise_constants, noise_plan, unit_noise
from dropnotes.layers import Dropout, GaussianDropout, SpatialDropout
from dropnotes.models import SmallCNN


class StackedCNN(nn.Module):
    """K :class:`~dropnotes.models.SmallCNN` (conv-BN-ReLU-pool, twice, and a linear head) as one group.

    Every convolution is one grouped convolution over the K models' channel blocks, and every batch-norm
    layer normalises each model's channels over that model's own batch, so the group computes exactly
    the K separate networks. Model k applies noise with rate ``p_before_bn[k]`` directly before the second BN layer
    (after the second convolution: SmallCNN's ``"before-bn"`` placement) and ``p_after_bn[k]`` after block 2 (after
    the last BN: ``"after-bn"``);
    ``noise[k]`` is ``"pixel"`` (Bernoulli per unit), ``"spatial"`` (per channel) or ``"gaussian"``.
    Parameters have shape (K, ...); the BN running statistics are (K, channels) buffers.
    """

    NOISES = ("pixel", "spatial", "gaussian")

    def __init__(self, k: int, in_channels: int = 1, classes: int = 10, channels: tuple[int, int] = (16, 32),
                 image_size: int = 28, *, p_before_bn=0.0, p_after_bn=0.0, noise="pixel",
                 seeds: Sequence[int] | None = None) -> None:
        super().__init__()
        self.k = check_positive_int("k", k)
        self.in_channels, self.classes = check_positive_int("in_channels", in_channels), check_positive_int("classes", classes)
        self.channels = tuple(check_positive_int("channels", c) for c in channels)
        self.image_size = check_positive_int("image_size", image_size, minimum=4)
        c1, c2 = self.channels
        p_before_bn_v, p_after_bn_v = (_values(n, v, k, check=check_probability)
                                       for n, v in (("p_before_bn", p_before_bn), ("p_after_bn", p_after_bn)))
        kinds = _values("noise", noise, k, check=lambda n, v: check_choice(n, v, self.NOISES))
        self.noise = tuple(kinds)
        self._sites = (any(v > 0 for v in p_before_bn_v), any(v > 0 for v in p_after_bn_v))
        self._kinds = ("spatial" in kinds, "gaussian" in kinds)
        self.register_buffer("p_before_bn", torch.tensor([float(v) for v in p_before_bn_v]))
        self.register_buffer("p_after_bn", torch.tensor([float(v) for v in p_after_bn_v]))
        self.register_buffer("noise1", noise_constants(self.p_before_bn))  # the rates are fixed: their noise constants kept
        self.register_buffer("noise2", noise_constants(self.p_after_bn))
        self.register_buffer("spatial", torch.tensor([v == "spatial" for v in kinds]))
        self.register_buffer("gaussian", torch.tensor([v == "gaussian" for v in kinds]))
        self._plans = []  # each site's noise_plan (its index tensors kept as buffers that follow the device)
        for i, rate in enumerate((p_before_bn_v, p_after_bn_v)):
            plan = noise_plan(rate, [v == "gaussian" for v in kinds], [v == "spatial" for v in kinds])
            self._plans.append(plan is not None)
            for kind, idx in zip(("bernoulli", "spatial", "gaussian"), plan or ()):
                self.register_buffer(f"plan{i + 1}_{kind}", torch.tensor(idx, dtype=torch.long), persistent=False)
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
                  p_before_bn=[s1[0] for s1, _ in sites], p_after_bn=[s2[0] for _, s2 in sites], noise=kinds)
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

        p_before_bn, p_after_bn = float(self.p_before_bn[i]), float(self.p_after_bn[i])
        if p_before_bn > 0 and p_after_bn > 0:
            raise ValueError(f"model {i} has noise at both sites (p_before_bn={p_before_bn:g}, p_after_bn={p_after_bn:g}): "
                             "a SmallCNN has one dropout layer")
        placement = "before-bn" if p_before_bn > 0 else "after-bn" if p_after_bn > 0 else "none"
        net = SmallCNN(self.in_channels, self.classes, self.channels, placement=placement, p=max(p_before_bn, p_after_bn),
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
        out = unit_noise(h5, self.p_before_bn if i == 0 else self.p_after_bn, model_dim=1, generator=generator, mask=mask,
                         spatial=self.spatial if self._kinds[0] else None,
                         gaussian=self.gaussian if self._kinds[1] else None,
                         constants=self.noise1 if i == 0 else self.noise2,
                         plan=tuple(getattr(self, f"plan{i + 1}_{kind}") for kind in ("bernoulli", "spatial", "gaussian"))
                         if self._plans[i] else None)
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
