"""No measured number is typed into a chapter's prose: the stored run's numbers reach the text through
myst-nb's glue (``{glue:text}``), so they cannot drift from the stored result."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dropnotes.experiments import CHAPTERS

ROOT = Path(__file__).resolve().parents[1]
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")


def _significant(number: str) -> int:
    return len(number.replace(".", "").lstrip("0"))


def _measured(obj, skip: bool = False, out: set[str] | None = None) -> set[str]:
    """Every decimal a stored record holds outside its ``paper`` and ``source`` fields (the published
    values, which prose may quote with their citation): numbers written in its text, and its floats at 1
    to 4 decimals."""
    out = set() if out is None else out
    if isinstance(obj, dict):
        for key, value in obj.items():
            _measured(value, skip or key in ("paper", "source"), out)
    elif isinstance(obj, list):
        for value in obj:
            _measured(value, skip, out)
    elif not skip and isinstance(obj, str):
        out.update(DECIMAL.findall(obj))
    elif not skip and isinstance(obj, float):
        out.update(f"{obj:.{d}f}" for d in range(1, 5))
    return out


def typed_numbers(notebook: Path, record: dict) -> list[tuple[int, str]]:
    """(cell, number) for every decimal of 3 or more significant digits in a markdown cell that also
    occurs in the stored record."""
    measured = _measured(record)
    cells = json.loads(notebook.read_text())["cells"]
    return [(i, n) for i, c in enumerate(cells) if c["cell_type"] == "markdown"
            for n in DECIMAL.findall("".join(c["source"])) if _significant(n) >= 3 and n in measured]


@pytest.mark.parametrize("chapter", list(CHAPTERS))
def test_no_stored_number_is_typed_into_the_prose(chapter):
    path = ROOT / "results" / chapter / "full.json"
    if not path.is_file():
        pytest.skip(f"no stored full run of {chapter}")
    assert typed_numbers(ROOT / CHAPTERS[chapter], json.loads(path.read_text())) == []


def test_the_check_finds_a_typed_number(tmp_path):
    """The check fails where it should: a stored number typed into markdown, outside the paper's values."""
    nb = tmp_path / "demo.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": ["error 1.903 bpb, paper 82.7 ppl, v1.0"]},
                                        {"cell_type": "code", "source": ["x = 1.903"]}]}))
    record = {"tables": {"t": {"__frame__": [{"ours": "1.903 bpb", "paper": "82.7"}]}}, "metrics": {"m": 12.5}}
    assert typed_numbers(nb, record) == [(0, "1.903")]
    record["metrics"]["v"] = 82.71
    assert typed_numbers(nb, record) == [(0, "1.903"), (0, "82.7")]
