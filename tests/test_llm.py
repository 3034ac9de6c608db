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


def test_does_not_beat_reads_the_one_sided_bound_not_the_point():
    m = llm.EARLY_MARGIN_BPB
    # a point below the margin whose upper bound lies above it decides nothing
    assert llm.rule_not_better(m / 2, m, n_seeds=3).startswith("inconclusive")
    # with 3 seeds the bound is Student's t with 2 df (2.92), not the normal's 1.645: this gain is shown below the
    # margin by the normal but not by t
    gain, se = 0.0, m / 2.5
    assert gain + 1.645 * se < m < gain + 2.92 * se
    assert llm.rule_not_better(gain, se, n_seeds=1).startswith("reproduced")
    assert llm.rule_not_better(gain, se, n_seeds=3).startswith("inconclusive")
    assert llm.rule_not_better(-m, m / 10, n_seeds=3).startswith("reproduced")
    assert llm.rule_not_better(3 * m, m / 10, n_seeds=3).startswith("not reproduced")


def test_bounds_use_critical_with_the_seeds():
    from dropnotes.stats import critical

    low, high = llm.bounds(0.1, 0.01, 3, two_sided=False)
    assert np.isclose(high - 0.1, critical(3, two_sided=False) * 0.01) and np.isclose(0.1 - low, high - 0.1)
    low, high = llm.bounds(0.1, 0.01, 5)
    assert np.isclose(high - 0.1, critical(5) * 0.01)


def test_verdict_rows_carry_their_numbers_and_cite_what_each_source_claimed():
    rng = np.random.default_rng(0)
    cfg = llm.configure("smoke", device="cpu", n_seeds=3)
    seeds, n = cfg.seeds, 40

    def run(shift, step=3, seed=0):
        w = (2.0 + shift + 0.01 * rng.standard_normal(n)).tolist()
        return {"seed": seed, "lr": cfg.pretrain_lr, "final_windows": w,
                "best": {"windows": w, "step": step, "valid_loss": float(np.mean(w))},
                "row": {"overfit_bpb": 0.1, "epochs": 5.0}}

    pre = {"none": [run(0.0, seed=s) for s in seeds], "dropout": [run(0.05, seed=s) for s in seeds],
           "early": [run(0.004, seed=s) for s in seeds]}
    ft = {}
    for size in set(cfg.sizes) | {cfg.finetune_bytes}:
        for q in cfg.finetune_rates:
            ft["full", q, size] = [run(-0.02 * q, seed=s) for s in seeds]
    for q in cfg.lora_rates:
        ft["LoRA", q, cfg.finetune_bytes] = [run(-0.02 * q, seed=s) for s in seeds]
    rec = {"pre": pre, "ft": ft, "pretrain_tokens": 1, "corpus_tokens": 2}
    table = llm.verdicts(rec, cfg).set_index("claim")
    early = table.loc["early dropout does not beat no dropout in single-epoch pretraining"]
    assert early.margin == llm.EARLY_MARGIN_BPB and early.unit == "bpb"
    # signed the paper's way: > 0 when early dropout is worse than none, as it is here
    assert early.low < early.effect < early.high and early.effect > 0
    first = table.loc["single-epoch pretraining: dropout only slows learning"]
    assert first.effect > 0 and first.low < first.effect < first.high
    assert table.unit.eq("bpb").all() and table.effect.notna().all()
    fine = table.loc["fine-tuning many epochs on small data: dropout lowers the best validation loss"]
    assert fine.kind == "rule of thumb" and "Xue" not in fine.source
    assert not table.source.str.contains("Xue").any() or \
        (table[table.source.str.contains("Xue")].kind != "paper claim").all(), "Xue et al. make no fine-tuning claim"
