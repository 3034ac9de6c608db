"""Steps measured on a real device: the batched engine against its models one at a time on this CPU
(``--compare``), and each chapter's batched steps timed on a GPU against their predictions (``--device-check``)."""

from __future__ import annotations

import json
import time

import torch

from dropnotes.costmodel import DEFAULT_FRACTION, DEFAULT_LAUNCH_S, Group, measure, time_compare
from dropnotes.experiments import REGISTRY
from dropnotes.results import REPO_RESULTS
from dropnotes.stacked import _captured


# ------------------------------------------------------------------ sequential against batched, measured here

def compare_chapters() -> list[str]:
    """The chapters whose batched groups ``--compare`` measures (those that declare ``compare_steps``)."""
    return [c.name for c in REGISTRY.with_modules() if c.has_compare_steps]


def compare_steps(chapter: str, profile: str = "quick", repeats: int = 3) -> list[dict]:
    """Kernels and CPU seconds of one training step of a chapter's K models, trained one at a time
    (``torch.optim``, K steps) against the batched engine (one step), measured here on the CPU."""
    if chapter not in compare_chapters():
        raise ValueError(f"chapter must be one of {', '.join(compare_chapters())} (the engine's chapters), "
                         f"got {chapter!r}")
    ch = REGISTRY[chapter]
    cfg = ch.configure(profile=profile, device="cpu")
    return time_compare(ch.compare_steps(cfg, torch.Generator().manual_seed(0)), chapter, repeats)


# ------------------------------------------------------------------ the device check: predicted against measured

DEVICE_CHECK_PATH = "device-check.json"  # under results/: a GPU run's measured step times, a calibration source


def checked_steps(chapter: str, cfg) -> list:
    """The batched training steps of a chapter that carry its predicted time: (group, models, dtype,
    ``build(device) -> (step, group, state)``), each built by the same function the prediction measures (the
    chapter's ``timed_steps``)."""
    return REGISTRY[chapter].timed_steps(cfg)


def _time_step(step, state: list[torch.Tensor], device: torch.device, steps: int) -> tuple[float, bool]:
    """Seconds per call of ``step`` on ``device``: on CUDA captured as the engine captures it and timed with
    CUDA events over ``steps`` replays (no host sync between them); elsewhere eager, by the wall clock.
    Returns the time and whether the step ran as a CUDA graph."""
    if device.type == "cuda":
        run = _captured(step, state, device)
        run()
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000 / steps, run is not step
    step()
    begin = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - begin) / steps, False


def device_check(chapters: list[str], profile: str = "full", device: str = "cuda", steps: int = 20) -> list[dict]:
    """Each chapter's batched training steps (:func:`checked_steps`) at ``profile``'s sizes: FLOPs, kernels
    and bytes counted on the meta device with the predicted seconds per step, against the seconds measured
    on ``device`` (one short run: ``steps`` replays of each step; the data are random)."""
    dev = torch.device(device)
    rows = []
    for chapter in chapters:
        cfg = REGISTRY[chapter].configure(profile=profile, device="cpu")
        for name, k, dtype, build in checked_steps(chapter, cfg):
            step, _, _ = build("meta")
            with torch.device("meta"):
                counted = measure(step)
            g = Group(chapter, name, 1, 1, counted.flops, counted.kernels, dtype, captured=True, models_per_step=k,
                      bytes_per_step=counted.bytes)
            step, group, state = build(dev)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            seconds, graphed = _time_step(step, state, dev, steps)
            rows.append({"chapter": chapter, "group": name, "models": k, "dtype": dtype, "flops": counted.flops,
                         "kernels": counted.kernels, "bytes": counted.bytes,
                         "predicted_s": g.step_s(DEFAULT_FRACTION, DEFAULT_LAUNCH_S),
                         "measured_s": seconds, "graphed": graphed, "steps": steps, "device": _device_label(dev),
                         "peak_gib": torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else None})
            del step, group, state
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def _device_label(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type


def device_check_points(path=None) -> list[dict]:
    """Calibration points from a stored device check (``results/device-check.json``, a GPU run's rows):
    each group's measured seconds per step against the model's, at the constants being fitted."""
    path = REPO_RESULTS / DEVICE_CHECK_PATH if path is None else path
    if not path.is_file():
        return []
    points = []
    for r in json.loads(path.read_text())["rows"]:
        if r["device"] == "cpu":
            continue
        g = Group(r["chapter"], r["group"], 1, 1, r["flops"], r["kernels"], r["dtype"], captured=r["graphed"],
                  bytes_per_step=r["bytes"])
        points.append({"chapter": r["chapter"], "what": f"s/step, {r['group']} ({r['device']})", "measured": r["measured_s"],
                       "predict": lambda f, c, g=g: g.step_s(f, c)})
    return points
