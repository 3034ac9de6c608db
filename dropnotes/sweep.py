"""Parameter sweeps over a chapter: a grid of papermill runs, resumable after any kill, stoppable by Ctrl-C.

Each run gets its own folder ``<sweep_dir>/<run_id>/`` holding ``params.json``, the executed
``notebook.ipynb``, ``status.json`` and, through ``DROPNOTES_RESULTS``, the chapter's stored result.
``run_id`` is a hash of the run's parameters in canonical form merged with the chapter's defaults, so
``rates [0,0.5]`` and ``[0.0,0.5]``, or an explicit ``seed 0`` and the default, are the same run.

A run is *done* only when its ``status.json`` says so (written atomically after papermill finished
every cell) **and** its stored result parses. Temporary files of an interrupted save (``.quick-*.json``)
never count and are removed; a run killed half-way is simply run again. ``runs.csv`` is rewritten
atomically after every finished run.

Ctrl-C: no queued run starts; the runs in flight are stopped, marked ``interrupted`` and their partial
notebooks kept as ``notebook.partial.ipynb``; the command exits with status 130.

Engines (no home-made scheduler for clusters):

* ``local`` (default): one subprocess per run (``python -m dropnotes.sweep RUN_FOLDER``), at most one
  per visible GPU (pinned with ``CUDA_VISIBLE_DEVICES``) or ``--workers`` at once. Subprocesses rather
  than a process pool, because a pool cannot stop a run in flight;
* ``slurm``: `submitit <https://github.com/facebookincubator/submitit>`_'s Slurm executor;
* ``submitit-local`` and ``submitit-debug``: submitit's local (subprocess) and debug (in-process)
  executors, which run the same code path as ``slurm`` on one machine (the tests use them).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from dropnotes.runtime import RUN_PROFILES
from dropnotes.results import atomic_write_text
from dropnotes import notebooks
from dropnotes.runtime import check_choice

EXECUTORS = ("local", "slurm", "submitit-local", "submitit-debug")  # where a sweep's runs execute
TEMP_PATTERNS = (".quick-*.json", ".full-*.json", ".ckpt-*", ".probe-*", ".*.tmp")


def run_id(params: dict[str, Any], knobs=None) -> str:
    """A hash of the run's parameters; with the chapter's ``knobs``, of their canonical values merged with
    the defaults (so spelling and explicit defaults do not make a new run)."""
    if knobs is not None:
        params = knobs.check(params)
    canon = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
    return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()[:10]


def grid(values: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the given values, in a stable order."""
    names = list(values)
    return [dict(zip(names, combo)) for combo in itertools.product(*(values[n] for n in names))]


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file in the same folder and ``os.replace``."""

    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


@dataclass(frozen=True)
class Run:
    chapter: str
    notebook: str  # absolute path of the chapter notebook
    params: dict
    folder: str

    @property
    def path(self) -> Path:
        return Path(self.folder)

    @property
    def results_dir(self) -> Path:
        return self.path / "results"

    def result_files(self) -> list[Path]:
        """The stored results (``smoke.json`` ... ``full.json``); never the temporary files of a save."""
        return [p for p in (self.results_dir / self.chapter / f"{prof}.json" for prof in RUN_PROFILES)
                if p.is_file()]

    def result(self) -> dict | None:
        """The newest stored result, or None when there is none or it does not parse."""
        for path in sorted(self.result_files(), key=lambda p: p.stat().st_mtime, reverse=True):
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):
                return None
        return None

    def status(self) -> dict:
        try:
            return json.loads((self.path / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def done(self) -> bool:
        return self.status().get("status") == "done" and self.result() is not None

    def clean(self) -> None:
        """Remove what an interrupted run left half-written: temporary files, and the status of a run
        that is not done (it will run again)."""
        for folder in (self.path, self.results_dir / self.chapter):
            for pattern in TEMP_PATTERNS:
                for p in folder.glob(pattern):
                    p.unlink(missing_ok=True)


def execute_run(run: Run) -> dict[str, Any]:
    """Execute one run (in whatever process the executor chose); returns its outcome, never raises."""
    import papermill as pm


    folder = run.path
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "status.json").unlink(missing_ok=True)
    run.clean()
    for stale in run.result_files():  # a result from an unfinished earlier attempt must not count
        stale.unlink()
    write_json_atomic(folder / "params.json", run.params)
    os.environ["DROPNOTES_RESULTS"] = str(run.results_dir)  # inherited by the kernel
    start = time.monotonic()
    try:
        notebooks.execute(run.notebook, folder / "notebook.ipynb", run.params)
        outcome = {"status": "done", "error": ""}
        if run.result() is None:
            outcome = {"status": "failed", "error": "the chapter stored no result"}
    except pm.PapermillExecutionError as err:
        outcome = {"status": "failed", "error": f"{err.ename}: {err.evalue}"}
    outcome["seconds"] = round(time.monotonic() - start, 1)
    write_json_atomic(folder / "status.json", outcome)
    return outcome


# ------------------------------------------------------------------------------------------ executors

class SweepInterrupted(Exception):
    """Ctrl-C during a sweep: what was done, stopped and never started."""

    def __init__(self, done: int, interrupted: int, not_started: int):
        super().__init__(f"{done} runs finished, {interrupted} stopped, {not_started} not started")
        self.done, self.interrupted, self.not_started = done, interrupted, not_started


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """In a run's subprocess: get SIGTERM if the sweep itself dies (even by SIGKILL), on Linux."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop(proc: subprocess.Popen) -> None:
    """Stop a run's subprocess and everything it started (its kernel): its own process group."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def mark_interrupted(run: Run) -> dict[str, Any]:
    partial = run.path / "notebook.ipynb"
    if partial.is_file():
        os.replace(partial, run.path / "notebook.partial.ipynb")
    outcome = {"status": "interrupted", "error": "stopped by Ctrl-C; partial notebook kept"}
    write_json_atomic(run.path / "status.json", outcome)
    return outcome


def _local(runs: list[Run], workers: int | None, on_start: Callable, on_end: Callable) -> None:
    import torch

    gpus = torch.cuda.device_count()
    slots: list[str | None] = [str(g) for g in range(gpus)] if gpus and workers is None else [None] * (workers or 1)
    queue = list(runs)
    running: dict[int, tuple[Run, subprocess.Popen, str | None]] = {}
    try:
        while queue or running:
            while queue and slots:
                run, slot = queue.pop(0), slots.pop(0)
                run.path.mkdir(parents=True, exist_ok=True)
                write_json_atomic(run.path / "run.json", asdict(run))
                env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": slot} if slot is not None else {}))
                log = open(run.path / "run.log", "w")
                proc = subprocess.Popen([sys.executable, "-m", "dropnotes.sweep", str(run.path)], env=env,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
                log.close()
                running[proc.pid] = (run, proc, slot)
                on_start(run)
            time.sleep(0.2)
            for pid, (run, proc, slot) in list(running.items()):
                if proc.poll() is not None:
                    del running[pid]
                    slots.append(slot)
                    outcome = run.status() or {"status": "failed", "error": f"the run's process exited with {proc.returncode}"}
                    on_end(run, outcome)
    except KeyboardInterrupt:
        for run, proc, _ in running.values():
            _stop(proc)
            on_end(run, mark_interrupted(run))
        raise SweepInterrupted(0, len(running), len(queue)) from None


def _submitit(runs: list[Run], executor: str, folder: Path, slurm: dict[str, Any], on_start: Callable,
              on_end: Callable) -> None:
    import submitit

    cluster = {"slurm": "slurm", "submitit-local": "local", "submitit-debug": "debug"}[executor]
    executor = submitit.AutoExecutor(folder=folder / "submitit", cluster=cluster)
    executor.update_parameters(timeout_min=int(slurm.get("timeout_min", 60)),
                               **({"gpus_per_node": 1} if cluster == "slurm" else {}),
                               **{f"slurm_{k}": v for k, v in slurm.items() if k != "timeout_min" and v})
    jobs = []
    try:
        for r in runs:
            on_start(r)
            jobs.append((r, executor.submit(execute_run, r)))
        for r, job in jobs:
            on_end(r, job.result())
    except KeyboardInterrupt:
        unfinished = [(r, j) for r, j in jobs if not j.done()]
        for r, job in unfinished:
            job.cancel(check=False)
            on_end(r, mark_interrupted(r))
        raise SweepInterrupted(0, len(unfinished), len(runs) - len(jobs)) from None


def run_sweep(chapter: str, notebook: Path, values: dict[str, list[Any]], sweep_dir: Path, *,
              executor: str = "local", workers: int | None = None, slurm: dict[str, Any] | None = None,
              knobs=None, log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Run the grid (skipping finished runs), rewriting ``runs.csv`` after every run; returns that table.
    Raises :class:`SweepInterrupted` on Ctrl-C, after the table is written."""

    check_choice("executor", executor, EXECUTORS)
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    points = grid(values)
    runs, seen = [], set()
    for p in points:
        rid = run_id(p, knobs)
        if rid not in seen:  # two spellings of one computation run once
            seen.add(rid)
            runs.append(Run(chapter, str(notebook), p, str(sweep_dir / rid)))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    status: dict[str, dict] = {}
    todo = []
    for r in runs:
        r.clean()
        if r.done():
            status[r.folder] = {**r.status(), "status": "done (earlier)"}
        else:
            todo.append(r)
    write_table(runs, status, sweep_dir)
    log(f"sweep {chapter}: {len(runs)} runs, {len(runs) - len(todo)} done earlier, {len(todo)} to run -> {sweep_dir}")
    started: dict[str, float] = {}

    def on_start(r: Run) -> None:
        started[r.folder] = time.monotonic()
        log(f"start {Path(r.folder).name} {json.dumps(r.params)}")

    def on_end(r: Run, outcome: dict) -> None:
        status[r.folder] = outcome
        write_table(runs, status, sweep_dir)
        seconds = time.monotonic() - started.get(r.folder, time.monotonic())
        where = r.path / ("notebook.partial.ipynb" if outcome["status"] == "interrupted" else "notebook.ipynb")
        log(f"{outcome['status']:<11} {Path(r.folder).name} {seconds:.0f} s {where}"
            + (f" ({outcome['error']})" if outcome.get("error") and outcome["status"] == "failed" else ""))

    try:
        if todo:
            if executor == "local":
                _local(todo, workers, on_start, on_end)
            else:
                _submitit(todo, executor, sweep_dir, slurm or {}, on_start, on_end)
    except SweepInterrupted as stop:
        done = sum(1 for o in status.values() if o["status"].startswith("done"))
        raise SweepInterrupted(done, stop.interrupted, stop.not_started) from None
    return collect(runs, status)


def write_table(runs: list[Run], status: dict[str, dict], sweep_dir: Path) -> pd.DataFrame:

    table = collect(runs, status)
    atomic_write_text(sweep_dir / "runs.csv", table.to_csv(index=False))
    return table


def collect(runs: list[Run], status: dict[str, dict]) -> pd.DataFrame:
    """One tidy row per run: parameters, status, and the stored result's metrics (flattened)."""
    rows = []
    for r in runs:
        row: dict[str, Any] = {"run_id": Path(r.folder).name,
                               **{k: list(v) if isinstance(v, tuple) else v for k, v in r.params.items()}}
        outcome = status.get(r.folder, {"status": "queued", "error": ""})
        record = r.result() if outcome["status"].startswith("done") else None
        if record is not None:
            row.update(pd.json_normalize(record["metrics"], sep=".").iloc[0].to_dict())
            row["profile"] = record["profile"]
            row["wall_time_s"] = record["provenance"]["wall_time_s"]
        elif outcome["status"].startswith("done"):
            outcome = {"status": "failed", "error": "the chapter stored no result"}
        notebook = r.path / ("notebook.partial.ipynb" if outcome["status"] == "interrupted" else "notebook.ipynb")
        row.update({"status": outcome["status"], "error": outcome.get("error", ""), "notebook": str(notebook)})
        rows.append(row)
    return pd.DataFrame(rows)


def _worker(folder: str) -> int:  # pragma: no cover - exercised through the local executor
    """``python -m dropnotes.sweep RUN_FOLDER``: execute the run described in ``RUN_FOLDER/run.json``."""
    spec = json.loads((Path(folder) / "run.json").read_text())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    outcome = execute_run(Run(**spec))
    return 0 if outcome["status"] == "done" else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_worker(sys.argv[1]))
