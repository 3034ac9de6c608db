"""A chapter's stored evidence on its page: the "run it yourself" box, the stored laptop and full runs with their
verdicts as the current rules read them, the generated sentences on each, the closing verdict table, and every
scale's points on one axis."""

from __future__ import annotations

import pandas as pd

from dropnotes.experiments._base import record_config
from dropnotes.experiments.judging import current_verdicts, protocol
from dropnotes.results import describe
from dropnotes import estimate, results
from dropnotes.experiments import REGISTRY
from dropnotes.results import load_repo_result
from dropnotes.page.tables import human, provenance_box, show


def predicted_full_s(chapter: str) -> float | None:
    """``dropnotes estimate``'s prediction of the chapter's full profile on one H100, in seconds, as committed in
    ``results/estimate-full.json`` (``tests/test_estimate.py`` checks that it matches a fresh estimate)."""

    return results.stored_prediction(chapter)


def _protocol_note(chapter: str, record: dict) -> str:
    """What the run box says of a stored run of an older protocol: the same as its verdict table's caption."""

    if int(record["provenance"].get("protocol", 1)) >= protocol(chapter):
        return ""

    table, _ = current_verdicts(chapter, record)
    if table is not None and not (table.get("outcome") == "superseded").all():
        return " (its protocol has changed since; its verdicts are recomputed from its numbers with the current rules)"
    return " (its protocol has changed since: its verdicts are superseded)"


def run_box(chapter: str, notebook: str, this_run: dict | None, stored: dict | None,
            predicted_s: float | None, laptop: dict | None = None, laptop_here: dict | None = None) -> str:
    """The "run it yourself" box's MyST text: this page's run (profile, device, wall time), the laptop profile's
    stored run and its time predicted on the machine that built the page (``laptop_here``:
    :func:`dropnotes.estimate.predict_here`), the full profile's predicted GPU time and the stored full run's, the
    commands, and the downloads."""
    lines = []
    if this_run is not None:
        p = this_run["provenance"]
        lines.append(f"- **This page** ran the *{this_run['profile']}* profile on {p['device']} in "
                     f"{p['wall_time_s']:,.0f} s.")
    here = (f"predicted {laptop_here['predicted_s'] / 60:.0f} min of training and evaluation on the machine that "
            f"built this page ({results.cpu_model()}, {laptop_here['precision']}; `dropnotes estimate {chapter} "
            f"--profile laptop`)") if laptop_here else ""
    if laptop is not None:
        p = laptop["provenance"]
        then = (f", predicted {p['predicted_wall_s'] / 60:.0f} min there before it ran"
                if p.get("predicted_wall_s") else "")
        lines.append(f"- **Laptop profile** (2-core CPU, the evidence without a GPU): the stored run took "
                     f"{p['wall_time_s'] / 60:.1f} min on {p.get('cpu') or p['device']}{then}"
                     f"{_protocol_note(chapter, laptop)}{'; ' + here if here else ''} "
                     f"(`dropnotes run {chapter} --profile laptop`).")
    elif here:
        lines.append(f"- **Laptop profile** (2-core CPU, the evidence without a GPU): no stored run; {here}.")
    full = [f"predicted {predicted_s / 60:.1f} min on one H100 (`dropnotes estimate`)"] if predicted_s else []
    if stored is not None:
        p = stored["provenance"]
        full.append(f"the stored full run took {p['wall_time_s'] / 60:.1f} min on {p['device']}"
                    + _protocol_note(chapter, stored))
    if full:
        lines.append("- **Full profile** (one GPU, the papers' scale): " + "; ".join(full) + ".")
    page = notebook.removesuffix(".ipynb").split("/")[-1]
    lines += ["- **Run it yourself** (the README installs the package):", "",
              "  ```bash", f"  dropnotes run {chapter} --profile full",
              f"  papermill {notebook} out.ipynb -p profile full", "  ```", ""]
    downloads = [f'<a href="../_sources/{notebook}" download="{page}.executed.ipynb">this notebook, executed</a>']
    if laptop is not None:
        downloads.append(f'<a href="../results/{chapter}/laptop.json" download="{chapter}-laptop.json">'
                         "the stored laptop result (JSON)</a>")
    if stored is not None:
        downloads.append(f'<a href="../results/{chapter}/full.json" download="{chapter}-full.json">'
                         "the stored full result (JSON)</a>")
    lines.append("- **Download:** " + " · ".join(downloads))
    return "\n".join(lines)


STORED = ("laptop", "full")  # the stored evidence profiles a page shows beside its own run
STORED_TITLES = {"laptop": "the stored laptop run (2-core CPU)", "full": "the stored full run (one GPU)"}


def _stored_runs(chapter: str):
    """Each stored evidence run of ``chapter`` (laptop, then full) with its verdicts as the current rules read
    them: yields (profile, record, verdict table or None, note)."""

    for profile in STORED:
        record = _repo_record(chapter, profile)
        if record is not None:
            yield (profile, record, *current_verdicts(chapter, record))


def stored_caption(profile: str, record: dict, note: str) -> str:
    """The caption of a stored run's verdict table: which run, made when and where, and whether its verdicts
    are current, recomputed with the current rules, or superseded."""
    p = record["provenance"]
    head = f"Verdicts of {STORED_TITLES[profile]}, protocol {p.get('protocol', 1)}, {p['device']}, {p['created'][:10]}"
    return head + (f" ({note})" if note else " (the chapter's current protocol)")


def stored_tables(chapter: str, table: str, caption: str, header: bool = True) -> list:
    """For each stored evidence run of ``chapter`` (laptop, then full): a line naming it (profile, device, date,
    what it changed) and its scale against the paper, and its table ``table`` as :func:`show` formats it.
    ``caption`` gets the run's name appended; ``header=False``: the tables only. An empty list when none is stored."""
    from IPython.display import Markdown


    out = []
    for profile, record, verdicts, note in _stored_runs(chapter):
        scales = [] if verdicts is None or "scale" not in verdicts else list(dict.fromkeys(verdicts["scale"]))
        line = f"**The stored {profile} run:** {describe(record)}."
        if scales:
            line += " Scale against the papers: " + " / ".join(scales) + "."
        if note:
            line += f" ({note}.)"
        if header:
            out.append(Markdown(line))
        if table in record["tables"]:
            out.append(show(record["tables"][table], f"{caption} (the stored {profile} run)"))
    return out


def evidence_summary(chapter: str) -> str:
    """Generated sentences on each stored evidence run of ``chapter`` (laptop, full): the setting it measured
    (the chapter's ``measured_setting``), where and how long, its achieved GFLOP/s against the 2048³ rate where it
    recorded them, its verdicts counted by outcome as the current rules read them, the claims it could not
    judge for want of convergence, and its shortfall against the papers. Empty when nothing is stored."""
    out = []
    for profile, record, table, note in _stored_runs(chapter):
        ch, cfg = REGISTRY[chapter], record_config(chapter, record)
        p = record["provenance"]
        setting = "; ".join(f"{human(k)} {v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{human(k)} {v}"
                            for k, v in ch.measured_setting(cfg).items())
        line = (f"**The stored {profile} run** ({p.get('cpu') or p['device']}, {p['created'][:10]}, protocol "
                f"{p.get('protocol', 1)}) measured {setting}"
                + (f", with {cfg.n_seeds} seeds," if getattr(cfg, "n_seeds", None) else "")
                + f" in {p['wall_time_s'] / 60:.0f} minutes.")
        metrics = record.get("metrics") or {}
        for key, value in metrics.items():
            if key.endswith("train_gflops_per_s"):
                ref = metrics.get(key.replace("train_gflops_per_s", "matmul_2048_gflops_per_s"),
                                  metrics.get("matmul_2048_gflops_per_s"))
                what = key[: -len("train_gflops_per_s")].rstrip("_")
                line += (f" Its {what.upper() + ' ' if what else ''}training ran at {value:,.0f} GFLOP/s"
                         + (f", against {ref:,.0f} GFLOP/s for a 2048³ product in "
                            f"{metrics.get('precision', 'its precision')} in the same run" if ref else "") + ".")
        for key, value in metrics.items():  # a chapter stores a learning rate in its metrics only when a pilot chose it
            if (key == "lr" or key.endswith("_lr")) and isinstance(value, (int, float)):
                line += f" Its {human(key)} ({value:g}) was chosen on validation by a pilot run."
        if table is not None and "outcome" in table:
            counted = table["outcome"].value_counts()
            line += " Its verdicts, as the current rules read them: " + ", ".join(
                f"{n} {o}" for o, n in counted.items()) + "."
            unconverged = table.loc[table["outcome"] == "not converged", "claim"].tolist()
            if unconverged:
                line += (f" {len(unconverged)} of {len(table)} claims could not be judged because an arm was still "
                         "improving by enough to close its gap (the plateau test); each verdict names the arm and the "
                         "schedule that would plateau it.")
            scales = list(dict.fromkeys(s for s in table.get("scale", []) if s))
            if scales:
                line += " Its scale against the papers: " + " / ".join(scales) + "."
        if note:
            line += f" ({note}.)"
        out.append(line)
    return "\n\n".join(out)


def finale(chapter: str, profile: str, verdicts: pd.DataFrame, stored: dict | None = None, detail: str = "") -> None:
    """A chapter's closing cell: this run's verdict table, then each stored evidence run's (laptop, full) as
    the current rules read it (:func:`dropnotes.experiments.judging.current_verdicts`: current, recomputed, or
    superseded), then :func:`closing` (the provenance box and the run box). ``stored``: the stored full run
    (kept for callers; the page reads both stored runs itself)."""
    from IPython.display import display

    kind = "a pipeline check, not evidence" if profile in ("smoke", "quick") else "evidence at its scale"
    display(show(_verdict_first(verdicts), f"Verdicts of this run ({profile} profile, {kind}"
                                           f"{', ' + detail if detail else ''})"))
    for other, record, table, note in _stored_runs(chapter):
        if other != profile and table is not None:
            display(show(_verdict_first(table), stored_caption(other, record, note),
                         muted=bool((table.get("outcome") == "superseded").all())))
    closing(chapter, profile)


VERDICT_ORDER = ("claim", "verdict", "decide", "scale", "paper", "ours", "source", "kind")
# kept in the record, not shown as columns: the verdict says them, "ours" writes the numbers, the scorecard's forest
# plot draws them
HIDDEN = ("rule_verdict", "outcome", "test", "setting", "effect", "low", "high", "paper_effect", "margin", "unit")
SHOWN_AS = {"decide": "what would decide it"}


def _verdict_first(table: pd.DataFrame) -> pd.DataFrame:
    """A verdict table with the verdict second, beside its claim (as on the scorecard), then what would decide an
    undecided claim (computed by its rule); other columns after."""
    first = [c for c in VERDICT_ORDER if c in table.columns]
    out = table[first + [c for c in table.columns if c not in first and c not in HIDDEN]]
    if "decide" in out:
        out = out.assign(decide=out["decide"].fillna("").astype(str).replace({"nan": "", "None": ""}))
    return out.rename(columns=SHOWN_AS)


def closing(chapter: str, profile: str) -> None:
    """End a chapter's page: show the provenance box, and glue the run box (``<chapter>-run-box``) that the
    page's opening shows. Reads this run's stored record (``profile``) and the committed full run."""
    from IPython.display import Markdown, display
    from myst_nb import glue


    this_run = results.load_result(chapter, profile)
    stored = this_run if profile == "full" else _repo_full(chapter)
    laptop = this_run if profile == "laptop" else _repo_record(chapter, "laptop")
    display(Markdown(provenance_box(this_run, stored, laptop)))
    box = run_box(chapter, REGISTRY[chapter].notebook, this_run, stored, predicted_full_s(chapter), laptop,
                  laptop_here(chapter) if profile != "smoke" else None)
    glue(f"{chapter}-run-box", Markdown(box), display=False)


def laptop_here(chapter: str) -> dict | None:
    """The laptop profile's wall time predicted on this machine (:func:`dropnotes.estimate.predict_here`, a few
    seconds of the chapter's own steps), or None for a chapter without a laptop setting or when it cannot be
    measured here."""
    ch = REGISTRY[chapter]
    if "laptop" not in ch.profile_defaults or ch.laptop_needs_gpu:
        return None
    import warnings

    try:
        with warnings.catch_warnings():  # the precision it would run in is in the box: no bf16 warning on the page
            warnings.simplefilter("ignore", UserWarning)
            return estimate.predict_here(chapter, "laptop", budget_s=0.2, least=2)
    except (RuntimeError, ValueError, KeyError) as err:  # a step that cannot be built or timed here
        warnings.warn(f"{chapter}: the laptop profile's time could not be predicted here: {err}", stacklevel=2)
        return None


def _repo_record(chapter: str, profile: str) -> dict | None:
    """The result of ``profile`` committed in the repository (not one in ``$DROPNOTES_RESULTS``)."""

    return load_repo_result(chapter, profile)


def _repo_full(chapter: str) -> dict | None:
    """The full result committed in the repository (not one in ``$DROPNOTES_RESULTS``)."""
    return _repo_record(chapter, "full")


def scale_series(chapter: str, live: dict | None = None, live_label: str = "this page's run") -> list:
    """The series of :func:`plot_scales`: (label, points) for this page's run (``live``: its record or tables) and
    each stored evidence run whose tables the chapter's ``scale_points`` reads (laptop, then full). Points: a frame
    of ``quantity``, ``value`` and ``sd`` (over seeds; NaN for one seed)."""
    ch = REGISTRY[chapter]
    series = [(live_label, ch.scale_points(live))] if live is not None else []
    for profile, record, table, _ in _stored_runs(chapter):
        try:
            points = ch.scale_points(record["tables"])
        except (KeyError, AttributeError, TypeError, ValueError):
            continue  # a run older than the quantities the chapter plots now
        superseded = table is not None and "outcome" in table and bool((table["outcome"] == "superseded").all())
        series.append((f"stored {profile} run" + (" (superseded protocol)" if superseded else ""), points))
    return series


def plot_scales(chapter: str, live: dict | None = None, live_label: str = "this page's run"):
    """The chapter's headline quantities at every scale on one axis: this page's run, the stored laptop and full
    runs (mean ± seed SD), and the papers' values (the module's ``PAPER_POINTS``, stars, with its
    ``PAPER_POINTS_LABEL``). The axis is the module's ``SCALE_AXIS`` (label, scale). A chapter whose runs measure on
    scales that are not comparable (chapter 3's vocabularies) defines ``scale_panel(label, live) -> key`` and
    ``SCALE_PANEL_TITLE`` (a format for the key), and ``PAPER_PANEL``, the key of the papers' own setting: one
    panel per key, so that no axis mixes them, and the papers' values only on theirs."""
    import matplotlib.pyplot as plt

    ch = REGISTRY[chapter]
    series = scale_series(chapter, live, live_label)
    paper = ch.paper_points
    panel_of = ch.scale_panel
    if panel_of is None:
        panels = {None: series}
    else:
        panels = {}
        for label, points in series:
            panels.setdefault(panel_of(label, live), []).append((label, points))
        panels.setdefault(ch.paper_panel, [])
    keys = sorted(panels, key=lambda k: (k is None, k))
    widths = [max(4.6, 0.75 * len({q for _, t in panels[k] for q in t["quantity"]} | set(paper)) + 2) for k in keys]
    fig, axes = plt.subplots(1, len(keys), figsize=(max(6.2, sum(widths)), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        shown = paper if (panel_of is None or key == ch.paper_panel) else {}
        _draw_scales(ax, ch, panels[key], shown)
        if key is not None:
            ax.set_title(ch.scale_panel_title.format(key), fontsize=9)
    fig.tight_layout()
    return fig


def _draw_scales(ax, ch, series: list, paper: dict) -> None:
    from matplotlib.ticker import FuncFormatter

    quantities = list(dict.fromkeys([q for _, t in series for q in t["quantity"]] + list(paper)))
    ylabel, yscale = ch.scale_axis
    n = len(series) + bool(paper)
    width = 0.8 / max(n, 1)
    for i, (name, t) in enumerate(series):
        x = [quantities.index(q) + (i - (n - 1) / 2) * width for q in t["quantity"]]
        ax.errorbar(x, t["value"], yerr=t["sd"].fillna(0), fmt="o", capsize=3, label=name)
    if paper:
        x = [quantities.index(q) + (n - 1) / 2 * width for q in paper]
        ax.scatter(x, list(paper.values()), marker="*", s=120, color="k",
                   label=ch.paper_points_label)
    ax.set_xticks(range(len(quantities)), quantities, rotation=30 if len(quantities) > 4 else 0,
                  ha="right" if len(quantities) > 4 else "center", fontsize=8)
    ax.set(ylabel=ylabel, yscale=yscale)
    if yscale == "log":  # plain numbers on the ticks (2, 3, 5, 10), not powers of ten
        plain_ticks = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain_ticks)
        ax.yaxis.set_minor_formatter(plain_ticks)
    if series or paper:
        ax.legend(frameon=False, fontsize=7)
