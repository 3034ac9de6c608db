import json

import pandas as pd
import pytest
import torch

from dropnotes import results


def test_save_and_load_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPNOTES_RESULTS", str(tmp_path))
    prov = results.provenance("cpu", seeds=[0, 1], wall_time_s=12.3, dataset="mnist")
    for key in ("commit", "dropnotes", "torch", "device", "seeds", "wall_time_s", "dataset", "created"):
        assert key in prov
    table = pd.DataFrame({"p": [0.0, 0.5], "err": [1.5, float("nan")]})
    path = results.save_result("demo", "quick", params={"p": 0.5}, metrics={"err": torch.tensor(1.25)},
                               provenance=prov, tables={"t": table})
    assert path == tmp_path / "demo" / "quick.json"
    json.loads(path.read_text())  # strict JSON: NaN was written as null
    back = results.load_result("demo", "quick")
    assert back["metrics"]["err"] == 1.25 and back["params"] == {"p": 0.5}
    assert isinstance(back["tables"]["t"], pd.DataFrame) and back["tables"]["t"].p.tolist() == [0.0, 0.5]
    assert "quick profile on cpu" in results.describe(back)
    assert results.load_result("demo", "full") is None or results.load_result("demo", "full")["chapter"] == "demo"


def test_failed_write_keeps_previous_result(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPNOTES_RESULTS", str(tmp_path))
    prov = results.provenance("cpu", [0], 1.0, "mnist")
    results.save_result("demo", "quick", params={}, metrics={"v": 1}, provenance=prov)
    with pytest.raises(TypeError):
        results.save_result("demo", "quick", params={}, metrics={"v": object()}, provenance=prov)
    assert results.load_result("demo", "quick")["metrics"] == {"v": 1}
    assert [p.name for p in (tmp_path / "demo").iterdir()] == ["quick.json"]  # no temporary file left


def test_profile_is_checked(tmp_path):
    with pytest.raises(ValueError, match="profile='auto'"):
        results.save_result("demo", "auto", params={}, metrics={}, provenance={}, root=tmp_path)


def test_source_digest_names_the_code(tmp_path):
    """The digest in every provenance changes with any edit to the package's source, and only then."""
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    first = results.source_digest(tmp_path)
    assert first == results.source_digest(tmp_path) and len(first) == 16
    (tmp_path / "sub" / "b.py").write_text("y = 3\n")
    assert results.source_digest(tmp_path) != first
    assert results.provenance("cpu", [0], 1.0, "mnist")["source_sha256"] == results.source_digest()
