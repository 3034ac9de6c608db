"""What every chapter shares (the contract itself, the names a chapter module defines, is written in
:mod:`dropnotes.experiments.contract`): the knob language, the config every chapter extends, the reading
of verdicts at a run's scale, storage with provenance, and seed blocks.

Every chapter's knobs are declared once with their types and ranges.

A chapter module declares ``KNOBS = Knobs(PROFILE, DEVICE, SEED, Knob(...), ...)``: one
:class:`Knob` per parameter of its notebook's ``parameters`` cell and of its ``configure``. The
declaration is what checks a value everywhere it can come from:

* ``configure(**values)`` calls ``KNOBS.check(...)`` first (the Python API, the notebook's first
  cell, ``dropnotes compute``);
* the command line parses ``-p NAME VALUE`` strings with :meth:`Knob.parse` and shows
  :meth:`Knob.type_text` in ``dropnotes list``;
* the notebook's first cell calls ``KNOBS.check_namespace(globals())``, so a papermill parameter
  that the chapter does not know stops the run there, naming the allowed ones.

Each refusal is a ``ValueError`` whose message starts with the parameter's name and states the
allowed values or range. A test checks that every notebook's parameters cell and every
``configure`` signature agree with the declaration.
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
import dataclasses
import functools
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dropnotes.runtime import DEVICES, PROFILES
from dropnotes.stats import shortfall
from dropnotes.verdict import RULES, judge
from dropnotes import data
from dropnotes.results import results_root
from dropnotes import results

SEED_MAX = 2**31 - 1  # seeds (and seed + n_seeds) stay in every generator's range (NumPy's is 2**32)
KINDS = ("int", "float", "str", "bool", "floats", "ints", "any")  # "any": a notebook without declared knobs


def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _interval(low, high, low_open, high_open) -> str:
    fmt = lambda v: f"{v:,}" if isinstance(v, int) else f"{v:g}"  # noqa: E731
    lo = "-inf" if low is None else fmt(low)
    hi = "inf" if high is None else fmt(high)
    return f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"


@dataclass(frozen=True)
class Knob:
    """One parameter of a chapter: its type, default, allowed values or range, and help text.

    ``default=None`` with ``profile_default=True`` means "the profile's value" (``PROFILE_DEFAULTS``).
    ``kind`` is one of ``int``, ``float``, ``str``, ``bool``, ``floats`` or ``ints`` (lists).
    """

    name: str
    kind: str
    default: Any
    help: str = ""
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    min_len: int = 1  # lists
    profile_default: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")

    # ------------------------------------------------------------------ describing
    def allowed(self) -> str:
        """The allowed values, in words (used in every refusal and in ``dropnotes list``)."""
        if self.choices:
            return "one of " + ", ".join(map(repr, self.choices))
        if self.kind == "bool":
            return "True or False"
        if self.kind == "str":
            return "a string"
        if self.kind == "any":
            return "a Python literal"
        noun = {"int": "an integer", "float": "a number", "ints": "integers", "floats": "numbers"}[self.kind]
        text = noun
        if self.low is not None or self.high is not None:
            text += " in " + _interval(self.low, self.high, self.low_open, self.high_open)
        if self.kind in ("ints", "floats"):
            text = f"a list of at least {self.min_len} {text} (e.g. {self._example()})"
        return text

    def type_text(self) -> str:
        base = {"floats": "list of float", "ints": "list of int"}.get(self.kind, self.kind)
        return f"{base} or None" if self.profile_default else base

    def _example(self) -> str:
        """A comma-separated example that this list knob accepts: its default, else two values from its range."""
        if isinstance(self.default, (list, tuple)) and len(self.default) >= self.min_len:
            return ",".join(f"{v:g}" for v in self.default)
        if self.kind == "ints":
            low = max(1, int(self.low or 0) + (1 if self.low_open else 0))
            return ",".join(str(low * 2 ** i) for i in range(max(2, self.min_len)))
        return "0,0.5" if self.low is None or self.low <= 0 <= (self.high or 1) else f"{self.low:g},{2 * self.low:g}"

    def refuse(self, value: Any, why: str | None = None) -> ValueError:
        if self.choices:
            return ValueError(f"{self.name}={value!r} is not allowed; choose one of "
                              f"{', '.join(map(repr, self.choices))}")
        return ValueError(f"{self.name} must be {why or self.allowed()}, got {value!r}")

    # ------------------------------------------------------------------ checking
    def _number(self, value: Any, integer: bool) -> int | float:
        value = _scalar(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.refuse(value)
        if integer:
            if isinstance(value, float):
                if not value.is_integer():
                    raise self.refuse(value)
                value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise self.refuse(value)
        lo_bad = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        hi_bad = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if lo_bad or hi_bad:
            raise self.refuse(value)
        return value

    def check(self, value: Any) -> Any:
        """The canonical form of ``value`` (ints as int, rates as float, lists as tuples), or ``ValueError``."""
        if value is None and (self.profile_default or self.default is None):
            return None
        if self.kind == "any":
            return value
        if self.kind == "bool":
            value = _scalar(value)
            if not isinstance(value, bool):
                raise self.refuse(value)
            return value
        if self.kind == "str":
            if not isinstance(value, str):
                raise self.refuse(value)
            if self.choices and value not in self.choices:
                raise self.refuse(value)
            return value
        if self.kind in ("int", "float"):
            out = self._number(value, self.kind == "int")
            if self.choices and out not in self.choices:
                raise self.refuse(value)
            return out
        # lists
        if isinstance(value, str):
            value = self.parse(value)
        if isinstance(value, torch.Tensor) or isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, (int, float, np.generic)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise self.refuse(value)
        if len(value) < self.min_len:
            raise self.refuse(list(value))
        try:
            return tuple(self._number(v, self.kind == "ints") for v in value)
        except ValueError:
            raise self.refuse(list(value) if isinstance(value, tuple) else value) from None

    def parse(self, raw: str) -> Any:
        """A command-line string as a typed value (``None`` for the profile's default); then :meth:`check`."""
        text = raw.strip()
        if text == "None" and (self.profile_default or self.default is None):
            return None
        if self.kind == "str":
            return self.check(raw)
        if self.kind == "any":
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return raw
        if self.kind == "bool":
            lowered = text.lower()
            if lowered in ("true", "false"):
                return self.check(lowered == "true")
            raise self.refuse(raw)
        if self.kind in ("floats", "ints"):
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = None
            if not isinstance(value, (list, tuple, int, float)) or isinstance(value, bool):
                parts = [v.strip() for v in text.strip("[]()").split(",")]
                if "" in parts:  # "0,,0.5": an empty element is a typo, never a value to skip
                    raise self.refuse(raw)
                try:
                    value = [float(v) if self.kind == "floats" else int(v) for v in parts]
                except ValueError:
                    raise self.refuse(raw) from None
            return self.check(value)
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            if text.lower() in ("nan", "inf", "-inf", "+inf"):
                value = float(text)
            else:
                raise self.refuse(raw) from None
        return self.check(value)


def _literal(value: Any) -> str:
    """A default as the parameters cell writes it: strings in double quotes, the rest as Python's repr."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def _fmt_default(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_fmt_default(v) for v in value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def inferred_knob(name: str, default: Any, help: str = "") -> Knob:
    """A knob typed like a notebook default, for notebooks whose chapter declares no ``KNOBS``."""
    if isinstance(default, bool):
        kind = "bool"
    elif isinstance(default, int):
        kind = "int"
    elif isinstance(default, float):
        kind = "float"
    elif isinstance(default, str):
        kind = "str"
    elif isinstance(default, (list, tuple)):
        kind = "floats"
    else:
        kind = "any"
    return Knob(name, kind, default, help, min_len=0)


class Knobs(Mapping):
    """A chapter's knobs, by name, in the order of its parameters cell."""

    def __init__(self, *knobs: Knob):
        self._knobs = {k.name: k for k in knobs}

    def __getitem__(self, name: str) -> Knob:
        return self._knobs[name]

    def __iter__(self):
        return iter(self._knobs)

    def __len__(self) -> int:
        return len(self._knobs)

    def comment(self, name: str, profile_defaults: Mapping[str, Mapping[str, Any]] | None = None) -> str:
        """The parameters cell's comment for knob ``name``: its help, then, for a knob whose default is the
        profile's, each run profile's value from ``profile_defaults`` (so that the comment cannot go stale)."""
        k = self._knobs[name]
        text = k.help
        if k.profile_default and profile_defaults:
            vals = [(prof, d[name]) for prof, d in profile_defaults.items() if prof != "smoke" and name in d]
            if vals:
                shown = "; ".join(f"{prof}: {_fmt_default(v)}" for prof, v in vals)
                text = f"{text} ({shown})" if text else shown
        return text

    def parameters_cell(self, profile_defaults: Mapping[str, Mapping[str, Any]] | None = None) -> str:
        """The notebook's papermill ``parameters`` cell, generated from the declaration: one line per knob,
        ``name = default  # comment`` (``dropnotes params CHAPTER --write`` puts it in the notebook; a test
        checks that every notebook's cell is this text)."""
        lines = []
        for name, k in self._knobs.items():
            default = None if k.profile_default else k.default
            value = list(default) if isinstance(default, tuple) else default
            text = self.comment(name, profile_defaults)
            if "=" in text:  # papermill's parser then fails to read the line
                raise ValueError(f"the help of knob {name!r} must not contain '=' (papermill cannot parse it): {text!r}")
            lines.append(f"{name} = {_literal(value)}" + (f"  # {text}" if text else ""))
        return "\n".join(lines)

    def defaults(self) -> dict[str, Any]:
        return {k.name: (None if k.profile_default else self.canonical_default(k)) for k in self._knobs.values()}

    @staticmethod
    def canonical_default(k: Knob) -> Any:
        return k.check(k.default) if k.default is not None else None

    def unknown(self, names: Iterable[str]) -> ValueError | None:
        bad = [n for n in names if n not in self._knobs]
        if not bad:
            return None
        return ValueError(f"unknown parameter {bad[0]!r}; allowed: {', '.join(self._knobs)}")

    def check(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Every given value in canonical form (unknown names refused), merged over the defaults."""
        if (err := self.unknown(values)) is not None:
            raise err
        out = self.defaults()
        for name, value in values.items():
            out[name] = self._knobs[name].check(value)
        return out

    def check_namespace(self, namespace: Mapping[str, Any]) -> None:
        """In a notebook's first cell: refuse a parameter that papermill injected but the chapter does
        not know (papermill itself only warns), and a results folder that cannot be written."""
        plain = (int, float, str, bool, list, dict, tuple, type(None))
        ipython = {"In", "Out", "exit", "quit", "get_ipython", "open"}
        names = [k for k, v in namespace.items()
                 if not k.startswith("_") and k not in ipython and isinstance(v, plain)]
        if (err := self.unknown(names)) is not None:
            raise err
        check_environment()


def check_environment() -> None:
    """What a run needs from its environment, checked before it starts: a writable results folder and,
    when ``DROPNOTES_DATA`` is set, a data folder that exists and is not empty (``ValueError``)."""

    check_results_writable()
    try:
        data.check_data_env()
    except data.DataError as err:
        raise ValueError(str(err)) from None


def check_results_writable(root: Path | None = None) -> Path:
    """Raise ``ValueError`` naming ``DROPNOTES_RESULTS`` unless the results folder can be written; at the
    start of a run, so that no training is lost to a save that cannot happen."""

    root = Path(root) if root is not None else results_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise ValueError(f"DROPNOTES_RESULTS={str(root)!r} is not a writable folder ({err.strerror or err}); "
                         "set it to a folder you can write") from None
    return root


def device_knob_check(value: Any) -> str:
    if isinstance(value, str) and (value in DEVICES or (value.startswith("cuda:") and value[5:].isdigit())):
        return value
    raise ValueError(f"device={value!r} is not allowed; choose one of {', '.join(map(repr, DEVICES))} "
                     "or 'cuda:N'")


class DeviceKnob(Knob):
    def check(self, value: Any) -> Any:
        return device_knob_check(value)

    def parse(self, raw: str) -> Any:
        return self.check(raw.strip())

    def allowed(self) -> str:
        return "one of " + ", ".join(map(repr, DEVICES)) + " or 'cuda:N'"


PROFILE = Knob("profile", "str", "auto", '"smoke" (seconds: does the environment work?), "quick" (2-core CPU, '
               'minutes: a pipeline check), "laptop" (2-core CPU, about 45 min: 3 seeds or more, each arm tested for '
               'convergence), "full" (one GPU, paper scale), "auto" (full when the chosen device is a GPU, else quick)',
               choices=PROFILES)
DEVICE = DeviceKnob("device", "str", "auto", '"auto", "cuda", "cuda:N", "mps" or "cpu"')
SEED = Knob("seed", "int", 0, "seed block: seeds seed*n_seeds ... seed*n_seeds + n_seeds - 1 are used", low=0, high=SEED_MAX)


def rate_knob(name: str, default: float | None, help: str = "", *, low_open: bool = False, high: float = 1.0,
         profile_default: bool = False) -> Knob:
    """A drop rate in [0, 1) (or (0, high))."""
    return Knob(name, "float", default, help, low=0.0, high=high, low_open=low_open, high_open=True,
                profile_default=profile_default)


def size_knob(name: str, help: str = "", *, low: int = 1, high: int | None = None) -> Knob:
    """A positive integer whose default is the profile's."""
    return Knob(name, "int", None, help, low=low, high=high, profile_default=True)


# ------------------------------------------------------------------------------ the config every chapter extends


@dataclass(frozen=True)
class ChapterConfig:
    """What every chapter's frozen config starts with. A chapter subclasses it with its own fields."""

    profile: str
    device: str
    seed: int

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
    """The config a stored run was made with (its ``params``, under their current names (:data:`RENAMED_PARAMS`);
    JSON lists back as tuples)."""
    from dataclasses import fields

    params = {RENAMED_PARAMS.get(k, k): v for k, v in record["params"].items()}
    return cls(**{f.name: tuple(params[f.name]) if isinstance(params.get(f.name), list) else params[f.name]
                  for f in fields(cls) if f.name in params})


def record_config(chapter: str, record: dict) -> ChapterConfig:
    """The config of ``chapter`` a stored run was made with (the chapter's one :class:`ChapterConfig` subclass,
    :func:`config_of`): what the page, the estimator and a chapter's ``rejudge`` rebuild from a record."""
    module = _chapter(chapter).module
    cls = next(v for v in vars(module).values() if isinstance(v, type) and issubclass(v, ChapterConfig)
               and v is not ChapterConfig and dataclasses.is_dataclass(v))
    return config_of(cls, record)


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


def check_seed_block(seed: int, n_seeds: int) -> None:
    """The seeds of block ``seed`` (see :attr:`ChapterConfig.seeds`) must all lie in the generators' range."""
    if seed * n_seeds + n_seeds - 1 > SEED_MAX:
        raise ValueError(f"seed must be <= {(SEED_MAX + 1) // n_seeds - 1} with n_seeds={n_seeds} "
                         f"(its block of seeds must end at or below {SEED_MAX}), got {seed}")


def _chapter(name: str):
    """The registered chapter ``name`` (:data:`dropnotes.experiments.REGISTRY`), or None (a test's stand-in, or a
    notebook-only chapter)."""
    # The one documented cycle-breaker: the registry imports every chapter and every chapter imports this module,
    # so the registry is imported at first use (chapter_code's digest does not follow it: results.module_sources).
    from dropnotes.experiments import REGISTRY

    ch = REGISTRY.get(name)
    return ch if ch is not None and ch.module is not None else None


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


def finish(chapter: str, cfg: ChapterConfig, defaults: dict, *, wall_s: float, dataset: str, metrics: dict,
           tables: dict, seeds: list[int] | None = None, **provenance_extra: Any) -> Path:
    """Store a chapter's result with its provenance, the profile's defaults beside the parameters
    (so that readers of the record need not import the chapter to tell what a run changed). Its verdict
    table must have been read at the run's scale (:func:`judged`)."""
    from dataclasses import asdict


    table = tables.get("verdicts")
    if isinstance(table, pd.DataFrame) and "outcome" not in table and _chapter(chapter) is not None:
        raise ValueError(f"{chapter}: the verdict table must be read at the run's scale (_base.judged) before it is stored")
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


def plain(facts: dict) -> dict:
    """``facts`` with NumPy scalars as Python numbers, so that myst-nb's ``{glue:text}`` can format them."""
    import numpy as np

    return {k: v.item() if isinstance(v, np.generic) else v for k, v in facts.items()}


SMOKE_LABEL = "smoke run, not evidence"


def label_smoke(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Mark a smoke run's verdicts, in place: they show that the code runs, not what it measures."""
    if "verdict" in verdicts:
        verdicts["verdict"] = [v if str(v).startswith(SMOKE_LABEL) else f"{SMOKE_LABEL} ({v})"
                               for v in verdicts["verdict"]]
    return verdicts


def stored_full(chapter: str) -> dict | None:
    """The committed full-profile result of ``chapter``, if one exists."""

    return results.load_result(chapter, "full")
