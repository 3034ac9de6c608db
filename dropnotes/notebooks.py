"""Executing a chapter notebook with papermill: one function, used by ``dropnotes run``, the sweeps and
the tests.

The kernel talks to papermill over IPC sockets (files in a private runtime folder) instead of TCP on
localhost, so it does not print ipykernel's "running over TCP without encryption" warning at every start.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager
from dropnotes.runtime import atomic_write


class IPCKernelManager(KernelManager):
    """A kernel manager whose kernels use the IPC transport, with sockets in a private temporary folder
    (jupyter_client's default socket name is relative to the working folder, so two kernels started there
    at once would collide). ``threads`` (a class attribute; :func:`execute` makes a subclass that sets it) caps
    the kernel's BLAS/OpenMP threads, so that several kernels can share a CPU without oversubscribing it."""

    threads: int | None = None

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("transport", "ipc")
        self._socket_dir = tempfile.mkdtemp(prefix="dropnotes-kernel-")
        kwargs.setdefault("ip", os.path.join(self._socket_dir, "kernel"))
        super().__init__(**kwargs)

    async def _async_pre_start_kernel(self, **kw: Any):
        if self.threads is not None:
            env = dict(kw.get("env") or os.environ)
            env.update({name: str(self.threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
            kw["env"] = env
        return await super()._async_pre_start_kernel(**kw)

    def cleanup_resources(self, restart: bool = False) -> None:
        super().cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self._socket_dir, ignore_errors=True)


def execute(src: str | Path, out: str | Path, parameters: dict[str, Any] | None = None, *,
            progress_bar: bool = False, log_output: bool = False, threads: int | None = None) -> None:
    """Run ``src`` with ``parameters`` injected, in the notebook's own folder, writing ``out`` as it goes;
    raises papermill's ``PapermillExecutionError`` on a failing cell (``out`` then holds the partial run).
    ``threads`` caps the kernel's compute threads (None: the library's default, every core)."""
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    import papermill as pm

    src = Path(src)
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in (parameters or {}).items()}
    manager = IPCKernelManager if threads is None else type("IPCKernelManager", (IPCKernelManager,), {"threads": threads})
    try:
        pm.execute_notebook(str(src), str(out), parameters=params, kernel_name="python3", cwd=str(src.parent),
                            progress_bar=progress_bar, log_output=log_output, kernel_manager_class=manager)
    finally:
        if Path(out).is_file():
            collapse_injected(out)


INJECTED = "injected-parameters"  # papermill's tag on the cell it adds under the parameters cell


def collapse_injected(path: str | Path) -> None:
    """Tag papermill's injected-parameters cell ``hide-input``, so that the book shows it collapsed under the
    parameters cell (one click opens it) instead of as a second, bare code cell."""
    import nbformat


    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if INJECTED in tags and "hide-input" not in tags:
            tags.append("hide-input")
            changed = True
    if changed:
        atomic_write(Path(path), nbformat.writes(nb) + "\n")


# ------------------------------------------------------------------ the outputs nbval checks

CHECK_TAG = "nbval-check-output"  # nbval's NBVAL_CHECK_OUTPUT marker, as a cell tag (invisible in the book)
_IMAGES = ("image/png", "image/jpeg", "image/svg+xml", "application/pdf")


def checked_outputs(cell) -> list:
    """A checked cell's outputs as committed: text only (images are dropped; nbval does not compare them)."""
    kept = []
    for out in cell.get("outputs", []):
        out = dict(out)
        if "data" in out:
            out["data"] = {k: v for k, v in out["data"].items() if k not in _IMAGES}
            if not out["data"]:
                continue
        kept.append(out)
    return kept


def refresh_checked(src: str | Path) -> int:
    """Execute ``src`` at the smoke profile (results and checkpoints in a scratch folder) and store, in ``src``
    itself, the text outputs of its cells tagged ``nbval-check-output``: what ``pytest --nbval-lax`` compares
    a fresh smoke run against. Every other cell is left without outputs. Returns the number of checked cells.

    Run it after changing what a checked cell shows, and review the diff: the committed outputs are the
    chapter's documented behaviour."""
    import nbformat


    src = Path(src)
    scratch = Path(tempfile.mkdtemp(prefix="dropnotes-smoke-"))
    saved = {k: os.environ.get(k) for k in ("DROPNOTES_PROFILE", "DROPNOTES_RESULTS", "DROPNOTES_CHECKPOINTS")}
    os.environ.update(DROPNOTES_PROFILE="smoke", DROPNOTES_RESULTS=str(scratch / "results"),
                      DROPNOTES_CHECKPOINTS=str(scratch / "checkpoints"))
    try:
        execute(src, scratch / src.name, {})
        ran = {c.get("id"): c for c in nbformat.read(scratch / src.name, as_version=4).cells}
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        shutil.rmtree(scratch, ignore_errors=True)
    nb = nbformat.read(src, as_version=4)
    checked = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if CHECK_TAG in cell.metadata.get("tags", []):
            done = ran[cell.get("id")]
            cell.outputs = [nbformat.from_dict(o) for o in checked_outputs(done)]
            cell.execution_count = done.execution_count
            checked += 1
        else:
            cell.outputs, cell.execution_count = [], None
    atomic_write(src, nbformat.writes(nb) + "\n")
    return checked


def parameters_source(src: str | Path) -> str:
    """The source of the notebook's papermill ``parameters`` cell (``ValueError`` when it has none)."""
    import nbformat

    nb = nbformat.read(str(src), as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            return cell.source
    raise ValueError(f"{src}: no cell tagged 'parameters'")


def write_parameters(src: str | Path, text: str) -> bool:
    """Put ``text`` into the notebook's ``parameters`` cell (atomically); True when it changed."""
    import nbformat


    nb = nbformat.read(str(src), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise ValueError(f"{src}: no cell tagged 'parameters'")
    if cells[0].source == text:
        return False
    cells[0].source = text
    atomic_write(src, nbformat.writes(nb) + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dropnotes.notebooks",
                                     description="Store the smoke-profile outputs of the cells nbval checks.")
    parser.add_argument("notebooks", nargs="+", help="chapter notebooks (e.g. chapters/*.ipynb)")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        print(f"{path}: {refresh_checked(path)} checked cells stored", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
