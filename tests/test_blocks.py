"""A chapter run in seed blocks (``dropnotes compute CHAPTER --blocks``): each block stored as it ends, a rerun keeps
the blocks already stored (an interrupted run resumes), and the blocks merge into one record over all seeds."""

from __future__ import annotations

import dataclasses

import pytest

from dropnotes import results
from dropnotes.experiments import mechanics
from dropnotes.experiments.store import CODE_OPAQUE, run_in_blocks


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPNOTES_RESULTS", str(tmp_path))
    return tmp_path


def test_seed_blocks_resume_and_merge_into_one_record(store, have_data, monkeypatch):
    cfg = mechanics.configure("smoke", device="cpu", n_seeds=2)
    merged = run_in_blocks("mechanics", cfg, log=lambda m: None)
    for s in cfg.seeds:
        block = results.load_json_result(results.block_path("mechanics", "smoke", s))
        assert block["params"]["seed"] == s and block["params"]["n_seeds"] == 1
        assert block["tables"]["finals"].seed.unique().tolist() == [s]
    record = results.load_result("mechanics", "smoke")
    assert record["params"]["n_seeds"] == 2 and record["provenance"]["seeds"] == cfg.seeds
    assert sorted(record["tables"]["finals"].seed.unique()) == cfg.seeds
    assert [b["seeds"] for b in record["provenance"]["blocks"]] == [[s] for s in cfg.seeds]
    assert len(merged["summary"]) == len(cfg.p_hidden) and (merged["summary"].seeds == 2).all()

    ran = []
    real = mechanics.run
    monkeypatch.setattr(mechanics, "run", lambda c, save=True: ran.append(c.seed) or real(c, save))
    run_in_blocks("mechanics", cfg, log=lambda m: None)
    assert ran == [], "stored blocks are kept, not rerun"
    results.block_path("mechanics", "smoke", cfg.seeds[1]).unlink()  # as if interrupted during the second block
    run_in_blocks("mechanics", cfg, log=lambda m: None)
    assert ran == [cfg.seeds[1]]


def test_a_block_of_other_parameters_is_run_again(store, have_data, monkeypatch):
    cfg = mechanics.configure("smoke", device="cpu", n_seeds=1)
    run_in_blocks("mechanics", cfg, log=lambda m: None)
    ran = []
    real = mechanics.run
    monkeypatch.setattr(mechanics, "run", lambda c, save=True: ran.append(c.epochs) or real(c, save))
    run_in_blocks("mechanics", mechanics.configure("smoke", device="cpu", n_seeds=1, epochs=1), log=lambda m: None)
    assert ran == [1]


def test_a_chapter_without_merge_blocks_is_refused_by_name():
    from dropnotes.experiments import cost

    with pytest.raises(ValueError, match="cost: this chapter cannot be run in seed blocks"):
        run_in_blocks("cost", cost.configure("smoke", device="cpu"))


def test_chapter_six_blocks_merge_with_each_curve_on_its_own_row(store, have_data):
    from dropnotes.experiments import interactions

    cfg = interactions.configure("smoke", device="cpu", n_seeds=2)
    run_in_blocks("interactions", cfg, log=lambda m: None)
    t = results.load_result("interactions", "smoke")["tables"]
    for part in ("cnn", "mlp"):
        first = t["curves"][t["curves"].part == part].drop_duplicates("model").set_index("model")
        assert sorted(first.index) == list(range(len(t[part]))), "every model of the part has one curve"
        assert (t[part].loc[first.index, ["seed", "arm"]].to_numpy() == first[["seed", "arm"]].to_numpy()).all()
        wrong = t["wrong"][t["wrong"].part == part]
        assert wrong[["seed", "arm"]].to_numpy().tolist() == t[part][["seed", "arm"]].to_numpy().tolist()
    assert sorted(t["cnn"].seed.unique()) == cfg.seeds


def test_a_block_is_kept_across_changes_outside_its_chapter_code(tmp_path):
    """The digest that keeps a block names the chapter's module and what it imports, not the whole package: a
    change to another chapter or to the page leaves it, a change to the training code does not."""
    import shutil

    import dropnotes

    root = tmp_path / "dropnotes"
    shutil.copytree(results.Path(dropnotes.__file__).parent, root)
    opaque = CODE_OPAQUE  # as chapter_code takes it: the registry's imports of every chapter are not followed
    before = results.module_digest("dropnotes.experiments.interactions", root, opaque)
    assert "dropnotes.experiments.llm" not in results.module_sources("dropnotes.experiments.interactions", root, opaque)
    assert "dropnotes.experiments" in results.module_sources("dropnotes.experiments.interactions", root, opaque)
    (root / "page" / "tables.py").write_text((root / "page" / "tables.py").read_text() + "\n# edited\n")
    other = root / "experiments" / "llm" / "rules.py"  # another chapter
    other.write_text(other.read_text() + "\n# edited\n")
    assert results.module_digest("dropnotes.experiments.interactions", root, opaque) == before
    (root / "stacked" / "noise.py").write_text((root / "stacked" / "noise.py").read_text() + "\n# edited\n")
    assert results.module_digest("dropnotes.experiments.interactions", root, opaque) != before


def test_chapter_three_blocks_share_one_pilot_and_merge(store, have_data, monkeypatch):
    import dataclasses

    from dropnotes.experiments import variational

    # protocol 8's laptop schedule: every model (the pilot's too) on a cosine schedule, no plateau gate
    cfg = dataclasses.replace(variational.configure("smoke", device="cpu", n_seeds=2), lr_grid=(1e-2, 3e-3),
                              select_epochs=1, schedule="cosine")
    pilots = []
    real = variational.select_lr
    monkeypatch.setattr(variational.train, "select_lr", lambda *a: pilots.append(1) or real(*a))
    run_in_blocks("variational", cfg, log=lambda m: None)
    assert pilots == [1], "the learning-rate pilot runs once for all the blocks"
    record = results.load_result("variational", "smoke")
    t = record["tables"]
    assert sorted(t["runs"].seed.unique()) == cfg.seeds and len(t["windows"]) == len(t["runs"])
    assert record["metrics"]["lr"] in cfg.lr_grid and record["provenance"]["vocab"] > 0
    assert (t["summary"].seeds == 2).all()
    assert not t["verdicts"].verdict.str.contains("still improving|curves not stored|plateau test needs").any(), \
        "no gate under cosine"


def test_chapter_two_blocks_merge_into_one_record(store, have_data):
    from dropnotes.experiments import ensembles

    # protocol 5's schedule (the laptop and full profiles'): no plateau gate, the per-example NLL stored
    cfg = dataclasses.replace(ensembles.configure("smoke", device="cpu", n_seeds=2), schedule="cosine")
    merged = run_in_blocks("ensembles", cfg, log=lambda m: None)
    record = results.load_result("ensembles", "smoke")
    t = record["tables"]
    assert sorted(t["quality"].seed.unique()) == cfg.seeds and sorted(t["mc_wrong"].seed.unique()) == cfg.seeds
    assert sorted(t["nll"].seed.unique()) == cfg.seeds and set(t["nll"].model) == {"single net + temperature",
                                                                                   "dropout, MC"}
    temperature = t["verdicts"].set_index("claim").loc["MC dropout has a lower NLL than a temperature-scaled single net"]
    assert not temperature.verdict.startswith("not judged"), temperature.verdict  # paired from the stored NLL
    assert not t["verdicts"].verdict.str.contains("still improving|curves not stored").any(), "no gate under cosine"
    assert (t["ood_summary"].seeds == 2).all() and record["provenance"]["ood_dataset"] == cfg.ood_dataset
    assert len(merged["verdicts"]) == len(t["verdicts"])
    assert not t["verdicts"].verdict.str.contains("one seed").any(), "the merged record judges the seed tests"
