"""Shared test setup: offline data, and results written to a scratch folder (never into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Under pytest-xdist (`make test` runs the package tests with -n 2) each worker gets its own results and checkpoint
# folders and an equal share of the cores: two single-threaded workers use a 2-core CPU better than one with two
# threads, and their subprocesses (the CLI, notebooks) inherit the cap.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    import torch

    _cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    _threads = max(1, _cpus // WORKERS)
    torch.set_num_threads(_threads)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(_threads)
_SUFFIX = f"-{WORKER}" if WORKER else ""

if not os.environ.get("DROPNOTES_DATA") and SHARED_DATA.is_dir():
    os.environ["DROPNOTES_DATA"] = str(SHARED_DATA)
os.environ.setdefault("DROPNOTES_RESULTS", str(ROOT / "_build" / f"test-results{_SUFFIX}"))
os.environ.setdefault("DROPNOTES_PROFILE", "quick")
if "DROPNOTES_CHECKPOINTS" not in os.environ:
    # A fresh checkpoint cache per session, so every test run pretrains (a stale cache would hide bugs).
    import shutil

    _ckpt = ROOT / "_build" / f"test-checkpoints{_SUFFIX}"
    shutil.rmtree(_ckpt, ignore_errors=True)
    os.environ["DROPNOTES_CHECKPOINTS"] = str(_ckpt)


def pytest_collection_modifyitems(config, items):
    # The notebook tests are slow; run them after the package tests so a broken package fails fast.
    items.sort(key=lambda item: item.get_closest_marker("notebooks") is not None)


@pytest.fixture
def have_data() -> Path:
    root = os.environ.get("DROPNOTES_DATA")
    if not root or not (Path(root) / "mnist").is_dir():
        pytest.skip("the offline datasets are not available (set DROPNOTES_DATA)")
    return Path(root)


def _tree_state() -> set[str] | None:
    """The source tree's changed and untracked files that git does not ignore (None outside a git checkout)."""
    import subprocess

    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    state = set()
    for line in out.splitlines():
        path = ROOT / line[3:].strip('"')
        stamp = path.stat().st_mtime_ns if path.exists() else None
        state.add(f"{line}@{stamp}")
    return state


def pytest_sessionstart(session):
    session.config._tree_before = _tree_state()


def pytest_sessionfinish(session, exitstatus):
    """No test writes into the source tree: a file that git sees, created or changed during the session, fails it."""
    before = getattr(session.config, "_tree_before", None)
    after = _tree_state()
    if before is None or after is None or getattr(session.config, "workerinput", None) is not None:
        return
    new = sorted(s.rsplit("@", 1)[0] for s in after - before)
    if new:
        session.config.get_terminal_writer().line(
            "tests wrote into the source tree (write under tmp_path or _build/ instead): " + "; ".join(new), red=True)
        session.exitstatus = 1
