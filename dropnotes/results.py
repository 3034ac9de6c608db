"""A small store of chapter results, with provenance.

A run writes ``<root>/<chapter>/<profile>.json`` atomically (a temporary file, then
``os.replace``), so an interrupted run never leaves a half-written result. ``<root>`` is
``$DROPNOTES_RESULTS`` if set, else the repository's ``results/`` folder, which holds the
committed full-profile (GPU) results that the book shows beside a CPU run.
"""

from __future__ import annotations

import ast
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import dropnotes
from dropnotes.runtime import RUN_PROFILES, atomic_write, check_choice, device_name
from dropnotes import data

REPO_ROOT = Path(__file__).resolve().parents[1]
REPO_RESULTS = REPO_ROOT / "results"


def results_root() -> Path:
    """Where results are written: ``$DROPNOTES_RESULTS``, else ``<repo>/results``."""
    env = os.environ.get("DROPNOTES_RESULTS")
    return Path(env).expanduser() if env else REPO_RESULTS


def checkpoint_dir() -> Path:
    """Where model checkpoints are cached: ``$DROPNOTES_CHECKPOINTS``, else ``<repo>/runs/checkpoints``
    (not committed)."""
    env = os.environ.get("DROPNOTES_CHECKPOINTS")
    return Path(env).expanduser() if env else REPO_ROOT / "runs" / "checkpoints"


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, text)  # the one atomic writer, dropnotes.runtime.atomic_write


def save_checkpoint(state_dict: dict[str, torch.Tensor], meta: dict, path: Path) -> Path:
    """Save tensors (``path``, loadable with ``torch.load(weights_only=True)``) and their metadata as JSON
    beside them (``path`` with ``.json``), each atomically. No pickled Python objects: a file dropped into
    the cache folder cannot run code when it is loaded."""
    import io

    path = Path(path)
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    atomic_write(path.with_suffix(".json"), json.dumps(to_jsonable(meta), indent=1, sort_keys=True))
    atomic_write(path, buf.getvalue())
    return path


def load_checkpoint(path: Path, map_location: Any = None) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The tensors and metadata saved by :func:`save_checkpoint`, or None if either file is missing.
    Tensors are loaded with ``weights_only=True``."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not (path.is_file() and meta_path.is_file()):
        return None
    state = torch.load(path, map_location=map_location, weights_only=True)
    return state, json.loads(meta_path.read_text())


def git_commit() -> str:
    """The repository's commit (with ``-dirty`` when the tree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def source_digest(root: Path | None = None) -> str:
    """SHA-256 (first 16 hex digits) of the package's ``.py`` files, path and content, in sorted order:
    names the code that ran even where git metadata is missing or stale (e.g. a tree copied to a GPU machine)."""
    root = Path(root) if root is not None else Path(dropnotes.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def module_digest(name: str, root: Path | None = None, opaque: tuple[str, ...] = ()) -> str:
    """SHA-256 (first 16 hex digits) of the ``.py`` files of package module ``name`` (``dropnotes.x.y``) and of every
    package module it imports, directly or through others (:func:`module_sources`): the code a chapter's run depends
    on. A seed block is kept when this digest, not the whole package's, is unchanged, so that a change to another
    chapter, the page or the estimator between sessions leaves a chapter's stored blocks usable. ``opaque``: see
    :func:`module_sources`."""
    h = hashlib.sha256()
    for mod, path in sorted(module_sources(name, root, opaque).items()):
        h.update(mod.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def module_sources(name: str, root: Path | None = None, opaque: tuple[str, ...] = ()) -> dict[str, Path]:
    """Package module ``name`` and every package module it imports, directly or through others, with their files
    (read from the source, not from what is loaded; a package's ``__init__`` counts for its modules). A module
    in ``opaque`` counts with its own file but its imports are not followed (a registry that imports every
    chapter is not what one chapter's run depends on)."""
    root = Path(root) if root is not None else Path(dropnotes.__file__).parent
    top = root.name

    def path_of(mod: str) -> Path | None:
        rel = root.joinpath(*mod.split(".")[1:])
        for cand in ((rel.with_suffix(".py"),) if rel != root else ()) + (rel / "__init__.py",):
            if cand.is_file():
                return cand
        return None

    seen: dict[str, Path] = {}
    todo = [name]
    while todo:
        mod = todo.pop()
        path = path_of(mod)
        if mod in seen or path is None:
            continue
        seen[mod] = path
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in () if mod in opaque else ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.split(".")[0] == top]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
                if base.split(".")[0] == top:
                    todo += [base] + [f"{base}.{a.name}" for a in node.names]
        parent = mod.rpartition(".")[0]
        if parent:
            todo.append(parent)  # a package's __init__ runs before its modules
    return seen


# The code this process runs: the commit and the package's digest when it was imported, not when a run ends (a tree
# edited or committed during a long run must not be credited with a result that older code made).
CODE_AT_IMPORT = {"commit": git_commit(), "source_sha256": source_digest()}


def provenance(device: torch.device | str, seeds: list[int], wall_time_s: float, dataset: str,
               **extra: Any) -> dict[str, Any]:
    """Everything needed to tell where a number came from; the code is named as it was when this module was
    imported (:data:`CODE_AT_IMPORT`)."""

    return {
        "data_files": data.used_files(),
        **CODE_AT_IMPORT,
        "dropnotes": dropnotes.__version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "python": platform.python_version(),
        "device": device_name(device),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "seeds": list(seeds),
        "wall_time_s": round(float(wall_time_s), 2),
        "dataset": dataset,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def cpu_model() -> str:
    """The host CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def to_jsonable(obj: Any) -> Any:
    """Convert DataFrames, tensors, NumPy values and tuples to plain JSON values (NaN -> None)."""
    if isinstance(obj, pd.DataFrame):
        return {"__frame__": to_jsonable(obj.to_dict(orient="records"))}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _from_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__frame__"}:
            return pd.DataFrame(obj["__frame__"])
        return {k: _from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_jsonable(v) for v in obj]
    return obj


def save_result(chapter: str, profile: str, *, params: dict, metrics: dict, provenance: dict,
                tables: dict[str, pd.DataFrame] | None = None, root: Path | None = None,
                defaults: dict | None = None, path: Path | None = None) -> Path:
    """Write a result atomically and return its path (default ``<root>/<chapter>/<profile>.json``; a seed
    block's record goes to :func:`block_path`); ``defaults`` are the profile's defaults, stored beside ``params``
    so that :func:`describe` can say what the run changed."""
    check_choice("profile", profile, RUN_PROFILES)
    path = Path(path) if path is not None else (root or results_root()) / chapter / f"{profile}.json"
    record = to_jsonable({"chapter": chapter, "profile": profile, "params": params, "metrics": metrics,
                          "provenance": provenance, "tables": tables or {}, "defaults": defaults or {}})
    return atomic_write(path, json.dumps(record, indent=1, sort_keys=True, allow_nan=False) + "\n")


def block_path(chapter: str, profile: str, seed: int, root: Path | None = None) -> Path:
    """Where the record of one seed block of a run in blocks is kept until the blocks are merged:
    ``<root>/<chapter>/<profile>.blocks/seed-<seed>.json``."""
    return (root or results_root()) / chapter / f"{profile}.blocks" / f"seed-{seed}.json"


def load_json_result(path: Path) -> dict | None:
    """A stored record (tables back as DataFrames) from ``path``, or None if there is none."""
    path = Path(path)
    return _from_jsonable(json.loads(path.read_text())) if path.is_file() else None


def load_result(chapter: str, profile: str) -> dict | None:
    """The stored result of ``chapter`` for ``profile``, from the write root or the repository; else None."""
    check_choice("profile", profile, RUN_PROFILES)
    for root in dict.fromkeys([results_root(), REPO_RESULTS]):
        path = root / chapter / f"{profile}.json"
        if path.is_file():
            return _from_jsonable(json.loads(path.read_text()))
    return None


def load_repo_result(chapter: str, profile: str) -> dict | None:
    """The result of ``profile`` committed in the repository (``results/``, never ``$DROPNOTES_RESULTS``), or None."""
    path = REPO_RESULTS / chapter / f"{profile}.json"
    return _from_jsonable(json.loads(path.read_text())) if path.is_file() else None


def deviations(record: dict, defaults: dict) -> dict[str, tuple[Any, Any]]:
    """Parameters of a stored run that differ from the profile's defaults: name -> (used, default)."""
    params = record.get("params", {})
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731  (JSON turns tuples into lists)
    return {k: (params[k], d) for k, d in defaults.items() if k in params and norm(params[k]) != norm(d)}


def describe(record: dict | None, defaults: dict | None = None) -> str:
    """One line naming where a stored result came from, for captions, and the parameters the stored run
    changed from its profile's defaults (e.g. a schedule shortened to fit a GPU budget): those stored in
    the record, or the ``defaults`` given."""
    if record is None:
        return "no stored result"
    if defaults is None:
        defaults = record.get("defaults") or None
    p = record["provenance"]
    line = (f"{record['profile']} profile on {p['device']}, torch {p['torch']}, commit {p['commit'][:12]}, "
            f"seeds {p['seeds']}, {p['wall_time_s']:.0f} s, dataset {p['dataset']}, {p['created'][:10]}")
    if p.get("code"):
        line += f" (code: {p['code']})"
    if defaults is not None:
        changed = deviations(record, defaults)
        line += ("; run with " + ", ".join(f"{k}={v!r} (profile default {d!r})" for k, (v, d) in changed.items())
                 if changed else "; the profile's default parameters")
    return line


def predictions_path() -> Path:
    """The committed per-chapter predictions of the full profile (``results/estimate-full.json``, written by
    ``dropnotes estimate``), which the chapters' run boxes quote without recomputing them; a test keeps them true."""
    return REPO_RESULTS / "estimate-full.json"


def stored_prediction(chapter: str) -> float | None:
    """The committed full-profile prediction of ``chapter`` in seconds, if there is one."""
    path = predictions_path()
    return json.loads(path.read_text())["predicted_s"].get(chapter) if path.is_file() else None


def pack_wrong(wrong) -> str:
    """One model's per-example correctness on a test set (1 = misclassified), stored compactly: the bits packed
    (``numpy.packbits``) and base64-encoded, so that a record of 10,000 test images per model holds 1,668 characters.
    :func:`unpack_wrong` reads it back. The paired verdict rules (:func:`dropnotes.stats.compare_examples`) need it."""
    import base64

    bits = np.asarray(wrong).astype(bool).ravel()
    return f"{bits.size}:" + base64.b64encode(np.packbits(bits).tobytes()).decode("ascii")


def unpack_wrong(text: str) -> np.ndarray:
    """The 0/1 array (``uint8``) that :func:`pack_wrong` stored."""
    import base64

    size, _, payload = str(text).partition(":")
    if not size.isdigit() or not payload:
        raise ValueError(f"not a packed correctness array: {str(text)[:40]!r}")
    bits = np.unpackbits(np.frombuffer(base64.b64decode(payload), dtype=np.uint8))[: int(size)]
    return bits.astype(np.uint8)


def pack_values(values) -> str:
    """Per-example values (a language model's loss on each test window, an MC average of mistakes) stored compactly
    in a record table: float32, base64 (512 values: 2.7 kB). :func:`unpack_values` reads them back."""
    import base64

    a = np.asarray(values, dtype="<f4").ravel()
    return f"{a.size}:" + base64.b64encode(a.tobytes()).decode("ascii")


def unpack_values(text: str) -> np.ndarray:
    """The float array :func:`pack_values` stored."""
    import base64

    size, _, payload = str(text).partition(":")
    if not size.isdigit() or not payload:
        raise ValueError(f"not packed values: {str(text)[:40]!r}")
    a = np.frombuffer(base64.b64decode(payload), dtype="<f4").astype(float)
    if a.size != int(size):
        raise ValueError(f"packed values hold {a.size} values, expected {size}")
    return a
