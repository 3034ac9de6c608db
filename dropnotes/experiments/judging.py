"""Reading a chapter's verdicts: at the run's scale against the paper's settings the chapter declares
(:func:`judged`, the one place), and a stored record's verdicts under the chapter's current protocol and the book's
current rules (:func:`current_verdicts`: kept, judged again, superseded or not judged)."""

from __future__ import annotations

import pandas as pd

from dropnotes.stats import shortfall
from dropnotes.verdict import RULES, judge
from dropnotes.experiments._base import ChapterConfig, _chapter


def current_verdicts(chapter: str, record: dict | None) -> tuple[pd.DataFrame | None, str]:
    """The verdicts of a stored run as the chapter's current rules read them, and a note on how:

    * a run of the current protocol judged by the current rules (:data:`dropnotes.verdict.RULES`): its stored
      (judged) table, note ``""``;
    * else, where the chapter can judge the record again from its stored numbers (its module's
      ``rejudge(record)``): the recomputed table, note ``"recomputed ..."``; a row whose numbers the record lacks
      reads *not judged* there, never the old rule;
    * else, a run made by an older protocol: the stored table with every verdict read *superseded (protocol M)*;
    * else (the current protocol, older rules, no ``rejudge``): every verdict reads *not judged*, with the old
      rule's reading kept in brackets."""
    if record is None:
        return None, ""
    table = record.get("tables", {}).get("verdicts")
    prov = record["provenance"]
    made, now = int(prov.get("protocol", 1)), protocol(chapter)
    rules = int(prov.get("rules", 1))
    if made >= now and rules >= RULES and table is not None and "outcome" in table:
        return table, ""
    ch = _chapter(chapter)
    # a chapter judges again the records of the protocols whose training its current one keeps (REJUDGE_FROM: the
    # oldest such; default, only its current protocol)
    if ch is not None and ch.rejudge is not None and made >= ch.rejudge_from:
        try:
            return ch.rejudge(record), (f"verdicts recomputed from the stored numbers with protocol {now}'s rules"
                                            f" (rules {RULES})")
        except (KeyError, TypeError, ValueError, AttributeError):
            pass  # the record lacks what the current rules read
    if table is None:
        return None, ""
    out = table.copy()
    out["rule_verdict"] = out["verdict"]
    if made < now:
        changes = protocol_changes(chapter)
        what = "; ".join(f"protocol {v}: {changes[v]}" for v in sorted(changes) if made < v <= now)
        out["verdict"] = [f"superseded (protocol {made}; it read: {v})" for v in out["verdict"]]
        out["outcome"] = "superseded"
        out["scale"] = "superseded"
        return out, f"superseded: made by protocol {made}, the chapter is at protocol {now}" + (f" ({what})" if what else "")
    out["verdict"] = [f"not judged (the record was judged by the book's rules {rules}, superseded by rules {RULES}, "
                      f"and lacks what they read; the old rule read: {v})" for v in out["verdict"]]
    out["outcome"] = "not judged"
    return out, f"not judged: judged by rules {rules}; the current rules are {RULES}"


def scale_cuts(chapter: str, cfg: ChapterConfig) -> dict[str, list[str]]:
    """What a run of ``chapter`` with ``cfg`` falls short of, against each of the paper settings the chapter
    declares once (its module's ``PAPER_SETTINGS``: setting name -> the paper's values, compared with
    ``measured_setting(cfg)`` by :func:`dropnotes.stats.shortfall`)."""
    ch = _chapter(chapter)
    settings = ch.paper_settings if ch is not None else None
    if not settings:
        raise ValueError(f"chapter {chapter!r} declares no PAPER_SETTINGS: its verdicts cannot be read at a scale")
    measured = ch.measured_setting(cfg)
    return {name: shortfall(measured, paper) for name, paper in settings.items()}


def judged(chapter: str, cfg: ChapterConfig, table: pd.DataFrame) -> pd.DataFrame:
    """``table``'s rule verdicts read at the run's scale (:func:`dropnotes.verdict.judge`): the one place where a
    chapter's verdicts learn what a run below the paper's setting may claim."""
    return judge(table, scale_cuts(chapter, cfg), int(getattr(cfg, "n_seeds", 1)))


def protocol(chapter: str) -> int:
    """The version of ``chapter``'s protocol (its module's ``PROTOCOL``), stored with every result: a stored
    run of an older version measured something the chapter no longer does (the scorecard says so)."""
    ch = _chapter(chapter)
    return 1 if ch is None else ch.protocol


def protocol_changes(chapter: str) -> dict[int, str]:
    """What each protocol version of ``chapter`` changed (its module's ``PROTOCOL_CHANGES``: version -> words),
    for the caption of a stored run that an older protocol made."""
    ch = _chapter(chapter)
    return {} if ch is None else ch.protocol_changes


SMOKE_LABEL = "smoke run, not evidence"


def label_smoke(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Mark a smoke run's verdicts, in place: they show that the code runs, not what it measures."""
    if "verdict" in verdicts:
        verdicts["verdict"] = [v if str(v).startswith(SMOKE_LABEL) else f"{SMOKE_LABEL} ({v})"
                               for v in verdicts["verdict"]]
    return verdicts
