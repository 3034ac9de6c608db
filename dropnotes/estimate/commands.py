"""The ``dropnotes estimate`` command (its argument parsing stays in :mod:`dropnotes.cli`): what it prints and
stores for each of its modes, over the registry's chapters, refusing bad values with a
:class:`~dropnotes.runtime.UsageError`."""

from __future__ import annotations

import datetime
import json
import sys

import pandas as pd
import torch

from dropnotes import estimate as est
from dropnotes.results import cpu_model
from dropnotes.runtime import UsageError, atomic_write


def estimate_here(chapters: list[str], args) -> int:
    """``dropnotes estimate CHAPTER --profile laptop`` (or ``--here``): the profile's wall time on this machine,
    its groups timed at this CPU's rate measured on the chapter's own steps (:mod:`dropnotes.estimate.local`)."""
    if args.profile not in ("smoke", "quick", "laptop", "full"):
        raise UsageError(f"--profile must be 'smoke', 'quick', 'laptop' or 'full', got {args.profile!r}")
    out = []
    for chapter in chapters:
        pred = est.predict_here(chapter, args.profile)
        out.append(pred)
        if not args.json:
            print(f"{chapter}, {pred['profile']} profile ({pred['precision']}) on {cpu_model()}: predicted "
                  f"{pred['predicted_s'] / 60:.1f} minutes of training and evaluation", flush=True)
            with pd.option_context("display.width", 200):
                print(pd.DataFrame(pred["groups"]).round(3).to_string(index=False))
                if pred["measured"]:
                    print(pd.DataFrame(pred["measured"]).round(3).to_string(index=False))
    if args.json:
        print(json.dumps(out, indent=1, default=float))
    return 0


def device_check(chapters: list[str], args) -> int:
    """``dropnotes estimate --device-check``: the batched steps timed on a device against their predictions."""
    if args.steps < 1:
        raise UsageError(f"--steps must be a positive integer, got {args.steps}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cuda", "cpu"):
        raise UsageError(f"--device must be 'cuda' or 'cpu', got {device!r}")
    rows = []
    for chapter in chapters:  # one chapter at a time, its rows written as soon as they exist
        rows += est.device_check([chapter], args.profile, device, args.steps)
        if args.out:
            body = {"profile": args.profile, "torch": torch.__version__, "steps": args.steps,
                    "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "rows": rows}
            atomic_write(args.out, json.dumps(body, indent=1) + "\n")
    table = pd.DataFrame(rows)
    table["measured/predicted"] = table.measured_s / table.predicted_s
    table["GB"], table["GFLOP"] = table.bytes / 1e9, table.flops / 1e9
    print(f"one training step of each batched group, {args.profile} profile, on {rows[0]['device'] if rows else device}:")
    with pd.option_context("display.width", 200):
        print(table[["chapter", "group", "dtype", "kernels", "GB", "GFLOP", "predicted_s", "measured_s",
                     "measured/predicted", "graphed"]].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def main(args) -> int:
    """``dropnotes estimate``: the full or quick profile's predictions on one H100 (or ``--json``, ``--store``), the
    batched engine against K separate models (``--compare``), the device check (``--device-check``), or a CPU
    profile's wall time on this machine (``--profile smoke|laptop``, ``--here``)."""

    book = est.chapters()
    chapters = args.chapters or book
    for c in chapters:
        if c not in book:
            raise UsageError(f"unknown chapter {c!r}; choose one of {', '.join(book)}")
    if args.profile in ("smoke", "laptop") or args.here:
        return estimate_here(chapters, args)
    if args.profile not in ("quick", "full"):
        raise UsageError(f"--profile must be 'smoke', 'quick', 'laptop' or 'full', got {args.profile!r}")
    if args.compare:
        engine = est.compare_chapters()
        engine_chapters = [c for c in chapters if c in engine]
        if not engine_chapters:
            raise UsageError(f"--compare measures the batched engine's chapters: {', '.join(engine)}")
        table = pd.DataFrame([r for c in engine_chapters for r in est.compare_steps(c, args.profile)])
        table["kernels ratio"] = table["sequential kernels/step"] / table["batched kernels/step"]
        table["CPU time ratio"] = table["sequential CPU s/step"] / table["batched CPU s/step"]
        print(f"one training step of every model of the group, {args.profile} profile, on this CPU:")
        with pd.option_context("display.width", 200):
            print(table.round(4).to_string(index=False))
        return 0
    if args.device_check:
        return device_check(chapters, args)
    fraction, launch = est.DEFAULT_FRACTION, est.DEFAULT_LAUNCH_S
    if args.calibrate:
        fraction, launch, points = est.calibrate()
        print(f"calibration on the stored H100 runs: {100 * fraction:.0f} % of peak, {1e6 * launch:.1f} µs per "
              f"launch (in the code: {100 * est.DEFAULT_FRACTION:.0f} %, {1e6 * est.DEFAULT_LAUNCH_S:.1f} µs)",
              file=sys.stderr)
        print(pd.DataFrame(points).round(1).to_string(index=False), file=sys.stderr)
    rows = est.estimate(chapters, args.profile, fraction, launch)
    if args.store:
        if args.profile != "full" or args.calibrate or set(chapters) != set(book):
            raise UsageError("--store writes the full profile's predictions of every chapter, with the code's "
                             "constants: use it without chapters, --profile quick or --calibrate")
        est.store_predictions(rows)
        print(f"stored {est.predictions_path()}", file=sys.stderr)
    if args.json:
        print(json.dumps([{k: r[k] for k in ("chapter", "group", "runs", "steps", "flops_per_step",
                                             "kernels_per_step", "predicted_s")} for r in rows], indent=1))
        return 0
    table = pd.DataFrame(rows)
    table["GFLOP/step"] = table.flops_per_step / 1e9
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(table[["chapter", "group", "runs", "steps", "GFLOP/step", "kernels_per_step", "dtype", "captured",
                     "predicted_s"]].round(2).to_string(index=False))
    per = table.groupby("chapter", sort=False).predicted_s.sum()
    print("\npredicted on one H100 (s): " + ", ".join(f"{c} {s:.0f}" for c, s in per.items())
          + f"; all {per.sum():.0f}")
    return 0
