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
import sys
from pathlib import Path
from typing import Any

from dropnotes.experiments import CHAPTERS
from dropnotes.results import REPO_ROOT
from dropnotes.runtime import PROFILES


class UsageError(ValueError):
    """A bad chapter, parameter or value, refused before any kernel starts."""


def chapter_path(name: str) -> Path:
    if name not in CHAPTERS:
        raise UsageError(f"unknown chapter {name!r}; choose one of {', '.join(CHAPTERS)}")
    return REPO_ROOT / CHAPTERS[name]


def chapter_parameters(name: str) -> dict[str, dict[str, Any]]:
    """The parameters cell of a chapter: name -> {default (a Python value), help}."""
    import papermill as pm

    found = pm.inspect_notebook(str(chapter_path(name)))
    return {k: {"default": ast.literal_eval(v["default"]), "help": v["help"]} for k, v in found.items()}


def _type_name(value: Any) -> str:
    return "any (default None)" if value is None else type(value).__name__


def coerce(chapter: str, name: str, raw: Any, default: Any) -> Any:
    """Turn a command-line string (or a YAML value) into the type of the parameter's default."""
    def bad(expected: str) -> UsageError:
        return UsageError(f"{chapter}: parameter {name} expects {expected}, got {raw!r}")

    if not isinstance(raw, str):  # from YAML: already typed
        value = raw
    elif isinstance(default, str):
        return raw
    else:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            if isinstance(default, list):
                try:
                    return [float(v) for v in raw.split(",") if v.strip()]
                except ValueError:
                    raise bad("a list (e.g. 0,0.2,0.5)") from None
            if default is None:
                return raw
            raise bad(_type_name(default)) from None
    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise bad("a bool (True or False)")
    if isinstance(default, int) and not isinstance(value, bool) and isinstance(value, int):
        return value
    if isinstance(default, float) and not isinstance(value, bool) and isinstance(value, (int, float)):
        return float(value)
    if isinstance(default, list):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return [value]
        if isinstance(value, (list, tuple)):
            return list(value)
    if isinstance(default, str) and isinstance(value, str):
        return value
    raise bad(_type_name(default))


def resolve_parameters(chapter: str, pairs: list[tuple[str, str]], yaml_file: str | None,
                       profile: str | None) -> dict[str, Any]:
    """Validate the requested parameters of a chapter; returns them typed (papermill's -f < -p)."""
    import yaml

    params = chapter_parameters(chapter)
    given: dict[str, Any] = {}
    if yaml_file:
        loaded = yaml.safe_load(Path(yaml_file).read_text()) or {}
        if not isinstance(loaded, dict):
            raise UsageError(f"{yaml_file} must hold a mapping of parameter names to values")
        given.update(loaded)
    given.update(dict(pairs))
    if profile is not None:
        given["profile"] = profile
    out = {}
    for name, raw in given.items():
        if name not in params:
            raise UsageError(f"{chapter}: unknown parameter {name!r}; allowed: {', '.join(params)}")
        out[name] = coerce(chapter, name, raw, params[name]["default"])
    if "profile" in out and out["profile"] not in PROFILES:
        raise UsageError(f"profile={out['profile']!r} is not allowed; choose one of {', '.join(PROFILES)}")
    return out


def output_path(chapter: str, params: dict[str, Any], runs_dir: Path) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    return runs_dir / chapter / f"{stamp}-{digest}.ipynb"


def run_chapter(chapter: str, params: dict[str, Any], runs_dir: Path) -> Path:
    """Execute one chapter with papermill; raises papermill's error on a failing cell."""
    import papermill as pm

    src = chapter_path(chapter)
    out = output_path(chapter, params, runs_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{chapter}: {json.dumps(params)} -> {out}", file=sys.stderr)
    pm.execute_notebook(str(src), str(out), parameters=params, kernel_name="python3", cwd=str(src.parent),
                        progress_bar=True)
    return out


def cmd_list(args) -> int:
    for name, rel in CHAPTERS.items():
        print(f"{name}  ({rel})")
        for pname, p in chapter_parameters(name).items():
            print(f"    {pname:<12} {_type_name(p['default']):<20} default {p['default']!r:<20} {p['help']}")
    return 0


def _pairs(values: list[list[str]] | None) -> list[tuple[str, str]]:
    return [(k, v) for k, v in (values or [])]


def cmd_run(args) -> int:
    if bool(args.all) == bool(args.chapter):
        raise UsageError("name one chapter or pass --all")
    chapters = list(CHAPTERS) if args.all else [args.chapter]
    # Validate everything first: no kernel starts if any request is bad.
    plans = [(c, resolve_parameters(c, _pairs(args.param), args.parameters_file, args.profile)) for c in chapters]
    import papermill as pm

    for chapter, params in plans:
        try:
            out = run_chapter(chapter, params, Path(args.runs_dir))
        except pm.PapermillExecutionError as err:
            print(f"{chapter}: failed at cell {err.exec_count}: {err.ename}: {err.evalue}\n"
                  f"the partial notebook is kept in {Path(args.runs_dir) / chapter}", file=sys.stderr)
            return 1
        print(f"{chapter}: done, {out}")
    return 0


def sweep_values(chapter: str, pairs: list[tuple[str, str]], profile: str | None) -> dict[str, list[Any]]:
    """Grid values per parameter: alternatives separated by ``,`` (by ``;`` for list-valued parameters)."""
    params = chapter_parameters(chapter)
    values: dict[str, list[Any]] = {}
    for name, raw in pairs:
        if name not in params:
            raise UsageError(f"{chapter}: unknown parameter {name!r}; allowed: {', '.join(params)}")
        default = params[name]["default"]
        sep = ";" if isinstance(default, list) else ","
        values[name] = [coerce(chapter, name, v.strip(), default) for v in raw.split(sep) if v.strip()]
    if profile is not None:
        values["profile"] = [profile]
    for v in values.get("profile", []):
        if v not in PROFILES:
            raise UsageError(f"profile={v!r} is not allowed; choose one of {', '.join(PROFILES)}")
    return values


def cmd_sweep(args) -> int:
    from dropnotes.sweep import run_sweep

    path = chapter_path(args.chapter)
    values = sweep_values(args.chapter, _pairs(args.param), args.profile)
    if not values:
        raise UsageError("give at least one -p NAME V1,V2,... to sweep over")
    sweep_dir = Path(args.sweep_dir or Path(args.runs_dir) / args.chapter / "sweep")
    slurm = {"partition": args.slurm_partition, "timeout_min": args.timeout_min}
    table = run_sweep(args.chapter, path, values, sweep_dir, engine=args.engine, workers=args.workers, slurm=slurm)
    print(table.drop(columns=["notebook"]).to_string(index=False))
    print(f"{len(table)} runs; table: {sweep_dir / 'runs.csv'}")
    failed = table[table.status == "failed"]
    for _, row in failed.iterrows():
        print(f"failed {row.run_id}: {row.error} (partial notebook: {row.notebook})", file=sys.stderr)
    return 1 if len(failed) else 0


def compute_parameters(chapter: str, pairs: list[tuple[str, str]], profile: str | None) -> dict[str, Any]:
    """Check names against the chapter's ``configure`` signature; values are Python literals (else strings)."""
    import importlib
    import inspect

    chapter_path(chapter)
    allowed = inspect.signature(importlib.import_module(f"dropnotes.experiments.{chapter}").configure).parameters
    params: dict[str, Any] = {}
    for name, raw in pairs:
        if name not in allowed:
            raise UsageError(f"{chapter}: unknown parameter {name!r}; allowed: {', '.join(allowed)}")
        try:
            params[name] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            params[name] = raw
    if profile is not None:
        params["profile"] = profile
    return params


def cmd_compute(args) -> int:
    import importlib
    import time

    import pandas as pd

    params = compute_parameters(args.chapter, _pairs(args.param), args.profile)
    module = importlib.import_module(f"dropnotes.experiments.{args.chapter}")
    try:
        cfg = module.configure(**params)
    except ValueError as err:
        raise UsageError(f"{args.chapter}: {err}") from None
    print(f"{args.chapter}: {cfg}", flush=True)
    start = time.perf_counter()
    rec = module.run(cfg)
    with pd.option_context("display.max_colwidth", 200, "display.width", 250):
        print(rec["verdicts"][["claim", "ours", "verdict"]].to_string(index=False))
    print(f"{args.chapter}: {time.perf_counter() - start:.0f} s; stored {rec.get('path')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dropnotes", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the chapters with their parameters, types and defaults").set_defaults(func=cmd_list)
    run = sub.add_parser("run", help="execute a chapter through papermill")
    run.add_argument("chapter", nargs="?", help=f"one of: {', '.join(CHAPTERS)}")
    run.add_argument("--all", action="store_true", help="run every chapter")
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="a parameter, typed like its default in the notebook")
    run.add_argument("-f", "--parameters-file", help="a YAML file of parameters (overridden by -p)")
    run.add_argument("--profile", choices=[p for p in PROFILES], help="shorthand for -p profile NAME")
    run.add_argument("--runs-dir", default=str(REPO_ROOT / "runs"), help="where executed notebooks go")
    run.set_defaults(func=cmd_run)
    from dropnotes.sweep import ENGINES

    sw = sub.add_parser("sweep", help="run a grid of parameters (resumable), write runs.csv")
    sw.add_argument("chapter", help=f"one of: {', '.join(CHAPTERS)}")
    sw.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "V1,V2"),
                    help="values to sweep, separated by commas (semicolons for list-valued parameters)")
    sw.add_argument("--profile", choices=list(PROFILES), help="the profile of every run")
    sw.add_argument("--engine", choices=ENGINES, default="local",
                    help="local process pool (one worker per GPU), slurm, or submitit's local/debug executors")
    sw.add_argument("--workers", type=int, help="local pool size (default: one per visible GPU, else 1)")
    sw.add_argument("--sweep-dir", help="default: runs/<chapter>/sweep")
    sw.add_argument("--runs-dir", default=str(REPO_ROOT / "runs"))
    sw.add_argument("--slurm-partition", help="Slurm partition (engine slurm)")
    sw.add_argument("--timeout-min", type=int, default=60, help="per-run time limit for submitit engines")
    sw.set_defaults(func=cmd_sweep)
    co = sub.add_parser("compute", help="run a chapter's experiment without Jupyter and store its result")
    co.add_argument("chapter", help=f"one of: {', '.join(CHAPTERS)}")
    co.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                    help="an argument of the chapter's configure(), as a Python literal")
    co.add_argument("--profile", choices=list(PROFILES), help="shorthand for -p profile NAME")
    co.set_defaults(func=cmd_compute)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as err:
        print(f"dropnotes: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("dropnotes: interrupted; stored results are written atomically, nothing half-written is left",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
