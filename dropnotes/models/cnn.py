"""A small batch-norm CNN with a dropout placement switch (chapter 6).

``conv(1->c1) -> BN -> ReLU -> pool -> conv(c1->c2) -> [drop1] -> BN -> ReLU -> pool -> [drop2] -> linear``.
Each placement has one dropout layer, so the placements differ in where it sits and nothing else:
``placement="before-bn"`` uses ``drop1``, directly before the second BN layer (the setting of Li et al.
2019's variance shift); ``"after-bn"`` uses ``drop2``, after the last BN; ``"none"`` has no dropout.
``noise`` picks Bernoulli (``"pixel"``), channel-wise (``"spatial"``) or Gaussian dropout of the same variance.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from dropnotes.layers import Dropout, GaussianDropout, SpatialDropout
from dropnotes.runtime import check_choice, check_positive_int, check_probability

PLACEMENTS = ("none", "before-bn", "after-bn")
NOISES = {"pixel": Dropout, "spatial": SpatialDropout, "gaussian": GaussianDropout}


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int = 1, classes: int = 10, channels: tuple[int, int] = (16, 32),
                 placement: str = "none", p: float = 0.3, noise: str = "pixel", image_size: int = 28) -> None:
        super().__init__()
        self.placement = check_choice("placement", placement, PLACEMENTS)
        noise_cls = NOISES[check_choice("noise", noise, NOISES)]
        p = check_probability("p", p)
        c1, c2 = (check_positive_int("channels", c) for c in channels)
        in_channels, classes = check_positive_int("in_channels", in_channels), check_positive_int("classes", classes)
        image_size = check_positive_int("image_size", image_size, minimum=4)
        drop = lambda on: noise_cls(p) if on and p > 0 else nn.Identity()  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False), drop(placement == "before-bn"),
            nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2), drop(placement == "after-bn"))
        self.head = nn.Linear(c2 * (image_size // 4) ** 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))

    @property
    def bn_layers(self) -> list[nn.BatchNorm2d]:
        return [m for m in self.features if isinstance(m, nn.BatchNorm2d)]
