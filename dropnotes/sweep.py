"""Parameter sweeps over a chapter: a grid of papermill runs, resumable, on an existing engine.

Each run gets its own folder ``<sweep_dir>/<run_id>/`` (``run_id`` = a hash of its parameters)
holding the executed notebook and, through ``DROPNOTES_RESULTS``, the chapter's stored result. A
run whose result already exists is skipped, so an interrupted sweep resumes where it stopped.
When all runs are done, ``runs.csv`` holds one row per run: its parameters, status and metrics.

Engines (no home-made scheduler):

* ``local`` (default): a :class:`concurrent.futures.ProcessPoolExecutor` with one worker per
  visible GPU (each worker pinned to its GPU through ``CUDA_VISIBLE_DEVICES``), or ``--workers``
  CPU workers;
* ``slurm``: `submitit <https://github.com/facebookincubator/submitit>`_'s Slurm executor;
* ``submitit-local`` and ``submitit-debug``: submitit's local (subprocess) and debug (in-process)
  executors, which run the same code path as ``slurm`` on one machine (the tests use them).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import itertools
import json
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

ENGINES = ("local", "slurm", "submitit-local", "submitit-debug")


def run_id(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]


def grid(values: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the given values, in a stable order."""
    names = list(values)
    return [dict(zip(names, combo)) for combo in itertools.product(*(values[n] for n in names))]


@dataclass(frozen=True)
class Run:
    chapter: str
    notebook: str  # absolute path of the chapter notebook
    params: dict
    folder: str

    @property
    def results_dir(self) -> Path:
        return Path(self.folder) / "results"

    def result_files(self) -> list[Path]:
        return sorted((self.results_dir / self.chapter).glob("*.json"))

    def done(self) -> bool:
        return bool(self.result_files())


def execute_run(run: Run) -> dict[str, Any]:
    """Execute one run (in whatever process the engine chose); returns its status, never raises."""
    import papermill as pm

    folder = Path(run.folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps(run.params, indent=1, sort_keys=True))
    os.environ["DROPNOTES_RESULTS"] = str(run.results_dir)  # inherited by the kernel
    try:
        pm.execute_notebook(run.notebook, str(folder / "notebook.ipynb"), parameters=run.params,
                            kernel_name="python3", cwd=str(Path(run.notebook).parent), progress_bar=False)
        return {"status": "done", "error": ""}
    except pm.PapermillExecutionError as err:
        return {"status": "failed", "error": f"{err.ename}: {err.evalue}"}



def _pin_gpu(queue) -> None:
    """Pool initializer: give this worker one GPU for its whole life."""
    if queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(queue.get())


def _local_pool(runs: list[Run], workers: int | None) -> list[dict]:
    import torch

    gpus = torch.cuda.device_count()
    ctx = mp.get_context("spawn")
    queue = None
    if gpus and workers is None:
        queue = ctx.Queue()
        for g in range(gpus):
            queue.put(g)
    n = workers or gpus or 1
    with cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_pin_gpu, initargs=(queue,)) as pool:
        return list(pool.map(execute_run, runs))


def _submitit(runs: list[Run], engine: str, folder: Path, slurm: dict[str, Any]) -> list[dict]:
    import submitit

    cluster = {"slurm": "slurm", "submitit-local": "local", "submitit-debug": "debug"}[engine]
    executor = submitit.AutoExecutor(folder=folder / "submitit", cluster=cluster)
    executor.update_parameters(timeout_min=int(slurm.get("timeout_min", 60)),
                               **({"gpus_per_node": 1} if cluster == "slurm" else {}),
                               **{f"slurm_{k}": v for k, v in slurm.items() if k != "timeout_min" and v})
    jobs = [executor.submit(execute_run, r) for r in runs]
    return [job.result() for job in jobs]


def run_sweep(chapter: str, notebook: Path, values: dict[str, list[Any]], sweep_dir: Path, *,
              engine: str = "local", workers: int | None = None, slurm: dict[str, Any] | None = None) -> pd.DataFrame:
    """Run the grid (skipping finished runs) and write ``runs.csv``; returns that table."""
    from dropnotes.runtime import check_choice

    check_choice("engine", engine, ENGINES)
    runs = [Run(chapter, str(notebook), p, str(sweep_dir / run_id(p))) for p in grid(values)]
    todo = [r for r in runs if not r.done()]
    if todo:
        if engine == "local":
            outcomes = _local_pool(todo, workers)
        else:
            outcomes = _submitit(todo, engine, sweep_dir, slurm or {})
        status = {r.folder: o for r, o in zip(todo, outcomes)}
    else:
        status = {}
    table = collect(runs, status)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    tmp = sweep_dir / ".runs.csv.tmp"
    table.to_csv(tmp, index=False)
    os.replace(tmp, sweep_dir / "runs.csv")
    return table


def collect(runs: list[Run], status: dict[str, dict]) -> pd.DataFrame:
    """One tidy row per run: parameters, status, and the stored result's metrics (flattened)."""
    rows = []
    for r in runs:
        row: dict[str, Any] = {"run_id": Path(r.folder).name, **r.params}
        outcome = status.get(r.folder, {"status": "done (earlier)", "error": ""})
        files = r.result_files()
        if files:
            record = json.loads(files[-1].read_text())
            row.update(pd.json_normalize(record["metrics"], sep=".").iloc[0].to_dict())
            row["profile"] = record["profile"]
            row["wall_time_s"] = record["provenance"]["wall_time_s"]
        elif outcome["status"].startswith("done"):
            outcome = {"status": "failed", "error": "the chapter stored no result"}
        row.update({"status": outcome["status"], "error": outcome["error"], "notebook": str(Path(r.folder) / "notebook.ipynb")})
        rows.append(row)
    return pd.DataFrame(rows)
