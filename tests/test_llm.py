"""Chapter 5's pretraining group at tiny sizes (seconds): seeds x rates x arms trained together, each arm's
rate chosen on the validation half, the kept models cached and read back."""

from __future__ import annotations

import dataclasses

import numpy as np

from dropnotes import data
from dropnotes.experiments import llm


def test_each_arm_keeps_the_rate_best_on_validation_and_the_cache_returns_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPNOTES_CHECKPOINTS", str(tmp_path))
    cfg = dataclasses.replace(llm.configure("smoke", device="cpu", n_seeds=2), lr_factors=(0.3, 1.0, 3.0),
                              pretrain_steps=6)
    corpus = data.load_python_stdlib(max_bytes=100_000)
    out = llm.pretrain(cfg, corpus)
    first, second = cfg.seeds
    assert len(out["all"]) == len(llm.ARMS) * 3 + len(llm.ARMS), "the first seed's arms x rates, then the other's arms"
    for arm in llm.ARMS:
        assert [r["seed"] for r in out[arm]] == cfg.seeds
        grid = [x for x in out["all"] if x["arm"] == arm and x["seed"] == first]
        assert sorted(x["lr"] for x in grid) == sorted(llm.pretrain_lrs(cfg))
        kept = out[arm][0]
        assert kept["final"]["valid_loss"] == min(x["final"]["valid_loss"] for x in grid), "chosen on validation"
        assert sum(x["chosen"] for x in grid) == 1 and kept["chosen"]
        assert out[arm][1]["lr"] == kept["lr"], "the other seeds train at the rate the first one chose"
    again = llm.pretrain(cfg, corpus)
    assert all(r["cached"] for arm in llm.ARMS for r in again[arm])
    for arm in llm.ARMS:
        for a, b in zip(out[arm], again[arm]):
            assert a["lr"] == b["lr"] and np.allclose(a["final_windows"], b["final_windows"])


def test_the_python_sources_corpus_is_fixed_by_file_order(monkeypatch):
    files, versions = data.python_source_files(("numpy",))
    names = [n for n, _ in files]
    assert names == sorted(names, key=lambda n: (not n.startswith("stdlib/"), n)), "stdlib first, then by path"
    assert names[0].startswith("stdlib/") and any(n.startswith("numpy/") for n in names)
    assert set(versions) == {"stdlib", "numpy"}
