"""Calibration of the time model to the stored GPU runs, the estimate of a profile, and the committed predictions."""

from __future__ import annotations

import json
import math

from dropnotes import results
from dropnotes.costmodel import DEFAULT_FRACTION, DEFAULT_LAUNCH_S
from dropnotes.estimate.device import device_check_points
from dropnotes.experiments import REGISTRY
from dropnotes.experiments._base import record_config
from dropnotes.runtime import atomic_write


def chapters() -> list[str]:
    """The chapters the estimator covers: every registered chapter with a module, in the book's order."""
    return [c.name for c in REGISTRY.with_modules()]


def chapter_groups(chapter: str, cfg) -> list:
    """The model groups of a run of ``chapter`` with ``cfg`` (the chapter's ``groups``)."""
    return REGISTRY[chapter].groups(cfg)


def calibration_points() -> list[dict]:
    """What the stored full runs measured that the model predicts (each chapter's ``calibration_points``: wall
    times, and throughputs of one group), and the stored device check's steps."""
    points = []
    for ch in REGISTRY.with_modules():
        record = results.load_result(ch.name, "full")
        if record is None:
            continue
        cfg = record_config(ch.name, record)
        points += [{"chapter": ch.name, **p} for p in ch.calibration_points(cfg, record)]
    return points + device_check_points()


def calibrate(points: list[dict] | None = None) -> tuple[float, float, list[dict]]:
    """Fit the fraction of peak and the time per launch to the calibration points (least squares in log space,
    on a grid); return them and each point's residual."""
    points = points if points is not None else calibration_points()
    best = None
    for fraction in [0.05 * i for i in range(1, 21)]:
        for launch in [1e-6 * (1.25 ** j) for j in range(0, 25)]:
            err = sum(math.log(p["predict"](fraction, launch) / p["measured"]) ** 2 for p in points)
            if best is None or err < best[0]:
                best = (err, fraction, launch)
    _, fraction, launch = best
    rows = [{"chapter": p["chapter"], "what": p["what"], "measured": p["measured"],
             "predicted": p["predict"](fraction, launch),
             "error %": 100 * (p["predict"](fraction, launch) / p["measured"] - 1)} for p in points]
    return fraction, launch, rows


def estimate(names: list[str], profile: str = "full", fraction: float = DEFAULT_FRACTION,
             launch_s: float = DEFAULT_LAUNCH_S) -> list[dict]:
    """One row per chapter and model group: runs, steps, FLOPs and kernels per step, predicted seconds."""
    rows = []
    for name in names:
        ch = REGISTRY[name]
        cfg = ch.configure(profile=profile, device="cpu")
        for g in ch.groups(cfg):
            rows.append(g.as_dict(fraction, launch_s))
    return rows


predictions_path, stored_prediction = results.predictions_path, results.stored_prediction  # the committed file


def per_chapter(rows: list[dict]) -> dict[str, float]:
    """Predicted seconds per chapter, summed over its groups (rounded to 0.1 s)."""
    out: dict[str, float] = {}
    for r in rows:
        out[r["chapter"]] = out.get(r["chapter"], 0.0) + r["predicted_s"]
    return {c: round(s, 1) for c, s in out.items()}


def store_predictions(rows: list[dict]) -> None:
    """Write :func:`per_chapter` of the full profile's rows to :func:`predictions_path` (atomically)."""
    body = {"profile": "full", "device": "one H100 (predicted by dropnotes estimate)",
            "predicted_s": per_chapter(rows),
            "how": "python -m dropnotes estimate --profile full --store"}
    atomic_write(predictions_path(), json.dumps(body, indent=1) + "\n")
