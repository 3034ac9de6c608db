"""Chapter 5's pretraining group at tiny sizes (seconds): seeds x rates x arms trained together, each arm's
rate chosen on the validation half, the kept models cached and read back."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from dropnotes import data, results
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


def _runs(cfg, shift_of, seeds, n=40, rng=None, step=3):
    rng = rng or np.random.default_rng(0)

    def run(shift, seed):
        w = (2.0 + shift + 0.01 * rng.standard_normal(n)).tolist()
        return {"seed": seed, "lr": cfg.pretrain_lr, "final_windows": w,
                "best": {"windows": w, "step": step, "valid_loss": float(np.mean(w))},
                "row": {"overfit_bpb": 0.1, "epochs": 5.0}}

    pre = {arm: [run(shift_of(arm), s) for s in seeds] for arm in llm.ARMS}
    ft, curves = {}, []
    for size in set(cfg.sizes) | {cfg.finetune_bytes}:
        for q in cfg.finetune_rates:
            ft["full", q, size] = [run(-0.02 * q, s) for s in seeds]
    for q in cfg.lora_rates:
        ft["LoRA", q, cfg.finetune_bytes] = [run(-0.02 * q, s) for s in seeds]
    for (method, q, size), runs in ft.items():  # flat validation curves: every arm plateaued
        curves += [{"method": method, "p": q, "size": size, "seed": r["seed"], "step": k * cfg.eval_every,
                    "valid_bpb": 3.0 + 1e-4 * rng.standard_normal()} for r in runs for k in range(1, 9)]
    return {"pre": pre, "ft": ft, "pretrain_tokens": 1, "corpus_tokens": 2, "curves": pd.DataFrame(curves)}


def test_does_not_beat_reads_the_one_sided_bound_not_the_point():
    """Early dropout's gain over none is judged by the one-sided bound of its paired comparison against the margin:
    a point below the margin whose bound lies above it decides nothing, and says what would."""
    cfg = llm.configure("smoke", device="cpu", n_seeds=3)
    m = llm.EARLY_MARGIN_BPB
    claim = llm.CLAIMS["early"]["claim"]
    spread = iter([-m, 0.0, m])  # early's seeds, in order

    def noisy(arm):  # early gains m / 2 (in nats on the windows: bpb x ln 2), its seeds spread by the margin
        return (-m / 2 + next(spread)) * llm.LN2 if arm == "early" else 0.0

    row = llm.verdicts(_runs(cfg, noisy, cfg.seeds), cfg).set_index("claim").loc[claim]
    assert 0 < -row.effect < m and row.verdict.startswith("inconclusive") and row.decide
    clear = llm.verdicts(_runs(cfg, lambda a: 0.05 * llm.LN2 if a == "early" else 0.0, cfg.seeds), cfg)
    assert clear.set_index("claim").loc[claim].verdict.startswith("reproduced (its gain's upper bound")
    beats = llm.verdicts(_runs(cfg, lambda a: -0.05 * llm.LN2 if a == "early" else 0.0, cfg.seeds), cfg)
    assert beats.set_index("claim").loc[claim].verdict.startswith("not reproduced (its gain's lower bound")


def test_window_losses_round_trip_through_the_record_table():
    cfg = llm.configure("smoke", device="cpu", n_seeds=2)
    rec = _runs(cfg, lambda a: 0.0, cfg.seeds)
    t = llm.window_table(rec["pre"], rec["ft"])
    assert len(t) == sum(len(v) for v in rec["pre"].values()) + sum(len(v) for v in rec["ft"].values())
    w = results.unpack_values(t.losses.iloc[0])
    assert np.allclose(w, rec["pre"]["none"][0]["final_windows"], atol=1e-6)
    with pytest.raises(ValueError):
        results.unpack_values("not packed")


def test_verdict_rows_carry_their_numbers_and_cite_what_each_source_claimed():
    cfg = llm.configure("smoke", device="cpu", n_seeds=3)
    shifts = {"none": 0.0, "dropout": 0.05, "early": 0.004}
    table = llm.verdicts(_runs(cfg, shifts.get, cfg.seeds), cfg).set_index("claim")
    early = table.loc["early dropout does not beat no dropout in single-epoch pretraining"]
    assert early.margin == llm.EARLY_MARGIN_BPB and early.unit == "bpb"
    # signed the paper's way: > 0 when early dropout is worse than none, as it is here
    assert early.low < early.effect < early.high and early.effect > 0
    first = table.loc["single-epoch pretraining: dropout only slows learning"]
    assert first.effect > 0 and first.low < first.effect < first.high
    assert table.unit.eq("bpb").all() and table.effect.notna().all()
    fine = table.loc["fine-tuning many epochs on small data: dropout lowers the best validation loss"]
    assert fine.kind == "rule of thumb" and "Xue" not in fine.source and fine.margin == llm.FT_DELTA_BPB
    assert not table.source.str.contains("Xue").any() or \
        (table[table.source.str.contains("Xue")].kind != "paper claim").all(), "Xue et al. make no fine-tuning claim"
