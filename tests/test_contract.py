"""The chapter contract and the registry: a toy chapter, registered for one test and declared nowhere else, is
found by ``dropnotes list``, the scorecard and ``dropnotes estimate``; a module that breaks the contract is named."""

from __future__ import annotations

import json
import types
from dataclasses import dataclass

import pandas as pd
import pytest

from dropnotes import cli, results, scorecard, verdict
from dropnotes.costmodel import Group
from dropnotes.experiments import REGISTRY, Chapter, _base
from dropnotes.experiments import knobs
from dropnotes.experiments.contract import COSTS_REQUIRED, REQUIRED


@dataclass(frozen=True)
class ToyConfig(_base.ChapterConfig):
    steps: int = 10


def _toy_module() -> types.ModuleType:
    """A chapter module with every required name of the contract and nothing else."""
    toy = types.ModuleType("toy")
    toy.KNOBS = knobs.Knobs(knobs.PROFILE, knobs.SEED, knobs.DEVICE)
    toy.PROFILE_DEFAULTS = {"full": {"steps": 1000}, "quick": {"steps": 10}}
    toy.ToyConfig = ToyConfig

    def configure(profile: str = "auto", device: str = "auto", seed: int = 0) -> ToyConfig:
        v = toy.KNOBS.check({"profile": profile, "device": device, "seed": seed})
        name = "full" if v["profile"] in ("full", "auto") else v["profile"]
        return ToyConfig(profile=name, device="cpu", seed=v["seed"], **toy.PROFILE_DEFAULTS.get(name, {"steps": 1}))

    toy.configure = configure
    toy.run = lambda cfg: {}
    toy.verdicts = lambda *a: pd.DataFrame()
    toy.rejudge = lambda record: record["tables"]["verdicts"]
    toy.PROTOCOL, toy.PROTOCOL_CHANGES = 1, {}
    toy.PAPER_SETTINGS = {"Toy et al.": {"steps": 1000}}
    toy.measured_setting = lambda cfg: {"steps": cfg.steps}
    toy.scale_points = lambda tables: pd.DataFrame({"quantity": [], "value": [], "sd": []})
    toy.SCALE_AXIS = ("error (%)", "linear")
    toy.groups = lambda cfg: [Group("toy", "one toy model", 1, cfg.steps, 2e12, 40)]
    return toy


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPNOTES_RESULTS", str(tmp_path))
    monkeypatch.setattr(results, "REPO_RESULTS", tmp_path)
    chapter = Chapter("toy", "A toy chapter", "chapters/toy.ipynb", _toy_module())
    with REGISTRY.temporarily(chapter):
        yield chapter
    assert "toy" not in REGISTRY  # the registry is the book's again


def test_a_registered_toy_chapter_is_listed_scored_and_estimated(toy, capsys):
    assert cli.main(["list"]) == 0
    assert "toy  (chapters/toy.ipynb): A toy chapter" in capsys.readouterr().out

    table = verdict.judge(pd.DataFrame([{"claim": "toys train", "source": "Toy et al.", "paper": "yes", "ours": "yes",
                                         "verdict": "reproduced (direction)", "kind": "paper claim",
                                         "test": "direction"}]), [], 3)  # at the paper's setting
    prov = results.provenance("cpu", [0, 1, 2], 1.0, "none", protocol=1, rules=verdict.RULES)
    results.save_result("toy", "laptop", params={"steps": 1000}, metrics={}, provenance=prov,
                        tables={"verdicts": table})
    rows = scorecard.collect()
    mine = rows[rows.chapter == "toy"]
    assert list(mine.claim) == ["toys train"] and mine.laptop_outcome.iloc[0] == "reproduced"
    assert "**A toy chapter** (*toy*" in scorecard.to_markdown(rows)

    assert cli.main(["estimate", "toy", "--profile", "full", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["chapter"] == "toy" and row["group"] == "one toy model" and row["steps"] == 1000
    assert row["predicted_s"] > 0


def test_a_module_that_breaks_the_contract_is_named():
    toy = _toy_module()
    del toy.scale_points, toy.SCALE_AXIS
    with pytest.raises(TypeError, match="toy lacks scale_points, SCALE_AXIS"):
        Chapter("toy", "A toy chapter", "chapters/toy.ipynb", toy)
    costs = types.ModuleType("toy_costs")  # a cost module without groups
    with pytest.raises(TypeError, match="toy_costs lacks groups"):
        Chapter("toy", "A toy chapter", "chapters/toy.ipynb", _toy_module(), costs)
    with pytest.raises(TypeError, match="notebook without a module"):
        Chapter("toy", "A toy chapter", "chapters/toy.ipynb").groups(None)
    assert set(REQUIRED) | set(COSTS_REQUIRED) <= set(vars(_toy_module()))


def test_every_chapter_of_the_book_keeps_the_contract_and_is_reached_only_through_the_registry():
    """Each registered chapter's module has every required name, and no module of the package imports a chapter by
    name (importlib) or reads the registry's old dictionaries."""
    from pathlib import Path

    assert [c.name for c in REGISTRY.with_modules()] == list(REGISTRY)
    for ch in REGISTRY.values():
        assert all(hasattr(ch.module, n) for n in REQUIRED), ch.name
        assert all(hasattr(ch.costs, n) for n in COSTS_REQUIRED), ch.name
        assert ch.module.__name__ == f"dropnotes.experiments.{ch.name}"
        assert ch.costs.__name__ == f"dropnotes.experiments.costs.{ch.name}"
    package = Path(cli.__file__).parent
    for path in package.rglob("*.py"):
        text = path.read_text()
        assert "import_module(" not in text, path
        assert "CHAPTERS" not in text.replace("COMPARE_CHAPTERS", ""), path


def test_every_knob_is_declared_once_as_a_field_of_its_chapters_config():
    """A knob is one line, a field of the chapter's config (``knob``, ``rate_knob``, ``size_knob``): ``KNOBS`` is read
    from the config type, ``configure``'s signature from ``KNOBS``, and every notebook passes its parameters through
    in one call (``KNOBS.take``), naming none of them by hand."""
    import inspect

    for ch in REGISTRY.with_modules():
        config = type(ch.configure("smoke", device="cpu"))
        assert list(ch.knobs) == list(knobs.Knobs.of(config)), ch.name
        assert list(inspect.signature(ch.configure).parameters) == list(ch.knobs), ch.name
        assert "ch.configure(**ch.KNOBS.take(globals()))" in cli.chapter_path(ch.name).read_text(), ch.name


def test_a_generated_configure_refuses_an_unknown_parameter_by_name():
    from dropnotes.experiments import mechanics

    with pytest.raises(ValueError, match="unknown parameter 'dropout'; allowed: profile, device, seed, p_example, p_hidden"):
        mechanics.configure("smoke", device="cpu", dropout=0.5)
