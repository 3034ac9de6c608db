"""Where and how a chapter runs: profiles, devices, seeds, argument checks.

Every chapter takes a ``profile``:

* ``smoke`` — seconds: the quick code path at the smallest sizes (does the environment work?);
* ``quick`` — a 2-core CPU in a few minutes (CI and the offline book build); a pipeline check;
* ``laptop`` — the evidence one 2-core CPU can give: converged, >= 3 seeds, <= 45 minutes a chapter,
  run in the background and stored as ``results/<chapter>/laptop.json``;
* ``full``  — one GPU, the paper-scale reproduction;
* ``auto``  — ``full`` when CUDA is present, else ``quick``.  The environment
  variable ``DROPNOTES_PROFILE`` overrides ``auto`` (CI sets ``quick``).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

PROFILES = ("smoke", "quick", "laptop", "full", "auto")
RUN_PROFILES = ("smoke", "quick", "laptop", "full")  # what runs; "auto" resolves to quick or full
EVIDENCE_PROFILES = ("laptop", "full")  # the profiles whose stored runs count as evidence (by their scale)
# "smoke": the quick profile's code path at the smallest sizes, seconds per chapter ("does my environment
# work?", and what nbval checks in CI); its verdicts are labelled as such and never reach the scorecard.
DEVICES = ("auto", "cuda", "mps", "cpu")


class UsageError(ValueError):
    """A bad chapter, parameter or value given on the command line, refused before any work starts
    (``dropnotes`` prints it on one line and exits with status 2)."""


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``, else raise ``ValueError`` naming ``name``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}")
    return value


def _scalar(value: Any) -> Any:
    """A NumPy scalar or a 0-d tensor as the Python number it holds; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and value.dtype != torch.bool:
        return value.item()
    if isinstance(value, np.generic) and not isinstance(value, np.bool_):
        return value.item()
    return value


def check_probability(name: str, value: Any, *, allow_one: bool = False) -> float:
    """Return ``value`` as a float in [0, 1) (or [0, 1]), else raise ``ValueError`` naming ``name``.
    NumPy scalars and 0-d tensors are accepted as the number they hold."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number in [0, 1{']' if allow_one else ')'}, got {value!r}")
    value = float(value)
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if math.isnan(value) or value < 0.0 or not upper_ok:
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return value


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer >= ``minimum``, else raise ``ValueError`` naming ``name``."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_flag(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool (Python or NumPy), else raise ``ValueError`` naming ``name``:
    a string such as ``"no"`` is truthy, so it is refused rather than taken as ``True``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r}")


def resolve_profile(profile: str = "auto", device: "torch.device | str | None" = None) -> str:
    """Map ``smoke`` / ``quick`` / ``full`` / ``auto`` to the profile that runs.

    ``auto`` reads ``DROPNOTES_PROFILE`` first, then picks ``full`` when the chosen ``device`` is a
    GPU (when no device is given: when CUDA is present). The device is resolved first, so
    ``profile="auto", device="cpu"`` on a GPU machine gives ``quick``.
    """
    check_choice("profile", profile, PROFILES)
    if profile != "auto":
        return profile
    env = os.environ.get("DROPNOTES_PROFILE", "").strip()
    if env:
        return check_choice("DROPNOTES_PROFILE", env, RUN_PROFILES)
    if device is not None:
        return "full" if torch.device(device).type == "cuda" else "quick"
    return "full" if torch.cuda.is_available() else "quick"


def progress_mode() -> str:
    """How long work reports progress: ``bar`` (a tqdm bar, on a terminal), ``lines`` (a line to stderr at
    most every 30 s, when stderr is not a terminal, e.g. ``dropnotes compute`` in a log) or ``off``.

    ``DROPNOTES_PROGRESS=0`` silences both (the test suite may use it); ``DROPNOTES_PROGRESS=1`` forces
    them on. Unset, a Jupyter kernel (a book page) stays silent.
    """
    import sys

    env = os.environ.get("DROPNOTES_PROGRESS", "").strip().lower()
    tty = sys.stderr.isatty() and not os.environ.get("CI")
    if env in ("0", "false", "no", "off"):
        return "off"
    if env in ("1", "true", "yes", "on"):
        return "bar" if tty else "lines"
    if tty:
        return "bar"
    return "off" if "ipykernel" in sys.modules else "lines"


def show_progress() -> bool:
    """Whether to draw progress bars (see :func:`progress_mode`)."""
    return progress_mode() == "bar"


def progress(iterable, desc: str, total: int | None = None, every_s: float = 30.0, unit: str = "epoch"):
    """Iterate over ``iterable`` reporting progress as :func:`progress_mode` says: a tqdm bar, or a line
    ``desc: epoch i/n, t s`` to stderr after an item when ``every_s`` seconds have passed, and after the last."""
    import sys
    import time

    mode = progress_mode()
    if mode == "bar":
        from tqdm import tqdm

        yield from tqdm(iterable, desc=desc, total=total, leave=False)
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    start = last = time.monotonic()
    i = 0
    for i, item in enumerate(iterable, 1):
        yield item
        now = time.monotonic()
        if mode == "lines" and (now - last >= every_s or i == total):
            print(f"{desc}: {unit} {i}/{total if total is not None else '?'}, {now - start:.0f} s",
                  file=sys.stderr, flush=True)
            last = now


def init_distributed() -> tuple[int, int]:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); return (rank, world size).

    NCCL on CUDA, gloo on CPU. A plain ``python`` run returns (0, 1) and starts nothing.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def profile_config(profile: str, defaults: dict[str, dict], device: "torch.device | str | None" = None,
                   **overrides: int | None) -> tuple[str, dict]:
    """Resolve ``profile`` (for ``device``) and return it with a copy of its defaults, where every override
    that is not None replaces the default after being checked as a positive integer (a chapter's size knobs).

    A profile that asks for bf16 autocast (``amp``) on a CPU without fast bf16 products (:func:`cpu_bf16_fast`)
    runs in float32 instead, with a warning: there, bf16 would be slower by orders of magnitude, not faster. The
    run's parameters (and so its record) say ``amp=False``."""
    resolved = resolve_profile(profile, device)
    if resolved not in defaults:
        raise ValueError(f"profile={resolved!r} is not defined for this chapter; choose one of "
                         f"{', '.join(map(repr, [*defaults, 'auto']))}")
    config = dict(defaults[resolved])
    for name, value in overrides.items():
        if value is not None:
            config[name] = check_positive_int(name, value)
    # the CPU profiles only: "full" is a GPU's profile (the estimator configures it on the CPU to count a GPU's step)
    if (config.get("amp") and resolved in CPU_PROFILES and device is not None and torch.device(device).type == "cpu"
            and not cpu_bf16_fast()):
        import warnings

        bf16, fp32 = _CPU_RATES["bf16"], _CPU_RATES["fp32"]
        warnings.warn(f"bf16 autocast off: this CPU multiplies bf16 matrices at {bf16 / 1e9:.1f} GFLOP/s against "
                      f"{fp32 / 1e9:.1f} in float32 (no native bf16 products), so the {resolved} profile runs in "
                      f"float32 (set {BF16_OVERRIDE}=1 to force bf16)", stacklevel=2)
        config["amp"] = False
    return resolved, config


CPU_PROFILES = ("smoke", "quick", "laptop")  # the profiles made for a CPU
BF16_OVERRIDE = "DROPNOTES_CPU_BF16"  # 1: treat this CPU's bf16 products as fast, 0: as slow (skips the measurement)
_CPU_RATES: dict[str, float] = {}


def cpu_bf16_fast(size: int = 256, repeats: int = 3) -> bool:
    """Whether this CPU multiplies bf16 matrices at least as fast as float32 ones, measured once per process on
    ``size``³ products (well under a second). CPUs with native bf16 dot products (AVX-512 BF16, AMX) run bf16
    autocast faster than float32; without them PyTorch takes a slow fallback for bf16 products, and the laptop
    profiles' bf16 would cost orders of magnitude instead of saving time. ``DROPNOTES_CPU_BF16`` (1 or 0)
    overrides the measurement."""
    forced = os.environ.get(BF16_OVERRIDE)
    if forced in ("0", "1"):
        return forced == "1"
    if not _CPU_RATES:
        import time

        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a = torch.randn(size, size).to(dtype)
            a @ a  # warm-up
            start = time.perf_counter()
            for _ in range(repeats):
                a @ a
            _CPU_RATES[name] = repeats * 2 * size ** 3 / (time.perf_counter() - start)
    return _CPU_RATES["bf16"] >= _CPU_RATES["fp32"]


def select_device(device: str = "auto") -> torch.device:
    """Return the requested ``torch.device``; ``auto`` prefers CUDA (this process's GPU under
    ``torchrun``), then Apple MPS, then CPU. A numbered GPU (``cuda:1``) is accepted too."""
    device = str(device)
    if device.startswith("cuda:") and device[5:].isdigit():
        if not torch.cuda.is_available() or int(device[5:]) >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} was requested but that GPU is not available; use 'auto' or 'cpu'")
        return torch.device(device)
    check_choice("device", device, DEVICES)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available; use 'auto' or 'cpu'")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device='mps' was requested but MPS is not available; use 'auto' or 'cpu'")
    return torch.device(device)


def device_name(device: torch.device | str) -> str:
    """A human-readable name of the device, for provenance."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        import platform

        return f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
    return device.type


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and every CUDA device); return a CPU generator seeded alike."""
    seed = check_positive_int("seed", seed, minimum=0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def set_deterministic(enabled: bool = True) -> None:
    """Ask torch for deterministic kernels (bit-reproducible reruns on one device, at some speed cost)."""
    if enabled:
        # cuBLAS needs this workspace setting for deterministic matmuls.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=False)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU. The package's one host sync for timing."""
    if device is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """The package's one timer: wall seconds of a block, with the device synchronised at both ends so that
    queued GPU work is counted where it was issued::

        with Timer(device) as t:
            train_epoch(...)
        t.seconds
    """

    def __init__(self, device: torch.device | str | None = "cpu") -> None:
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> "Timer":
        import time

        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        import time

        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start

    def start(self) -> "Timer":
        """Start timing without a ``with`` block (read it with :meth:`elapsed`)."""
        return self.__enter__()

    def elapsed(self) -> float:
        """Seconds since the block started (device synchronised), while it is still running."""
        import time

        synchronize(self.device)
        return time.perf_counter() - self._start


def stream(seed: int, name: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A random generator for one named purpose (``"subset"``, ``"order"``, ``"masks"``, ...) of one seed.

    Its state is a hash of ``(seed, name)``, so streams of different purposes or seeds never overlap the
    way ``seed + 10_000``-style offsets can, and drawing more from one stream never shifts another."""
    return torch.Generator(device).manual_seed(stream_seed(seed, name))


def stream_seed(seed: int, name: str) -> int:
    """The integer state of the named stream ``(seed, name)`` (see :func:`stream`), e.g. for
    ``torch.manual_seed`` before code that draws from the global generator."""
    import hashlib

    seed = check_positive_int("seed", seed, minimum=0)
    digest = hashlib.sha256(f"dropnotes:{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@contextlib.contextmanager
def atomic_file(path, mode: str = "wb"):
    """The package's one atomic writer: yield a temporary file beside ``path`` (named ``.<stem>-*``, never
    taken for a result); on success it is flushed to disk and ``os.replace``-d into place, so a kill at
    any moment leaves either the old file or the new one; on an error it is removed."""
    import tempfile
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(fd)
    try:
        with open(tmp, mode) as fh:  # opened by name, so fh.name is the temporary path
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path, data: bytes | str):
    """Write ``data`` to ``path`` through :func:`atomic_file`; returns the path."""
    from pathlib import Path

    with atomic_file(path, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    return Path(path)
