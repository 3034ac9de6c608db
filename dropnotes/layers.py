r"""Dropout variants as thin ``nn.Module`` wrappers over :mod:`dropnotes.functional`.

Each module stores its rate, prints it (``extra_repr``), and is the identity in eval mode.
All of them subclass :class:`StochasticModule`, which is how :func:`dropnotes.mc.mc_predict`
finds the layers to keep stochastic at test time.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from dropnotes import functional as DF
from dropnotes.runtime import check_choice, check_flag, check_positive_int, check_probability

__all__ = [
    "StochasticModule", "Dropout", "GaussianDropout", "DropConnectLinear", "SpatialDropout",
    "VariationalDropout", "EmbeddingDropout", "WeightDrop", "DropPath", "DropBlock2d",
    "ConcreteDropout", "SparseVariationalLinear", "SelfAttention", "LoRALinear", "add_lora", "drop_path_rates",
    "STOCHASTIC_TYPES",
]


class StochasticModule(nn.Module):
    """Marker base class: a layer whose training-mode behaviour is random (kept on for MC dropout)."""


class _RateModule(StochasticModule):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = check_probability("p", p)

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


class Dropout(_RateModule):
    r"""Bernoulli dropout (Srivastava et al. 2014); see :func:`dropnotes.functional.dropout`.

    ``inverted=True`` scales by :math:`1/(1-p)` in training (eval: identity); ``inverted=False``
    is the paper's form (training: no scaling; eval: multiply by :math:`1-p`).
    """

    def __init__(self, p: float = 0.5, inverted: bool = True) -> None:
        super().__init__(p)
        self.inverted = check_flag("inverted", inverted)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return DF.dropout(x, self.p, self.training, self.inverted)

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}" + ("" if self.inverted else ", inverted=False")


class GaussianDropout(_RateModule):
    r"""Multiplicative :math:`\mathcal{N}(1, p/(1-p))` noise (Srivastava et al. 2014, §10)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return DF.gaussian_dropout(x, self.p, self.training)


class DropConnectLinear(nn.Linear, StochasticModule):
    r"""``nn.Linear`` with DropConnect on its weight matrix (Wan et al. 2013); eval is exact ``F.linear``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, p: float = 0.5, **kw) -> None:
        super().__init__(check_positive_int("in_features", in_features), check_positive_int("out_features", out_features),
                         bias=check_flag("bias", bias), **kw)
        self.p = check_probability("p", p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return DF.dropconnect(x, self.weight, self.bias, self.p, self.training)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p:.3f}"


class SpatialDropout(_RateModule):
    """Drop whole channels of ``(N, C, *)`` maps (Tompson et al. 2015)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return DF.spatial_dropout(x, self.p, self.training)


class VariationalDropout(_RateModule):
    """One mask per (sequence, feature), the same at every time step (Gal & Ghahramani 2016)."""

    def __init__(self, p: float = 0.5, batch_first: bool = True) -> None:
        super().__init__(p)
        self.batch_first = check_flag("batch_first", batch_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return DF.variational_dropout(x, self.p, self.training, self.batch_first)

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}, batch_first={self.batch_first}"


class EmbeddingDropout(nn.Embedding, StochasticModule):
    """``nn.Embedding`` that drops whole word types in training (Gal & Ghahramani 2016)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, p: float = 0.1, **kw) -> None:
        super().__init__(num_embeddings, embedding_dim, **kw)
        self.p = check_probability("p", p)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return DF.embedding_dropout(input_ids, self.weight, self.p, self.training)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p:.3f}"


class WeightDrop(StochasticModule):
    r"""DropConnect on named weights of a wrapped module, e.g. ``nn.LSTM``'s ``weight_hh_l0``.

    The AWD-LSTM regulariser (Merity et al. 2018): one mask per forward call on the
    hidden-to-hidden matrices, so the cuDNN kernel still runs over the whole sequence. The dropped
    weights are passed in with :func:`torch.func.functional_call`, leaving the wrapped module's
    parameters untouched.
    """

    def __init__(self, module: nn.Module, weights: list[str] | tuple[str, ...] = ("weight_hh_l0",),
                 p: float = 0.5) -> None:
        super().__init__()
        self.module = module
        self.p = check_probability("p", p)
        names = dict(module.named_parameters())
        for name in weights:
            check_choice("weights", name, names)
        self.weights = tuple(weights)

    def forward(self, *args, **kwargs):
        if not self.training or self.p == 0.0:
            return self.module(*args, **kwargs)
        dropped = {n: DF.dropout(self.module.get_parameter(n), self.p, True) for n in self.weights}
        return torch.func.functional_call(self.module, dropped, args, kwargs, strict=False)

    def extra_repr(self) -> str:
        return f"weights={list(self.weights)}, p={self.p:.3f}"


class DropPath(StochasticModule):
    """Stochastic depth on a residual branch (Huang et al. 2016): one draw per sample."""

    def __init__(self, p: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.p = check_probability("p", p)
        self.scale_by_keep = check_flag("scale_by_keep", scale_by_keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return DF.drop_path(x, self.p, self.training, self.scale_by_keep)

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


class DropBlock2d(StochasticModule):
    """Drop ``block_size`` × ``block_size`` squares of feature maps (Ghiasi et al. 2018)."""

    def __init__(self, p: float = 0.1, block_size: int = 7) -> None:
        super().__init__()
        self.p = check_probability("p", p)
        self.block_size = check_positive_int("block_size", block_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return DF.drop_block(x, self.p, self.block_size, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}, block_size={self.block_size}"


class ConcreteDropout(StochasticModule):
    r"""Concrete dropout in front of ``layer``, with a learned rate (Gal, Hron & Kendall 2017).

    ``forward(x) = layer(concrete_dropout(x, p))``. Add :meth:`regularization` to the loss:
    :math:`\lambda_w \lVert W\rVert^2/(1-p) - \lambda_p\, d\, \mathcal{H}(p)`, with :math:`d` the
    input dimension and :math:`\mathcal{H}` the Bernoulli entropy; the paper sets
    :math:`\lambda_w = l^2/(N\tau)` and :math:`\lambda_p = 2/(N\tau)` for N training points.
    """

    def __init__(self, layer: nn.Module, p_init: float = 0.1, temperature: float = 0.1,
                 weight_regularizer: float = 1e-6, dropout_regularizer: float = 1e-5) -> None:
        super().__init__()
        p_init = check_probability("p_init", p_init)
        if p_init == 0.0:
            raise ValueError("p_init must be in (0, 1) for ConcreteDropout, got 0.0")
        self.layer = layer
        self.p_logit = nn.Parameter(torch.tensor(math.log(p_init) - math.log1p(-p_init)))
        self.temperature = float(temperature)
        self.weight_regularizer = float(weight_regularizer)
        self.dropout_regularizer = float(dropout_regularizer)
        self._input_dim = 0

    @property
    def p(self) -> torch.Tensor:
        return torch.sigmoid(self.p_logit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._input_dim = x.shape[-1] if x.dim() == 2 else x[0].numel()
        return self.layer(DF.concrete_dropout(x, self.p, self.temperature, self.training))

    def regularization(self) -> torch.Tensor:
        p = self.p
        sq = sum((w ** 2).sum() for w in self.layer.parameters())
        weight_term = self.weight_regularizer * sq / (1.0 - p)
        neg_entropy = p * torch.log(p) + (1.0 - p) * torch.log1p(-p)
        return weight_term + self.dropout_regularizer * self._input_dim * neg_entropy

    def extra_repr(self) -> str:
        return f"p={self.p.item():.3f}, temperature={self.temperature}"


class SparseVariationalLinear(StochasticModule):
    r"""Linear layer with learned per-weight Gaussian dropout (Kingma et al. 2015; Molchanov et al. 2017).

    Each weight is :math:`w = \theta(1 + \sqrt{\alpha}\,\varepsilon)`, :math:`\log\alpha =
    \log\sigma^2 - \log\theta^2`. Training uses the local reparameterisation trick (Gaussian noise
    on pre-activations: mean :math:`x\theta^\top`, variance :math:`x^2\sigma^{2\top}`); eval uses
    :math:`\theta` with weights of :math:`\log\alpha >` ``threshold`` pruned. :meth:`kl` is
    Molchanov et al.'s approximation of :math:`\mathrm{KL}(q\,\|\,p)` under the log-uniform prior.
    """

    K1, K2, K3 = 0.63576, 1.87320, 1.48695

    def __init__(self, in_features: int, out_features: int, bias: bool = True, threshold: float = 3.0) -> None:
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        bias = check_flag("bias", bias)
        self.threshold = float(threshold)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.log_sigma2 = nn.Parameter(torch.full((out_features, in_features), -10.0))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    @property
    def log_alpha(self) -> torch.Tensor:
        return (self.log_sigma2 - torch.log(self.weight ** 2 + 1e-8)).clamp(-10.0, 10.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.linear(x, self.weight * (self.log_alpha < self.threshold), self.bias)
        mean = F.linear(x, self.weight, self.bias)
        var = F.linear(x * x, torch.exp(self.log_alpha) * self.weight ** 2)
        return mean + torch.sqrt(var + 1e-8) * torch.randn_like(mean)

    def kl(self) -> torch.Tensor:
        la = self.log_alpha
        neg_kl = self.K1 * torch.sigmoid(self.K2 + self.K3 * la) - 0.5 * F.softplus(-la) - self.K1
        return -neg_kl.sum()

    def sparsity(self) -> float:
        """Fraction of weights pruned at eval (``log_alpha > threshold``)."""
        return float((self.log_alpha >= self.threshold).float().mean())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, threshold={self.threshold}")


class SelfAttention(StochasticModule):
    r"""Multi-head self-attention with attention dropout inside the fused kernel.

    The rate goes to :func:`torch.nn.functional.scaled_dot_product_attention` as ``dropout_p`` in
    training and as 0 in eval (dropout on the softmax probabilities, as in Vaswani et al. 2017).
    ``x`` is (N, T, D); ``causal=True`` masks future positions.
    """

    def __init__(self, dim: int, heads: int, p_attn: float = 0.0, causal: bool = False, bias: bool = True) -> None:
        super().__init__()
        self.dim, self.heads = check_positive_int("dim", dim), check_positive_int("heads", heads)
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.p_attn = check_probability("p_attn", p_attn)
        self.causal = check_flag("causal", causal)
        self.qkv = nn.Linear(dim, 3 * dim, bias=check_flag("bias", bias))
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p_attn if self.training else 0.0,
                                           is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(n, t, d))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, p_attn={self.p_attn:.3f}, causal={self.causal}"


class LoRALinear(StochasticModule):
    r"""A frozen ``nn.Linear`` plus a trainable low-rank update (Hu et al. 2022), with LoRA dropout.

    :math:`y = W_0 x + b + \frac{\alpha}{r} B A\,\mathrm{dropout}_p(x)`, with :math:`A` (r × in)
    Kaiming-initialised and :math:`B` (out × r) zero, so the wrapped layer starts unchanged. The
    dropout acts on the adapter's input only (``lora_dropout`` in common fine-tuning configs).
    :meth:`merged` returns the plain ``nn.Linear`` with :math:`W_0 + \frac{\alpha}{r} BA`.
    """

    def __init__(self, base: nn.Linear, r: int = 4, alpha: float = 8.0, p: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        self.base = base
        for prm in base.parameters():
            prm.requires_grad_(False)
        self.r = check_positive_int("r", r)
        self.scale = float(alpha) / self.r
        self.p = check_probability("p", p)
        like = dict(device=base.weight.device, dtype=base.weight.dtype)  # on the wrapped layer's device
        self.lora_a = nn.Parameter(torch.empty(self.r, base.in_features, **like))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, self.r, **like))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(DF.dropout(x, self.p, self.training), self.lora_a), self.lora_b)
        return self.base(x) + self.scale * update

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        out.weight.copy_(self.base.weight + self.scale * self.lora_b @ self.lora_a)
        if self.base.bias is not None:
            out.bias.copy_(self.base.bias)
        return out.to(self.base.weight.device)

    def extra_repr(self) -> str:
        return (f"in_features={self.base.in_features}, out_features={self.base.out_features}, r={self.r}, "
                f"scale={self.scale:g}, p={self.p:.3f}")


def add_lora(model: nn.Module, targets: tuple[str, ...] = ("qkv",), r: int = 4, alpha: float = 8.0,
             p: float = 0.0) -> nn.Module:
    """Freeze every parameter of ``model`` and replace each ``nn.Linear`` whose attribute name is in
    ``targets`` by a :class:`LoRALinear` around it (in place); returns the model."""
    for prm in model.parameters():
        prm.requires_grad_(False)
    found = []
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(module, name, LoRALinear(child, r=r, alpha=alpha, p=p))
                found.append(name)
    if not found:
        raise ValueError(f"targets={targets} matched no nn.Linear in the model")
    return model


def drop_path_rates(depth: int, max_rate: float, schedule: str = "linear") -> list[float]:
    """Per-block drop-path rates: ``linear`` rises from 0 at the first block to ``max_rate`` at the last
    (Huang et al. 2016's decay rule as timm applies it); ``uniform`` gives every block ``max_rate``."""
    depth = check_positive_int("depth", depth)
    max_rate = check_probability("max_rate", max_rate)
    check_choice("schedule", schedule, ("linear", "uniform"))
    if schedule == "uniform" or depth == 1:
        return [max_rate] * depth if schedule == "uniform" else [0.0]
    return [max_rate * i / (depth - 1) for i in range(depth)]


STOCHASTIC_TYPES = (
    StochasticModule, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
