"""Chapter 4's budget: the ViT's training FLOPs and the CPU hours its profiles would take (why it has no laptop
profile)."""

from __future__ import annotations

import torch

from dropnotes import bench
from dropnotes.runtime import cpu_bf16_fast
from dropnotes.experiments.droppath.config import DEIT_DEFAULT_RATE, DropPathConfig, configure
from dropnotes.experiments.droppath.train import arms


def vit_train_flops(dim: int, depth: int, images: int, image_size: int = 32, patch: int = 4) -> float:
    """Multiply-add FLOPs of training a :class:`~dropnotes.models.ViT` on ``images`` images: per block and token
    (one a patch; the head reads their mean), the qkv, projection and 4x MLP products (12 dim²) and the attention's
    scores and mixing (2 x tokens x dim), 3 x the forward's (forward, input and weight gradients); the patch
    embedding 2 x (no input gradient) and the head."""
    tokens = (image_size // patch) ** 2
    block = 12 * dim * dim * tokens + 2 * tokens * tokens * dim
    embed = tokens * 3 * patch * patch * dim
    return 2.0 * (3 * (depth * block + dim * 10) + 2 * embed) * images


def train_flops(cfg: "DropPathConfig") -> float:
    """The training FLOPs of every model of a run of ``cfg`` (both depths' groups, every epoch)."""
    group = arms(cfg, DEIT_DEFAULT_RATE)
    return sum(len(models) * vit_train_flops(cfg.dim, depth, cfg.train_size * cfg.epochs)
               for depth, models in group.items())


def cpu_hours(device: str = "cpu") -> dict:
    """Why this chapter has no laptop profile: the full profile's training FLOPs, and the hours they take on this
    CPU at its 2048³ product rate in its faster precision (bf16 where its products are native, else float32),
    measured now (a lower bound: small ViT products run well below it)."""
    cfg = configure("full", device=device)
    # the CPU's faster precision: bf16 where it has native bf16 products, else float32 (its bf16 fallback is slower)
    precision = "bf16" if torch.device(device).type != "cpu" or cpu_bf16_fast() else "fp32"
    rate = bench.matmul_rate(device, torch.bfloat16 if precision == "bf16" else torch.float32)
    flops = train_flops(cfg)
    return {"flops": flops, "matmul_2048_gflops_per_s": rate / 1e9, "precision": precision,
            "hours_at_least": flops / rate / 3600,
            "setting": f"depth {cfg.depth} against {cfg.shallow_depth}, width {cfg.dim}, {cfg.train_size:,} images, "
                       f"{cfg.epochs} epochs, {len(cfg.rates)} rates, {cfg.n_seeds} seeds"}


def laptop_sentence(device: str = "cpu") -> str:
    """The chapter's generated statement of why its claims need a GPU."""
    e = cpu_hours(device)
    return (f"No laptop profile: the smallest setting where depth and drop-path effects are expected ({e['setting']}) "
            f"is {e['flops'] / 1e15:,.0f} PFLOP of training, at least {e['hours_at_least']:,.0f} hours on this CPU even "
            f"at its 2048³ {e['precision']} product rate ({e['matmul_2048_gflops_per_s']:,.0f} GFLOP/s, measured now), "
            f"against the 45-minute laptop budget. Its claims need a GPU.")
