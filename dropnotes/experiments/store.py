"""Storing a chapter's run with its provenance (:func:`finish`) and running a chapter in seed blocks that
resume and merge across sessions (:func:`run_in_blocks`, :func:`once_per_run`), keyed by the chapter's code digest
(:func:`chapter_code`)."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import pandas as pd

from dropnotes.verdict import RULES
from dropnotes import results
from dropnotes.experiments._base import ChapterConfig, _chapter
from dropnotes.experiments.judging import label_smoke, protocol


def finish(chapter: str, cfg: ChapterConfig, defaults: dict, *, wall_s: float, dataset: str, metrics: dict,
           tables: dict, seeds: list[int] | None = None, **provenance_extra: Any) -> Path:
    """Store a chapter's result with its provenance, the profile's defaults beside the parameters
    (so that readers of the record need not import the chapter to tell what a run changed). Its verdict
    table must have been read at the run's scale (:func:`judged`)."""
    from dataclasses import asdict


    table = tables.get("verdicts")
    if isinstance(table, pd.DataFrame) and "outcome" not in table and _chapter(chapter) is not None:
        raise ValueError(f"{chapter}: the verdict table must be read at the run's scale (judging.judged) before it is stored")
    if cfg.profile == "smoke" and isinstance(table, pd.DataFrame):
        label_smoke(table)
    prov = results.provenance(cfg.device, seeds if seeds is not None else cfg.seeds, wall_s, dataset,
                              protocol=protocol(chapter), rules=RULES, code_sha256=chapter_code(chapter),
                              **({"predicted_wall_s": _PREDICTED.get()} if _PREDICTED.get() is not None else {}),
                              **provenance_extra)
    return results.save_result(chapter, cfg.profile, params=asdict(cfg), metrics=metrics, provenance=prov,
                               tables=tables, defaults=defaults.get(cfg.profile, {}), path=_BLOCK_PATH.get())


# The wall time predicted for the run before it started (dropnotes compute, on a CPU), stored by finish() beside the
# measured one (None: no prediction was made).
_PREDICTED: contextvars.ContextVar[float | None] = contextvars.ContextVar("predicted_wall_s", default=None)


@contextlib.contextmanager
def predicted_wall(seconds: float | None):
    """While a run made inside it stores its record, :func:`finish` writes ``seconds`` as its predicted wall time."""
    token = _PREDICTED.set(seconds)
    try:
        yield
    finally:
        _PREDICTED.reset(token)


# Where finish() writes while run_in_blocks() runs one seed block (None: the profile's record).
_BLOCK_PATH: contextvars.ContextVar[Path | None] = contextvars.ContextVar("block_path", default=None)


# The registry (dropnotes/experiments/__init__.py) imports every chapter: its file counts in a chapter's code digest,
# its imports do not (results.module_sources).
CODE_OPAQUE = ("dropnotes.experiments",)


@functools.cache
def chapter_code(chapter: str) -> str:
    """The digest of the code ``chapter``'s run depends on (:func:`dropnotes.results.module_digest` of its module),
    taken once per process, at its first use (a run in blocks takes it before its first block)."""
    return results.module_digest(f"dropnotes.experiments.{chapter}", opaque=CODE_OPAQUE)


def _same_run(block: dict, want: dict, chapter: str) -> bool:
    """Whether a stored block record was made by this protocol and the same chapter code (its module and what it
    imports: :func:`chapter_code`; a block stored before that digest existed, by the same package) with these
    parameters."""
    prov = block["provenance"]
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in want.items()}
    same_code = (prov["code_sha256"] == chapter_code(chapter) if "code_sha256" in prov else
                 prov.get("source_sha256") == results.CODE_AT_IMPORT["source_sha256"])
    return int(prov.get("protocol", 1)) == protocol(chapter) and same_code and block["params"] == params


def once_per_run(chapter: str, cfg: ChapterConfig, name: str, compute):
    """``compute()`` for a step of ``chapter``'s run that no seed enters (a pilot that chooses a learning rate on its
    own seed, say): outside a run in blocks, computed; inside one, computed by the first block and stored beside
    the blocks (``<profile>.blocks/<name>.json``, with the parameters other than the seeds, the protocol and the
    chapter code), then read back by every later block, in this session or another, so that the blocks share it
    and it is paid once. ``compute`` returns anything :func:`dropnotes.results.to_jsonable` stores (tables,
    numbers), and gets it back as stored."""
    path = _BLOCK_PATH.get()
    if path is None:
        return compute()
    path = path.with_name(f"{name}.json")
    key = {"params": {k: v for k, v in results.to_jsonable(dataclasses.asdict(cfg)).items()
                      if k not in ("seed", "n_seeds")},
           "protocol": protocol(chapter), "code_sha256": chapter_code(chapter)}
    kept = results.load_json_result(path)
    if kept is not None and kept.get("key") == key:
        return kept["value"]
    value = compute()
    results.atomic_write_text(path, json.dumps(results.to_jsonable({"key": key, "value": value}), indent=1))
    return results.load_json_result(path)["value"]  # as stored, so every block reads the same values


def run_in_blocks(chapter: str, cfg: ChapterConfig, log=print) -> dict:
    """Run ``cfg``'s seeds one at a time, each seed block a run of its own (:func:`dataclasses.replace` with
    ``seed=s, n_seeds=1``, so block ``s`` uses seed ``s``) stored under :func:`dropnotes.results.block_path`; a
    block already stored by the same protocol, code and parameters is kept, not rerun (an interrupted run
    resumes where it stopped). When every block is there, the chapter's ``merge_blocks(cfg, records)`` makes
    one record of them (tables over all seeds, verdicts judged again), stored as the profile's result with each
    block's provenance. Returns the merged record."""
    ch = _chapter(chapter)
    chapter_code(chapter)  # the code the blocks run, named before the first one starts
    if ch is None or ch.merge_blocks is None:
        raise ValueError(f"{chapter}: this chapter cannot be run in seed blocks yet (its verdicts need more than its "
                         "stored tables: it has no merge_blocks); run it whole")
    blocks = []
    for s in cfg.seeds:
        block_cfg = dataclasses.replace(cfg, seed=s, n_seeds=1)
        path = results.block_path(chapter, cfg.profile, s)
        kept = results.load_json_result(path)
        if kept is not None and _same_run(kept, dataclasses.asdict(block_cfg), chapter):
            log(f"{chapter}: seed block {s} kept from {path}")
        else:
            if kept is not None:  # say why a stored block is not kept: other code, protocol or parameters
                prov = kept["provenance"]
                log(f"{chapter}: the stored seed block {s} ({path}) was made by commit {prov.get('commit')}, protocol "
                    f"{prov.get('protocol', 1)}, chapter code {prov.get('code_sha256', 'unrecorded')} (now "
                    f"{chapter_code(chapter)}), or other parameters: it is run again")
            log(f"{chapter}: seed block {s} of {cfg.seeds}")
            token = _BLOCK_PATH.set(path)
            whole = _PREDICTED.get()  # a block's prediction: its share of the whole run's
            try:
                with predicted_wall(None if whole is None else whole / len(cfg.seeds)):
                    ch.run(block_cfg)
            finally:
                _BLOCK_PATH.reset(token)
            kept = results.load_json_result(path)
        blocks.append(kept)
    merged = ch.merge_blocks(cfg, blocks)
    prov = [b["provenance"] for b in blocks]
    merged["path"] = finish(chapter, cfg, ch.profile_defaults, wall_s=sum(p["wall_time_s"] for p in prov),
                            dataset=prov[0]["dataset"], metrics=merged["metrics"], tables=merged["tables"],
                            **merged.get("provenance", {}),  # what the chapter stores beside (a corpus's vocabulary)
                            blocks=[{k: p.get(k) for k in ("seeds", "commit", "source_sha256", "code_sha256", "created",
                                                            "wall_time_s", "cpu", "predicted_wall_s")}
                                    for p in prov])
    return merged


def stored_full(chapter: str) -> dict | None:
    """The committed full-profile result of ``chapter``, if one exists."""

    return results.load_result(chapter, "full")
