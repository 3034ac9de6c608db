"""Nothing lost, nothing repeated: a sweep killed with SIGKILL at any point resumes, and Ctrl-C stops.

The sweep runs in its own process (``python -c`` calling ``dropnotes.cli.main`` with a tiny chapter
registered), on the local engine, so it can be killed for real. The tiny chapter stores ``2 * x``
after sleeping; ``DROPNOTES_TEST_KILL=x:point`` makes the run with that ``x`` SIGKILL the sweep
itself once, at ``start`` or in the middle of a ``save`` (a temporary result file half written).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # integration: subprocesses, kills, torchrun or whole-chapter sizes

BODY = '''
import os, signal, time
from pathlib import Path
from dropnotes import results
kill = os.environ.get("DROPNOTES_TEST_KILL", "")
marker = Path(os.environ["DROPNOTES_TEST_MARKERS"]) / f"killed-{x}"
if kill.startswith(f"{x}:") and not marker.exists():
    marker.write_text("once")
    point = kill.split(":")[1]
    if point == "save":  # what SIGKILL in the middle of an atomic save leaves: a hidden temporary file
        folder = Path(os.environ["DROPNOTES_RESULTS"]) / "tiny"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".quick-abc123.json").write_text('{"chapter": "tin')
    os.kill(int(os.environ["SWEEP_PID"]), signal.SIGKILL)
    time.sleep(30)
(Path(os.environ["DROPNOTES_TEST_MARKERS"]) / f"sleeping-{x}").write_text("in the sleep cell")
time.sleep(sleep)
results.save_result("tiny", "quick", params={"x": x}, metrics={"double": 2 * x},
                    provenance=results.provenance("cpu", [0], 0.0, "none"))
'''

DRIVER = '''
import os, sys
os.environ["SWEEP_PID"] = str(os.getpid())
from dropnotes import cli
from dropnotes.experiments import REGISTRY, Chapter
with REGISTRY.temporarily(Chapter("tiny", "tiny", sys.argv[1]), only=True):
    sys.exit(cli.main(sys.argv[2:]))
'''


@pytest.fixture
def tiny(tmp_path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1  # a number\nsleep = 0.0  # seconds before storing")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(BODY)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    (tmp_path / "markers").mkdir()
    return path


def sweep(tiny: Path, sweep_dir: Path, values: str, *, kill: str = "", extra=(), wait=True, sleep="0.0"):
    env = dict(os.environ, DROPNOTES_TEST_KILL=kill, DROPNOTES_TEST_MARKERS=str(tiny.parent / "markers"),
               DROPNOTES_PROGRESS="0")
    argv = [sys.executable, "-c", DRIVER, str(tiny), "sweep", "tiny", "-p", "x", values, "-p", "sleep", sleep,
            "--workers", "1", "--sweep-dir", str(sweep_dir), *extra]
    # SIGINT at its default in the child: a pytest-xdist worker ignores it, and a child would inherit that and
    # never see the Ctrl-C these tests send
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if not wait:
        return proc
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def table(sweep_dir: Path) -> pd.DataFrame:
    return pd.read_csv(sweep_dir / "runs.csv").set_index("x")


def notebooks(sweep_dir: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/notebook.ipynb")}


def _no_stray_processes(sweep_dir: Path) -> None:
    """No run of the killed sweep goes on in the background (its children die with it)."""
    time.sleep(1.0)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(sweep_dir) not in ps, ps


@pytest.mark.parametrize("point", ["start", "save"])
def test_sigkill_during_a_run_loses_and_repeats_nothing_finished(tiny, tmp_path, point):
    sweep_dir = tmp_path / "sweep"
    rc, _, _ = sweep(tiny, sweep_dir, "1,2,3", kill=f"2:{point}")
    assert rc == -signal.SIGKILL
    _no_stray_processes(sweep_dir)
    before = table(sweep_dir)
    assert before.loc[1, "status"] == "done"  # runs.csv was rewritten after the first run, before the kill
    assert before.loc[2, "status"] == "queued" and before.loc[3, "status"] == "queued"
    if point == "save":
        assert list(sweep_dir.glob("*/results/tiny/.quick-*.json")), "the kill left a temporary file"
    finished = notebooks(sweep_dir)
    finished = {p: t for p, t in finished.items() if (p.parent / "status.json").is_file()}
    assert len(finished) == 1

    rc, _, err = sweep(tiny, sweep_dir, "1,2,3")
    assert rc == 0, err
    after = table(sweep_dir)
    assert after.loc[1, "status"] == "done (earlier)"
    assert after.loc[2, "status"] == "done" and after.loc[3, "status"] == "done"
    assert list(after.sort_index().double) == [2, 4, 6]
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items()), "a finished run was repeated"
    assert not list(sweep_dir.glob("*/results/tiny/.*.json")), "temporary files are cleaned up"
    assert not list(sweep_dir.glob(".*")), "no temporary runs.csv left"


def test_sigkill_between_runs_and_a_truncated_notebook_is_not_done(tiny, tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = sweep(tiny, sweep_dir, "1,2", wait=False, sleep="2.0")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill as soon as the first run is recorded as done
        if (sweep_dir / "runs.csv").is_file() and "done" in (sweep_dir / "runs.csv").read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    _no_stray_processes(sweep_dir)
    first = table(sweep_dir)
    assert first.loc[1, "status"] == "done"
    # A result stored by a notebook that then died (killed after its save) is not "done".
    second = next(p for p in sweep_dir.iterdir() if p.is_dir() and not (p / "status.json").is_file())
    (second / "results" / "tiny").mkdir(parents=True, exist_ok=True)
    (second / "results" / "tiny" / "quick.json").write_text(json.dumps({"metrics": {"double": -1}}))
    stamp = notebooks(sweep_dir)
    rc, _, err = sweep(tiny, sweep_dir, "1,2", sleep="2.0")
    assert rc == 0, err
    after = table(sweep_dir)
    assert after.loc[1, "status"] == "done (earlier)" and after.loc[2, "status"] == "done"
    assert after.loc[2, "double"] == 4, "the unfinished run's result was recomputed, not trusted"
    done_first = [p for p in stamp if json.loads((p.parent / "params.json").read_text())["x"] == 1]
    assert all(p.stat().st_mtime_ns == stamp[p] for p in done_first)


def test_spelling_and_explicit_defaults_do_not_make_new_runs(tiny, tmp_path):
    sweep_dir = tmp_path / "sweep"
    rc, _, err = sweep(tiny, sweep_dir, "1,1.0,2")
    assert rc == 0, err
    assert sorted(table(sweep_dir).index.tolist()) == [1, 2]  # 1 and 1.0 are one run
    # A line per run as it starts and ends, and no kernel warning about TCP.
    assert err.count("\nstart ") + err.startswith("start ") == 2 and err.count("\ndone ") == 2, err
    assert "without encryption" not in err and "Traceback" not in err, err
    stamps = notebooks(sweep_dir)
    rc, _, err = sweep(tiny, sweep_dir, "2,1")
    assert rc == 0 and set(table(sweep_dir).status) == {"done (earlier)"}
    assert notebooks(sweep_dir) == stamps


def test_ctrl_c_stops_the_sweep_and_starts_nothing_more(tiny, tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = sweep(tiny, sweep_dir, "1,2,3", wait=False, sleep="20.0")
    deadline = time.monotonic() + 120
    sleeping = tiny.parent / "markers" / "sleeping-1"  # written by the first run as it enters its 20-second sleep
    while time.monotonic() < deadline and not sleeping.exists():
        time.sleep(0.1)
    assert sleeping.exists(), "the first run never reached its sleep"
    time.sleep(1.0)  # the first run is in its 20-second cell (a slow machine may still be importing before the marker)
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert time.monotonic() - start < 20, "the run in flight was stopped, not waited for"
    assert "Traceback" not in err and "DeadKernelError" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("dropnotes:")]
    assert lines == [lines[0]] and "1 stopped, 2 not started" in lines[0], err
    t = table(sweep_dir)
    assert t.loc[1, "status"] == "interrupted" and t.loc[1, "notebook"].endswith("notebook.partial.ipynb")
    assert Path(t.loc[1, "notebook"]).is_file()
    assert list(t.loc[[2, 3], "status"]) == ["queued", "queued"]
    assert len(list(sweep_dir.glob("*/notebook*.ipynb"))) == 1, "no queued run started"
    _no_stray_processes(sweep_dir)
