"""How a table reads on a page: human column names with their units, numbers rounded to the column's typical size,
a caption (:func:`show`), and the provenance box of a run."""

from __future__ import annotations

import hashlib
import html
import math
import re
from typing import Any

import numpy as np
import pandas as pd


# Column-name pieces: a suffix that names a unit, and words that read better spelt out.
UNITS = (("_per_s", "/s"), ("_ms", " (ms)"), ("_s", " (s)"), ("_bpb", " (bits/byte)"), ("_pp", " (points)"),
         ("_pct", " (%)"), ("_mb", " (MB)"), ("_gb", " (GB)"))
WORDS = {"se": "SE", "nll": "NLL", "ece": "ECE", "mc": "MC", "ood": "OOD", "auroc": "AUROC", "bpb": "bits/byte",
         "ppl": "perplexity", "lr": "learning rate", "p": "p", "k": "k", "bn": "BN", "gpu": "GPU", "cpu": "CPU",
         "mfu": "MFU", "vit": "ViT", "svd": "sparse VD", "kl": "KL", "pct": "%", "std": "SD", "n": "n"}


def human(name: str) -> str:
    """A column name a person reads: ``test_loss_se`` -> ``test loss SE``, ``train_s`` -> ``train (s)``,
    ``tokens_per_s`` -> ``tokens/s``. Names that are not snake_case identifiers are left as they are."""
    name = str(name)
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        return name
    unit = ""
    for suffix, text in UNITS:
        if name.endswith(suffix) and len(name) > len(suffix):
            name, unit = name[: -len(suffix)], text
            break
    words = [WORDS.get(w, w) for w in name.split("_") if w]
    return " ".join(words) + unit


def decimals(values: pd.Series) -> int:
    """Decimals that give a float column three significant digits at its median magnitude (0 to 6)."""
    x = np.abs(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float))
    x = x[np.isfinite(x) & (x > 0)]
    if x.size == 0:
        return 2
    return int(min(max(2 - math.floor(math.log10(float(np.median(x)))), 0), 6))


def _formatter(values: pd.Series, places: int | None):
    if pd.api.types.is_bool_dtype(values):
        return lambda v: "yes" if v else "no"
    if pd.api.types.is_integer_dtype(values):
        return lambda v: f"{v:,}"
    if pd.api.types.is_float_dtype(values):
        d = decimals(values) if places is None else places

        def fmt(v):
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                return "–"
            return f"{v:,.{d}f}"
        return fmt
    return lambda v: "–" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


class Table:
    """A formatted table: HTML for the book (a pandas Styler), aligned text for a terminal and for nbval."""

    def __init__(self, frame: pd.DataFrame, caption: str, places: dict[str, int] | None = None, muted: bool = False):
        self.muted = muted
        frame = frame.copy()
        if not isinstance(frame.index, pd.RangeIndex) or frame.index.name is not None:
            frame = frame.reset_index()
        places = places or {}
        self.caption = caption
        self.formats = {human(c): _formatter(frame[c], places.get(c)) for c in frame.columns}
        self.frame = frame.rename(columns={c: human(c) for c in frame.columns})

    def cells(self) -> pd.DataFrame:
        """The table's text, cell by cell, as the book shows it."""
        return pd.DataFrame({c: [self.formats[c](v) for v in self.frame[c]] for c in self.frame.columns},
                            index=self.frame.index)

    def _repr_html_(self) -> str:
        uid = "dn" + hashlib.sha256((self.caption + "|".join(self.frame.columns)).encode()).hexdigest()[:8]
        numeric = [c for c in self.frame.columns if pd.api.types.is_numeric_dtype(self.frame[c])
                   and not pd.api.types.is_bool_dtype(self.frame[c])]
        classes = pd.DataFrame({c: ["dn-num" if c in numeric else ""] * len(self.frame) for c in self.frame.columns},
                               index=self.frame.index)
        from pandas.io.formats.style import Styler

        styler = (Styler(self.frame, cell_ids=False).format(self.formats).hide(axis="index").set_uuid(uid).set_td_classes(classes)
                  .set_table_attributes(f'class="dn-table{" dn-superseded" if self.muted else ""}" '
                                        f'aria-label="{html.escape(self.caption)}"'))
        # the caption sits above the scrolling container, so it never scrolls out of view with a wide table
        return (f'<p class="dn-caption">{html.escape(self.caption)}</p>'
                f'<div class="dn-table-wrap">{styler.to_html()}</div>')

    def __repr__(self) -> str:
        return f"{self.caption}\n{self.cells().to_string(index=False)}"


def show(frame: pd.DataFrame, caption: str, *, places: dict[str, int] | None = None, muted: bool = False) -> Table:
    """``frame`` as a table a person reads (see the module's docstring); ``places`` fixes the decimals of
    named columns (their original names); ``muted``: shown in grey (a superseded run's table)."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    if not caption:
        raise ValueError("caption must say what the table shows")
    return Table(frame, caption, places, muted)


# ------------------------------------------------------------------ provenance and the run box

FIELDS = (("device", "device"), ("cpu", "CPU"), ("threads", "threads"), ("torch", "torch"), ("cuda", "CUDA"),
          ("cudnn", "cuDNN"), ("python", "Python"),
          ("commit", "commit"), ("source_sha256", "source digest (SHA-256 of the package)"), ("seeds", "seeds"),
          ("wall_time_s", "wall time (s)"), ("dataset", "dataset"), ("created", "created"),
          ("protocol", "protocol version"))


def _value(key: str, value: Any) -> str:
    if value is None:
        return "not recorded" if key not in ("cuda", "cudnn") else "none (CPU build)"
    if key == "wall_time_s":
        return f"{float(value):,.0f}"
    if key in ("commit", "source_sha256"):
        return f"`{str(value)[:16]}`"
    return html.escape(str(value)) if not isinstance(value, list) else ", ".join(map(str, value))


def _checksums(prov: dict) -> list[str]:
    files = prov.get("data_files") or {}
    out = [f"`{name}`: {algo} `{digest[:16]}…`" for name, info in files.items()
           for algo, digest in info.items() if algo != "root"]
    corpus = prov.get("corpus") or {}
    if corpus.get("sha256"):
        out.append(f"corpus ({corpus.get('dataset', '?')}, {corpus.get('bytes', 0):,} bytes): sha256 "
                   f"`{corpus['sha256'][:16]}…`")
    return out


def provenance_rows(record: dict | None) -> dict[str, str]:
    """The provenance of a stored result as label -> text (``not recorded`` where an older run lacks a field)."""
    if record is None:
        return {}
    prov = record["provenance"]
    rows = {"profile": record["profile"]}
    rows.update({label: _value(key, prov.get(key)) for key, label in FIELDS if key in prov or key in
                 ("cuda", "cudnn", "source_sha256")})
    sums = _checksums(prov)
    rows["data checksums"] = "; ".join(sums) if sums else "not recorded"
    if prov.get("code"):
        rows["code"] = html.escape(str(prov["code"]))
    return rows


def provenance_box(this_run: dict | None, stored: dict | None, laptop: dict | None = None) -> str:
    """A collapsible MyST box: where the numbers of this page's run, the stored laptop run and the stored full
    run came from."""
    cols = {name: rows for name, rows in (("this page's run", provenance_rows(this_run)),
                                          ("stored laptop run", provenance_rows(laptop)),
                                          ("stored full run", provenance_rows(stored))) if rows}
    lines = [":::{admonition} Provenance: what produced the numbers on this page", ":class: dropdown", ""]
    if cols:
        labels = list(dict.fromkeys(k for rows in cols.values() for k in rows))
        lines += ["| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for label in labels:
            cells = [rows.get(label, "–") for rows in cols.values()]
            lines.append(f"| {label} | " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if this_run is None:
        lines += ["", "This page's run stored no result."]
    if stored is None:
        lines += ["", "No full-profile run of this chapter is stored in the repository yet."]
    lines += [":::", ""]
    return "\n".join(lines)
