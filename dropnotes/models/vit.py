"""A small Vision Transformer with stochastic depth (Dosovitskiy et al. 2021; Touvron et al. 2021).

Patch embedding -> learned position embedding -> ``depth`` pre-norm blocks, each
``x + DropPath(Attention(LN(x)))`` then ``x + DropPath(MLP(LN(x)))`` -> LN -> mean over tokens -> head.
Block ``i`` drops its branches with rate ``drop_path_rates(depth, p_path, schedule)[i]``;
attention dropout runs inside ``scaled_dot_product_attention``. With ``skip_dropped=True`` a
dropped sample's branch is not computed at all (:func:`dropnotes.functional.drop_path_skip`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from dropnotes.functional import drop_path_skip
from dropnotes.runtime import check_flag, check_positive_int, check_probability
from dropnotes.layers import Dropout, DropPath, SelfAttention, drop_path_rates


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, p_path: float, p_attn: float = 0.0, p: float = 0.0,
                 skip_dropped: bool = False) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, p_attn=p_attn)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), Dropout(p), nn.Linear(4 * dim, dim), Dropout(p))
        self.drop_path = DropPath(p_path)
        self.skip_dropped = check_flag("skip_dropped", skip_dropped)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = lambda t: self.attn(self.norm1(t))  # noqa: E731
        mlp = lambda t: self.mlp(self.norm2(t))  # noqa: E731
        if self.skip_dropped:
            x = drop_path_skip(x, attn, self.drop_path.p, self.training)
            return drop_path_skip(x, mlp, self.drop_path.p, self.training)
        x = x + self.drop_path(attn(x))
        return x + self.drop_path(mlp(x))


class ViT(nn.Module):
    def __init__(self, image_size: int = 32, patch: int = 4, channels: int = 3, classes: int = 10, dim: int = 192,
                 depth: int = 12, heads: int = 3, p_path: float = 0.1, schedule: str = "linear",
                 p_attn: float = 0.0, p: float = 0.0, skip_dropped: bool = False) -> None:
        super().__init__()
        for name, value in (("image_size", image_size), ("patch", patch), ("channels", channels), ("classes", classes),
                            ("dim", dim), ("depth", depth), ("heads", heads)):
            check_positive_int(name, value)
        p_path = check_probability("p_path", p_path)
        skip_dropped = check_flag("skip_dropped", skip_dropped)
        if image_size % patch:
            raise ValueError(f"image_size={image_size} must be divisible by patch={patch}")
        self.embed = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, (image_size // patch) ** 2, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, r, p_attn, p, skip_dropped)
                                    for r in drop_path_rates(depth, p_path, schedule))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos  # (N, tokens, dim)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(1))
