"""``dropnotes`` command line: list the chapters and rerun them through papermill.

    dropnotes list
    dropnotes run ensembles -p members 3 -p seed 1 --profile full
    dropnotes run --all --profile quick
    dropnotes run mechanics -f params.yaml
    dropnotes sweep ensembles -p p_hidden 0.1,0.3,0.5 -p seed 1,2,3 --profile quick
    dropnotes compute variational --profile full -p epochs 4

``compute`` runs a chapter's experiment without Jupyter (``configure`` + ``run`` of its
``dropnotes.experiments`` module), for GPU machines that have torch but no notebook stack; it stores
the result like the notebook does and prints the verdicts.

Chapter and parameter names and value types are checked against each notebook's ``parameters``
cell (read with ``papermill.inspect_notebook``) before any kernel starts. A run writes
``runs/<chapter>/<timestamp>-<hash>.ipynb``; the chapter stores its own results (atomically) in the
results store. A failed run keeps the partial notebook and exits with status 1; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from dropnotes.experiments import REGISTRY
from dropnotes.data import DataError
from dropnotes.results import REPO_ROOT
from dropnotes.runtime import PROFILES, show_progress
from dropnotes.experiments.knobs import Knobs, inferred_knob
from dropnotes.experiments.knobs import check_environment
from dropnotes.experiments.store import predicted_wall, run_in_blocks
from dropnotes import notebooks
from dropnotes.sweep import run_sweep
from dropnotes.sweep import grid
from dropnotes.sweep import SweepInterrupted
from dropnotes.runtime import UsageError
from dropnotes import estimate as est
from dropnotes.estimate import commands as estimate_commands
from dropnotes.sweep import EXECUTORS


def chapter_path(name: str) -> Path:
    if name not in REGISTRY:
        raise UsageError(f"unknown chapter {name!r}; choose one of {', '.join(REGISTRY)}")
    return REPO_ROOT / REGISTRY[name].notebook


def chapter_parameters(name: str) -> dict[str, dict[str, Any]]:
    """The parameters cell of a chapter: name -> {default (a Python value), help}."""
    import papermill as pm

    found = pm.inspect_notebook(str(chapter_path(name)))
    return {k: {"default": ast.literal_eval(v["default"]), "help": v["help"]} for k, v in found.items()}


def chapter_of(name: str):
    """The registered chapter (:data:`dropnotes.experiments.REGISTRY`), or None for a notebook without a module."""
    chapter_path(name)
    ch = REGISTRY[name]
    return ch if ch.module is not None else None


def chapter_knobs(name: str):
    """The chapter's declared knobs (``KNOBS``); for a notebook without a module, knobs typed like the
    defaults of its parameters cell."""

    ch = chapter_of(name)
    if ch is not None:
        return ch.knobs
    return Knobs(*(inferred_knob(k, v["default"], v["help"]) for k, v in chapter_parameters(name).items()))


def _value(chapter: str, knob, raw: Any) -> Any:
    """A command-line string (parsed) or a YAML value (checked) as the knob's canonical value."""
    try:
        return knob.parse(raw) if isinstance(raw, str) else knob.check(raw)
    except ValueError as err:
        raise UsageError(f"{chapter}: parameter {err}") from None


def coerce(chapter: str, name: str, raw: Any, knobs=None) -> Any:
    """One parameter's value, typed and checked by its knob."""
    knobs = knobs if knobs is not None else chapter_knobs(chapter)
    if name not in knobs:
        raise UsageError(f"{chapter}: unknown parameter {name!r}; allowed: {', '.join(knobs)}")
    return _value(chapter, knobs[name], raw)


def for_papermill(params: dict[str, Any]) -> dict[str, Any]:
    """Canonical values as papermill injects them (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def check_config(chapter: str, params: dict[str, Any]) -> None:
    """Run the chapter's ``configure`` on ``params`` (all its cross-checks: sizes against the dataset,
    memory, seeds), before any kernel starts."""
    ch = chapter_of(chapter)
    if ch is None:
        return
    try:
        ch.configure(**params)
    except ValueError as err:
        raise UsageError(f"{chapter}: {err}") from None


def read_parameters_file(path: str) -> dict[str, Any]:
    """A YAML mapping of parameter names to values; any problem is one clear ``UsageError``."""
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as err:
        raise UsageError(f"-f {path}: cannot read the parameters file ({err.strerror or err})") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"-f {path}: not valid YAML{where}: {getattr(err, 'problem', None) or err}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UsageError(f"-f {path}: must hold a mapping of parameter names to values, got {type(loaded).__name__}")
    return loaded


def resolve_parameters(chapter: str, pairs: list[tuple[str, str]], yaml_file: str | None,
                       profile: str | None) -> dict[str, Any]:
    """Validate the requested parameters of a chapter; returns them typed (papermill's -f < -p)."""
    knobs = chapter_knobs(chapter)
    given: dict[str, Any] = {}
    if yaml_file:
        given.update(read_parameters_file(yaml_file))
    given.update(dict(pairs))
    if profile is not None:
        given["profile"] = profile
    out = {name: coerce(chapter, str(name), raw, knobs) for name, raw in given.items()}
    check_config(chapter, out)
    return out


def check_results_folder() -> None:
    """A writable results folder and a usable ``DROPNOTES_DATA``, before any work starts."""

    try:
        check_environment()
    except ValueError as err:
        raise UsageError(str(err)) from None


def output_path(chapter: str, params: dict[str, Any], runs_dir: Path) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    return runs_dir / chapter / f"{stamp}-{digest}.ipynb"


class RunInterrupted(Exception):
    """Ctrl-C during ``dropnotes run``; carries the partial notebook's path."""


def run_chapter(chapter: str, params: dict[str, Any], runs_dir: Path) -> Path:
    """Execute one chapter with papermill; raises papermill's error on a failing cell, and
    :class:`RunInterrupted` on Ctrl-C (the partial notebook renamed ``*.partial.ipynb``)."""

    src = chapter_path(chapter)
    out = output_path(chapter, params, runs_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{chapter}: {json.dumps(for_papermill(params))} -> {out}", file=sys.stderr, flush=True)
    try:
        notebooks.execute(src, out, params, progress_bar=show_progress())
    except KeyboardInterrupt:
        partial = out.with_suffix(".partial.ipynb")
        if out.is_file():
            os.replace(out, partial)
        raise RunInterrupted(str(partial)) from None
    return out


def cmd_list(args) -> int:
    for name, ch in REGISTRY.items():
        print(f"{name}  ({ch.notebook}): {ch.title}")
        for k in chapter_knobs(name).values():
            default = "the profile's" if k.profile_default else repr(for_papermill({"d": k.default})["d"])
            print(f"    {k.name:<15} {k.type_text():<22} default {default:<16} {k.allowed()}; {k.help}")
    return 0


def _pairs(values: list[list[str]] | None) -> list[tuple[str, str]]:
    return [(k, v) for k, v in (values or [])]


def cmd_run(args) -> int:
    if args.all and args.chapter:
        raise UsageError(f"name one chapter or pass --all, not both (got {args.chapter!r} and --all)")
    if not (args.all or args.chapter):
        raise UsageError("name one chapter or pass --all")
    chapters = list(REGISTRY) if args.all else [args.chapter]
    # Validate everything first: no kernel starts if any request is bad.
    plans = [(c, resolve_parameters(c, _pairs(args.param), args.parameters_file, args.profile)) for c in chapters]
    check_results_folder()
    import papermill as pm

    for chapter, params in plans:
        try:
            out = run_chapter(chapter, params, Path(args.runs_dir))
        except RunInterrupted as stop:
            print(f"dropnotes: interrupted; {chapter} stopped, its partial notebook is {stop}", file=sys.stderr)
            return 130
        except pm.PapermillExecutionError as err:
            print(f"{chapter}: failed at cell {err.exec_count}: {err.ename}: {err.evalue}\n"
                  f"the partial notebook is kept in {Path(args.runs_dir) / chapter}", file=sys.stderr)
            return 1
        print(f"{chapter}: done, {out}")
    return 0


def sweep_values(chapter: str, pairs: list[tuple[str, str]], profile: str | None) -> dict[str, list[Any]]:
    """Grid values per parameter: alternatives separated by ``,`` (by ``;`` for list-valued parameters)."""
    knobs = chapter_knobs(chapter)
    values: dict[str, list[Any]] = {}
    for name, raw in pairs:
        if name not in knobs:
            raise UsageError(f"{chapter}: unknown parameter {name!r}; allowed: {', '.join(knobs)}")
        sep = ";" if knobs[name].kind in ("floats", "ints") else ","
        parts = [v.strip() for v in raw.split(sep)]
        if not raw.strip() or any(not v for v in parts):
            raise UsageError(f"{chapter}: parameter {name}: empty value in {raw!r}; give values separated by {sep!r}")
        values[name] = list(dict.fromkeys(coerce(chapter, name, v, knobs) for v in parts))
    if profile is not None:
        values["profile"] = [coerce(chapter, "profile", profile, knobs)]
    return values


def cmd_sweep(args) -> int:


    path = chapter_path(args.chapter)
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be an integer >= 1, got {args.workers}")
    if args.timeout_min is not None and args.timeout_min < 1:
        raise UsageError(f"--timeout-min must be an integer >= 1, got {args.timeout_min}")
    if args.executor == "slurm" and shutil.which("sbatch") is None:
        raise UsageError("--executor slurm needs Slurm, but sbatch is not on PATH; use --executor local")
    values = sweep_values(args.chapter, _pairs(args.param), args.profile)
    if not values:
        raise UsageError("give at least one -p NAME V1,V2,... to sweep over")
    for point in grid(values):
        check_config(args.chapter, point)
    check_results_folder()
    sweep_dir = Path(args.sweep_dir or Path(args.runs_dir) / args.chapter / "sweep")
    slurm = {"partition": args.slurm_partition, "timeout_min": args.timeout_min}

    try:
        table = run_sweep(args.chapter, path, values, sweep_dir, executor=args.executor, workers=args.workers,
                          slurm=slurm, knobs=chapter_knobs(args.chapter))
    except SweepInterrupted as stop:
        print(f"dropnotes: interrupted; {stop}; stopped runs keep notebook.partial.ipynb; "
              f"table: {sweep_dir / 'runs.csv'}; rerun the same command to resume", file=sys.stderr)
        return 130
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.drop(columns=["notebook"]).to_string(index=False))
    print(f"{len(table)} runs; table: {sweep_dir / 'runs.csv'}")
    failed = table[table.status == "failed"]
    for _, row in failed.iterrows():
        print(f"failed {row.run_id}: {row.error} (partial notebook: {row.notebook})", file=sys.stderr)
    return 1 if len(failed) else 0


def compute_parameters(chapter: str, pairs: list[tuple[str, str]], profile: str | None) -> dict[str, Any]:
    """Check names and values against the chapter's declared knobs, then against its ``configure``."""
    if chapter_of(chapter) is None:
        raise UsageError(f"{chapter}: no experiment module to compute")
    knobs = chapter_knobs(chapter)
    params = {name: coerce(chapter, name, raw, knobs) for name, raw in pairs}
    if profile is not None:
        params["profile"] = profile
    return params


def cmd_compute(args) -> int:
    import time

    import pandas as pd

    params = compute_parameters(args.chapter, _pairs(args.param), args.profile)
    ch = REGISTRY[args.chapter]
    try:
        cfg = ch.configure(**params)
    except ValueError as err:
        raise UsageError(f"{args.chapter}: {err}") from None
    check_results_folder()
    print(f"{args.chapter}: {cfg}", file=sys.stderr, flush=True)
    predicted = None
    if cfg.profile == "laptop" and cfg.torch_device.type == "cpu":  # the first progress line: the expected minutes
        over = {k: v for k, v in params.items() if k != "profile"}
        n = len(cfg.seeds)
        if args.blocks:  # a block is the run with one seed: its groups are 1/n as wide, so time them at that width
            predicted = est.predict_here(args.chapter, cfg.profile, **{**over, "n_seeds": 1})
            predicted["predicted_s"] *= n
        else:
            predicted = est.predict_here(args.chapter, cfg.profile, **over)
        print(f"{args.chapter}: predicted {predicted['predicted_s'] / 60:.1f} minutes of training and evaluation on "
              f"this CPU ({predicted['precision']})" + (f", {predicted['predicted_s'] / n / 60:.1f} a seed block"
                                                        if args.blocks else ""), file=sys.stderr, flush=True)
    start = time.perf_counter()
    with predicted_wall(predicted["predicted_s"] if predicted else None):
        rec = run_in_blocks(args.chapter, cfg, log=lambda m: print(m, file=sys.stderr, flush=True)) if args.blocks \
            else ch.run(cfg)
    with pd.option_context("display.max_colwidth", 200, "display.width", 250):
        print(rec["verdicts"][["claim", "ours", "verdict"]].to_string(index=False))
    print(f"{args.chapter}: {time.perf_counter() - start:.0f} s; stored {rec.get('path')}", flush=True)
    return 0


def cmd_estimate(args) -> int:
    return estimate_commands.main(args)


def generated_parameters(chapter: str) -> str:
    """The chapter's parameters cell as its knob declaration generates it (comments with each profile's value)."""
    ch = chapter_of(chapter)
    if ch is None:
        raise UsageError(f"{chapter}: declares no knobs to generate a parameters cell from")
    return ch.knobs.parameters_cell(ch.profile_defaults)


def cmd_params(args) -> int:

    chapters = list(REGISTRY) if args.chapter == "all" else [args.chapter]
    stale = []
    for chapter in chapters:
        text = generated_parameters(chapter)
        path = chapter_path(chapter)
        if args.write:
            print(f"{path}: {'written' if notebooks.write_parameters(path, text) else 'unchanged'}")
        elif notebooks.parameters_source(path) != text:
            stale.append(str(path))
        elif args.chapter != "all":
            print(text)
    for path in stale:
        print(f"{path}: its parameters cell differs from the knob declaration; run `dropnotes params "
              f"{args.chapter} --write`", file=sys.stderr)
    return 1 if stale else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dropnotes", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the chapters with their parameters, types and defaults").set_defaults(func=cmd_list)
    run = sub.add_parser("run", help="execute a chapter through papermill")
    run.add_argument("chapter", nargs="?", help=f"one of: {', '.join(REGISTRY)}")
    run.add_argument("--all", action="store_true", help="run every chapter")
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="a parameter, typed like its default in the notebook")
    run.add_argument("-f", "--parameters-file", help="a YAML file of parameters (overridden by -p)")
    run.add_argument("--profile", choices=[p for p in PROFILES], help="shorthand for -p profile NAME")
    run.add_argument("--runs-dir", default=str(REPO_ROOT / "runs"), help="where executed notebooks go")
    run.set_defaults(func=cmd_run)

    sw = sub.add_parser("sweep", help="run a grid of parameters (resumable), write runs.csv")
    sw.add_argument("chapter", help=f"one of: {', '.join(REGISTRY)}")
    sw.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "V1,V2"),
                    help="values to sweep, separated by commas (semicolons for list-valued parameters)")
    sw.add_argument("--profile", choices=list(PROFILES), help="the profile of every run")
    sw.add_argument("--executor", "--engine", dest="executor", choices=EXECUTORS, default="local",
                    help="local process pool (one worker per GPU), slurm, or submitit's local/debug executors")
    sw.add_argument("--workers", type=int, help="local pool size (default: one per visible GPU, else 1)")
    sw.add_argument("--sweep-dir", help="default: runs/<chapter>/sweep")
    sw.add_argument("--runs-dir", default=str(REPO_ROOT / "runs"))
    sw.add_argument("--slurm-partition", help="Slurm partition (executor slurm)")
    sw.add_argument("--timeout-min", type=int, default=60, help="per-run time limit for the submitit executors")
    sw.set_defaults(func=cmd_sweep)
    co = sub.add_parser("compute", help="run a chapter's experiment without Jupyter and store its result")
    co.add_argument("chapter", help=f"one of: {', '.join(REGISTRY)}")
    co.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                    help="an argument of the chapter's configure(), as a Python literal")
    co.add_argument("--profile", choices=list(PROFILES), help="shorthand for -p profile NAME")
    co.add_argument("--blocks", action="store_true", help="run the seeds one block at a time, each stored as it ends "
                    "(results/<chapter>/<profile>.blocks/); rerun the same command to resume, the blocks are merged "
                    "into one record at the end (chapters with merge_blocks)")
    co.set_defaults(func=cmd_compute)
    es = sub.add_parser("estimate", help="predict each chapter's GPU time on one H100, measured on this CPU")
    es.add_argument("chapters", nargs="*", help="chapters (default: all)")
    es.add_argument("--profile", default="full", help="quick or full: the GPU time (default full); laptop or smoke: "
                    "the wall time on this machine, measured on the chapter's own steps")
    es.add_argument("--here", action="store_true", help="predict the wall time on this machine for any profile")
    es.add_argument("--json", action="store_true", help="a JSON list of {chapter, group, runs, steps, "
                    "flops_per_step, kernels_per_step, predicted_s}")
    es.add_argument("--calibrate", action="store_true", help="refit the constants to the stored H100 runs and print "
                    "each calibration point's error")
    es.add_argument("--store", action="store_true", help="write the full profile's per-chapter predictions to "
                    "results/estimate-full.json (what the chapters' run boxes quote; a test keeps it current)")
    es.add_argument("--compare", action="store_true", help="measure one step of the engine chapters' groups on this "
                    "CPU, the K models one at a time against batched: kernels and seconds per step")
    es.add_argument("--device-check", action="store_true", help="time each chapter's batched training steps on a "
                    "device (captured as CUDA graphs on a GPU) against their predicted seconds per step; the rows "
                    "are calibration points once stored as results/device-check.json")
    es.add_argument("--device", default=None, help="with --device-check: cuda or cpu (default: cuda if present)")
    es.add_argument("--steps", type=int, default=20, help="with --device-check: timed steps per group (default 20)")
    es.add_argument("--out", default=None, help="with --device-check: write the rows to this JSON file, chapter by chapter")
    es.set_defaults(func=cmd_estimate)
    pa = sub.add_parser("params", help="a chapter's parameters cell, generated from its knob declaration")
    pa.add_argument("chapter", help="a chapter name, or all")
    pa.add_argument("--write", action="store_true", help="write it into the notebook(s)")
    pa.set_defaults(func=cmd_params)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as err:
        print(f"dropnotes: error: {err}", file=sys.stderr)
        return 2
    except DataError as err:  # a dataset missing, unreachable or failing its checksum: one line, as every other fault
        print(f"dropnotes: data error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("dropnotes: interrupted; no result of the stopped work was stored", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
