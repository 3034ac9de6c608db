"""Chapter 7's (cost) cost-model groups, counted on the meta device (why apart: the package docstring)."""

from __future__ import annotations

from dataclasses import replace

import torch

from dropnotes import bench
from dropnotes.costmodel import Group, dtype_of, meta_step
from dropnotes.experiments.cost import CostConfig, _models


def groups(cfg: CostConfig) -> list[Group]:
    """The kernel benchmark's timing budget, and each model's training step (3 variants, interleaved rounds)."""
    # Timed by torch.utils.benchmark: each call runs for at least its budget; every variant with a PyTorch
    # counterpart is timed twice per side (interleaved), plus the copy reference and SDPA's 3 kernels x 2 rates.
    calls = sum(4 if ref is not None else 1 for _, ref, _ in bench.VARIANTS.values()) * len(cfg.sizes) + 1 + 6
    out = [Group("cost", "kernel benchmark and SDPA (timing budget)", 1, 0, 0.0, 0, fixed_s=calls * cfg.min_run_time)]
    dtype = dtype_of(cfg)
    with torch.device("meta"):
        for name, (model, x, y, loss_fn) in _models(replace(cfg, device="meta"), 0.1).items():
            if y is None:
                x, y = x[:, :-1], x[:, 1:]
            f, n, b = meta_step(model, x, y, loss=lambda out, t, fn=loss_fn: fn(out.float(), t), optimizer="adamw",
                                amp=cfg.amp)
            out.append(Group("cost", f"{name} training step (3 variants, interleaved rounds)", 3,
                             cfg.rounds * cfg.steps_per_round + 3, f, n, dtype, bytes_per_step=b))
    return out
