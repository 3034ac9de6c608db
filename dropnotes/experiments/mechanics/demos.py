"""Chapter 1's worked examples: a mask, the two scalings' expected activations, and a gradient through dropout."""

from __future__ import annotations

import math

import pandas as pd
import torch

from dropnotes import functional as DF


# --------------------------------------------------------------------------- the worked examples


def mask_demo(p: float, seed: int, shape: tuple[int, int] = (4, 8)) -> pd.DataFrame:
    """One Bernoulli mask and the inverted-dropout output on an all-ones input."""
    torch.manual_seed(seed)
    out = DF.dropout(torch.ones(shape), p, training=True)
    return pd.DataFrame(out.numpy()).rename(columns=lambda j: f"unit {j}")


def scaling_table(p: float, activation: float = 2.0, draws: int = 200_000, seed: int = 0) -> pd.DataFrame:
    """Inverted versus classic dropout on one unit of value ``activation``: training outputs, their
    Monte-Carlo mean over ``draws`` masks, and the deterministic eval output."""
    torch.manual_seed(seed)
    x = torch.full((draws,), activation, dtype=torch.float64)
    rows = []
    for inverted, name in ((True, "inverted: scale by 1/(1-p) in training"),
                           (False, "classic: scale by (1-p) at test time")):
        y = DF.dropout(x, p, training=True, inverted=inverted)
        kept_value = activation / (1 - p) if inverted else activation
        rows.append({"scheme": name, "kept unit (training)": kept_value, "dropped unit (training)": 0.0,
                     "exact mean (training)": (1 - p) * kept_value,
                     "MC mean (training)": float(y.mean()),
                     "MC standard error": float(y.std() / math.sqrt(draws)),
                     "eval output": float(DF.dropout(x[:1], p, training=False, inverted=inverted))})
    return pd.DataFrame(rows)


def gradient_demo(p: float, seed: int, n: int = 10) -> pd.DataFrame:
    """The gradient of ``sum(dropout(x))`` with respect to x is the scaled mask: zero exactly where a unit
    was dropped, ``1/(1-p)`` where it was kept."""
    torch.manual_seed(seed)
    x = torch.linspace(-1, 1, n, requires_grad=True)
    y = DF.dropout(x, p, training=True)
    y.sum().backward()
    return pd.DataFrame({"x": x.detach().numpy(), "dropout(x)": y.detach().numpy(), "d/dx": x.grad.numpy(),
                         "kept": (y.detach() != 0).numpy()})
