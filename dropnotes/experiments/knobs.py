"""The knob language: every chapter's parameters, declared once with their types and ranges, and the shared
knobs (``profile``, ``device``, ``seed``).

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
import math
import os
import tempfile
import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dropnotes.runtime import DEVICES, PROFILES, profile_config, select_device
from dropnotes import data
from dropnotes.results import results_root


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

    @classmethod
    def of(cls, config: type) -> "Knobs":
        """The knobs a chapter's config type declares: every field made by :func:`knob` (or the shared
        ``profile``, ``device``, ``seed`` of :class:`~dropnotes.experiments._base.ChapterConfig`), named by its
        field, in field order. The one declaration of a knob is its field."""
        return cls(*(dataclasses.replace(f.metadata["knob"], name=f.name) for f in dataclasses.fields(config)
                     if "knob" in f.metadata))

    def take(self, namespace: Mapping[str, Any]) -> dict[str, Any]:
        """A notebook's parameters, from its namespace, for ``configure(**KNOBS.take(globals()))``: a parameter
        that papermill injected but the chapter does not know is refused first (:meth:`check_namespace`)."""
        self.check_namespace(namespace)
        return {name: namespace[name] for name in self._knobs if name in namespace}

    def configurer(self, config: type, profile_defaults: Mapping[str, Mapping[str, Any]],
                   derive: Callable[[dict, str, Any], dict | None] | None = None) -> Callable[..., Any]:
        """The chapter's ``configure``, generated: its signature is the knobs with their defaults (``None``: the
        profile's value); it checks every value (:meth:`check`), picks the device, takes the profile's values
        (:func:`dropnotes.runtime.profile_config`) with every given knob over them, lets ``derive(values,
        profile, device)`` check what spans several knobs and add the fields no knob sets (in place, or by
        returning a new dict), checks the seed block and returns the frozen ``config``."""
        params = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
                  for name, default in self.defaults().items()]
        signature = inspect.Signature(params, return_annotation=config)

        def configure(*args, **kwargs):
            if (err := self.unknown(kwargs)) is not None:
                raise err
            return self.build(config, profile_defaults, signature.bind(*args, **kwargs).arguments, derive)

        configure.__signature__ = signature
        configure.__name__ = configure.__qualname__ = "configure"
        configure.__module__ = config.__module__
        configure.__doc__ = (f"Check the parameters and fill in the profile's defaults (``None``: the profile's value):"
                             f" a :class:`{config.__name__}`. The knobs: " + ", ".join(self._knobs) + ".")
        return configure

    def build(self, config: type, profile_defaults: Mapping[str, Mapping[str, Any]], values: Mapping[str, Any],
              derive: Callable[[dict, str, Any], dict | None] | None = None) -> Any:
        """What a generated ``configure`` (:meth:`configurer`) does with the given ``values``."""
        v = self.check(values)
        device = select_device(v["device"])
        sizes = [n for n, k in self._knobs.items() if k.profile_default and k.kind == "int"]
        profile, d = profile_config(v["profile"], profile_defaults, device, **{n: v[n] for n in sizes})
        for name, k in self._knobs.items():
            if name not in SHARED and name not in sizes and (not k.profile_default or v[name] is not None):
                d[name] = v[name]
        if derive is not None:
            d = derive(d, profile, device) or d
        check_seed_block(v["seed"], d.get("n_seeds", 1))
        return config(profile=profile, device=str(device), seed=v["seed"], **d)

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


SHARED = ("profile", "device", "seed")  # the knobs of every chapter (ChapterConfig's fields)


def knob(kind: str, default: Any = None, help: str = "", *, field_default: Any = dataclasses.MISSING,
         **limits: Any) -> Any:
    """A field of a chapter's config that is also one of its knobs, declared once: the field's name is the knob's,
    its type ``kind`` and ``default`` (``profile_default=True``: the profile's value), ``help`` and limits as
    :class:`Knob`'s. The field itself has no default unless ``field_default`` gives one (a record stored before
    the field existed then reads it)."""
    return dataclasses.field(default=field_default, metadata={"knob": Knob("", kind, default, help, **limits)})


def rate_knob(default: float | None, help: str = "", *, low_open: bool = False, high: float = 1.0,
              profile_default: bool = False, field_default: Any = dataclasses.MISSING) -> Any:
    """A drop rate in [0, 1) (or (0, high)): a config field and knob (:func:`knob`)."""
    return knob("float", default, help, low=0.0, high=high, low_open=low_open, high_open=True,
                profile_default=profile_default, field_default=field_default)


def size_knob(help: str = "", *, low: int = 1, high: int | None = None) -> Any:
    """A positive integer whose default is the profile's: a config field and knob (:func:`knob`)."""
    return knob("int", None, help, low=low, high=high, profile_default=True)


def check_seed_block(seed: int, n_seeds: int) -> None:
    """The seeds of block ``seed`` (see :attr:`ChapterConfig.seeds`) must all lie in the generators' range."""
    if seed * n_seeds + n_seeds - 1 > SEED_MAX:
        raise ValueError(f"seed must be <= {(SEED_MAX + 1) // n_seeds - 1} with n_seeds={n_seeds} "
                         f"(its block of seeds must end at or below {SEED_MAX}), got {seed}")
