"""The reproduction scorecard: one row per claim of every chapter, from the stored results.

Nothing here decides whether a claim holds. Each chapter computes its verdicts from its measured numbers
with the rule it states, and stores them with the result. The scorecard shows the full-profile verdict
where a full result of the chapter's current protocol is stored, else the quick one, labelled as such; a
full run whose schedule was cut from the profile's defaults is labelled "shortened" (other changes:
"changed"), with what changed. A run shorter than the paper's schedule never counts as a refutation.
"""

from __future__ import annotations

import pandas as pd

from dropnotes.experiments import CHAPTERS
from dropnotes.experiments._base import protocol
from dropnotes.results import deviations, load_result

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


def _verdict_rows(record: dict | None) -> dict[str, dict]:
    if record is None:
        return {}
    return {row["claim"]: row for row in record["tables"]["verdicts"].to_dict(orient="records")}


def _changes(chapter: str, record: dict) -> tuple[str, str]:
    """What a stored full run changed from its profile's defaults (``epochs 2 of 8, ...``, or '') and the
    label for it: "shortened" when every change is a smaller number, else "changed"."""
    changed = deviations(record, record.get("defaults") or {})  # the profile's defaults, stored with the run
    cut = all(isinstance(v, (int, float)) and isinstance(d, (int, float)) and v < d for v, d in changed.values())
    return ", ".join(f"{k} {v} of {d}" for k, (v, d) in changed.items()), "shortened" if cut else "changed"


# The verdict categories, in the order the counts are shown. A chapter's verdict text starts with one.
CATEGORIES = ("reproduced", "reproduced (direction)", "partly", "inconclusive", "not reproduced",
              "not at paper scale", "not measured")


def category(verdict: str) -> str:
    """The category a chapter's verdict text falls under (``other`` if none)."""
    v = str(verdict).strip()
    for c in ("reproduced (direction)", "not reproduced", "not at paper scale", "not measured", "partly",
              "inconclusive", "reproduced"):
        if v.startswith(c):
            return c
    return "other"


def collect() -> pd.DataFrame:
    """One row per (chapter, claim): the verdict and its category, the paper's value, our quick and full
    values, the source.

    The verdict is the full run's where one is stored under the chapter's current protocol, else the
    quick run's, marked "(quick)". A run shorter than the paper's schedule never refutes a claim: a quick
    run's *not reproduced*, and a shortened full run's *not reproduced* or *inconclusive*, read *not at
    paper scale*, with the run's own verdict beside it. A full run stored under an older protocol is shown
    with "protocol changed since this run" and does not decide the verdict."""
    rows = []
    for chapter in CHAPTERS:
        quick, full = load_result(chapter, "quick"), load_result(chapter, "full")
        q, f = _verdict_rows(quick), _verdict_rows(full)
        stale = full is not None and int(full["provenance"].get("protocol", 1)) < protocol(chapter)
        what, label = _changes(chapter, full) if full is not None else ("", "")
        # A claim only a stale full run holds was renamed or dropped by the protocol change: not shown, unless the
        # chapter has no quick run to show instead.
        claims = [*q, *(c for c in f if not (stale and q))]
        for claim in list(dict.fromkeys(claims)):
            ref = q.get(claim) or f[claim]
            q_verdict = q[claim]["verdict"] if claim in q else None
            if claim in f:
                p = full["provenance"]
                note = f"; {label}: {what}" if what else ""
                note += "; protocol changed since this run" if stale else ""
                full_value = f"{f[claim]['ours']} [{p['device']}, {p['created'][:10]}{note}]"
            else:
                full_value = "not run yet"
            if claim in f and not stale:
                verdict, cat = f[claim]["verdict"], category(f[claim]["verdict"])
                if label == "shortened" and what and cat in ("not reproduced", "inconclusive"):
                    cat = "not at paper scale"
                    verdict = f"not at paper scale (full run cut: {what}; it read: {verdict})"
                elif what:
                    verdict += f" ({label} full run)"
            elif q_verdict is not None:
                cat = category(q_verdict)
                if cat == "not reproduced":  # a quick run is shorter than the paper's schedule
                    cat, verdict = "not at paper scale", f"not at paper scale (quick run: {q_verdict})"
                else:
                    verdict = f"{q_verdict} (quick)"
            else:
                cat, verdict = "not measured", "not measured (the full run predates this protocol; no quick run)"
            quick_cat = category(q_verdict) if q_verdict is not None else "not measured"
            quick_cat = "not at paper scale" if quick_cat == "not reproduced" else quick_cat
            full_cat = cat if claim in f and not stale else "not measured"
            rows.append({"chapter": chapter, "claim": claim, "verdict": verdict, "category": cat,
                         "quick category": quick_cat, "full category": full_cat,
                         "paper": ref["paper"], "ours (quick)": q[claim]["ours"] if claim in q else "not run",
                         "ours (full)": full_value, "source": ref["source"]})
    return pd.DataFrame(rows, columns=["chapter", "claim", "verdict", "category", "quick category", "full category",
                                       "paper", "ours (quick)", "ours (full)", "source"])


def to_markdown(table: pd.DataFrame) -> str:
    """The scorecard as MyST: one section per chapter (its title, a link to it), each a table whose second
    column is the verdict and whose sources are cited from the bibliography."""
    from dropnotes.experiments import TITLES

    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    cols = ["claim", "verdict", "paper", "ours (quick)", "ours (full)", "source"]
    out = []
    for chapter, rows in table.groupby("chapter", sort=False):
        doc = "/" + CHAPTERS[chapter].removesuffix(".ipynb")
        out += [f"**{TITLES.get(chapter, chapter)}** (*{chapter}*, {{doc}}`the chapter <{doc}>`)", "",
                "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for _, row in rows.iterrows():
            values = [_cite(row[c]) if c == "source" else f"**{row[c]}**" if c == "verdict" else row[c] for c in cols]
            out.append("| " + " | ".join(cell(v) for v in values) + " |")
        out.append("")
    return "\n".join(out)


def counts(table: pd.DataFrame) -> pd.Series:
    """How many claims fall under each category (in :data:`CATEGORIES` order, those present)."""
    c = table["category"].value_counts()
    return c.reindex([k for k in (*CATEGORIES, "other") if k in c.index])


# One colour per category, the same in every figure: greens for reproduced, grey for undecided, red for refuted.
COLOURS = {"reproduced": "#1a9850", "reproduced (direction)": "#91cf60", "partly": "#d9ef8b", "inconclusive": "#bdbdbd",
           "not reproduced": "#d73027", "not at paper scale": "#fdae61", "not measured": "#f0f0f0", "other": "#756bb1"}


def plot_counts(table: pd.DataFrame):
    """Verdict counts per chapter, one panel for the quick runs and one for the stored full runs (claims a full
    run of the current protocol has not measured count as *not measured*), stacked by category."""
    import matplotlib.pyplot as plt

    chapters = [c for c in CHAPTERS if c in set(table["chapter"])]
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 0.32 * len(chapters) + 1.6), sharey=True)
    for ax, (column, title) in zip(axes, (("quick category", "quick runs (this build)"),
                                          ("full category", "stored full runs (GPU)"))):
        grid = pd.crosstab(table["chapter"], table[column]).reindex(chapters, fill_value=0)
        left = pd.Series(0, index=grid.index)
        for cat in [k for k in (*CATEGORIES, "other") if k in grid.columns]:
            ax.barh(grid.index, grid[cat], left=left, color=COLOURS[cat], edgecolor="#636363", linewidth=0.4,
                    label=cat)
            left = left + grid[cat]
        ax.set(title=title, xlabel="claims")
        ax.title.set_fontsize(9)
    axes[0].invert_yaxis()
    handles = {h.get_label(): h for ax in axes for h in ax.get_legend_handles_labels()[0]}
    fig.legend(handles.values(), handles.keys(), frameon=False, fontsize=7, ncol=4, loc="lower center")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig
