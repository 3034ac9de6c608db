import subprocess
import sys

import nbformat
import pytest

from dropnotes import cli
from dropnotes.experiments import REGISTRY, Chapter


@pytest.fixture
def tiny_chapter(tmp_path, monkeypatch):
    """A two-cell chapter that doubles ``x`` or fails on request, registered as ``tiny``."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('x = 1  # a number\nfail = False  # raise in the next cell\nname = "a"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell('assert not fail, "asked to fail"\nprint(x * 2, name)')]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    with REGISTRY.temporarily(Chapter("tiny", "tiny", str(path)), only=True):
        yield tmp_path / "runs"


def test_list_shows_every_chapter_with_parameters(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in REGISTRY:
        assert name in out
    assert "profile" in out and "'auto'" in out and "p_hidden" in out
    assert "any (default None)" not in out and "int or None" in out and "list of float" in out


@pytest.mark.parametrize("argv, message", [
    (["run", "nosuch"],
     "unknown chapter 'nosuch'; choose one of mechanics, ensembles, variational, droppath, llm, interactions, cost"),
    (["run", "mechanics", "-p", "dropout", "0.3"], "unknown parameter 'dropout'; allowed: profile, device, seed"),
    (["run", "mechanics", "-p", "seed", "abc"], "parameter seed must be an integer in [0, 2,147,483,647], got 'abc'"),
    (["run", "mechanics", "-p", "p_example", "true"], "parameter p_example must be a number in [0, 1), got 'true'"),
    (["run", "mechanics", "-p", "profile", "fastest"], "profile='fastest' is not allowed"),
    (["run"], "name one chapter or pass --all"),
])
def test_bad_requests_are_refused_before_any_kernel(tmp_path, capsys, argv, message):
    assert cli.main(argv + ["--runs-dir", str(tmp_path / "runs")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_values_are_typed_by_the_declared_knobs():
    assert cli.coerce("mechanics", "seed", "3") == 3
    assert cli.coerce("mechanics", "p_example", "0", None) == 0.0 and isinstance(cli.coerce("mechanics", "p_example", "0"), float)
    assert cli.coerce("mechanics", "dataset", "mnist") == "mnist"
    assert cli.coerce("mechanics", "p_hidden", "0,0.5") == (0.0, 0.5)
    assert cli.coerce("mechanics", "p_hidden", "[0, 0.5]") == (0.0, 0.5)  # one canonical form, however spelt
    assert cli.coerce("mechanics", "epochs", "12") == 12 and cli.coerce("mechanics", "epochs", "None") is None
    with pytest.raises(cli.UsageError, match="seed must be an integer"):
        cli.coerce("mechanics", "seed", "1.5")


@pytest.mark.slow
def test_run_writes_the_executed_notebook(tiny_chapter, tmp_path):
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text("x: 5\nname: b\n")
    assert cli.main(["run", "tiny", "-f", str(yaml_file), "-p", "x", "21", "--runs-dir", str(tiny_chapter)]) == 0
    (out,) = (tiny_chapter / "tiny").glob("*.ipynb")
    nb = nbformat.read(out, as_version=4)
    assert nb.metadata.papermill.parameters == {"x": 21, "name": "b"}  # -p overrides -f
    assert "42 b" in nb.cells[-1].outputs[0].text


def test_failed_run_keeps_the_partial_notebook_and_exits_nonzero(tiny_chapter, capsys):
    assert cli.main(["run", "tiny", "-p", "fail", "True", "--runs-dir", str(tiny_chapter)]) == 1
    assert "asked to fail" in capsys.readouterr().err
    (out,) = (tiny_chapter / "tiny").glob("*.ipynb")
    assert any(o.get("output_type") == "error" for c in nbformat.read(out, as_version=4).cells
               for o in c.get("outputs", []))


@pytest.mark.slow
def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "dropnotes", "list"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "mechanics" in proc.stdout


def test_compute_refuses_bad_input_before_running(capsys):
    """`dropnotes compute` checks names against configure() and its values with configure's own checks."""
    assert cli.main(["compute", "nonesuch"]) == 2
    assert "unknown chapter 'nonesuch'" in capsys.readouterr().err
    assert cli.main(["compute", "cost", "-p", "epochs", "3"]) == 2
    assert "unknown parameter 'epochs'; allowed: profile, device, seed, sizes, rounds" in capsys.readouterr().err
    assert cli.main(["compute", "cost", "-p", "sizes", "1,x"]) == 2
    assert "sizes must be a list of at least 1 integers in [1, 2,147,483,647]" in capsys.readouterr().err


def test_compute_runs_a_chapter_and_stores_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DROPNOTES_RESULTS", str(tmp_path))
    assert cli.main(["compute", "cost", "--profile", "quick", "-p", "sizes", "4096", "-p", "rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "verdict" in out and (tmp_path / "cost" / "quick.json").is_file()
