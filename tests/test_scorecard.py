import pandas as pd
import pytest

from dropnotes import results, scorecard, verdict
from dropnotes.experiments import REGISTRY, Chapter, Registry, judging, store


def _table(rule: str, kind: str = "paper claim", test: str = "direction", claim: str = "c1") -> pd.DataFrame:
    return pd.DataFrame([{"claim": claim, "source": "Srivastava et al. 2014, Table 2", "paper": "1.0", "ours": "x",
                          "verdict": rule, "kind": kind, "test": test}])


def _store(profile, table, cut, n_seeds=3, protocol=1, device="cpu", rules=verdict.RULES):
    judged = verdict.judge(table, cut, n_seeds)
    prov = results.provenance(device, list(range(n_seeds)), 1.0, "mnist", protocol=protocol, rules=rules)
    results.save_result("demo", profile, params={}, metrics={}, provenance=prov, tables={"verdicts": judged})


@pytest.fixture
def demo(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPNOTES_RESULTS", str(tmp_path))
    monkeypatch.setattr(results, "REPO_RESULTS", tmp_path)
    monkeypatch.setattr(judging, "protocol", lambda chapter: 1)
    with REGISTRY.temporarily(Chapter("demo", "demo", "chapters/demo.ipynb"), only=True):
        yield tmp_path


@pytest.mark.parametrize("test, reads", [("direction", ("direction at reduced scale", "opposite at reduced scale")),
                                         ("level", ("not at paper scale", "not at paper scale"))])
def test_a_reduced_scale_run_reads_both_signs_alike(test, reads):
    """The same synthetic record at both signs, below the paper's setting: neither sign is a reproduction or a
    refutation (the one-sided scorecard of c05505b kept a quick "reproduced" and turned only "not reproduced"
    into "not at paper scale")."""
    cut = ["epochs 80 of 3,000"]
    up = verdict.judge(_table("reproduced (direction)", test=test), cut, 3)
    down = verdict.judge(_table("not reproduced (the opposite)", test=test), cut, 3)
    assert (up.outcome.iloc[0], down.outcome.iloc[0]) == reads
    assert up.scale.iloc[0] == down.scale.iloc[0] == "epochs 80 of 3,000"
    assert up.rule_verdict.iloc[0] == "reproduced (direction)"  # the rule's own words are kept
    at_paper = verdict.judge(_table("not reproduced (the opposite)", test=test), [], 3)
    assert at_paper.outcome.iloc[0] == "not reproduced" and at_paper.scale.iloc[0] == "paper scale"
    few = verdict.judge(_table("reproduced", test=test), [], 2)  # too few seeds: test noise only
    assert few.outcome.iloc[0] == reads[0] and "2 seeds" in few.scale.iloc[0]
    assert verdict.judge(_table("inconclusive (x)"), cut, 3).outcome.iloc[0] == "inconclusive"
    with pytest.raises(ValueError, match="verdict must start with"):
        verdict.judge(_table("looks fine"), cut, 3)
    with pytest.raises(ValueError, match="kind must be one of"):
        verdict.judge(_table("reproduced", kind="hunch"), cut, 3)


def test_quick_reproduced_and_quick_not_reproduced_are_treated_alike(demo):
    """A quick "reproduced" and a quick "not reproduced" land in the quick column alike, as reduced-scale
    readings, and the quick column is labelled as no evidence; columns are never summed."""
    both = pd.concat([_table("reproduced (direction)", claim="up"), _table("not reproduced (the opposite)", claim="down")])
    _store("quick", both, ["train_size 2,000 of 50,000"])
    table = scorecard.collect().set_index("claim")
    assert table.loc["up", "quick_outcome"] == "direction at reduced scale"
    assert table.loc["down", "quick_outcome"] == "opposite at reduced scale"
    assert (table.full_outcome == "not run").all() and (table.laptop_outcome == "not run").all()
    counts = scorecard.counts(table.reset_index())
    quick = scorecard.COLUMN_TITLES["quick"]
    assert "not evidence" in quick and list(counts.columns) == [scorecard.COLUMN_TITLES[p] for p in scorecard.PROFILES]
    assert counts.loc["direction at reduced scale", quick] == counts.loc["opposite at reduced scale", quick] == 1
    assert "reproduced" not in counts.index


def test_one_column_per_profile_and_claims_counted_by_kind(demo):
    _store("quick", pd.concat([_table("reproduced", claim="c1"), _table("reproduced", kind="setup check", claim="c0"),
                               _table("reproduced", kind="rule of thumb", claim="c2")]), ["epochs 40 of 300"])
    _store("laptop", _table("reproduced (direction)"), ["epochs 80 of 300"])
    _store("full", _table("not reproduced (the opposite)"), [])
    table = scorecard.collect().set_index("claim")
    row = table.loc["c1"]
    assert (row.quick_outcome, row.laptop_outcome, row.full_outcome) == \
        ("direction at reduced scale", "direction at reduced scale", "not reproduced")
    counts = scorecard.counts(table.reset_index())
    assert counts.sum().tolist() == [1, 1, 1], "each paper claim once per column; setup checks and rules apart"
    others = scorecard.counts(table.reset_index(), ("rule of thumb",))
    assert others.loc["direction at reduced scale", scorecard.COLUMN_TITLES["quick"]] == 1
    md = scorecard.to_markdown(table.reset_index())
    assert "{cite}`srivastava2014dropout`" in md and "*demo*" in md
    lines = md.splitlines()
    head = lines.index(":class: dn-scorecard") + 2  # each chapter's table carries the class the stylesheet fits
    assert lines[head] == ("| claim | paper (source) | verdict, laptop | verdict, full | "
                           "verdict, quick (pipeline check) |")
    assert "c2 (*rule of thumb*)" in md and "c0 (*setup check*)" in md  # a kind is marked unless a paper claim


def test_a_stored_run_of_an_older_protocol_is_superseded_unless_judged_again(demo, monkeypatch):
    _store("quick", _table("inconclusive (x)"), ["epochs 1 of 2"], protocol=2)
    _store("full", _table("reproduced"), [], protocol=1)
    monkeypatch.setattr(judging, "protocol", lambda chapter: 2)
    table, note = judging.current_verdicts("demo", results.load_result("demo", "full"))
    assert table.verdict.iloc[0] == "superseded (protocol 1; it read: reproduced)" and "superseded" in note
    row = scorecard.collect().set_index("claim").loc["c1"]
    assert row.full_outcome == "superseded" and row.quick_outcome == "inconclusive"


def test_a_smoke_run_is_labelled_and_never_reaches_the_scorecard(tmp_path, monkeypatch):
    from dropnotes.experiments import mechanics

    monkeypatch.setenv("DROPNOTES_RESULTS", str(tmp_path))
    monkeypatch.setattr(results, "REPO_RESULTS", tmp_path)
    monkeypatch.setattr(scorecard, "REGISTRY", Registry([REGISTRY["mechanics"]]))
    cfg = mechanics.configure(profile="smoke", device="cpu")
    assert cfg.profile == "smoke" and cfg.train_size < mechanics.PROFILE_DEFAULTS["quick"]["train_size"]
    table = judging.judged("mechanics", cfg, pd.DataFrame([{"claim": "c1", "source": "s", "paper": "1", "ours": "2",
                                                          "verdict": "reproduced"}]))
    path = store.finish("mechanics", cfg, mechanics.PROFILE_DEFAULTS, wall_s=1.0, dataset="mnist", metrics={},
                        tables={"verdicts": table})
    assert path.name == "smoke.json"
    assert table.verdict[0].startswith("smoke run, not evidence (")  # what the notebook shows, too
    assert results.load_result("mechanics", "smoke")["provenance"]["protocol"] == mechanics.PROTOCOL
    assert scorecard.collect().empty
    with pytest.raises(ValueError, match="read at the run's scale"):
        store.finish("mechanics", cfg, mechanics.PROFILE_DEFAULTS, wall_s=1.0, dataset="mnist", metrics={},
                     tables={"verdicts": pd.DataFrame([{"claim": "c", "verdict": "reproduced"}])})


def _numbers(claim: str, effect: float, unit: str, **more) -> pd.DataFrame:
    t = _table("reproduced (direction)", claim=claim)
    return t.assign(effect=effect, low=effect - 0.5, high=effect + 0.5, unit=unit, **more)


def test_collect_carries_the_numbers_behind_a_verdict(demo):
    """Each profile's effect, interval, paper effect, margin, unit and what would decide it, where the verdict
    table has them; NaN (text: empty) where it has not, or where the record predates them."""
    _store("laptop", pd.concat([_numbers("c1", 1.0, "pp", paper_effect=0.35, margin=0.2, decide="5 seeds"),
                                _table("inconclusive (x)", claim="c2")]), ["epochs 80 of 300"])
    _store("full", _table("reproduced", claim="c1"), [])  # no number columns at all, as an older record
    table = scorecard.collect().set_index("claim")
    for p in scorecard.PROFILES:
        assert {f"{p}_{k}" for k in (*scorecard.NUMBERS, *scorecard.TEXTS)} <= set(table.columns)
    c1 = table.loc["c1"]
    assert (c1.laptop_effect, c1.laptop_low, c1.laptop_high) == (1.0, 0.5, 1.5)
    assert (c1.laptop_paper_effect, c1.laptop_margin, c1.laptop_unit, c1.laptop_decide) == (0.35, 0.2, "pp", "5 seeds")
    assert pd.isna(table.loc["c2", "laptop_effect"]) and table.loc["c2", "laptop_unit"] == ""
    assert pd.isna(c1.full_effect) and pd.isna(c1.quick_high) and c1.full_decide == ""
    assert "(to decide: 5 seeds)" in scorecard.to_markdown(table.reset_index())


def test_forest_plot_draws_one_line_per_claim_with_numbers_and_lists_the_others(demo):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _store("quick", _numbers("c3", 2.0, "pp"), ["epochs 4 of 300"])  # a pipeline check: never drawn
    _store("laptop", pd.concat([_numbers("c1", 1.0, "pp", margin=0.2), _numbers("c2", -0.3, "nats", paper_effect=0.1),
                                _table("not converged (best epoch 80 of 80)", claim="c3"),
                                _numbers("c4", 0.4, "pp", kind="setup check")]), ["epochs 80 of 300"])
    _store("full", _numbers("c1", 0.8, "pp"), [])
    table = scorecard.collect()
    fig = scorecard.plot_forest(table)
    try:
        lines = [ln for ax in fig.axes for ln in ax.lines if ln.get_gid() == "dn-interval"]
        assert len(lines) == 3, "c1 at laptop and full, c2 at laptop; not c3 (no numbers), not the setup check c4"
        ends = sorted(tuple(round(float(x), 6) for x in ln.get_xdata()) for ln in lines)
        assert ends == [(-0.8, 0.2), (0.3, 1.3), (0.5, 1.5)]
        assert len([ax for ax in fig.axes if ax.get_xlabel()]) == 2, "one panel per unit: pp and nats"
        assert any("pp" in ax.get_xlabel() for ax in fig.axes) and any("nats" in ax.get_xlabel() for ax in fig.axes)
        listed = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_gid() == "dn-no-interval"]
        assert len(listed) == 2 and "c3" in listed[0] and "laptop: no interval (not converged)" in listed[0]
        assert "full: no interval (not run)" in listed[0] and listed[1].startswith("demo: c2")  # c2 has no full run
        assert not any("c4" in t for t in listed)
        caption = scorecard.forest_caption(table)
        assert "3 lines, 2 claims" in caption and "2 claims without an interval" in caption
    finally:
        plt.close(fig)
    for outcome in verdict.OUTCOMES:
        assert outcome in scorecard.COLOURS, f"no colour for {outcome!r}"


def test_multiplicity_counts_tests_and_directional_verdicts():
    """Per evidence column: the claims a test decided, the verdicts that read a sign, and 5 % of the tested
    claims expected by chance if every claim were null; setup checks and undecided rows are no tests."""
    laptop = ["direction at reduced scale", "opposite at reduced scale", "inconclusive", "not converged", "partly",
              "direction at reduced scale", "not run", "not at paper scale"]
    kinds = ["paper claim", "our test", "paper claim", "paper claim", "rule of thumb", "setup check", "paper claim",
             "paper claim"]
    table = pd.DataFrame({"kind": kinds, "quick_outcome": "direction at reduced scale", "laptop_outcome": laptop,
                          "full_outcome": "not run"})
    m = scorecard.multiplicity(table)
    row = m.loc[scorecard.COLUMN_TITLES["laptop"]]
    assert (row["tested"], row["directional"], row["paper's sign"], row["opposite"]) == (4, 3, 2, 1)
    assert row["expected by chance"] == pytest.approx(0.2)
    assert row["P(at least as many)"] == pytest.approx(4 * 0.05**3 * 0.95 + 0.05**4)
    full = m.loc[scorecard.COLUMN_TITLES["full"]]
    assert full["tested"] == 0 and pd.isna(full["P(at least as many)"])
    assert list(m.index) == [scorecard.COLUMN_TITLES[p] for p in scorecard.EVIDENCE]  # quick is never counted
    assert scorecard.multiplicity(table, ("paper claim",)).loc[row.name, "tested"] == 2
    text = scorecard.multiplicity_text(table)
    assert "0.05 × 4 = 0.2" in text and "3 verdicts read a sign (2 the paper's, 1 the opposite)" in text
    assert "no family-wise correction" in text.lower() and "Benjamini–Hochberg" in text
    assert "no claim was tested" in text


def test_a_record_judged_by_older_rules_reads_not_judged_never_the_old_rule(demo):
    """The book's rules 2: a stored verdict table made under older rules, by a chapter that cannot judge its record
    again, is never shown as it is."""
    _store("laptop", _table("reproduced (direction)"), ["epochs 80 of 3,000"], rules=1)
    row = scorecard.collect().iloc[0]
    assert row.laptop_outcome == "not judged" and "the old rule read" in row.laptop_verdict
