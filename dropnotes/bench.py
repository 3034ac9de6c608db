"""Forward+backward throughput of the dropout variants against their PyTorch counterparts.

``python -m dropnotes.bench [--device auto] [--sizes 16384,262144,4194304] [--out bench.csv]``

Every variant is timed with :class:`torch.utils.benchmark.Timer` (which synchronises CUDA) on a
float32 tensor of each size, shaped (N, 64, 16, 16) (or (N, 256, 64) for sequence variants), as
``y = f(x); y.backward(g)``. Achieved bandwidth counts the minimum traffic of an elementwise op's
forward and backward (read x, write y, read dy, write dx: 4 x bytes; masks are not counted), and
is compared with a measured copy (``x.clone()``, 2 x bytes) on the same device and, for GPUs in
:data:`PEAK_BANDWIDTH`, with the datasheet peak.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils import benchmark

from dropnotes import functional as DF
from dropnotes.runtime import check_positive_int, device_name, select_device

# Datasheet HBM bandwidth in bytes/s (SXM parts); used only for the "of peak" column.
PEAK_BANDWIDTH = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12, "L4": 0.3e12}
P = 0.1


def _timm_drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    keep = 1 - p
    return x * x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep).div_(keep)


# name -> (ours, PyTorch counterpart or None, "image" (N, C, H, W) or "sequence" (N, T, D) input)
VARIANTS: dict[str, tuple[Callable, Callable | None, str]] = {
    "dropout": (lambda x: DF.dropout(x, P), lambda x: F.dropout(x, P, True), "image"),
    "spatial_dropout": (lambda x: DF.spatial_dropout(x, P), lambda x: F.dropout2d(x, P, True), "image"),
    "drop_path": (lambda x: DF.drop_path(x, P), lambda x: _timm_drop_path(x, P), "image"),
    "gaussian_dropout": (lambda x: DF.gaussian_dropout(x, P), None, "image"),
    "variational_dropout": (lambda x: DF.variational_dropout(x, P), None, "sequence"),
    "drop_block": (lambda x: DF.drop_block(x, P, 3), None, "image"),
}


def _compiled_dropout() -> Callable:
    """``DF.dropout`` through ``torch.compile`` (Inductor): mask, scale and product fuse into one kernel, and
    the backward regenerates the mask from the random seed instead of reading a stored one. CUDA only here
    (on the CPU, Inductor needs a C++ toolchain and minutes of compilation)."""
    return torch.compile(lambda x: DF.dropout(x, P), dynamic=False)


def _input(numel: int, kind: str, device: torch.device) -> torch.Tensor:
    n = max(numel // (64 * 256), 1)
    shape = (n, 64, 16, 16) if kind == "image" else (n, 256, 64)
    return torch.randn(shape, device=device, requires_grad=True)


def saved_bytes(fn: Callable, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for the backward of ``fn(x)``, ``x`` itself excluded: a mask kept in
    x's dtype costs 4 (fp32) or 2 (bf16) bytes per element, a bool mask one."""
    seen = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() != x.data_ptr():
            seen.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(seen)


def _time(fn: Callable, x: torch.Tensor, min_run_time: float) -> float:
    g = torch.ones_like(x)
    t = benchmark.Timer("fn(x).backward(g)", globals={"fn": fn, "x": x, "g": g})
    return t.blocked_autorange(min_run_time=min_run_time).median


def copy_bandwidth(device: torch.device, numel: int, min_run_time: float = 0.2) -> float:
    """Bytes per second of ``x.clone()`` (reads and writes ``numel`` floats)."""
    x = torch.randn(numel, device=device)
    m = benchmark.Timer("x.clone()", globals={"x": x}).blocked_autorange(min_run_time=min_run_time).median
    return 2 * x.numel() * x.element_size() / m


def matmul_rate(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, n: int = 2048,
                min_run_time: float = 0.5) -> float:
    """Achieved FLOP/s of one ``n x n @ n x n`` product in ``dtype`` on ``device``: the large-matrix rate that a
    chapter's achieved training FLOP/s is reported against (measured in the same run, on the same machine)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    t = benchmark.Timer("a @ b", globals={"a": a, "b": b})
    return 2 * n**3 / t.blocked_autorange(min_run_time=min_run_time).median


def mlp_flops(widths: Sequence[int], examples: int) -> float:
    """Multiply-add FLOPs of training a fully connected net of ``widths`` on ``examples`` examples (forward +
    backward = 3 x the forward's products): what a chapter's achieved FLOP/s counts."""
    return 3.0 * 2 * sum(a * b for a, b in zip(widths[:-1], widths[1:])) * examples


def lstm_lm_flops(dim: int, layers: int, vocab: int, tokens: int) -> float:
    """Multiply-add FLOPs of training an LSTM language model (embedding and hidden size ``dim``, ``layers`` layers, a
    ``vocab``-way softmax decoder) on ``tokens`` tokens: per token and layer the four gates' products with the input
    and the recurrent state (2 x 4 x dim x 2 dim), and the decoder's (2 x dim x vocab), forward + backward = 3 x."""
    return 3.0 * (layers * 16 * dim * dim + 2 * dim * vocab) * tokens


def speed(flops: float, seconds: float, device: torch.device | str, amp: bool) -> dict:
    """A run's achieved training GFLOP/s beside this device's 2048³ product rate in the run's precision, measured
    now (in the same run, on the same machine)."""
    dtype = torch.bfloat16 if amp else torch.float32
    return {"train_gflops_per_s": flops / seconds / 1e9,
            "matmul_2048_gflops_per_s": matmul_rate(device, dtype) / 1e9, "precision": "bf16" if amp else "fp32"}


def peak_bandwidth(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BANDWIDTH.items() if k in name), None)


def run_bench(device: str = "auto", sizes: tuple[int, ...] = (2**14, 2**18, 2**22), min_run_time: float = 0.2,
              variants: tuple[str, ...] | None = None) -> pd.DataFrame:
    """One row per (variant, size): ms for ours and PyTorch's, their ratio, achieved GB/s and its fraction
    of the measured copy bandwidth (and of the datasheet peak where known)."""
    dev = select_device(device)
    sizes = tuple(check_positive_int("sizes", s) for s in sizes)
    copy = copy_bandwidth(dev, max(sizes), min_run_time)
    peak = peak_bandwidth(dev)
    rows = []
    table = dict(VARIANTS)
    if dev.type == "cuda":
        table["dropout (torch.compile)"] = (_compiled_dropout(), VARIANTS["dropout"][1], "image")
    for name in variants or table:
        ours, ref, kind = table[name]
        for size in sizes:
            x = _input(size, kind, dev)
            # Twice each, interleaved, keeping the faster median: neither side gains from going first.
            t_ours, t_ref = _time(ours, x, min_run_time), float("nan")
            if ref is not None:
                t_ref = _time(ref, x, min_run_time)
                t_ours, t_ref = min(t_ours, _time(ours, x, min_run_time)), min(t_ref, _time(ref, x, min_run_time))
            traffic = 4 * x.numel() * x.element_size()
            rows.append({"variant": name, "elements": x.numel(), "ms (dropnotes)": 1e3 * t_ours,
                         "ms (PyTorch)": 1e3 * t_ref, "ratio": t_ours / t_ref, "GB/s": traffic / t_ours / 1e9,
                         "of copy bandwidth": traffic / t_ours / copy,
                         "of peak": traffic / t_ours / peak if peak else float("nan"),
                         "saved bytes/element (dropnotes)": saved_bytes(ours, x) / x.numel(),
                         "saved bytes/element (PyTorch)": saved_bytes(ref, x) / x.numel() if ref else float("nan")})
    out = pd.DataFrame(rows)
    out.attrs.update(device=device_name(dev), copy_GBps=copy / 1e9, peak_GBps=peak / 1e9 if peak else None)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dropnotes.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    parser.add_argument("--sizes", default="16384,262144,4194304", help="comma-separated element counts")
    parser.add_argument("--min-run-time", type=float, default=0.2, help="seconds per measurement")
    parser.add_argument("--out", help="also write the table to this CSV file")
    args = parser.parse_args(argv)
    try:
        sizes = tuple(int(s) for s in args.sizes.split(","))
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    table = run_bench(args.device, sizes, args.min_run_time)
    a = table.attrs
    print(f"device: {a['device']}; copy bandwidth {a['copy_GBps']:.1f} GB/s"
          + (f"; datasheet peak {a['peak_GBps']:.0f} GB/s" if a["peak_GBps"] else ""))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.out:
        table.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
