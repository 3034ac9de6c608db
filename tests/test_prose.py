"""No measured number is typed into a chapter's prose: the stored run's numbers reach the text through
myst-nb's glue (``{glue:text}``), so they cannot drift from the stored result."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dropnotes.experiments import REGISTRY

CHAPTERS = {c.name: c.notebook for c in REGISTRY.values()}

ROOT = Path(__file__).resolve().parents[1]
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")
PERCENT = re.compile(r"(?<![\w.,{])(\d+(?:\.\d+)?)\s?%")  # "18 %", "1.5%" (not a glued value's format spec)
# Sentences that state what a run showed, found typed into the book's prose by a referee: each must come from
# the numbers (generated or glued) or go. Kept here so that they cannot come back.
RESULT_PHRASES = ("train error reaches 0", "training error reaches zero", "turns up first", "still underfits",
                  "at no measurable cost", "from over a hundred to less than one", "results hold at this scale",
                  "≈ 1.5 points", "The claim fails on the GPU too", "eager 0.33 failed", "trained to convergence")
SETTINGS = ("params", "defaults", "provenance")  # a record's settings, not its measurements
# Words that introduce a rule's threshold or a setting ("error <= 3 %", "the first 20 % of steps"), not a result.
RULE_WORDS = ("≤", "≥", "<", ">", "within", "exceeds", "first", "last", "level", "margin", "about", "warm-up",
              "up to", "at least", "at most", "below", "above")


def _significant(number: str) -> int:
    return len(number.replace(".", "").lstrip("0"))


def _measured(obj, skip: bool = False, out: set[str] | None = None) -> set[str]:
    """Every decimal a stored record holds outside its ``paper`` and ``source`` fields (the published
    values, which prose may quote with their citation) and its settings: numbers written in its text, and its
    floats at 0 to 4 decimals."""
    out = set() if out is None else out
    if isinstance(obj, dict):
        for key, value in obj.items():
            _measured(value, skip or key in ("paper", "source", *SETTINGS), out)
    elif isinstance(obj, list):
        for value in obj:
            _measured(value, skip, out)
    elif not skip and isinstance(obj, str):
        out.update(DECIMAL.findall(obj))
    elif not skip and isinstance(obj, float):
        out.update(f"{obj:.{d}f}" for d in range(0, 5))
    return out


def _markdown(notebook: Path) -> list[tuple[int, str]]:
    cells = json.loads(notebook.read_text())["cells"]
    return [(i, "".join(c["source"])) for i, c in enumerate(cells) if c["cell_type"] == "markdown"]


def typed_percentages(notebook: Path, record: dict) -> list[tuple[int, str]]:
    """(cell, number) for every percentage typed into a markdown cell ("18 %") whose number a stored record
    measured (at the precision written), whole numbers from 10 on included; published values and settings are not
    measured, and a percentage introduced as a threshold or a setting (:data:`RULE_WORDS`) is not a result."""
    measured = _measured(record)
    out = []
    for i, text in _markdown(notebook):
        for m in PERCENT.finditer(" ".join(text.split())):
            n, before = m.group(1), " ".join(text.split())[max(0, m.start() - 25):m.start()]
            small = "." not in n and int(n) < 10  # single-digit whole percentages are settings too often ("5 % level")
            if n in measured and not small and float(n) != 100.0 and not any(w in before for w in RULE_WORDS):
                out.append((i, n))
    return out


def result_phrases(notebook: Path) -> list[tuple[int, str]]:
    """(cell, phrase) for every sentence of :data:`RESULT_PHRASES` typed into a markdown cell."""
    return [(i, p) for i, text in _markdown(notebook) for p in RESULT_PHRASES if p in " ".join(text.split())]


def published(chapter: str | None) -> set[str]:
    """The chapter module's published values (its ``PAPER_*`` constants, numbers or containers of numbers), as
    written: prose quotes them with their citation, even where a measured number happens to round to one."""
    if chapter is None:
        return set()

    module = REGISTRY[chapter].module
    out: set[str] = set()

    def add(v):
        if isinstance(v, bool):
            return
        if isinstance(v, (int, float)):
            out.add(repr(v))
        elif isinstance(v, (tuple, list)):
            for x in v:
                add(x)
        elif isinstance(v, dict):
            for x in v.values():
                add(x)

    for name, value in vars(module).items():
        if name.startswith("PAPER_"):
            add(value)
    return out


def typed_numbers(notebook: Path, record: dict, chapter: str | None = None) -> list[tuple[int, str]]:
    """(cell, number) for every decimal of 3 or more significant digits in a markdown cell that also
    occurs in the stored record (a published value of the chapter, :func:`published`, is a quote)."""
    measured = _measured(record) - published(chapter)
    cells = json.loads(notebook.read_text())["cells"]
    return [(i, n) for i, c in enumerate(cells) if c["cell_type"] == "markdown"
            for n in DECIMAL.findall("".join(c["source"])) if _significant(n) >= 3 and n in measured]


@pytest.mark.parametrize("chapter", list(CHAPTERS))
@pytest.mark.parametrize("profile", ["laptop", "full"])
def test_no_stored_number_is_typed_into_the_prose(chapter, profile):
    path = ROOT / "results" / chapter / f"{profile}.json"
    if not path.is_file():
        pytest.skip(f"no stored {profile} run of {chapter}")
    record = json.loads(path.read_text())
    assert typed_numbers(ROOT / CHAPTERS[chapter], record, chapter) == []
    assert typed_percentages(ROOT / CHAPTERS[chapter], record) == []


@pytest.mark.parametrize("chapter", list(CHAPTERS))
def test_no_result_is_stated_in_typed_words(chapter):
    assert result_phrases(ROOT / CHAPTERS[chapter]) == []


def test_the_checks_find_typed_percentages_and_phrases(tmp_path):
    nb = tmp_path / "demo.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": [
        "18 % of the words become unk; paper 82 %; 40 epochs; at no measurable cost ({glue:text}`x:.0f` %)"]}]}))
    record = {"metrics": {"unk": 18.04, "epochs": 40.0}, "params": {"rate": 82.0},
              "tables": {"t": {"__frame__": [{"paper": "82 %"}]}}}
    assert typed_percentages(nb, record) == [(0, "18")]
    assert result_phrases(nb) == [(0, "at no measurable cost")]


def test_the_check_finds_a_typed_number(tmp_path):
    """The check fails where it should: a stored number typed into markdown, outside the paper's values."""
    nb = tmp_path / "demo.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": ["error 1.903 bpb, paper 82.7 ppl, v1.0"]},
                                        {"cell_type": "code", "source": ["x = 1.903"]}]}))
    record = {"tables": {"t": {"__frame__": [{"ours": "1.903 bpb", "paper": "82.7"}]}}, "metrics": {"m": 12.5}}
    assert typed_numbers(nb, record) == [(0, "1.903")]
    record["metrics"]["v"] = 82.71
    assert typed_numbers(nb, record) == [(0, "1.903"), (0, "82.7")]


def _finale_and_notes(notebook: Path) -> tuple[int, list[tuple[int, str]]]:
    """The index of the chapter's closing cell (``page.finale``) and its markdown cells (index, text)."""
    cells = json.loads(notebook.read_text())["cells"]
    finale = next(i for i, c in enumerate(cells) if c["cell_type"] == "code" and "page.finale(" in "".join(c["source"]))
    return finale, list(_markdown(notebook))


@pytest.mark.parametrize("chapter", list(CHAPTERS))
def test_findings_come_first_and_superseded_runs_are_a_collapsed_note_at_the_end(chapter):
    """A stored run of an older protocol ("predates") and the protocols' history are told after the verdicts,
    in a collapsed note (a MyST dropdown), never in the page's findings before them."""
    finale, cells = _finale_and_notes(ROOT / CHAPTERS[chapter])
    for i, text in cells:
        if "predates" in text:
            assert i > finale and text.lstrip().startswith(":::{dropdown}"), (chapter, i, text[:80])


def test_the_scorecard_does_not_call_the_laptop_runs_converged():
    assert result_phrases(ROOT / "scorecard.ipynb") == []
