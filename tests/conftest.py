"""Shared test setup: offline data, and results written to a scratch folder (never into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

if not os.environ.get("DROPNOTES_DATA") and SHARED_DATA.is_dir():
    os.environ["DROPNOTES_DATA"] = str(SHARED_DATA)
os.environ.setdefault("DROPNOTES_RESULTS", str(ROOT / "_build" / "test-results"))
os.environ.setdefault("DROPNOTES_PROFILE", "quick")
if "DROPNOTES_CHECKPOINTS" not in os.environ:
    # A fresh checkpoint cache per session, so every test run pretrains (a stale cache would hide bugs).
    import shutil

    _ckpt = ROOT / "_build" / "test-checkpoints"
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
