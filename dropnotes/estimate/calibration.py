"""Calibration of the time model to the stored GPU runs, the estimate of a profile, and the committed predictions."""

from __future__ import annotations

import math


from dropnotes import results
from dropnotes.estimate.device import device_check_points
from dropnotes.estimate.groups import (GROUPS, _droppath_sequential, _interactions_sequential, _llm, _llm_sequential,
                                      _variational_sequential, chapter_groups, config_from_record)
from dropnotes.estimate.timemodel import DEFAULT_FRACTION, DEFAULT_LAUNCH_S


def calibration_points() -> list[dict]:
    """What the stored full runs measured that the model predicts: wall times, and throughputs of one group."""
    from dropnotes import results

    points = []
    for chapter in GROUPS:
        record = results.load_result(chapter, "full")
        if record is None:
            continue
        cfg = config_from_record(chapter, record)
        if chapter == "llm":  # the steps it really ran (one pass over that machine's corpus)
            curves = record["tables"]["curves"]
            ran = int(curves[curves.run == "pretrain none"].step.max())
            groups = _llm(cfg, ran) if "models" in record["tables"]["pretrain"] else _llm_sequential(cfg, ran)
        elif chapter == "interactions" and "val_size" not in record["params"]:  # stored before the engine
            groups = _interactions_sequential(cfg)
        elif chapter == "droppath" and "val_size" not in record["params"]:  # stored before the engine
            groups = _droppath_sequential(cfg)
        elif chapter == "variational" and "speed" not in record["tables"]:  # stored before the batched group
            groups = _variational_sequential(cfg)
        else:
            groups = chapter_groups(chapter, cfg)
        points.append({"chapter": chapter, "what": "wall time (s)", "measured": record["provenance"]["wall_time_s"],
                       "predict": lambda f, c, g=groups: sum(x.predicted_s(f, c) for x in g)})
        if chapter == "variational":
            runs = record["tables"]["runs"]
            for scheme, label in (("weight-drop", "cuDNN"), ("variational", "time loop")):
                g = next(x for x in groups if x.group.endswith(f" {scheme}"))
                wps = float(runs[runs.scheme == scheme].words_per_s.mean())
                words = cfg.batch_size * cfg.seq_len
                points.append({"chapter": chapter, "what": f"words/s, {scheme} ({label})", "measured": wps,
                               "predict": lambda f, c, g=g, w=words: w / g.step_s(f, c)})
        if chapter == "llm":
            g = groups[0]
            tps = float(record["tables"]["pretrain"].iloc[-1]["tokens_per_s"])  # the early arm: compiled graphs reused
            tokens = cfg.batch_size * cfg.block_size
            points.append({"chapter": chapter, "what": "tokens/s, pretraining", "measured": tps,
                           "predict": lambda f, c, g=g, t=tokens: t / g.step_s(f, c)})
    return points + device_check_points()


def calibrate(points: list[dict] | None = None) -> tuple[float, float, list[dict]]:
    """Fit the fraction of peak and the launch cost to the calibration points (least squares in log space,
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


def estimate(chapters: list[str], profile: str = "full", fraction: float = DEFAULT_FRACTION,
             launch_s: float = DEFAULT_LAUNCH_S) -> list[dict]:
    """One row per chapter and model group: runs, steps, FLOPs and kernels per step, predicted seconds."""
    import importlib

    rows = []
    for chapter in chapters:
        module = importlib.import_module(f"dropnotes.experiments.{chapter}")
        cfg = module.configure(profile=profile, device="cpu")
        for g in chapter_groups(chapter, cfg):
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
    import json

    from dropnotes.runtime import atomic_write

    body = {"profile": "full", "device": "one H100 (predicted by dropnotes estimate)",
            "predicted_s": per_chapter(rows),
            "how": "python -m dropnotes estimate --profile full --store"}
    atomic_write(predictions_path(), json.dumps(body, indent=1) + "\n")
