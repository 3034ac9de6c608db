import json

import nbformat
import pandas as pd
import pytest

from dropnotes import cli, sweep
from dropnotes.experiments import REGISTRY, Chapter

pytestmark = pytest.mark.slow  # integration: subprocesses, kills, torchrun or whole-chapter sizes


@pytest.fixture
def storing_chapter(tmp_path, monkeypatch):
    """A tiny chapter that stores 2*x as its result, or fails when x is negative."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('x = 1  # a number\nprofile = "quick"')
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        'from dropnotes import results\n'
        'assert x >= 0, "x must be >= 0"\n'
        'results.save_result("tiny", profile, params={"x": x}, metrics={"double": 2 * x, "nested": {"x": x}},\n'
        '                    provenance=results.provenance("cpu", [0], 0.0, "none"))')
    nb.cells = [params, body]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    with REGISTRY.temporarily(Chapter("tiny", "tiny", str(path)), only=True):
        yield tmp_path / "sweep"


def test_grid_and_ids():
    g = sweep.grid({"a": [1, 2], "b": ["x", "y"]})
    assert g == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert sweep.run_id({"a": 1, "b": 2}) == sweep.run_id({"b": 2, "a": 1})


def test_sweep_values_split_and_type():
    values = cli.sweep_values("ensembles", [("p_hidden", "0.1,0.3"), ("seed", "1,2,3")], "quick")
    assert values == {"p_hidden": [0.1, 0.3], "seed": [1, 2, 3], "profile": ["quick"]}
    assert cli.sweep_values("mechanics", [("p_hidden", "0,0.5;0,0.2")], None) == {"p_hidden": [(0.0, 0.5), (0.0, 0.2)]}
    with pytest.raises(cli.UsageError, match="unknown parameter 'dropout'"):
        cli.sweep_values("ensembles", [("dropout", "0.1")], None)


@pytest.mark.parametrize("executor", ["submitit-debug", "submitit-local", "local"])
def test_sweep_runs_the_grid_and_resumes(storing_chapter, executor, capsys):
    argv = ["sweep", "tiny", "-p", "x", "1,2", "--executor", executor, "--sweep-dir", str(storing_chapter)]
    if executor == "local":
        argv += ["--workers", "2"]
    assert cli.main(argv) == 0
    table = pd.read_csv(storing_chapter / "runs.csv")
    assert sorted(table.x) == [1, 2] and sorted(table.double) == [2, 4] and set(table.status) == {"done"}
    assert "nested.x" in table.columns
    stamps = {p: p.stat().st_mtime_ns for p in storing_chapter.glob("*/notebook.ipynb")}
    assert len(stamps) == 2
    # Again, with one more value: the two finished runs are skipped.
    assert cli.main(argv[:4] + ["1,2,3"] + argv[5:]) == 0
    table = pd.read_csv(storing_chapter / "runs.csv")
    assert sorted(table.status) == ["done", "done (earlier)", "done (earlier)"]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def test_failed_run_is_reported_and_kept(storing_chapter, capsys):
    rc = cli.main(["sweep", "tiny", "-p", "x", "3,-1", "--executor", "submitit-debug", "--sweep-dir", str(storing_chapter)])
    assert rc == 1
    table = pd.read_csv(storing_chapter / "runs.csv").set_index("x")
    assert table.loc[-1, "status"] == "failed" and "x must be >= 0" in table.loc[-1, "error"]
    assert table.loc[3, "status"] == "done"
    rid = sweep.run_id({"x": -1}, cli.chapter_knobs("tiny"))
    assert (storing_chapter / rid / "notebook.ipynb").is_file()
    assert json.loads((storing_chapter / rid / "params.json").read_text()) == {"x": -1}
