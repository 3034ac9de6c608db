"""The API page names only what exists: every ``automodule`` imports and every name in its ``:members:``
list is an attribute of that module (the book build fails on a missing one, but only minutes in)."""
import importlib
import re
from pathlib import Path

import pytest

API = Path(__file__).resolve().parent.parent / "api.md"


def _entries() -> list[tuple[str, list[str]]]:
    text = API.read_text()
    found = []
    for match in re.finditer(r"^\.\. automodule:: (\S+)\n((?:[ \t]+:\w+:.*\n)*)", text, flags=re.M):
        members = re.search(r":members:[ \t]*(.*)", match.group(2))
        names = [n.strip() for n in members.group(1).split(",") if n.strip()] if members else []
        found.append((match.group(1), names))
    return found


def test_api_page_lists_modules():
    assert len(_entries()) >= 20


@pytest.mark.parametrize("module,names", _entries(), ids=[m for m, _ in _entries()])
def test_api_members_exist(module, names):
    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"api.md lists {missing} under {module}, which has no such attribute"
