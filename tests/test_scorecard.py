import pandas as pd

from dropnotes import results, scorecard


def _store(profile, ours, verdict, device="cpu", params=None, defaults=None, protocol=None):
    table = pd.DataFrame([{"claim": "c1", "source": "Srivastava et al. 2014, Table 2", "paper": "1.0",
                           "ours": ours, "verdict": verdict}])
    if profile == "quick":
        table = pd.concat([table, pd.DataFrame([{"claim": "c2", "source": "elsewhere", "paper": "2.0",
                                                 "ours": "q2", "verdict": "partly"}])])
    prov = results.provenance(device, [0], 1.0, "mnist", **({} if protocol is None else {"protocol": protocol}))
    results.save_result("demo", profile, params=params or {}, metrics={}, provenance=prov, tables={"verdicts": table},
                        defaults=defaults)


def test_full_verdict_wins_and_quick_is_labelled(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPNOTES_RESULTS", str(tmp_path))
    monkeypatch.setattr(results, "REPO_RESULTS", tmp_path)
    monkeypatch.setattr(scorecard, "CHAPTERS", {"demo": "chapters/demo.ipynb", "absent": "chapters/x.ipynb"})
    _store("quick", "q1", "not reproduced")
    _store("full", "f1", "reproduced")
    table = scorecard.collect().set_index("claim")
    assert table.loc["c1", "verdict"] == "reproduced" and table.loc["c1", "category"] == "reproduced"
    assert table.loc["c1", "ours (quick)"] == "q1" and table.loc["c1", "ours (full)"].startswith("f1 [cpu")
    assert table.loc["c2", "verdict"] == "partly (quick)" and table.loc["c2", "ours (full)"] == "not run yet"
    md = scorecard.to_markdown(table.reset_index())
    assert "{cite}`srivastava2014dropout`" in md and "elsewhere |" in md and "*demo*" in md
    assert md.splitlines()[2].startswith("| claim | verdict |"), "the verdict is the second column"
    assert scorecard.counts(table.reset_index()).to_dict() == {"reproduced": 1, "partly": 1}


def test_a_shortened_full_run_is_labelled(tmp_path, monkeypatch):
    """A full run whose schedule was cut from the profile's defaults says so, with what was cut."""
    monkeypatch.setenv("DROPNOTES_RESULTS", str(tmp_path))
    monkeypatch.setattr(results, "REPO_RESULTS", tmp_path)
    monkeypatch.setattr(scorecard, "CHAPTERS", {"demo": "chapters/demo.ipynb"})
    full = {"epochs": 8, "sizes": (1, 2)}  # the profile's defaults, stored with the run
    _store("full", "f1", "reproduced", params={"epochs": 2, "sizes": [1, 2]}, defaults=full)
    row = scorecard.collect().set_index("claim").loc["c1"]
    assert row["verdict"] == "reproduced (shortened full run)"
    assert row["ours (full)"].endswith("; shortened: epochs 2 of 8]")
    assert scorecard.counts(scorecard.collect()).to_dict() == {"reproduced": 1}
    _store("full", "f1", "reproduced", params={"epochs": 20, "sizes": [1, 2]}, defaults=full)  # longer: not "shortened"
    assert scorecard.collect().set_index("claim").loc["c1", "verdict"] == "reproduced (changed full run)"
    _store("full", "f1", "reproduced", params={"epochs": 8, "sizes": [1, 2]}, defaults=full)
    assert scorecard.collect().set_index("claim").loc["c1", "verdict"] == "reproduced"


def test_a_short_run_never_counts_as_a_refutation(tmp_path, monkeypatch):
    """A quick run's "not reproduced", and a shortened full run's "not reproduced" or "inconclusive", read
    "not at paper scale" with the run's own verdict; a full run at the profile's schedule can refute."""
    monkeypatch.setenv("DROPNOTES_RESULTS", str(tmp_path))
    monkeypatch.setattr(results, "REPO_RESULTS", tmp_path)
    monkeypatch.setattr(scorecard, "CHAPTERS", {"demo": "chapters/demo.ipynb"})
    _store("quick", "q1", "not reproduced (the opposite)")
    row = scorecard.collect().set_index("claim").loc["c1"]
    assert row["category"] == "not at paper scale" and "quick run: not reproduced (the opposite)" in row["verdict"]
    full = {"epochs": 39}
    for verdict in ("not reproduced (the opposite)", "inconclusive (within 2 SE)"):
        _store("full", "f1", verdict, params={"epochs": 2}, defaults=full)
        row = scorecard.collect().set_index("claim").loc["c1"]
        assert row["category"] == "not at paper scale", verdict
        assert row["verdict"].startswith("not at paper scale (full run cut: epochs 2 of 39") and verdict in row["verdict"]
    _store("full", "f1", "not reproduced (the opposite)", params={"epochs": 39}, defaults=full)
    assert scorecard.collect().set_index("claim").loc["c1", "category"] == "not reproduced"
    assert scorecard.counts(scorecard.collect()).to_dict() == {"partly": 1, "not reproduced": 1}


def test_a_full_run_of_an_older_protocol_does_not_decide(tmp_path, monkeypatch):
    """A stored full run whose protocol version is older than the chapter's is shown, marked, and the quick
    verdict decides; one of the current protocol decides."""
    from dropnotes.experiments import _base

    monkeypatch.setenv("DROPNOTES_RESULTS", str(tmp_path))
    monkeypatch.setattr(results, "REPO_RESULTS", tmp_path)
    monkeypatch.setattr(scorecard, "CHAPTERS", {"demo": "chapters/demo.ipynb"})
    monkeypatch.setattr(scorecard, "protocol", lambda chapter: 2)
    _store("quick", "q1", "inconclusive (within 2 SE)")
    _store("full", "f1", "reproduced", protocol=1)
    row = scorecard.collect().set_index("claim").loc["c1"]
    assert row["verdict"] == "inconclusive (within 2 SE) (quick)" and "protocol changed since this run" in row["ours (full)"]
    _store("full", "f1", "reproduced", protocol=2)
    assert scorecard.collect().set_index("claim").loc["c1", "verdict"] == "reproduced"
    table = pd.DataFrame([{"claim": "renamed", "source": "s", "paper": "1", "ours": "f", "verdict": "reproduced"}])
    results.save_result("demo", "full", params={}, metrics={}, tables={"verdicts": table},
                        provenance=results.provenance("cpu", [0], 1.0, "mnist", protocol=1))
    assert list(scorecard.collect().claim) == ["c1", "c2"], "a claim only the stale run holds is not shown"
    assert _base.protocol("variational") >= 2 and _base.protocol("nosuch") == 1


def test_a_smoke_run_is_labelled_and_never_reaches_the_scorecard(tmp_path, monkeypatch):
    from dropnotes.experiments import _base, mechanics

    monkeypatch.setenv("DROPNOTES_RESULTS", str(tmp_path))
    monkeypatch.setattr(results, "REPO_RESULTS", tmp_path)
    monkeypatch.setattr(scorecard, "CHAPTERS", {"mechanics": "chapters/01_mechanics.ipynb"})
    cfg = mechanics.configure(profile="smoke", device="cpu")
    assert cfg.profile == "smoke" and cfg.train_size < mechanics.PROFILE_DEFAULTS["quick"]["train_size"]
    table = pd.DataFrame([{"claim": "c1", "source": "s", "paper": "1", "ours": "2", "verdict": "reproduced"}])
    path = _base.finish("mechanics", cfg, mechanics.PROFILE_DEFAULTS, wall_s=1.0, dataset="mnist", metrics={},
                        tables={"verdicts": table})
    assert path.name == "smoke.json"
    assert table.verdict[0] == "smoke run, not evidence (reproduced)"  # what the notebook shows, too
    assert results.load_result("mechanics", "smoke")["tables"]["verdicts"].verdict[0].startswith("smoke run")
    assert results.load_result("mechanics", "smoke")["provenance"]["protocol"] == mechanics.PROTOCOL
    assert scorecard.collect().empty
