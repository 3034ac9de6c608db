"""The chapter contract: what one chapter gives the CLI, the page, the scorecard, the seed blocks and the cost
model, and :class:`Registry`, the type of the book's one list of chapters (:data:`dropnotes.experiments.REGISTRY`).

A chapter is a notebook under ``chapters/`` and, for every chapter of the book, a module of
``dropnotes.experiments`` that defines the names below. :class:`Chapter` checks them when it is built (a
missing one is named), and every consumer reaches a chapter's code through it, never by importing a chapter
by name. Adding a chapter: write the module and the notebook, add one line to the registry in
``dropnotes/experiments/__init__.py`` and one to ``_toc.yml`` (``docs/contributing.md`` walks through it).

Required of a chapter module:

``KNOBS``
    its parameters (:class:`~dropnotes.experiments.knobs.Knobs`, ``Knobs.of`` its config type, whose knob fields
    declare them once): the CLI, the sweep and the notebook's parameters cell read them.
``configure(**params)``
    the run's config (a :class:`~dropnotes.experiments._base.ChapterConfig`), every argument checked
    (``KNOBS.configurer`` generates it).
``run(cfg)``
    trains and measures, stores the record (``store.finish``) and returns what the notebook shows.
``verdicts(...)``
    the chapter's claims judged by the book's rules (called by ``run`` and by ``rejudge``).
``rejudge(record)``
    the verdict table of a stored record recomputed by the current rules from its stored numbers.
``PROTOCOL``, ``PROTOCOL_CHANGES``
    the version of what the chapter measures, and what each version changed (a record of an older one is
    superseded).
``PROFILE_DEFAULTS``
    profile name -> the sizes of its runs (``smoke``, ``quick``, ``laptop``, ``full``).
``PAPER_SETTINGS``, ``measured_setting(cfg)``
    the papers' settings and this run's, which :func:`dropnotes.stats.shortfall` compares to read a verdict
    at the run's scale.
``scale_points(tables)``, ``SCALE_AXIS``
    the quantities plotted against scale on the page (a frame of ``quantity``, ``value``, ``sd``), and the
    axis label and scale.

Required of a chapter's cost module (``dropnotes.experiments.costs.<name>``, which imports the chapter; kept apart
so that a change to the cost model leaves the chapter's code digest, and so its stored seed blocks, unchanged):

``groups(cfg)``
    the cost model's model groups of a run (:class:`dropnotes.costmodel.Group` rows, steps counted on the
    meta device): ``dropnotes estimate`` and the run's predicted wall time read them.

Optional (the default in brackets): ``PAPER_POINTS`` ({}) and ``PAPER_POINTS_LABEL`` ("paper"), the
papers' values on the scale plot, with ``scale_panel``, ``PAPER_PANEL`` and ``SCALE_PANEL_TITLE`` for a
plot in panels; ``LAPTOP_NEEDS_GPU`` (False), true where no laptop setting can test the claims;
``merge_blocks(cfg, records)`` (None: the chapter cannot run in seed blocks); ``REJUDGE_FROM`` (``PROTOCOL``), the
first protocol whose records ``rejudge`` can read. In the cost module: ``timed_steps(cfg)`` ([]), the batched training steps
that carry the predicted time, each built on a device to be timed (:class:`dropnotes.costmodel.TimedStep`);
``compare_steps(cfg, generator)`` ([]), the engine's steps against the same models trained one at a time
(``dropnotes estimate --compare``); ``sequential_groups(cfg)`` (None), the groups of the chapter as it ran
before the batched engine; ``calibration_points(cfg, record)`` (a stored full run's wall time against
``groups``), what a stored GPU run measured that the time model predicts.

A notebook-only chapter (``module=None``: a notebook the CLI runs and sweeps by papermill, its knobs read
from its parameters cell) has none of these; tests use such chapters.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any

REQUIRED = ("KNOBS", "configure", "run", "verdicts", "rejudge", "PROTOCOL", "PROTOCOL_CHANGES", "PROFILE_DEFAULTS",
            "PAPER_SETTINGS", "measured_setting", "scale_points", "SCALE_AXIS")
COSTS_REQUIRED = ("groups",)


@dataclasses.dataclass(frozen=True)
class Chapter:
    """One chapter of the book: its name (the CLI's and the results folder's), title, notebook (relative to the
    repository root), module and cost module (see the module docstring for what each must define; the cost module
    defaults to the module; both None for a notebook-only chapter). Its members are read from the modules when
    asked for, so a test that patches a module is seen."""

    name: str
    title: str
    notebook: str
    module: ModuleType | None = None
    costs: ModuleType | None = None

    def __post_init__(self) -> None:
        if self.module is None:
            return
        for mod, names in ((self.module, REQUIRED), (self.cost_module, COSTS_REQUIRED)):
            missing = [n for n in names if not hasattr(mod, n)]
            if missing:
                raise TypeError(f"chapter {self.name!r}: module {mod.__name__} lacks {', '.join(missing)} "
                                "(the chapter contract: dropnotes/experiments/contract.py)")

    @property
    def cost_module(self) -> ModuleType | None:
        """Where the chapter's cost-model members live (:attr:`costs`, else :attr:`module`)."""
        return self.costs if self.costs is not None else self.module

    def _get(self, name: str, default: Any = None) -> Any:
        return default if self.module is None else getattr(self.module, name, default)

    def _cost(self, name: str) -> Any:
        return None if self.cost_module is None else getattr(self.cost_module, name, None)

    def _need(self) -> ModuleType:
        if self.module is None:
            raise TypeError(f"chapter {self.name!r} is a notebook without a module: it has no configure, run or cost "
                            "model (dropnotes/experiments/contract.py)")
        return self.module

    # the run
    @property
    def knobs(self):
        return self._get("KNOBS")

    @property
    def configure(self) -> Callable:
        return self._need().configure

    @property
    def run(self) -> Callable:
        return self._need().run

    @property
    def profile_defaults(self) -> dict:
        return self._get("PROFILE_DEFAULTS", {})

    # the verdicts and their scale
    @property
    def protocol(self) -> int:
        return int(self._get("PROTOCOL", 1))

    @property
    def protocol_changes(self) -> dict[int, str]:
        return dict(self._get("PROTOCOL_CHANGES", {}))

    @property
    def rejudge(self) -> Callable | None:
        return self._get("rejudge")

    @property
    def rejudge_from(self) -> int:
        """The first protocol whose records :attr:`rejudge` can read (by default the current one)."""
        return int(self._get("REJUDGE_FROM", self.protocol))

    @property
    def paper_settings(self) -> dict:
        return self._get("PAPER_SETTINGS", {})

    @property
    def measured_setting(self) -> Callable:
        return self._need().measured_setting

    @property
    def laptop_needs_gpu(self) -> bool:
        return bool(self._get("LAPTOP_NEEDS_GPU", False))

    @property
    def merge_blocks(self) -> Callable | None:
        return self._get("merge_blocks")

    # the page's scale plot
    @property
    def scale_points(self) -> Callable:
        return self._need().scale_points

    @property
    def scale_axis(self) -> tuple[str, str]:
        return self._get("SCALE_AXIS", ("value", "linear"))

    @property
    def paper_points(self) -> dict:
        return dict(self._get("PAPER_POINTS", {}))

    @property
    def paper_points_label(self) -> str:
        return self._get("PAPER_POINTS_LABEL", "paper")

    @property
    def scale_panel(self) -> Callable | None:
        """``scale_panel(label, live) -> key``: the panel of a series, for runs on scales that are not comparable."""
        return self._get("scale_panel")

    @property
    def paper_panel(self) -> Any:
        return self._get("PAPER_PANEL")

    @property
    def scale_panel_title(self) -> str:
        return self._get("SCALE_PANEL_TITLE", "{}")

    # the cost model
    def groups(self, cfg) -> list:
        """The model groups of a run with ``cfg`` (:class:`dropnotes.costmodel.Group` rows)."""
        self._need()
        return self.cost_module.groups(cfg)

    def timed_steps(self, cfg) -> list:
        """The batched training steps that carry the predicted time (:class:`dropnotes.costmodel.TimedStep`)."""
        fn = self._cost("timed_steps")
        return [] if fn is None else fn(cfg)

    def compare_steps(self, cfg, generator) -> list:
        """(name, K, batch, one step of the K models one at a time, one batched step), built here on the CPU."""
        fn = self._cost("compare_steps")
        return [] if fn is None else fn(cfg, generator)

    @property
    def has_compare_steps(self) -> bool:
        return self._cost("compare_steps") is not None

    @property
    def sequential_groups(self) -> Callable | None:
        return self._cost("sequential_groups")

    def calibration_points(self, cfg, record: dict) -> list[dict]:
        """What a stored full run (``record``, made with ``cfg``) measured that the time model predicts: dicts of
        ``what``, ``measured`` and ``predict(fraction, launch_s)``; by default its wall time against :meth:`groups`."""
        fn = self._cost("calibration_points")
        if fn is not None:
            return fn(cfg, record)
        found = self.groups(cfg)
        return [{"what": "wall time (s)", "measured": record["provenance"]["wall_time_s"],
                 "predict": lambda f, c: sum(g.predicted_s(f, c) for g in found)}]


class Registry(Mapping[str, Chapter]):
    """The chapters of the book in its order, by name. ``registry[name]`` raises a ``KeyError`` that names the
    chapters; :meth:`temporarily` adds (or, with ``only=True``, substitutes) chapters inside a ``with`` block."""

    def __init__(self, chapters: list[Chapter]):
        self._chapters = {c.name: c for c in chapters}

    def __getitem__(self, name: str) -> Chapter:
        try:
            return self._chapters[name]
        except KeyError:
            raise KeyError(f"unknown chapter {name!r}; choose one of {', '.join(self._chapters)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._chapters)

    def __len__(self) -> int:
        return len(self._chapters)

    def __contains__(self, name: object) -> bool:
        return name in self._chapters

    def with_modules(self) -> list[Chapter]:
        """The chapters that have a module (every chapter of the book; not a notebook-only test chapter)."""
        return [c for c in self._chapters.values() if c.module is not None]

    @contextlib.contextmanager
    def temporarily(self, *chapters: Chapter, only: bool = False):
        """Inside the block, ``chapters`` are registered too (``only=True``: instead of the book's)."""
        saved = dict(self._chapters)
        if only:
            self._chapters.clear()
        self._chapters.update({c.name: c for c in chapters})
        try:
            yield self
        finally:
            self._chapters.clear()
            self._chapters.update(saved)
