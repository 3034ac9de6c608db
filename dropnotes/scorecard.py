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
"""

from __future__ import annotations

import pandas as pd

from dropnotes.experiments import CHAPTERS, TITLES
from dropnotes.experiments._base import _module, current_verdicts
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


def _needs_gpu(chapter: str) -> bool:
    """Whether ``chapter`` declares that no laptop setting can test its claims (``LAPTOP_NEEDS_GPU``)."""
    return bool(getattr(_module(chapter), "LAPTOP_NEEDS_GPU", False))


def collect() -> pd.DataFrame:
    """One row per (chapter, claim): its kind, the paper's value, the source, and for each profile of
    :data:`PROFILES` the verdict, its outcome, our value and the run it came from (``not run`` where no stored
    run of that profile measured the claim). A claim only a superseded run holds (renamed or dropped since)
    is shown only when the chapter has no current run at all."""
    rows = []
    for chapter in CHAPTERS:
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
                                "laptop_scale": ""})
                    continue
                if table is None or claim not in table.index:
                    row.update({f"{profile}_verdict": "not run", f"{profile}_outcome": "not run",
                                f"{profile}_ours": "not run", f"{profile}_scale": ""})
                    continue
                r = table.loc[claim]
                row.update({f"{profile}_verdict": r["verdict"], f"{profile}_outcome": r["outcome"],
                            f"{profile}_ours": f"{r['ours']} [{_run_label(record, note)}]",
                            f"{profile}_scale": r.get("scale", "")})
            rows.append(row)
    cols = ["chapter", "claim", "kind", "paper", "source"] + [f"{p}_{k}" for p in PROFILES
                                                              for k in ("verdict", "outcome", "ours", "scale")]
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


def to_markdown(table: pd.DataFrame) -> str:
    """The scorecard as MyST: one section per chapter (its title, a link to it), each a table with the claim,
    its kind, each profile's verdict (the quick one marked as a pipeline check), the paper's value and the
    source cited from the bibliography. Our values follow per profile, below the table."""

    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    heads = ["claim", "kind", *(f"verdict, {COLUMN_TITLES[p]}" for p in PROFILES), "paper", "source"]
    out = []
    for chapter, rows in table.groupby("chapter", sort=False):
        doc = "/" + CHAPTERS[chapter].removesuffix(".ipynb")
        out += [f"**{TITLES.get(chapter, chapter)}** (*{chapter}*, {{doc}}`the chapter <{doc}>`)", "",
                "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        for _, row in rows.iterrows():
            verdicts = [_verdict_cell(row, p) for p in PROFILES]
            values = [row["claim"], row["kind"], *verdicts, row["paper"], _cite(row["source"])]
            out.append("| " + " | ".join(cell(v) for v in values) + " |")
        out.append("")
        for p in PROFILES:
            ours = [f"*{r.claim}*: {r[f'{p}_ours']}" for _, r in rows.iterrows() if r[f"{p}_ours"] != "not run"]
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
           "not at paper scale": "#fee08b", "not converged": "#c994c7", "not measured": "#f0f0f0",
           "needs a GPU": "#9ecae1",
           "superseded": "#969696", "not run": "#ffffff"}


def plot_counts(table: pd.DataFrame):
    """Outcome counts per chapter, one panel per profile (quick labelled as a pipeline check), the papers'
    claims stacked by outcome."""
    import matplotlib.pyplot as plt

    sel = table[table["kind"] == "paper claim"]
    chapters = [c for c in CHAPTERS if c in set(sel["chapter"])]
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
