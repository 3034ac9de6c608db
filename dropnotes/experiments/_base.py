"""What every chapter builds on (the contract itself, the names a chapter module defines, is written in
:mod:`dropnotes.experiments.contract`): the config every chapter extends, the config a stored run was made with,
and the lookup of a registered chapter. The rest of what the chapters share sits beside it, one concern a module:
:mod:`~dropnotes.experiments.knobs` (parameters), :mod:`~dropnotes.experiments.judging` (verdicts read at a run's
scale and protocol) and :mod:`~dropnotes.experiments.store` (records with provenance, seed blocks)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar
from dataclasses import dataclass, field

import numpy as np
import torch

from dropnotes.experiments.knobs import DEVICE, PROFILE, SEED


# ------------------------------------------------------------------------------ the config every chapter extends


@dataclass(frozen=True)
class ChapterConfig:
    """What every chapter's frozen config starts with. A chapter subclasses it with its own fields."""

    # a chapter's own renamed fields (old name -> new): config_of reads a stored run's params through them, beside
    # the book-wide RENAMED_PARAMS
    RENAMED: ClassVar[Mapping[str, str]] = {}

    profile: str = field(metadata={"knob": PROFILE})
    device: str = field(metadata={"knob": DEVICE})
    seed: int = field(metadata={"knob": SEED})

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def seeds(self) -> list[int]:
        """The seeds of this run: block ``seed`` of ``n_seeds`` consecutive seeds, ``seed * n_seeds`` to
        ``seed * n_seeds + n_seeds - 1``, so that ``dropnotes sweep -p seed 1,2,3`` runs disjoint blocks
        ({3,4,5}, {6,7,8}, ... with 3 seeds) and seed 0 is always {0, ..., n_seeds - 1}."""
        n = int(getattr(self, "n_seeds", 1))
        return [self.seed * n + k for k in range(n)]


# Parameters renamed since runs were stored (old name -> new), so that a stored run still yields its config.
RENAMED_PARAMS = {"input_p": "p_input"}


def config_of(cls: type, record: dict):
    """The config a stored run was made with (its ``params``, under their current names (:data:`RENAMED_PARAMS` and
    the config's own ``RENAMED``); JSON lists back as tuples)."""
    from dataclasses import fields

    renamed = {**RENAMED_PARAMS, **cls.RENAMED}
    params = {renamed.get(k, k): v for k, v in record["params"].items()}
    return cls(**{f.name: tuple(params[f.name]) if isinstance(params.get(f.name), list) else params[f.name]
                  for f in fields(cls) if f.name in params})


def record_config(chapter: str, record: dict) -> ChapterConfig:
    """The config of ``chapter`` a stored run was made with (the chapter's one :class:`ChapterConfig` subclass,
    :func:`config_of`): what the page, the estimator and a chapter's ``rejudge`` rebuild from a record."""
    module = _chapter(chapter).module
    cls = next(v for v in vars(module).values() if isinstance(v, type) and issubclass(v, ChapterConfig)
               and v is not ChapterConfig and dataclasses.is_dataclass(v))
    return config_of(cls, record)


def _chapter(name: str):
    """The registered chapter ``name`` (:data:`dropnotes.experiments.REGISTRY`), or None (a test's stand-in, or a
    notebook-only chapter)."""
    # The one documented cycle-breaker: the registry imports every chapter and every chapter imports this module,
    # so the registry is imported at first use (chapter_code's digest does not follow it: results.module_sources).
    from dropnotes.experiments import REGISTRY

    ch = REGISTRY.get(name)
    return ch if ch is not None and ch.module is not None else None


def plain(facts: dict) -> dict:
    """``facts`` with NumPy scalars as Python numbers, so that myst-nb's ``{glue:text}`` can format them."""

    return {k: v.item() if isinstance(v, np.generic) else v for k, v in facts.items()}
