"""The reproduction scorecard: one row per claim of every chapter, from the stored results.

Nothing here decides a verdict. Each chapter computes its verdicts from its measured numbers with
the rule it states, and stores them with the result. The scorecard shows the full-profile verdict
where a full result is stored, else the quick one, labelled as such; a full run whose schedule was
cut from the profile's defaults is labelled "shortened" (other changes: "changed"), with what changed.
"""

from __future__ import annotations

import pandas as pd

from dropnotes.experiments import CHAPTERS
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


def collect() -> pd.DataFrame:
    """One row per (chapter, claim): source, paper value, our quick and full values, verdict."""
    rows = []
    for chapter in CHAPTERS:
        quick, full = load_result(chapter, "quick"), load_result(chapter, "full")
        q, f = _verdict_rows(quick), _verdict_rows(full)
        for claim in list(dict.fromkeys([*f, *q])):
            ref = f.get(claim) or q[claim]
            if claim in f:
                p, (what, label) = full["provenance"], _changes(chapter, full)
                full_value = f"{f[claim]['ours']} [{p['device']}, {p['created'][:10]}{f'; {label}: {what}' if what else ''}]"
                verdict = f[claim]["verdict"] + (f" ({label} full run)" if what else "")
            else:
                full_value, verdict = "not run yet", f"{q[claim]['verdict']} (quick)"
            rows.append({"chapter": chapter, "claim": f"*{chapter}*: {claim}", "source": ref["source"], "paper": ref["paper"],
                         "ours (quick)": q[claim]["ours"] if claim in q else "not run",
                         "ours (full)": full_value, "verdict": verdict})
    return pd.DataFrame(rows, columns=["chapter", "claim", "source", "paper", "ours (quick)", "ours (full)", "verdict"])


def to_markdown(table: pd.DataFrame) -> str:
    """A MyST table whose sources are cited from the bibliography."""
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    cols = [c for c in table.columns if c != "chapter"]  # the claim cell names its chapter
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        values = [_cite(row[c]) if c == "source" else row[c] for c in cols]
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines)


def counts(table: pd.DataFrame) -> pd.Series:
    """How many claims fall under each verdict (full where available, else quick)."""
    kind = table.verdict.str.replace(r" \(quick\)$", "", regex=True).str.extract(
        r"^(reproduced|partly|not reproduced|not measured|inconclusive)")[0].fillna("other")
    return kind.value_counts()
