"""The reader's page: formatted tables, the provenance and run boxes, the book extension's downloads, the
Colab cell and the collapsed injected-parameters cell (in seconds, without building the book)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from dropnotes import book, notebooks, page, results
from dropnotes.experiments import REGISTRY, judging, store

CHAPTERS = {c.name: c.notebook for c in REGISTRY.values()}

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, want", [
    ("test_loss_se", "test loss SE"), ("train_s", "train (s)"), ("tokens_per_s", "tokens/s"),
    ("best_bpb", "best (bits/byte)"), ("mc_entropy", "MC entropy"), ("error %", "error %"), ("p", "p"),
])
def test_column_names_read_as_words_with_units(name, want):
    assert page.human(name) == want


def test_numbers_are_rounded_to_three_significant_digits_of_their_column():
    assert page.decimals(pd.Series([0.01234, 0.02])) == 4
    assert page.decimals(pd.Series([12.345, 15.0])) == 1
    assert page.decimals(pd.Series([1234.5, 2000.0])) == 0
    table = page.show(pd.DataFrame({"rate": [0.0, 0.5], "test_error": [0.0123456, 0.0234567], "n": [50000, 9]}),
                      "A caption")
    cells = table.cells()
    assert list(cells.columns) == ["rate", "test error", "n"]
    assert list(cells["test error"]) == ["0.0123", "0.0235"] and list(cells["n"]) == ["50,000", "9"]
    text = repr(table)
    assert text.startswith("A caption\n") and "0.0123456" not in text
    html = table._repr_html_()
    assert html == table._repr_html_(), "the HTML is the same at every call (nbval compares it)"
    assert 'class="dn-table-wrap"' in html and '<p class="dn-caption">A caption</p>' in html
    assert "dn-num" in html and ">0<" not in html.split("<tbody>")[1][:200], "no index column"


def test_a_named_index_becomes_a_column():
    frame = pd.DataFrame({"error": [0.1, 0.2]}, index=pd.Index(["a", "b"], name="arm"))
    assert list(page.show(frame, "c").cells().columns) == ["arm", "error"]


def test_a_table_needs_a_frame_and_a_caption():
    with pytest.raises(TypeError, match="frame must be a pandas DataFrame"):
        page.show([1, 2], "c")
    with pytest.raises(ValueError, match="caption must say"):
        page.show(pd.DataFrame({"a": [1]}), "")


def _record(profile="quick", **prov):
    base = {"device": "cpu", "torch": "2.13.0", "cuda": None, "cudnn": None, "python": "3.11.7",
            "commit": "abcdef1234567890abcd", "source_sha256": "f" * 64, "seeds": [0, 1, 2], "wall_time_s": 61.5,
            "dataset": "mnist", "created": "2026-12-02T08:00:00+00:00", "protocol": 1,
            "data_files": {"mnist/train.gz": {"root": "/data", "sha256": "1" * 64}}}
    base.update(prov)
    return {"profile": profile, "provenance": base}


def test_the_provenance_box_names_every_field_and_what_an_old_run_lacks():
    old = _record("full", device="NVIDIA H100 80GB HBM3", cuda="13.0")
    for key in ("source_sha256", "data_files", "cudnn"):
        old["provenance"].pop(key)
    box = page.provenance_box(_record(), old)
    assert box.startswith(":::{admonition} Provenance") and ":class: dropdown" in box
    for label in ("device", "torch", "CUDA", "cuDNN", "commit", "source digest", "seeds", "wall time (s)",
                  "dataset", "data checksums"):
        assert f"| {label}" in box, label
    assert "NVIDIA H100" in box and "`abcdef1234567890`" in box and "0, 1, 2" in box
    assert "not recorded" in box, "an older run's missing fields are said to be missing"
    assert "No full-profile run of this chapter is stored" in page.provenance_box(_record(), None)


@pytest.mark.slow
def test_the_run_box_gives_times_commands_and_downloads():
    box = page.run_box("mechanics", CHAPTERS["mechanics"], _record(), _record("full", wall_time_s=600.0),
                       predicted_s=90.0)
    assert "*quick* profile on cpu in 62 s" in box and "predicted 1.5 min on one H100" in box
    assert "stored full run took 10.0 min" in box
    assert "dropnotes run mechanics --profile full" in box
    assert "papermill chapters/01_mechanics.ipynb out.ipynb -p profile full" in box
    assert 'href="../_sources/chapters/01_mechanics.ipynb"' in box and 'href="../results/mechanics/full.json"' in box
    assert "results/mechanics" not in page.run_box("mechanics", CHAPTERS["mechanics"], _record(), None, None)


def test_a_stored_run_of_an_older_protocol_is_said_to_be_so():
    box = page.run_box("llm", CHAPTERS["llm"], None, _record("full", protocol=0), None)
    assert "its protocol has changed since" in box


def test_the_book_extension_publishes_executed_notebooks_and_stored_results(tmp_path):
    out = tmp_path / "_build" / "html"
    (out / "_sources" / "chapters").mkdir(parents=True)
    (tmp_path / "_build" / "jupyter_execute" / "chapters").mkdir(parents=True)
    (out / "_sources" / "chapters" / "x.ipynb").write_text("source, no outputs")
    (tmp_path / "_build" / "jupyter_execute" / "chapters" / "x.ipynb").write_text("executed")
    done = book.publish(out)
    assert done["notebooks"] == ["chapters/x.ipynb"]
    assert (out / "_sources" / "chapters" / "x.ipynb").read_text() == "executed"
    for chapter in done["results"]:
        assert json.loads((out / "results" / chapter / "full.json").read_text())["chapter"] == chapter
    assert set(done["results"]) == {c for c in CHAPTERS if (ROOT / "results" / c / "full.json").is_file()}


def test_the_injected_parameters_cell_is_collapsed(tmp_path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell("x = 2")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells = [params, injected]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    notebooks.collapse_injected(path)
    cells = nbformat.read(path, as_version=4).cells
    assert cells[1].metadata.tags == ["injected-parameters", "hide-input"] and cells[0].metadata.tags == ["parameters"]


@pytest.mark.parametrize("relpath", sorted(CHAPTERS.values()))
def test_every_chapter_has_the_colab_cell_the_run_box_and_the_finale(relpath):
    nb = nbformat.read(ROOT / relpath, as_version=4)
    chapter = {v: k for k, v in CHAPTERS.items()}[relpath]
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    colab = [c for c in nb.cells if c.get("id") == "colab-install"]
    assert len(colab) == 1 and "remove-cell" in colab[0].metadata.tags
    assert f"git+{repo}" in colab[0].source and '"google.colab" in sys.modules' in colab[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code.index(colab[0]) == 1, "right after the parameters cell, before any import"
    assert f"{{glue:md}} {chapter}-run-box" in nb.cells[1].source, "the run box opens the chapter"
    # the finale shows the verdicts and the provenance; after it come only collapsed or hidden cells (a superseded
    # run's tables, the glue of a collapsed history note): the findings come first
    finale = [i for i, c in enumerate(code) if "page.finale(ch.CHAPTER" in c.source]
    assert finale, "the chapter ends with page.finale"
    after = code[finale[-1] + 1:]
    assert all({"remove-cell", "hide-output"} & set(c.metadata.get("tags", [])) for c in after), \
        "only hidden or collapsed cells follow the finale"
    assert any("page.plot_scales(ch.CHAPTER, run)" in c.source for c in code), "the figure of every scale on one axis"
    assert f"{{glue:figure}} {chapter}-scales" in "".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_evidence_summary_states_each_stored_run_from_its_record():
    """The generated sentences name the stored laptop run's setting, its verdict counts and its unconverged claims,
    from the record itself (chapter 6's committed laptop run)."""
    from dropnotes import page
    from dropnotes.experiments.judging import current_verdicts

    text = page.evidence_summary("interactions")
    record = page._repo_record("interactions", "laptop")
    table, _ = current_verdicts("interactions", record)
    assert "**The stored laptop run**" in text and f"{record['params']['mlp_train_size']:,}" in text
    counted = table["outcome"].value_counts()
    for outcome, n in counted.items():
        assert f"{n} {outcome}" in text
    assert page.evidence_summary("no-such-chapter-stored") == ""


def test_mean_sd_averages_over_seeds_per_group():
    from dropnotes.stats import mean_sd

    frame = pd.DataFrame({"p": [0.0, 0.0, 0.5, 0.5], "seed": [0, 1, 0, 1], "err": [0.02, 0.04, 0.01, 0.01]})
    pts = mean_sd(frame, "p", "err", 100, label=lambda p: f"p = {p:g}")
    assert pts.quantity.tolist() == ["p = 0", "p = 0.5"]
    assert pts.value.tolist() == pytest.approx([3.0, 1.0]) and pts.sd.tolist() == pytest.approx([2 ** 0.5, 0.0])


@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_the_scale_figure_plots_every_stored_run_the_chapter_can_read(chapter):
    """Each stored evidence run of the chapter becomes one series of points (from its own tables), labelled with
    its profile; the paper's points are on the same axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    current = [profile for profile, _, table, _ in page._stored_runs(chapter)
               if table is not None and not (table.get("outcome") == "superseded").all()]
    series = page.scale_series(chapter)
    plotted = [name.split()[1] for name, _ in series]
    assert set(current) <= set(plotted), "a stored run of the current protocol is missing from the figure"
    for _, points in series:
        assert list(points.columns) == ["quantity", "value", "sd"] and len(points) and points.value.notna().all()
    fig = page.plot_scales(chapter)
    labels = [label for ax in fig.axes for label in ax.get_legend_handles_labels()[1]]
    module = __import__(f"dropnotes.experiments.{chapter}", fromlist=["x"])
    assert len(labels) == len(series) + bool(getattr(module, "PAPER_POINTS", {}))
    if hasattr(module, "scale_panel"):  # one panel per incomparable scale; the papers' values on theirs only
        titles = [ax.get_title() for ax in fig.axes]
        assert len(set(titles)) == len(titles) == len({module.scale_panel(n) for n, _ in series} | {module.PAPER_PANEL})
    plt.close(fig)


def test_the_run_box_gives_the_laptop_time_recorded_predicted_there_and_predicted_here():
    laptop = _record("laptop", wall_time_s=2400.0, cpu="CPU A", predicted_wall_s=2100.0)
    here = {"predicted_s": 7200.0, "precision": "fp32"}
    box = page.run_box("mechanics", CHAPTERS["mechanics"], _record(), None, None, laptop, here)
    assert "took 40.0 min on CPU A, predicted 35 min there before it ran" in box
    assert "predicted 120 min of training and evaluation on the machine that built this page" in box and "fp32" in box
    assert "no stored run; predicted 120 min" in page.run_box("mechanics", CHAPTERS["mechanics"], None, None, None,
                                                              None, here)


def test_a_run_made_under_a_prediction_stores_it_beside_its_wall_time(tmp_path, monkeypatch):
    from dropnotes.experiments import mechanics

    monkeypatch.setenv("DROPNOTES_RESULTS", str(tmp_path))
    cfg = mechanics.configure("smoke", device="cpu")
    table = judging.judged("mechanics", cfg, pd.DataFrame([{"claim": "c", "source": "s", "paper": "p", "ours": "o",
                                                          "verdict": "inconclusive"}]))
    with store.predicted_wall(123.0):
        path = store.finish("mechanics", cfg, mechanics.PROFILE_DEFAULTS, wall_s=100.0, dataset="mnist", metrics={},
                            tables={"verdicts": table})
    assert results.load_json_result(path)["provenance"]["predicted_wall_s"] == 123.0
    path = store.finish("mechanics", cfg, mechanics.PROFILE_DEFAULTS, wall_s=100.0, dataset="mnist", metrics={},
                        tables={"verdicts": table})
    assert "predicted_wall_s" not in results.load_json_result(path)["provenance"]
