"""A fully connected ReLU classifier with dropout on its input and hidden layers (Srivastava et al. 2014)."""

from __future__ import annotations

import torch
import torch.nn as nn

from dropnotes.layers import Dropout, SparseVariationalLinear
from dropnotes.runtime import check_positive_int, check_probability


class MLP(nn.Module):
    """``in -> [Dropout(p_input)] -> (Linear -> ReLU -> Dropout(p_hidden)) x len(hidden) -> Linear -> out``.

    Inputs of any shape (N, ...) are flattened. With both rates 0 it is a plain MLP.
    """

    def __init__(self, in_features: int = 784, hidden: tuple[int, ...] = (1024, 1024, 1024),
                 out_features: int = 10, p_input: float = 0.0, p_hidden: float = 0.0) -> None:
        super().__init__()
        self.p_input = check_probability("p_input", p_input)
        self.p_hidden = check_probability("p_hidden", p_hidden)
        widths = [check_positive_int("in_features", in_features)] + [check_positive_int("hidden", h) for h in hidden]
        layers: list[nn.Module] = [Dropout(self.p_input)] if self.p_input else []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()] + ([Dropout(self.p_hidden)] if self.p_hidden else [])
        layers.append(nn.Linear(widths[-1], check_positive_int("out_features", out_features)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class SparseMLP(nn.Module):
    """LeNet-300-100 style ReLU net of :class:`~dropnotes.layers.SparseVariationalLinear` layers
    (Molchanov et al. 2017): per-weight learned dropout rates; weights with log α > 3 are pruned at eval."""

    def __init__(self, in_features: int = 784, hidden: tuple[int, ...] = (300, 100), out_features: int = 10) -> None:
        super().__init__()
        widths = [check_positive_int("in_features", in_features)] + [check_positive_int("hidden", h) for h in hidden]
        widths.append(check_positive_int("out_features", out_features))
        self.layers = nn.ModuleList(SparseVariationalLinear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for k, layer in enumerate(self.layers):
            x = layer(x) if k == len(self.layers) - 1 else torch.relu(layer(x))
        return x

    def kl(self) -> torch.Tensor:
        """The summed KL term of every layer (nats)."""
        return sum(layer.kl() for layer in self.layers)

    def sparsity(self) -> list[float]:
        """Fraction of pruned weights, per layer."""
        return [layer.sparsity() for layer in self.layers]

    def compression(self) -> float:
        """All weights over the weights kept at eval (Molchanov et al.'s compression ratio)."""
        total = sum(layer.weight.numel() for layer in self.layers)
        kept = sum(int((layer.log_alpha < layer.threshold).sum()) for layer in self.layers)
        return total / max(kept, 1)
