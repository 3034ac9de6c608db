"""A profile's wall time on *this* machine, predicted before the run: the chapter's model groups (the same FLOP
counts as the GPU estimate: the chapter's ``groups``) timed at this CPU's own rate, measured in a few
seconds on the chapter's own training steps (the chapter's ``timed_steps``), in the precision the
profile runs in here (float32 where the CPU has no fast bf16 products: :func:`dropnotes.runtime.cpu_bf16_fast`).

A group whose step is one of the measured steps takes that step's measured seconds; any other group (evaluation
passes, a chapter's smaller groups) takes its FLOPs at this CPU's measured rate on a large product in the
profile's precision plus its kernels at this CPU's measured time for one small operation. What is not a model
step (loading data, a benchmark's budget) enters as the groups' fixed seconds, or not at all: the prediction is
of the training and evaluation.
"""

from __future__ import annotations

import time

import torch

from dropnotes.costmodel import measure
from dropnotes.experiments import REGISTRY


def op_seconds(repeats: int = 2000) -> float:
    """This CPU's time for one small PyTorch operation (dispatch and launch, no arithmetic to speak of)."""
    a = torch.zeros(8)
    for _ in range(100):
        a.add_(1.0)
    start = time.perf_counter()
    for _ in range(repeats):
        a.add_(1.0)
    return (time.perf_counter() - start) / repeats


def step_seconds(step, budget_s: float = 1.5, least: int = 3) -> float:
    """Seconds per call of ``step`` on the CPU: a warm-up call (first allocations), then calls until ``budget_s``
    has passed and at least ``least`` were made."""
    step()
    n, start = 0, time.perf_counter()
    while n < least or time.perf_counter() - start < budget_s:
        step()
        n += 1
    return (time.perf_counter() - start) / n


def product_rate(dtype: torch.dtype = torch.float32, size: int = 1024, repeats: int = 3) -> float:
    """FLOP/s of this CPU on a ``size``³ product in ``dtype`` (a warm-up, then ``repeats`` products)."""
    a = torch.randn(size, size).to(dtype)
    a @ a
    start = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return repeats * 2 * size ** 3 / (time.perf_counter() - start)


def predict_here(chapter: str, profile: str = "laptop", budget_s: float = 1.5, least: int = 3, **params) -> dict:
    """The predicted wall time of ``chapter`` at ``profile`` on this CPU, in seconds, with its parts: every model
    group (``groups``: its runs, steps, seconds per step and seconds), the measured steps (``measured``: FLOPs per
    step, seconds per step, GFLOP/s) and the precision the profile runs in here. ``params``: the chapter's
    ``configure`` overrides (sizes, epochs, seeds)."""
    ch = REGISTRY[chapter]
    cfg = ch.configure(profile=profile, device="cpu", **params)
    cpu = torch.device("cpu")
    measured = []  # the chapter's own training steps, timed here
    for name, k, dtype, build in ch.timed_steps(cfg):
        flops, kernels, _ = measure(build("meta")[0])
        seconds = step_seconds(build(cpu)[0], budget_s, least)
        measured.append({"step": name, "models": k, "dtype": dtype, "flops_per_step": flops, "kernels": kernels,
                         "s_per_step": seconds, "gflops_per_s": flops / seconds / 1e9})
    per_op = op_seconds()
    # the groups not measured (evaluation passes of 4,096 examples, a chapter's smaller groups): large products,
    # so this CPU's rate on a 1024³ product in the profile's precision
    rate = product_rate(torch.bfloat16 if getattr(cfg, "amp", False) else torch.float32)
    rows = []
    for g in ch.groups(cfg):
        same = next((m for m in measured if abs(m["flops_per_step"] - g.flops_per_step) <= 0.01 * g.flops_per_step
                     and m["models"] == g.models_per_step), None)
        if same is not None:
            step_s = same["s_per_step"]
        else:
            step_s = g.flops_per_step / rate + g.kernels_per_step * per_op
        rows.append({"group": g.group, "runs": g.runs, "steps": g.steps, "s_per_step": step_s,
                     "measured": same is not None, "seconds": g.runs * g.steps * step_s + g.fixed_s})
    return {"chapter": chapter, "profile": cfg.profile, "precision": "bf16" if getattr(cfg, "amp", False) else "fp32",
            "predicted_s": sum(r["seconds"] for r in rows), "groups": rows, "measured": measured,
            "op_seconds": per_op, "product_gflops_per_s": rate / 1e9}
