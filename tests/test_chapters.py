"""The book's chapters, end to end: each notebook executes once (papermill, quick parameters
injected), its outputs and stored result are checked, and the book is built from the executed
notebooks with execution off — so nothing is executed twice."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest
import yaml

from dropnotes.experiments import CHAPTERS

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "_build" / "executed"
QUICK = {"profile": "quick", "seed": 0}

pytestmark = pytest.mark.notebooks


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part.get("chapters", [])]
    return files


def chapter_notebooks() -> list[str]:
    return [f + ".ipynb" for f in toc_files() if f.startswith("chapters/")]


@functools.lru_cache(maxsize=None)
def execute(relpath: str) -> Path:
    """Execute one chapter with the quick parameters (once per test session)."""
    out = EXECUTED / relpath
    out.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(ROOT / relpath), str(out), parameters=QUICK, kernel_name="python3",
                        cwd=str((ROOT / relpath).parent), progress_bar=False, log_output=False)
    return out


def test_toc_lists_every_chapter():
    on_disk = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "chapters").glob("*.ipynb"))
    assert sorted(chapter_notebooks()) == on_disk
    assert sorted(CHAPTERS.values()) == on_disk


@pytest.mark.parametrize("relpath", chapter_notebooks())
def test_chapter_source_is_clean(relpath):
    nb = nbformat.read(ROOT / relpath, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "first code cell must be tagged 'parameters'"
    assert "profile" in code[0].source and "seed" in code[0].source and "device" in code[0].source
    assert all(not c.get("outputs") for c in code), "commit chapters without outputs"
    assert nb.cells[0].cell_type == "markdown" and "{cite}" in nb.cells[0].source, "open with the claim and its source"


@pytest.mark.parametrize("relpath", chapter_notebooks())
def test_chapter_executes_and_stores_its_result(relpath):
    out = execute(relpath)
    nb = nbformat.read(out, as_version=4)
    assert nb.metadata.papermill.parameters == QUICK
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    stderr = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                     if o.get("name") == "stderr")
    assert "Warning" not in stderr, stderr
    chapter = {v: k for k, v in CHAPTERS.items()}[relpath]
    record = json.loads((Path(os.environ["DROPNOTES_RESULTS"]) / chapter / "quick.json").read_text())
    assert record["profile"] == "quick" and record["provenance"]["dataset"]
    verdicts = record["tables"]["verdicts"]["__frame__"]
    assert verdicts and set(verdicts[0]) == {"claim", "source", "paper", "ours", "verdict"}


@pytest.mark.parametrize("chapter, params, message", [
    ("01_mechanics", {"profile": "fastest"}, "profile='fastest' is not allowed; choose one of 'quick', 'full', 'auto'"),
    ("01_mechanics", {"profile": "quick", "p": 1.5}, "p must be in [0, 1), got 1.5"),
    ("02_ensembles", {"profile": "quick", "members": 1}, "members must be >= 2 for an ensemble, got 1"),
])
def test_bad_parameter_fails_at_the_first_cell(tmp_path, chapter, params, message):
    src = ROOT / "chapters" / f"{chapter}.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(src), str(tmp_path / "out.ipynb"), parameters=params, kernel_name="python3",
                            cwd=str(src.parent), progress_bar=False)
    assert err.value.ename == "ValueError" and message in err.value.evalue
    assert err.value.exec_count == 3  # parameters, injected parameters, then the first cell of the chapter


def test_book_builds_from_the_executed_chapters(tmp_path):
    """Render the book (execution off) from the notebooks executed above; warnings fail the build."""
    stage = tmp_path / "book"
    stage.mkdir()
    for name in ("_toc.yml", "references.bib"):
        shutil.copy(ROOT / name, stage / name)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    (stage / "_config.yml").write_text(yaml.safe_dump(config))
    for f in toc_files():
        if f.startswith("chapters/"):
            (stage / "chapters").mkdir(exist_ok=True)
            shutil.copy(execute(f + ".ipynb"), stage / (f + ".ipynb"))
        else:
            shutil.copy(ROOT / (f + ".md"), stage / (f + ".md"))
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(stage), "-W", "--keep-going"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    html = stage / "_build" / "html"
    for relpath in chapter_notebooks():
        page = (html / relpath.replace(".ipynb", ".html")).read_text()
        assert "Verdict" in page and "Srivastava" in page, relpath
        assert "reproduced" in page or "inconclusive" in page, f"{relpath}: no verdict table rendered"
    assert len(list((html / "_images").glob("*.png"))) >= 1 + 4, "every chapter's figures are rendered"
    assert (html / "references.html").is_file() and (html / "api.html").is_file()
    shutil.rmtree(ROOT / "_build" / "book-quick", ignore_errors=True)
    shutil.copytree(html, ROOT / "_build" / "book-quick")  # keep the rendered quick book for inspection
