"""The reproduction scorecard: one row per claim of every chapter, one column per scale, from the stored results.

Nothing here decides whether a claim holds. Each chapter computes its verdicts from its measured numbers
with the rule it states and reads them at the run's scale (:mod:`dropnotes.verdict`): a run below the paper's
setting reads at most *direction at reduced scale*, *opposite at reduced scale* or *inconclusive*, on both
signs alike. The scorecard shows each profile's verdict in its own column and never sums across them:

* ``quick``: the live run of this build, a **pipeline check**, never counted as evidence;
* ``laptop``: the stored 2-core CPU run (converged, >= 3 seeds), evidence at its scale;
* ``full``: the stored GPU run, evidence at its scale.

A stored run of an older protocol is judged again from its numbers where the chapter can (``rejudge``), else
shown as *superseded*. Claims are counted by kind: the papers' claims apart from this book's own tests and
practitioners' rules of thumb; setup checks are shown, never counted.

Where a chapter's verdicts carry their numbers (effect, 95 % interval, the paper's effect, margin, unit), the
forest plot (:func:`plot_forest`) draws them for the evidence columns, one panel per unit. Every verdict is one
test at the 5 % level with no correction across claims; :func:`multiplicity` counts the directional verdicts
against those expected by chance alone.
"""

from __future__ import annotations

import math
import textwrap

import pandas as pd

from dropnotes.experiments import REGISTRY
from dropnotes.experiments.judging import current_verdicts
from dropnotes.results import load_result
from dropnotes.verdict import OUTCOMES, Outcome

PROFILES = ("quick", "laptop", "full")  # the scorecard's columns, smallest first (smoke runs are never shown)
EVIDENCE = ("laptop", "full")  # the columns whose verdicts are evidence at their scale
COLUMN_TITLES = {"quick": "quick (pipeline check, not evidence)", "laptop": "laptop (2-core CPU)",
                 "full": "full (one GPU)"}

# Sources named in the chapters' verdict tables -> bibliography keys (references.bib).
CITATIONS = {
    "Gal & Ghahramani 2016, RNNs": "gal2016theoretically",  # before the shorter prefix below
    "Zaremba et al. 2014": "zaremba2014recurrent",
    "Merity et al. 2018": "merity2018regularizing",
    "Molchanov et al. 2017": "molchanov2017variational",
    "Liu et al. 2025": "liu2025drop",
    "Xue et al. 2023": "xue2023repeat",
    "Li et al. 2019": "li2019understanding",
    "Tompson et al. 2015": "tompson2015efficient",
    "Wan et al. 2013": "wan2013dropconnect",
    "Srivastava et al. 2014": "srivastava2014dropout",
    "Gal & Ghahramani 2016": "gal2016dropout",
    "uncertainty-baselines": "nado2021uncertainty",
    "Touvron et al. 2021": "touvron2021training",
    "Huang et al. 2016": "huang2016deep",
}


def _cite(source: str) -> str:
    keys = [k for prefix, k in CITATIONS.items() if source.startswith(prefix)]
    return source + (f" {{cite}}`{keys[0]}`" if keys else "")


def _run_label(record: dict, note: str) -> str:
    p = record["provenance"]
    return f"{p['device']}, {p['created'][:10]}" + (f"; {note}" if note else "")


NEEDS_GPU = Outcome.NEEDS_GPU.value
# The numbers behind a verdict (:class:`dropnotes.verdict.Verdict`), carried per profile where a chapter's table
# has them: numeric ones NaN and text ones empty otherwise (stored records made before they existed hold none).
NUMBERS = ("effect", "low", "high", "paper_effect", "margin")
TEXTS = ("unit", "decide")


def _number(row: pd.Series, key: str) -> float:
    """``row[key]`` as a finite float, NaN where the row lacks it (absent, None, NaN, text)."""
    try:
        v = float(row.get(key))
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def _text(row: pd.Series, key: str) -> str:
    v = row.get(key)
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _no_numbers(profile: str) -> dict:
    return {**{f"{profile}_{k}": math.nan for k in NUMBERS}, **{f"{profile}_{k}": "" for k in TEXTS}}


def _needs_gpu(chapter: str) -> bool:
    """Whether ``chapter`` declares that no laptop setting can test its claims (``LAPTOP_NEEDS_GPU``)."""
    return REGISTRY[chapter].laptop_needs_gpu if chapter in REGISTRY else False


def collect() -> pd.DataFrame:
    """One row per (chapter, claim): its kind, the paper's value, the source, and for each profile of
    :data:`PROFILES` the verdict, its outcome, our value and the run it came from (``not run`` where no stored
    run of that profile measured the claim), and the numbers behind the verdict where the chapter's table has
    them (``{profile}_effect``, ``_low``, ``_high``, ``_paper_effect``, ``_margin``: NaN otherwise; ``_unit``,
    ``_decide``: empty otherwise). A claim only a superseded run holds (renamed or dropped since) is shown only
    when the chapter has no current run at all."""
    rows = []
    for chapter in REGISTRY:
        runs = {}
        for profile in PROFILES:
            record = load_result(chapter, profile)
            table, note = current_verdicts(chapter, record)
            if table is not None:
                runs[profile] = (record, table.set_index("claim", drop=False), note)
        current = [t for _, t, _ in runs.values() if not (t["outcome"] == "superseded").all()]
        claims = list(dict.fromkeys(c for t in (current or [t for _, t, _ in runs.values()]) for c in t.index))
        for claim in claims:
            ref = next(t.loc[claim] for _, t, _ in runs.values() if claim in t.index)
            row = {"chapter": chapter, "claim": claim, "kind": ref.get("kind", "paper claim"), "paper": ref["paper"],
                   "source": ref["source"]}
            for profile in PROFILES:
                record, table, note = runs.get(profile, (None, None, ""))
                if table is None and profile == "laptop" and _needs_gpu(chapter):
                    row.update({"laptop_verdict": NEEDS_GPU, "laptop_outcome": NEEDS_GPU,
                                "laptop_ours": "no laptop setting can test it (see the chapter's estimate)",
                                "laptop_scale": "", **_no_numbers(profile)})
                    continue
                if table is None or claim not in table.index:
                    row.update({f"{profile}_verdict": "not run", f"{profile}_outcome": "not run",
                                f"{profile}_ours": "not run", f"{profile}_scale": "", **_no_numbers(profile)})
                    continue
                r = table.loc[claim]
                row.update({f"{profile}_verdict": r["verdict"], f"{profile}_outcome": r["outcome"],
                            f"{profile}_ours": f"{r['ours']} [{_run_label(record, note)}]",
                            f"{profile}_scale": r.get("scale", ""),
                            **{f"{profile}_{k}": _number(r, k) for k in NUMBERS},
                            **{f"{profile}_{k}": _text(r, k) for k in TEXTS}})
            rows.append(row)
    cols = ["chapter", "claim", "kind", "paper", "source"] + [
        f"{p}_{k}" for p in PROFILES for k in ("verdict", "outcome", "ours", "scale", *NUMBERS, *TEXTS)]
    return pd.DataFrame(rows, columns=cols)


def _verdict_cell(row: pd.Series, profile: str) -> str:
    """A verdict as the scorecard writes it: bold for evidence, italic for the quick pipeline check, grey for a
    superseded run, plain ``not run``."""
    v = row[f"{profile}_verdict"]
    if v == "not run":
        return v
    if row[f"{profile}_outcome"] == "superseded":
        return f'<span class="dn-superseded">{v}</span>'
    return f"**{v}**" if profile in EVIDENCE else f"*{v}*"


# The scorecard tables' columns: the evidence first, beside the paper's value, then the quick pipeline check; short
# headings (the legend above the tables says what each column is), so that the five fit a laptop's page at 1280 px
# (the stylesheet's ``table.dn-scorecard`` rules share the width out and wrap the text).
TABLE_ORDER = ("laptop", "full", "quick")
HEADINGS = {"laptop": "verdict, laptop", "full": "verdict, full", "quick": "verdict, quick (pipeline check)"}
LEGEND = ("Columns: *laptop* (the stored run on a 2-core CPU) and *full* (the stored run on one GPU) are evidence "
          "at their scale, their verdicts in bold; *quick* is this build's pipeline check, never evidence, in italics. "
          "A claim is the paper's own unless marked *our test*, *rule of thumb* or *setup check*. Our values and, "
          "for an undecided claim, what would decide it follow each table.")


def to_markdown(table: pd.DataFrame) -> str:
    """The scorecard as MyST: a legend, then one section per chapter (its title, a link to it), each a table of
    class ``dn-scorecard`` with the claim (its kind marked unless a paper claim), the paper's value and source
    cited from the bibliography, and each profile's verdict (:data:`TABLE_ORDER`; the quick one marked as a
    pipeline check). Our values follow per profile, below the table, with what would decide an undecided claim
    where the chapter computed it."""

    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    heads = ["claim", "paper (source)", *(HEADINGS[p] for p in TABLE_ORDER)]
    out = [LEGEND, ""]
    for chapter, rows in table.groupby("chapter", sort=False):
        ch = REGISTRY[chapter]
        doc = "/" + ch.notebook.removesuffix(".ipynb")
        out += [f"**{ch.title}** (*{chapter}*, {{doc}}`the chapter <{doc}>`)", "",
                "````{table}", ":class: dn-scorecard", "",
                "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        for _, row in rows.iterrows():
            claim = row["claim"] if row["kind"] == "paper claim" else f"{row['claim']} (*{row['kind']}*)"
            verdicts = [_verdict_cell(row, p) for p in TABLE_ORDER]
            values = [claim, f"{row['paper']} — {_cite(row['source'])}", *verdicts]
            out.append("| " + " | ".join(cell(v) for v in values) + " |")
        out += ["````", ""]
        for p in PROFILES:
            ours = [f"*{r.claim}*: {r[f'{p}_ours']}" + (f" (to decide: {_text(r, f'{p}_decide')})"
                                                       if _text(r, f"{p}_decide") else "")
                    for _, r in rows.iterrows() if r[f"{p}_ours"] != "not run"]
            if ours:
                out += [f"Ours, {COLUMN_TITLES[p]}: " + "; ".join(cell(o) for o in ours), ""]
    return "\n".join(out)


def counts(table: pd.DataFrame, kinds: tuple[str, ...] = ("paper claim",)) -> pd.DataFrame:
    """Claims per outcome (rows, in :data:`dropnotes.verdict.OUTCOMES` order, then ``not run``) and profile
    (columns, titled by :data:`COLUMN_TITLES`: quick's says it is not evidence), counting each claim of the
    given ``kinds`` once per column. Setup checks are never counted."""
    sel = table[table["kind"].isin(kinds)]
    order = [*OUTCOMES, "not run"]
    out = pd.DataFrame({COLUMN_TITLES[p]: sel[f"{p}_outcome"].value_counts().reindex(order, fill_value=0)
                        for p in PROFILES}, index=order)
    out = out[(out != 0).any(axis=1)]
    out.index.name = "outcome"
    return out


# One colour per outcome, the same in every figure: greens for reproduced or its direction, grey for undecided,
# reds for refuted or the opposite, pale for what was not measured.
COLOURS = {"reproduced": "#1a9850", "partly": "#d9ef8b", "not reproduced": "#d73027",
           "direction at reduced scale": "#91cf60", "opposite at reduced scale": "#fc8d59", "inconclusive": "#bdbdbd",
           "not at paper scale": "#fee08b", "not converged": "#c994c7", "not trained": "#8073ac",
           "not judged": "#dfc27d", "not measured": "#f0f0f0",
           "needs a GPU": "#9ecae1",
           "superseded": "#969696", "not run": "#ffffff"}


def plot_counts(table: pd.DataFrame):
    """Outcome counts per chapter, one panel per profile (quick labelled as a pipeline check), the papers'
    claims stacked by outcome."""
    import matplotlib.pyplot as plt

    sel = table[table["kind"] == "paper claim"]
    chapters = [c for c in REGISTRY if c in set(sel["chapter"])]
    fig, axes = plt.subplots(1, len(PROFILES), figsize=(10.5, 0.32 * len(chapters) + 1.9), sharey=True)
    for ax, profile in zip(axes, PROFILES):
        grid = pd.crosstab(sel["chapter"], sel[f"{profile}_outcome"]).reindex(chapters, fill_value=0)
        left = pd.Series(0, index=grid.index)
        for cat in [k for k in COLOURS if k in grid.columns]:
            ax.barh(grid.index, grid[cat], left=left, color=COLOURS[cat], edgecolor="#636363", linewidth=0.4,
                    label=cat)
            left = left + grid[cat]
        ax.set(title=COLUMN_TITLES[profile], xlabel="papers' claims")
        ax.title.set_fontsize(9)
    axes[0].invert_yaxis()
    handles = {h.get_label(): h for ax in axes for h in ax.get_legend_handles_labels()[0]}
    fig.legend(handles.values(), handles.keys(), frameon=False, fontsize=7, ncol=4, loc="lower center")
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    return fig


def forest_rows(table: pd.DataFrame) -> pd.DataFrame:
    """What the forest plot (:func:`plot_forest`) reads: one row per claim (setup checks apart: they are shown in
    the chapter whose claim they check) and evidence profile (:data:`EVIDENCE`; quick is never evidence), with
    its outcome, the numbers behind its verdict (NaN where absent), its unit and ``shown``: whether it has an
    effect and both ends of its 95 % interval, from a current run (a superseded run's numbers are not shown)."""
    cols = ["chapter", "claim", "kind", "profile", "outcome", *NUMBERS, "unit", "shown"]
    rows = []
    for _, r in table[table["kind"] != "setup check"].iterrows():
        for p in EVIDENCE:
            nums = {k: _number(r, f"{p}_{k}") for k in NUMBERS}
            shown = r[f"{p}_outcome"] != "superseded" and all(math.isfinite(nums[k]) for k in ("effect", "low", "high"))
            rows.append({"chapter": r["chapter"], "claim": r["claim"], "kind": r["kind"], "profile": p,
                         "outcome": r[f"{p}_outcome"], **nums, "unit": _text(r, f"{p}_unit"), "shown": shown})
    return pd.DataFrame(rows, columns=cols)


def _short(text: str, width: int) -> str:
    return textwrap.shorten(str(text), width=width, placeholder="…")


def _not_shown(rows: pd.DataFrame) -> list[str]:
    """One line per claim with a profile the forest plot does not draw: each such profile's
    ``no interval (outcome)`` (``not shown (superseded)`` for a superseded run that has numbers)."""
    lines = []
    for (chapter, claim), group in rows.groupby(["chapter", "claim"], sort=False):
        parts = []
        for _, r in group[~group["shown"]].iterrows():
            has = all(math.isfinite(r[k]) for k in ("effect", "low", "high"))
            parts.append(f"{r['profile']}: " + ("not shown (superseded)" if has else f"no interval ({r['outcome']})"))
        if parts:
            kind = "" if group["kind"].iloc[0] == "paper claim" else f" [{group['kind'].iloc[0]}]"
            lines.append(f"{chapter}: {_short(claim, 78)}{kind} — " + "; ".join(parts))
    return lines


UNGIVEN = "unit not given"


def plot_forest(table: pd.DataFrame):
    """The measured effects of the evidence runs (:data:`EVIDENCE`: laptop and full; quick is a pipeline check,
    never shown as evidence): one line per claim and scale with the effect (a dot) and its 95 % interval, signed
    so that > 0 is the paper's direction, coloured by outcome (:data:`COLOURS`); the paper's effect on the same
    scale as a diamond, zero dashed, and the margin (equivalence, "does not beat") or convergence tolerance δ
    shaded as ± margin around zero where the row gives one. Effects in different units never share an axis: one
    panel per unit, each with its own scale. Every claim without an interval at a scale is listed below the
    panels as ``no interval (outcome)``, so none is dropped silently. Setup checks are shown in their chapter."""
    import matplotlib.patheffects as pe
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows = forest_rows(table)
    shown = rows[rows["shown"]].assign(unit=lambda d: d["unit"].replace("", UNGIVEN))
    units = list(dict.fromkeys(shown["unit"]))
    missing = _not_shown(rows)
    row_h, gap, line_h, width = 0.3, 0.62, 0.16, 10.5  # inches
    panels = [(u, shown[shown["unit"] == u]) for u in units]
    heights = [len(g) * row_h + 0.15 for _, g in panels] or [0.35]
    legend_h = 0.5 if panels else 0.0
    list_h = (len(missing) + 1) * line_h + 0.2 if missing else 0.0
    total = 0.15 + sum(h + gap for h in heights) + legend_h + list_h
    fig = plt.figure(figsize=(width, total))
    top, left = 0.15, 0.42
    for unit, group in panels:
        h = len(group) * row_h + 0.15
        ax = fig.add_axes((left, 1 - (top + h) / total, 0.97 - left, h / total))
        top += h + gap
        ax.axvline(0, color="#636363", lw=0.8, ls="--", zorder=1)
        labels = []
        for y, (_, r) in enumerate(group.iterrows()):
            colour = COLOURS.get(r["outcome"], "#bdbdbd")
            if math.isfinite(r["margin"]) and r["margin"] > 0:
                ax.fill_betweenx([y - 0.4, y + 0.4], -r["margin"], r["margin"], color="#d9d9d9", lw=0, zorder=0)
            ax.plot([r["low"], r["high"]], [y, y], color=colour, lw=3, solid_capstyle="butt", zorder=2, gid="dn-interval",
                    path_effects=[pe.Stroke(linewidth=4.4, foreground="#525252"), pe.Normal()])
            ax.plot(r["effect"], y, "o", ms=5, color=colour, mec="#252525", mew=0.7, zorder=3)
            if math.isfinite(r["paper_effect"]):
                ax.plot(r["paper_effect"], y, "D", ms=5, mfc="white", mec="black", mew=1.0, zorder=4)
            kind = "" if r["kind"] == "paper claim" else f" [{r['kind']}]"
            labels.append(textwrap.fill(_short(f"{r['chapter']}: {r['claim']}{kind}", 130), 68) + f" ({r['profile']})")
        ax.set_yticks(range(len(group)), labels, fontsize=7)
        ax.set_ylim(len(group) - 0.5, -0.5)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel(f"effect, {unit} (> 0: the paper's direction)", fontsize=8)
        ax.grid(axis="x", color="#eeeeee", lw=0.6, zorder=0)
    if panels:
        present = [o for o in COLOURS if o in set(shown["outcome"])]
        handles = [Patch(facecolor=COLOURS[o], edgecolor="#525252", label=o) for o in present] + [
            Line2D([], [], marker="D", ls="", mfc="white", mec="black", label="the paper's effect"),
            Patch(facecolor="#d9d9d9", label="± margin or δ"),
            Line2D([], [], color="#636363", ls="--", lw=0.8, label="no effect")]
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.02, 1 - (top - gap + 0.5) / total),
                   ncol=min(len(handles), 5), fontsize=7, frameon=False)
        top += legend_h
    else:
        top = 0.15 + heights[0]
    # The text lies on an axes without frame or background that spans the figure: a figure without axes is shown
    # as no image at all.
    notes = fig.add_axes((0, 0, 1, 1), zorder=-1)
    notes.set_axis_off()
    notes.patch.set_visible(False)

    def note(inches: float, text: str, **kw):
        notes.text(0.02, 1 - inches / total, text, transform=fig.transFigure, va="top", **kw)

    if not panels:
        note(0.15, "No laptop or full verdict carries its effect and 95 % interval yet.", fontsize=9)
    if missing:
        note(top, "Not drawn (laptop and full runs):", fontsize=7.5, weight="bold")
        for i, text in enumerate(missing, start=1):
            note(top + i * line_h, text, fontsize=7, gid="dn-no-interval")
    return fig


def forest_caption(table: pd.DataFrame) -> str:
    """The forest plot's caption (:func:`plot_forest`), with the counts of the drawn lines and listed claims."""
    rows = forest_rows(table)
    drawn = rows[rows["shown"]]
    n_missing = len(_not_shown(rows))
    units = sorted(set(drawn["unit"].replace("", UNGIVEN)))
    return (f"Measured effects of the laptop and full runs with their 95 % intervals ({len(drawn)} lines, "
            f"{drawn['claim'].nunique()} claims), signed so that a positive effect is the paper's direction, coloured "
            "by the verdict's outcome (the colours of the counts above). Effects in different units never share an "
            f"axis: one panel per unit ({', '.join(units) if units else 'none yet'}), each with its own scale. The "
            "diamond is the paper's own effect on the same scale, the dashed line no effect, and the grey band the "
            "margin of an equivalence or \"does not beat\" claim, or the convergence tolerance δ, around zero. The "
            "quick runs of this build are a pipeline check and are not drawn; setup checks are shown in the chapter "
            f"whose claim they check. {n_missing} claim{'s' if n_missing != 1 else ''} without an interval at one "
            "or both scales (not run, not converged, or a stored record made before the chapters stored their "
            "numbers) are listed below the panels with their outcome.")


ALPHA = 0.05  # every verdict is one test at this level: two-sided for a direction, each side of a TOST
PAPER_SIGN = (Outcome.REPRODUCED.value, Outcome.PARTLY.value, Outcome.DIRECTION.value)
OTHER_SIGN = (Outcome.NOT_REPRODUCED.value, Outcome.OPPOSITE.value)
TESTED = (*PAPER_SIGN, *OTHER_SIGN, Outcome.INCONCLUSIVE.value)
TESTED_KINDS = ("paper claim", "our test", "rule of thumb")  # setup checks repeat a claim tested elsewhere


def _at_least(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return float(sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(max(k, 0), n + 1)))


def multiplicity(table: pd.DataFrame, kinds: tuple[str, ...] = TESTED_KINDS) -> pd.DataFrame:
    """Many claims, one test each: per evidence column (rows, titled by :data:`COLUMN_TITLES`), the claims of
    ``kinds`` that a test decided (``tested``: a verdict that read a sign, or *inconclusive*; not converged, not
    trained, not judged, not measured, not at paper scale, needs a GPU, superseded and not run are no tests),
    the directional verdicts among them (``directional``: ``paper's sign``, i.e. reproduced, partly or direction
    at reduced scale, plus ``opposite``), the number expected by chance alone if every claim were null
    (``expected by chance`` = :data:`ALPHA` x tested) and the chance of at least as many
    (``P(at least as many)``, for independent tests; NaN with none tested)."""
    sel = table[table["kind"].isin(kinds)]
    out = {}
    for p in EVIDENCE:
        o = sel[f"{p}_outcome"]
        n, same, other = int(o.isin(TESTED).sum()), int(o.isin(PAPER_SIGN).sum()), int(o.isin(OTHER_SIGN).sum())
        out[COLUMN_TITLES[p]] = {"tested": n, "directional": same + other, "paper's sign": same, "opposite": other,
                                 "expected by chance": ALPHA * n,
                                 "P(at least as many)": _at_least(same + other, n, ALPHA) if n else math.nan}
    frame = pd.DataFrame.from_dict(out, orient="index")
    frame.index.name = "column"
    return frame


def multiplicity_text(table: pd.DataFrame, kinds: tuple[str, ...] = TESTED_KINDS) -> str:
    """How the book handles many claims, as the scorecard page states it, with :func:`multiplicity`'s counts."""
    m = multiplicity(table, kinds)
    parts = []
    for column, r in m.iterrows():
        n, k, same, other = (int(r[c]) for c in ("tested", "directional", "paper's sign", "opposite"))
        if n == 0:
            parts.append(f"In the {column} column no claim was tested yet.")
            continue
        parts.append(f"In the {column} column {n} claim{'s were' if n != 1 else ' was'} tested and {k} "
                     f"verdict{'s' if k != 1 else ''} read a sign ({same} the paper's, {other} the opposite); if every "
                     "claim were null, "
                     f"{ALPHA:g} × {n} = {r['expected by chance']:.3g} would read a sign by chance alone "
                     f"(the chance of {k} or more: {r['P(at least as many)']:.2g}, were the tests independent).")
    return ("**Many claims, one test each.** Every verdict is a single test at the 5 % level: two-sided for a "
            "direction, and two one-sided tests at 5 % each for an equivalence (TOST). No family-wise correction is "
            "made across claims, so some directional verdicts may be chance. Counted here: the "
            "papers' claims, this book's own tests and the rules of thumb (setup checks repeat a claim tested "
            "elsewhere); a claim is tested when its verdict read a sign or *inconclusive* (a *partly* counts with "
            "the paper's sign). " + " ".join(parts) + " A false-discovery reading (Benjamini–Hochberg) would need "
            "each test's p-value, which the verdict tables do not store, so it is not given.")
