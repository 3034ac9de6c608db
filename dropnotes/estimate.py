"""``dropnotes estimate``: predict each chapter's GPU time on a CPU, in seconds, without a GPU.

For every chapter and model group of a profile, one training step of the real architecture at the
profile's sizes is run on PyTorch's ``meta`` device (shapes only, no memory, no arithmetic) under

* :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the matmul and convolution FLOPs of
  the step (forward and backward), and
* :class:`KernelCounter`, a ``TorchDispatchMode`` that counts the aten operations that launch work
  (views and metadata operations launch nothing and are skipped; a fused operation counts once).

A group's predicted time is ``runs * steps * max(FLOPs / (f * peak), kernels * c)``: the step is either
compute-bound at a fraction ``f`` of the GPU's dense peak (bf16 under autocast, else fp32) or
launch-bound at ``c`` seconds per kernel (a third of that inside a CUDA graph). Evaluation passes are
groups of their own (forward only). The two constants are fitted to the stored H100 runs in
``results/*/full.json`` (their wall times and measured throughputs), and the fit's residual at each
calibration point is printed with ``--calibrate``: a prediction is only as good as that error.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from dropnotes import results
from dropnotes.amp import autocast

# Dense peaks of one H100 SXM (NVIDIA's datasheet): bf16 tensor cores, and fp32 without TF32 (PyTorch's default).
PEAK_FLOPS = {"bf16": 989e12, "fp32": 67e12}
CUDNN_LSTM_KERNELS = 6  # one cuDNN LSTM layer, forward and backward (data and weights), with its copies
# The five schemes of chapter 3's stored sequential run (before the ladder). Its "naive-recurrent" (fresh masks on
# the inputs and on h_{t-1}) is counted as "per-step-recurrent", whose kernels differ only in the input masks' shape.
STORED_SCHEMES = ("none", "naive", "per-step-recurrent", "variational", "weight-drop")
# One H100 SXM's HBM3, 3.35 TB/s (datasheet). Not fitted: no stored run is memory-bound. A large copy on the
# H200 machines here reached about 90 % of that chip's datasheet bandwidth (device KINDS.md); the engine's
# elementwise kernels are smaller, so 80 % is assumed.
PEAK_BANDWIDTH = 3.35e12
BANDWIDTH_FRACTION = 0.8
GRAPH_LAUNCH_FACTOR = 1 / 3  # a kernel inside a CUDA graph costs about a third of an eager launch (design notes)
# Fitted by `dropnotes estimate --calibrate` to the stored H100 runs (2026-12-02: 7 points, errors -51 % to
# +15 %; see calibrate()); kept here so that a prediction needs no GPU and no stored file. Refitted after the
# counting changed (steady-state optimizer steps, bf16 casts, fused attention): 22.7 µs before.
DEFAULT_FRACTION = 0.10
DEFAULT_LAUNCH_S = 1.25 ** 15 * 1e-6  # 28.4 µs, the calibration grid's point

_NO_LAUNCH = {"view", "_unsafe_view", "t", "transpose", "permute", "expand", "detach", "alias", "as_strided",
              "unsqueeze", "squeeze", "reshape", "slice", "select", "split", "split_with_sizes", "unbind",
              "chunk", "narrow", "view_as", "_reshape_alias", "lift_fresh", "_to_copy_meta", "empty",
              "empty_like", "empty_strided", "new_empty", "new_empty_strided", "_local_scalar_dense", "is_same_size",
              "sym_size", "sym_stride", "numel", "dim", "size", "stride", "_has_compatible_shallow_copy_type",
              "set_", "resize_", "contiguous", "_record_function_enter_new", "_record_function_exit"}


class KernelCounter(TorchDispatchMode):
    """Counts the aten operations dispatched inside it that launch device work."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.bytes = 0
        self.by_op: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        out = func(*args, **(kwargs or {}))
        if name not in _NO_LAUNCH:
            launches = _foreach_launches(name, args) if name.startswith("_foreach_") else 1
            self.count += launches
            self.by_op[name] = self.by_op.get(name, 0) + launches
            self.bytes += _moved_bytes(name, args, kwargs or {}, out)
        return out


# PyTorch's multi-tensor apply (ATen/native/cuda/MultiTensorApply.cuh, 4 KB kernel arguments): one launch serves
# up to this many tensors per list depth (the lists a kernel reads and writes), and 320 blocks of 65,536 elements.
_MTA_MAX_TENSORS = {1: 110, 2: 64, 3: 48, 4: 36, 5: 30}
_MTA_MAX_BLOCKS, _MTA_CHUNK = 320, 65536


def _foreach_launches(name: str, args) -> int:
    """The kernels a ``torch._foreach_*`` operation launches on a GPU. Its fast path (every list one dtype, each
    position's tensors of one shape) packs the lists into multi-tensor launches; otherwise it falls back to
    one kernel per tensor."""
    lists = [a for a in args if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor)]
    if not lists:  # empty lists: nothing to launch
        return 0
    first = lists[0]
    fast = all(len(lst) == len(first) and all(t.shape == u.shape and t.dtype == first[0].dtype
                                               for t, u in zip(lst, first)) for lst in lists)
    if not fast:
        return len(first)
    depth = min(len(lists) + (0 if name.endswith("_") else 1), 5)  # an out-of-place op writes one more list
    chunks = sum(math.ceil(t.numel() / _MTA_CHUNK) for t in first)
    return max(math.ceil(len(first) / _MTA_MAX_TENSORS[depth]), math.ceil(chunks / _MTA_MAX_BLOCKS), 1)


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _tensors(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _tensors(item)


_GATHERS = {"index", "index_select", "gather", "embedding"}  # read only the rows they return
_SCATTERS = {"index_copy_", "index_put_", "index_add_", "index_fill_"}  # in place: touch only the rows they write
# Write their output without reading their first argument (a template of shape and dtype, or the destination).
_WRITE_ONLY = {"new_zeros", "new_ones", "new_full", "new_empty", "zeros_like", "ones_like", "full_like", "rand_like",
               "randn_like", "fill_", "zero_", "uniform_", "normal_", "copy_"}


def _moved_bytes(name: str, args, kwargs: dict, out) -> int:
    """A kernel's bytes: its tensor arguments read and its outputs written (an ``out=`` argument counted
    as the output); a gather reads the rows it returns, not its whole source."""
    kwargs = {k: v for k, v in kwargs.items() if k != "out"}
    size = _distinct_bytes
    written = sum(size(t) for t in _tensors(out))
    if name.startswith("_foreach_") and name.endswith("_"):  # in place: returns nothing, writes its first list
        written = sum(size(t) for t in _tensors(args[0]))
    if name in _SCATTERS:
        return 2 * sum(size(t) for t in _tensors(args[1:]))
    if name in _GATHERS:
        read = written + sum(size(t) for t in _tensors(args[1:]))
    elif name in _WRITE_ONLY:  # copy_ reads its source (args[1]); the others read nothing
        read = sum(size(t) for t in _tensors((args[1:], kwargs)))
    else:
        read = sum(size(t) for t in _tensors((args, kwargs)))
    return read + written


def _distinct_bytes(t: torch.Tensor) -> int:
    """The bytes a kernel must move for ``t`` at least: its distinct elements (a broadcast axis, stride 0,
    is read once), at its dtype (a bf16 step runs under :class:`~dropnotes.amp.MetaAutocast`)."""
    return t.element_size() * math.prod(n for n, st in zip(t.shape, t.stride()) if st != 0)


@dataclass
class Cost:
    """What one step costs: FLOPs, launched kernels and the bytes they move through device memory (each
    kernel's inputs read once and outputs written once: a floor)."""

    flops: float
    kernels: int
    bytes: float

    def __iter__(self):
        return iter((self.flops, self.kernels, self.bytes))


def _fused_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """``scaled_dot_product_attention`` as a GPU runs it: one fused kernel forward and one backward (PyTorch's
    memory-efficient attention; flash attention in bf16 moves the same tensors). On the meta device PyTorch
    would pick its math fallback instead, which writes out the (N, heads, T, T) scores and their softmax.
    Dropout on the probabilities is drawn inside the fused kernels too."""
    if attn_mask is not None or enable_gqa:
        return _SDPA(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                     enable_gqa=enable_gqa)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    return torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, None, grad, float(dropout_p),
                                                                   is_causal, scale=scale)[0]


_SDPA = F.scaled_dot_product_attention


def measure(step: Callable[[], None]) -> Cost:
    """FLOPs, launched kernels and bytes moved of one call of ``step`` (run it on meta tensors; a bf16 step
    enters :func:`dropnotes.amp.autocast` on the meta device, which counts the casts and every tensor at
    its dtype). Attention is counted as the fused kernels a GPU runs (:func:`_fused_sdpa`)."""
    F.scaled_dot_product_attention = _fused_sdpa
    try:
        with FlopCounterMode(display=False) as flops, KernelCounter() as kernels:
            step()
    finally:
        F.scaled_dot_product_attention = _SDPA
    return Cost(float(flops.get_total_flops()), kernels.count, float(kernels.bytes))


@dataclass
class Group:
    """One model group of a chapter: ``runs`` sequential trainings (1 when batched) of ``steps`` steps each."""

    chapter: str
    group: str
    runs: int
    steps: int
    flops_per_step: float
    kernels_per_step: int
    dtype: str = "fp32"
    captured: bool = False
    models_per_step: int = 1
    fixed_s: float = 0.0  # time that is not steps (a benchmark's timing budget)
    bytes_per_step: float = 0.0

    def step_s(self, fraction: float, launch_s: float) -> float:
        compute = self.flops_per_step / (fraction * PEAK_FLOPS[self.dtype])
        launch = self.kernels_per_step * launch_s * (GRAPH_LAUNCH_FACTOR if self.captured else 1.0)
        memory = self.bytes_per_step / (BANDWIDTH_FRACTION * PEAK_BANDWIDTH)
        return max(compute, launch, memory)

    def predicted_s(self, fraction: float = DEFAULT_FRACTION, launch_s: float = DEFAULT_LAUNCH_S) -> float:
        return self.runs * self.steps * self.step_s(fraction, launch_s) + self.fixed_s

    def as_dict(self, fraction: float = DEFAULT_FRACTION, launch_s: float = DEFAULT_LAUNCH_S) -> dict:
        d = dataclasses.asdict(self)
        d["predicted_s"] = round(self.predicted_s(fraction, launch_s), 2)
        return d


# ------------------------------------------------------------------------------------------ measuring steps

def _meta_step(model: nn.Module, inputs, targets, *, loss: Callable, optimizer: str = "sgd", amp: bool = False,
               clip: float | None = None, multi_tensor: bool = False) -> Cost:
    """FLOPs and kernels of forward + loss + backward + (clip) + optimizer step of ``model`` on meta tensors
    (with ``amp``, the forward under bf16 autocast; with ``multi_tensor``, torch.optim's multi-tensor
    implementation, which stands for the fused AdamW a chapter runs on CUDA, a few launches fewer). The
    optimizer's state is created by a first, unmeasured step."""
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=1e-3, foreach=multi_tensor)
    else:
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, foreach=multi_tensor)

    def step():
        with autocast("meta", torch.bfloat16 if amp else None):
            out = model(*inputs) if isinstance(inputs, tuple) else model(inputs)
        out = out[0] if isinstance(out, tuple) else out
        value = loss(out, targets)
        opt.zero_grad(set_to_none=True)
        value.backward()
        if clip is not None:
            if multi_tensor:  # clip_grad_norm_'s CUDA path (its foreach flag is refused on the meta device)
                grads = [q.grad for q in params]
                norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
                torch._foreach_mul_(grads, (clip / (norm + 1e-6)).clamp(max=1.0))
            else:
                torch.nn.utils.clip_grad_norm_(params, clip, foreach=False)
        opt.step()

    step()
    return measure(step)


def _meta_forward(model: nn.Module, inputs, amp: bool = False) -> Cost:
    def step():
        with torch.no_grad(), autocast("meta", torch.bfloat16 if amp else None):
            model(inputs)
    return measure(step)


def _ce(out, y):
    return F.cross_entropy(out.flatten(0, -2).float(), y.flatten())


# ------------------------------------------------------------------------------------------ the chapters

def _on(device, make: Callable[[], nn.Module]) -> nn.Module:
    """``make()`` on ``device``: built on the meta device directly, else on the CPU (the groups seed their
    initialisation with CPU generators) and moved."""
    if str(device) == "meta":
        with torch.device("meta"):
            return make()
    return make().to(device)


def _engine_step_fn(k: int, cfg, max_norm: int, make_model: Callable[[], nn.Module] | None = None, example=(784,),
                    momentum: float | None = None, weight_decay: bool = False, optimizer: str = "sgd",
                    transform=None, penalty: bool = False, device="meta"):
    """One step of the batched engine for a group of K models (``make_model()``; by default K MLPs of the
    chapter's size) on ``device``, as the chapter runs it (:func:`dropnotes.stacked.make_step`, bf16 autocast
    with ``cfg.amp``); ``max_norm`` of them are projected, and the group decays or not. Returns the step, the
    group and the tensors the step updates."""
    from dropnotes.stacked import StackedMLP, _flat, make_step

    if make_model is None:
        make_model = lambda: StackedMLP(k, 784, cfg.hidden, 10, p_input=0.2, p_hidden=0.5, seeds=[0] * k)  # noqa: E731
    model = _on(device, make_model).train()
    with torch.device(device):
        x, y = torch.rand(cfg.batch_size * 2, *example), torch.zeros(cfg.batch_size * 2, dtype=torch.long)
        idx = torch.randint(0, cfg.batch_size * 2, (k, cfg.batch_size))
        vec = torch.full((k,), 1e-3)
        index = None if max_norm in (0, k) else torch.arange(max_norm)
        params = list(model.parameters())
        bufs = ([(torch.zeros_like(p), torch.zeros_like(p)) for p in params] if optimizer == "adamw"
                else [torch.zeros_like(p) for p in params])
        alive, died = torch.ones(k, dtype=torch.bool), torch.full((k,), -1, dtype=torch.long)
        step_no = torch.zeros((), dtype=torch.long)
        step = make_step(model, x, y, idx, lr=vec, weight_decay=vec if weight_decay else None,
                         momentum=cfg.momentum if momentum is None else momentum,
                         max_norm=torch.ones(max_norm) if max_norm else None, max_norm_index=index, clip=None,
                         amp_dtype=torch.bfloat16 if getattr(cfg, "amp", False) else None, generator=None, bufs=bufs,
                         alive=alive, died=died, step_no=step_no, optimizer=optimizer, transform=transform,
                         penalty=torch.ones(()) if penalty else None)
    return step, model, params + _flat(bufs) + list(model.buffers()) + [alive, died, step_no]


def _engine_step(k: int, cfg, max_norm: int, make_model: Callable[[], nn.Module] | None = None, example=(784,), **kw):
    """FLOPs, kernels and bytes of :func:`_engine_step_fn`'s step on the meta device, and the group."""
    step, model, _ = _engine_step_fn(k, cfg, max_norm, make_model, example, **kw)
    with torch.device("meta"):
        return measure(step), model


def _svd_args(cfg) -> tuple:
    """Chapter 3's sparse VD group for :func:`_engine_step_fn`: the seeds' LeNet-300-100s, Adam, batch 100, fp32."""
    from dropnotes.stacked import StackedSparseMLP

    ks = cfg.n_seeds
    return ((dataclasses.replace(cfg, batch_size=100, amp=False), 0, lambda: StackedSparseMLP(ks, seeds=[0] * ks), (784,)),
            dict(momentum=0.0, optimizer="adamw", penalty=True))


def _vit_args(cfg, depth: int, k: int) -> tuple:
    """Chapter 4's group of ``k`` ViTs of one depth for :func:`_engine_step_fn` (AdamW, decay, augmentation)."""
    from dropnotes.stacked import StackedViT
    from dropnotes.experiments.droppath import augment

    return ((lambda: StackedViT(k, dim=cfg.dim, depth=depth, heads=cfg.heads, rates=0.1, seeds=[0] * k), (3, 32, 32)),
            dict(momentum=0.0, weight_decay=True, optimizer="adamw", transform=augment))


def _interaction_model(cfg, name: str, k: int) -> Callable[[], nn.Module]:
    """Chapter 6's CNN or MLP group of ``k`` models (their noise kinds in the chapter's proportions)."""
    from dropnotes.stacked import StackedCNN, StackedMLP

    if name == "CNN":
        return lambda: StackedCNN(k, p1=cfg.p, p2=cfg.p, noise=["pixel", "spatial", "gaussian"] * (k // 3) + ["pixel"] * (k % 3),
                                  seeds=[0] * k)
    return lambda: StackedMLP(k, 784, (cfg.mlp_hidden, cfg.mlp_hidden), 10, p_hidden=0.5,
                              noise=["bernoulli", "gaussian"] * (k // 2) + ["bernoulli"] * (k % 2),
                              p_connect=[0.5] + [0.0] * (k - 1), seeds=[0] * k)


def _mechanics(cfg) -> list[Group]:
    k = len(cfg.rates) * cfg.n_seeds
    (f, n, b), model = _engine_step(k, cfg, max_norm=0)
    with torch.device("meta"):
        model.eval()
        fe, ne, be = _meta_forward(model, torch.empty(4096, 784), cfg.amp)
    evals = math.ceil(cfg.epochs / cfg.eval_every) * math.ceil((cfg.train_size + cfg.val_size + 10000) / 4096)
    dtype = "bf16" if cfg.amp else "fp32"
    return [Group("mechanics", f"{k} MLPs {cfg.hidden} (rates x seeds), batched", 1,
                  cfg.epochs * (cfg.train_size // cfg.batch_size),
                  f, n, dtype, captured=True, models_per_step=k, bytes_per_step=b),
            Group("mechanics", "evaluation (train, validation, test)", 1, evals, fe, ne, dtype, models_per_step=k,
                  bytes_per_step=be)]


def _ensembles(cfg) -> list[Group]:
    from dropnotes.models import MLP

    k = cfg.n_seeds * (cfg.members + 1)
    (f, n, b), _ = _engine_step(k, cfg, max_norm=cfg.n_seeds)  # the dropout nets; the members are unconstrained
    with torch.device("meta"):
        net = MLP(784, cfg.hidden, 10, p_input=cfg.p_input, p_hidden=cfg.p_hidden).train()
        fe, ne, be = _meta_forward(net, torch.empty(4096, 784))
    from dropnotes.experiments.ensembles import ROTATION_ANGLES, ROTATION_SAMPLES

    # MC passes per seed over 10,000 test images, the in- and out-of-distribution sets, the k-sweep and the
    # rotated digits (batches of 4,096 images), and the one rotated digit of the figure.
    images = (cfg.mc_samples * (10000 + 3 * cfg.ood_size) + cfg.mc_repeats * max(cfg.mc_ks) * cfg.mc_test_size
              + ROTATION_SAMPLES * len(ROTATION_ANGLES) * cfg.rotation_digits)
    passes = cfg.n_seeds * math.ceil(images / 4096) + len(ROTATION_ANGLES)
    dtype = "bf16" if cfg.amp else "fp32"
    return [Group("ensembles", f"{k} MLPs (members + dropout nets), batched", 1,
                  cfg.epochs * (cfg.train_size // cfg.batch_size), f, n, dtype, captured=True, models_per_step=k,
                  bytes_per_step=b),
            Group("ensembles", "MC-dropout evaluation", 1, passes, fe, ne, bytes_per_step=be)]


def _variational(cfg) -> list[Group]:
    """Chapter 3 on the engine: every scheme x seed as one StackedLSTMLM (one batched cell per time step,
    the step graph-captured), its validation and test passes, one standalone model per scheme timed for
    ``speed_steps`` windows, MC dropout per variational model (its passes ``MC_CHUNK`` at a time as one
    group), and the sparse VD seeds as one captured StackedSparseMLP."""
    from dropnotes.experiments.variational import MC_CHUNK
    from dropnotes.models.lstm_lm import SCHEMES

    tokens = cfg.train_tokens or 929589
    windows = (tokens - 1) // cfg.batch_size // cfg.seq_len
    k = len(SCHEMES) * cfg.n_seeds
    dtype = "bf16" if cfg.amp else "fp32"
    step, group, _ = _lstm_step_fn(cfg)
    with torch.device("meta"):
        ids = torch.zeros(cfg.batch_size, cfg.seq_len, dtype=torch.long)
        f, n, b = measure(step)
        group.eval()

        def window():  # what lm_window_losses_stacked runs per window: the forward and each model's loss
            with torch.no_grad(), autocast("meta", torch.bfloat16 if cfg.amp else None):
                logits, _ = group(ids)
                F.cross_entropy(logits.float().flatten(0, 2), ids.expand(k, -1, -1).flatten(), reduction="none")

        fe, ne, be = measure(window)
        chunk = min(cfg.mc_samples, MC_CHUNK)
        reps = group.replicas(list(SCHEMES).index("variational"), chunk).train()
        fm, nm, bm = _meta_forward(reps, ids, cfg.amp)
    eval_windows = 2 * ((cfg.eval_tokens or 82430) // (cfg.batch_size * cfg.seq_len) + 1)  # validation, test
    groups = [Group("variational", f"{k} LSTM LMs {cfg.layers}x{cfg.dim} (schemes x seeds), batched", 1,
                    windows * cfg.epochs, f, n, dtype, captured=True, models_per_step=k, bytes_per_step=b),
              Group("variational", "evaluation (validation every epoch, test once)", 1, eval_windows * cfg.epochs // 2
                    + eval_windows // 2, fe, ne, dtype, captured=True, models_per_step=k, bytes_per_step=be)]
    for g in _variational_sequential(dataclasses.replace(cfg, epochs=1), schemes=tuple(SCHEMES)):
        if g.group.startswith("LSTM "):  # the speed table: speed_steps + 2 windows of one model per scheme
            groups.append(dataclasses.replace(g, group=f"speed: {g.group.split(' ', 2)[2]} (one model)", runs=1,
                                              steps=cfg.speed_steps + 2))
    test_windows = (cfg.eval_tokens or 82430) // (cfg.batch_size * cfg.seq_len) + 1
    groups.append(Group("variational", f"MC dropout ({cfg.mc_samples} passes, {chunk} per batched forward)",
                        cfg.n_seeds, test_windows * math.ceil(cfg.mc_samples / chunk), fm, nm, dtype,
                        models_per_step=chunk, bytes_per_step=bm))
    ks = cfg.n_seeds
    a, kw = _svd_args(cfg)
    (fs, ns, bs), _ = _engine_step(ks, *a, **kw)
    groups.append(Group("variational", f"sparse VD LeNet-300-100, {ks} seeds, batched", 1,
                        cfg.svd_epochs * (cfg.svd_train_size // 100), fs, ns, captured=True, models_per_step=ks,
                        bytes_per_step=bs))
    return groups


def _lstm_step_fn(cfg, device="meta"):
    """Chapter 3's training step of every scheme x seed as one StackedLSTMLM on ``device``, as
    :func:`dropnotes.stacked.fit_stacked_lm` runs it (bf16 autocast with ``cfg.amp``, clipping, SGD);
    the step, the group and the tensors it updates."""
    from dropnotes.stacked import StackedLSTMLM, make_lm_step
    from dropnotes.models.lstm_lm import SCHEMES

    vocab, k = cfg.vocab_cap or 10000, len(SCHEMES) * cfg.n_seeds
    group = _on(device, lambda: StackedLSTMLM(k, vocab, cfg.dim, cfg.layers, scheme=list(SCHEMES) * cfg.n_seeds,
                                              p_io=cfg.p_io, p_rec=cfg.p_rec, p_emb=cfg.p_emb, seeds=[0] * k)).train()
    dev = torch.device(device)
    with dev:
        ids = torch.randint(0, vocab, (cfg.batch_size, cfg.seq_len))
        tgt = torch.randint(0, vocab, (cfg.batch_size, cfg.seq_len))
        params = list(group.parameters())
        alive, clip = torch.ones(k, dtype=torch.bool), torch.full((k,), float(cfg.clip or 5.0))
        died, step_no, total = torch.full((k,), -1, dtype=torch.long), torch.zeros((), dtype=torch.long), torch.zeros(k)
        lr = torch.full((k,), float(cfg.lr))
        hs = [torch.zeros(k, cfg.batch_size, cfg.dim) for _ in range(cfg.layers)]
        cs = [torch.zeros_like(h) for h in hs]
        moments = [(torch.zeros_like(q), torch.zeros_like(q)) for q in params] if cfg.optimizer == "adam" else []
    # the engine's own step (the one fit_stacked_lm trains with): the dead-model marking, the carried state and the
    # loss total included
    step = make_lm_step(group, ids, tgt, hs, cs, lr=lr, clip=clip, optimizer=cfg.optimizer, moments=moments,
                        amp_dtype=torch.bfloat16 if cfg.amp else None, generator=None, alive=alive, died=died,
                        step_no=step_no, total=total)
    return step, group, params + hs + cs + [alive, died, step_no, total] + [t for mv in moments for t in mv]


def _variational_sequential(cfg, schemes: tuple[str, ...] = STORED_SCHEMES) -> list[Group]:
    """Chapter 3 as it ran before the batched group (each scheme and seed its own training): what its stored
    full run measured (its wall time and the words/s of the fused and the time-loop schemes); ``schemes``:
    those of that run (or, for the speed table, the chapter's ladder)."""
    from dropnotes.models import LSTMLM, SparseMLP
    from dropnotes.models.lstm_lm import SCHEMES

    vocab = cfg.vocab_cap or 10000
    tokens = cfg.train_tokens or 929589
    steps = (tokens - 1) // (cfg.batch_size * cfg.seq_len) * cfg.epochs
    groups = []
    with torch.device("meta"):  # what nn.LSTM decomposes into here (cuDNN runs it as a few kernels per layer)
        lstm = nn.LSTM(cfg.dim, cfg.dim, batch_first=True)
        _, per_layer, _ = measure(lambda: lstm(torch.empty(cfg.batch_size, cfg.seq_len, cfg.dim,
                                                        requires_grad=True))[0].sum().backward())
    for scheme in schemes:
        with torch.device("meta"):
            m = LSTMLM(vocab, cfg.dim, cfg.layers, scheme, p_io=cfg.p_io, p_rec=cfg.p_rec, p_emb=cfg.p_emb)
            x = torch.zeros(cfg.batch_size, cfg.seq_len, dtype=torch.long)
            f, n, b = _meta_step(m, x, x, loss=_ce, clip=cfg.clip)
        fused = any(isinstance(r, nn.LSTM) or isinstance(getattr(r, "module", None), nn.LSTM) for r in m.rnns)
        if fused and not SCHEMES[scheme].time_loop:
            n = n - cfg.layers * per_layer + cfg.layers * CUDNN_LSTM_KERNELS
        groups.append(Group("variational", f"LSTM {cfg.layers}x{cfg.dim} {scheme}", cfg.n_seeds, steps, f, n, bytes_per_step=b))
    with torch.device("meta"):
        m = LSTMLM(vocab, cfg.dim, cfg.layers, "variational", p_io=cfg.p_io, p_rec=cfg.p_rec, p_emb=cfg.p_emb)
        m.train()
        fe, ne, be = _meta_forward(m, torch.zeros(cfg.batch_size, cfg.seq_len, dtype=torch.long))
        sv = SparseMLP()
        fs, ns, bs = _meta_step(sv, torch.empty(100, 784), torch.zeros(100, dtype=torch.long), loss=F.cross_entropy,
                            optimizer="adamw")
    test_windows = (cfg.eval_tokens or 82430) // (cfg.batch_size * cfg.seq_len)
    return groups + [
        Group("variational", f"MC dropout ({cfg.mc_samples} passes)", cfg.n_seeds, cfg.mc_samples * test_windows, fe, ne,
              bytes_per_step=be),
        Group("variational", "sparse VD LeNet-300-100", 1, cfg.svd_epochs * math.ceil(cfg.svd_train_size / 100), fs, ns,
              bytes_per_step=bs)]


def _droppath(cfg) -> list[Group]:
    """Chapter 4 on the engine: the arms x seeds of each depth as one StackedViT (AdamW, augmentation, the
    step graph-captured), evaluated once on train, validation and test; and the single-ViT speed table."""
    from dropnotes.experiments.droppath import EVAL_BATCH, arms
    from dropnotes.models import ViT

    steps = cfg.epochs * (cfg.train_size // cfg.batch_size)
    dtype = "bf16" if cfg.amp else "fp32"
    out = []
    for depth, models in arms(cfg, 0.1).items():
        k = len(models)
        a, kw = _vit_args(cfg, depth, k)
        (f, n, b), group = _engine_step(k, cfg, 0, *a, **kw)
        with torch.device("meta"):
            group.eval()
            fe, ne, be = _meta_forward(group, torch.empty(EVAL_BATCH, 3, 32, 32), cfg.amp)
        evals = sum(math.ceil(size / EVAL_BATCH) for size in (cfg.train_size, cfg.val_size, cfg.test_size))
        out += [Group("droppath", f"{k} ViTs depth {depth} dim {cfg.dim} (arms x seeds), batched", 1, steps, f, n, dtype,
                      captured=True, models_per_step=k, bytes_per_step=b),
                Group("droppath", f"depth {depth} evaluation (train, validation, test once)", 1, evals, fe, ne, dtype,
                      models_per_step=k, bytes_per_step=be)]
    with torch.device("meta"):  # the speed table: 3 variants x 28 steps of one deep ViT, eager
        m = ViT(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, drop_path_rate=0.5)
        f, n, b = _meta_step(m, torch.empty(cfg.batch_size, 3, 32, 32), torch.zeros(cfg.batch_size, dtype=torch.long),
                             loss=F.cross_entropy, optimizer="adamw", amp=cfg.amp)
    out.append(Group("droppath", "speed: one deep ViT, 3 variants", 3, 28, f, n, dtype, bytes_per_step=b))
    return out


def _droppath_sequential(cfg) -> list[Group]:
    """Chapter 4 as it ran before the engine (each arm and seed its own eager run): what its stored full run
    measured."""
    from dropnotes.models import ViT

    steps = cfg.epochs * math.ceil(cfg.train_size / cfg.batch_size)
    out = []
    for depth, runs in ((cfg.depth, len(cfg.rates) + 1), (cfg.shallow_depth, 2)):
        with torch.device("meta"):
            m = ViT(dim=cfg.dim, depth=depth, heads=cfg.heads, drop_path_rate=0.1)
            f, n, b = _meta_step(m, torch.empty(cfg.batch_size, 3, 32, 32), torch.zeros(cfg.batch_size, dtype=torch.long),
                                 loss=F.cross_entropy, optimizer="adamw", amp=cfg.amp)
        out.append(Group("droppath", f"ViT depth {depth} dim {cfg.dim}", runs * cfg.n_seeds, steps, f, n,
                         dtype="bf16" if cfg.amp else "fp32", bytes_per_step=b))
    return out


def _stdlib_bytes() -> int:
    """The size of this machine's standard-library corpus (file sizes only; nothing is read)."""
    import sysconfig
    from pathlib import Path

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return sum(p.stat().st_size for p in stdlib.rglob("*.py")
               if "site-packages" not in p.parts and "dist-packages" not in p.parts)


def _corpus_bytes(name: str) -> int:
    """The training split of a pretraining corpus on this machine, in bytes (file sizes only; nothing is read)."""
    if name == "python-stdlib":
        return int(_stdlib_bytes() * 0.95)
    if name == "python-sources":
        from dropnotes.data import held_out_file, python_source_files

        files, _ = python_source_files()
        return sum(p.stat().st_size for i, (_, p) in enumerate(files) if not held_out_file(i))
    return 90_000_000  # enwik8


def _gpt_step_fn(k: int, cfg, batch: int, p: float, device="meta"):
    """Chapter 5's training step of K GPTs as one StackedGPT on ``device``, as
    :func:`dropnotes.stacked.fit_stacked_windows` runs it (each model's windows gathered, bf16 autocast with
    ``cfg.amp``, clipping, AdamW); the step, the group and the tensors it updates."""
    from dropnotes.stacked import StackedGPT, _flat, make_window_step

    rates = [0.0] * (k // 3) + [p] * (k - k // 3)  # as the arms: a third without dropout, two runs of SDPA calls
    group = _on(device, lambda: StackedGPT(k, block_size=cfg.block_size, dim=cfg.dim, layers=cfg.layers,
                                           heads=cfg.heads, p_emb=rates, p_attn=rates, p_resid=rates,
                                           seeds=[0] * k)).train()
    dev = torch.device(device)
    with dev:
        params = list(group.parameters())
        moments = [(torch.zeros_like(q), torch.zeros_like(q)) for q in params]
        table = torch.randint(0, 256, (1000, cfg.block_size + 1))
        idx = torch.randint(0, 1000, (k, batch))
        vec, clip, alive = torch.full((k,), 1e-3), torch.ones(k), torch.ones(k, dtype=torch.bool)
        died, step_no = torch.full((k,), -1, dtype=torch.long), torch.zeros((), dtype=torch.long)
        last = torch.zeros(k)
    # the engine's own step (the one fit_stacked_windows trains with), so the count cannot drift from it
    step = make_window_step(group, table, idx, lr=vec, weight_decay=vec, betas=(0.9, 0.95), clip=clip,
                            amp_dtype=torch.bfloat16 if cfg.amp else None, generator=None, moments=moments,
                            alive=alive, died=died, step_no=step_no, last=last)
    return step, group, params + _flat(moments) + [alive, died, step_no, last]


def _gpt_group_step(k: int, cfg, batch: int, p: float) -> tuple[Cost, Cost]:
    """One training step of a K-model StackedGPT (gather, forward, loss, backward, clipping, AdamW) and one
    evaluation forward, on meta tensors."""
    step, group, _ = _gpt_step_fn(k, cfg, batch, p)
    with torch.device("meta"):
        train_cost = measure(step)
        group.eval()
        eval_cost = _meta_forward(group, torch.zeros(batch, cfg.block_size, dtype=torch.long), cfg.amp)
    return train_cost, eval_cost


def _llm(cfg, pretrain_steps: int | None = None) -> list[Group]:
    """Chapter 5 on the engine: the pretraining arms x seeds x rates as one captured StackedGPT, the full
    fine-tuning runs x seeds as another, each evaluated every ``eval_every`` steps; the LoRA runs one at a time."""
    from dropnotes.experiments.llm import _model, early_evals, full_runs
    from dropnotes.layers import add_lora

    if pretrain_steps is None:  # capped at one pass over the corpus, as the chapter does (this machine's corpus)
        pretrain_steps = int(min(cfg.pretrain_steps, (_corpus_bytes(cfg.pretrain_corpus) // cfg.block_size)
                                 // cfg.batch_size))
    dtype = "bf16" if cfg.amp else "fp32"
    evals = lambda steps, batch: math.ceil(steps / cfg.eval_every) * (cfg.eval_bytes // (batch * cfg.block_size) + 1)  # noqa: E731
    seeds, rates = cfg.n_seeds, len(cfg.lr_factors)
    kp, kr = 3 * rates, 3 * (seeds - 1)  # the first seed's arms x rates; the other seeds' arms at the chosen rates
    (f, n, b), (fe, ne, be) = _gpt_group_step(kp, cfg, cfg.batch_size, cfg.p)
    k = len(full_runs(cfg)) * seeds
    (ff, nf, bf), (ffe, nfe, bfe) = _gpt_group_step(k, cfg, cfg.finetune_batch, cfg.p)
    with torch.device("meta"):
        m = _model(cfg, 0.0)
        add_lora(m, ("qkv",), r=cfg.lora_rank, alpha=2 * cfg.lora_rank, p=cfg.p)
        xf = torch.zeros(cfg.finetune_batch, cfg.block_size, dtype=torch.long)
        fl, nl, bl = _meta_step(m, xf, xf, loss=_ce, optimizer="adamw", clip=1.0, amp=cfg.amp, multi_tensor=True)
    groups = [Group("llm", f"{kp} GPTs {cfg.layers}x{cfg.dim} pretraining (arms x rates, first seed), batched", 1,
                    pretrain_steps, f, n, dtype, captured=True, models_per_step=kp, bytes_per_step=b),
              Group("llm", "pretraining evaluation", 1, evals(pretrain_steps, cfg.batch_size), fe, ne, dtype,
                    captured=True, models_per_step=kp, bytes_per_step=be)]
    if kr:
        (fr, nr, br), (fre, nre, bre) = _gpt_group_step(kr, cfg, cfg.batch_size, cfg.p)
        groups += [Group("llm", f"{kr} GPTs pretraining (arms x the other seeds, chosen rates), batched", 1,
                         pretrain_steps, fr, nr, dtype, captured=True, models_per_step=kr, bytes_per_step=br),
                   Group("llm", "pretraining evaluation (the other seeds)", 1, evals(pretrain_steps, cfg.batch_size),
                         fre, nre, dtype, captured=True, models_per_step=kr, bytes_per_step=bre)]
    return groups + [
            Group("llm", f"{k} GPTs full fine-tuning (rates x sizes x seeds), batched", 1, cfg.finetune_steps, ff, nf, dtype,
                  captured=True, models_per_step=k, bytes_per_step=bf),
            Group("llm", "fine-tuning evaluation", 1, evals(cfg.finetune_steps, cfg.finetune_batch)
                  + len(early_evals(cfg)) * (cfg.eval_bytes // (cfg.finetune_batch * cfg.block_size) + 1), ffe, nfe, dtype,
                  captured=True, models_per_step=k,
                  bytes_per_step=bfe),
            Group("llm", "LoRA fine-tuning runs (one at a time)", len(cfg.lora_rates) * seeds, cfg.finetune_steps, fl, nl,
                  dtype,
                  bytes_per_step=bl)]


def _llm_sequential(cfg, pretrain_steps: int | None = None) -> list[Group]:
    """Chapter 5 as it ran before the engine (each arm and fine-tuning run its own, compiled): what its stored
    full run measured."""
    from dropnotes.experiments.llm import _model

    # counted without the autocast casts: that run was compiled, and torch.compile fuses them into their neighbours
    with torch.device("meta"):
        m = _model(cfg, cfg.p)
        x = torch.zeros(cfg.batch_size, cfg.block_size, dtype=torch.long)
        f, n, b = _meta_step(m, x, x, loss=_ce, optimizer="adamw", clip=1.0)
        xf = torch.zeros(cfg.finetune_batch, cfg.block_size, dtype=torch.long)
        ff, nf, bf = _meta_step(m, xf, xf, loss=_ce, optimizer="adamw", clip=1.0)
    if pretrain_steps is None:  # capped at one pass over the corpus, as the chapter does (this machine's corpus)
        pretrain_steps = int(min(cfg.pretrain_steps, (_corpus_bytes(cfg.pretrain_corpus) // cfg.block_size)
                                 // cfg.batch_size))
    pre_steps = pretrain_steps
    finetunes = len(cfg.finetune_rates) + len(cfg.lora_rates) + sum(1 for s in cfg.sizes for _ in (0, 1)
                                                                   if s != cfg.finetune_bytes)
    dtype = "bf16" if cfg.amp else "fp32"
    return [Group("llm", f"GPT {cfg.layers}x{cfg.dim} pretraining (none, dropout, early)", 3, pre_steps, f, n, dtype,
                  bytes_per_step=b),
            Group("llm", "fine-tuning runs", finetunes, cfg.finetune_steps, ff, nf, dtype, bytes_per_step=bf)]


def _interactions(cfg) -> list[Group]:
    """Chapter 6 on the engine: the CNN arms x seeds as one StackedCNN, the MLP arms x seeds as one StackedMLP,
    each evaluated on train + validation every ``eval_every`` epochs and on the test set once."""
    from dropnotes.experiments.interactions import CNN_ARMS, mlp_arms

    dtype = "bf16" if cfg.amp else "fp32"
    groups = []
    for name, k, size, epochs, example in (
            ("CNN", len(CNN_ARMS) * cfg.n_seeds, cfg.cnn_train_size, cfg.cnn_epochs, (1, 28, 28)),
            ("MLP", len(mlp_arms(cfg)) * cfg.n_seeds, cfg.mlp_train_size, cfg.mlp_epochs, (1, 28, 28))):
        (f, n, b), model = _engine_step(k, cfg, cfg.n_seeds if name == "MLP" else 0, _interaction_model(cfg, name, k),
                                        example, weight_decay=name == "MLP")
        with torch.device("meta"):
            model.eval()
            fe, ne, be = _meta_forward(model, torch.empty(1000, *example), cfg.amp)
        evals = math.ceil(epochs / cfg.eval_every) * math.ceil((size + cfg.val_size) / 1000) + 10
        groups += [Group("interactions", f"{k} {name}s (arms x seeds), batched", 1, epochs * (size // cfg.batch_size),
                         f, n, dtype, captured=True, models_per_step=k, bytes_per_step=b),
                   Group("interactions", f"{name} evaluation (train, validation; test once)", 1, evals, fe, ne, dtype,
                         models_per_step=k, bytes_per_step=be)]
    return groups


def _interactions_sequential(cfg) -> list[Group]:
    """Chapter 6 as it ran before the engine (each arm and seed its own run, eager, fp32): what its stored
    full run measured, and the sequential reference of the batched groups."""
    from dropnotes.experiments.interactions import mlp
    from dropnotes.models import SmallCNN

    with torch.device("meta"):
        cnn = SmallCNN(placement="before-bn", p=cfg.p)
        fc, nc, bc = _meta_step(cnn, torch.empty(cfg.batch_size, 1, 28, 28), torch.zeros(cfg.batch_size, dtype=torch.long),
                            loss=F.cross_entropy)
        net = mlp("dropout", cfg.mlp_hidden, 0.5)
        fm, nm, bm = _meta_step(net, torch.empty(cfg.batch_size, 784), torch.zeros(cfg.batch_size, dtype=torch.long),
                            loss=F.cross_entropy)
    cnn_runs = 5 * cfg.n_seeds  # none, before/after BN, spatial, Gaussian
    mlp_runs = (1 + 3 + 2 + len(cfg.grid_rates) * len(cfg.grid_decays)) * cfg.n_seeds
    return [Group("interactions", "SmallCNN arms (sequential)", cnn_runs,
                  cfg.cnn_epochs * math.ceil(cfg.cnn_train_size / cfg.batch_size), fc, nc, bytes_per_step=bc),
            Group("interactions", f"MLP 2x{cfg.mlp_hidden} arms (sequential)", mlp_runs,
                  cfg.mlp_epochs * math.ceil(cfg.mlp_train_size / cfg.batch_size), fm, nm, bytes_per_step=bm)]


def _cost(cfg) -> list[Group]:
    from dropnotes import bench
    from dropnotes.experiments.cost import _models

    # Timed by torch.utils.benchmark: each call runs for at least its budget; every variant with a PyTorch
    # counterpart is timed twice per side (interleaved), plus the copy reference and SDPA's 3 kernels x 2 rates.
    calls = sum(4 if ref is not None else 1 for _, ref, _ in bench.VARIANTS.values()) * len(cfg.sizes) + 1 + 6
    groups = [Group("cost", "kernel benchmark and SDPA (timing budget)", 1, 0, 0.0, 0, fixed_s=calls * cfg.min_run_time)]
    dtype = "bf16" if cfg.amp else "fp32"
    with torch.device("meta"):
        for name, (model, x, y, loss_fn) in _models(dataclasses.replace(cfg, device="meta"), 0.1).items():
            if y is None:
                x, y = x[:, :-1], x[:, 1:]
            f, n, b = _meta_step(model, x, y, loss=lambda out, t, fn=loss_fn: fn(out.float(), t), optimizer="adamw",
                                 amp=cfg.amp)
            groups.append(Group("cost", f"{name} training step (3 variants, interleaved rounds)", 3,
                                cfg.rounds * cfg.steps_per_round + 3, f, n, dtype, bytes_per_step=b))
    return groups


GROUPS = {"mechanics": _mechanics, "ensembles": _ensembles, "variational": _variational, "droppath": _droppath,
          "llm": _llm, "interactions": _interactions, "cost": _cost}


def chapter_groups(chapter: str, cfg) -> list[Group]:
    return GROUPS[chapter](cfg)


def config_from_record(chapter: str, record: dict):
    """The config a stored run used, rebuilt from its ``params``."""
    import importlib

    module = importlib.import_module(f"dropnotes.experiments.{chapter}")
    cls = next(v for k, v in vars(module).items() if k.endswith("Config") and k != "ChapterConfig" and isinstance(v, type))
    fields = {f.name for f in dataclasses.fields(cls)}
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in record["params"].items() if k in fields}
    return cls(**params)


def calibration_points() -> list[dict]:
    """What the stored full runs measured that the model predicts: wall times, and throughputs of one group."""
    from dropnotes import results

    points = []
    for chapter in GROUPS:
        record = results.load_result(chapter, "full")
        if record is None:
            continue
        cfg = config_from_record(chapter, record)
        if chapter == "llm":  # the steps it really ran (one pass over that machine's corpus)
            curves = record["tables"]["curves"]
            ran = int(curves[curves.run == "pretrain none"].step.max())
            groups = _llm(cfg, ran) if "models" in record["tables"]["pretrain"] else _llm_sequential(cfg, ran)
        elif chapter == "interactions" and "val_size" not in record["params"]:  # stored before the engine
            groups = _interactions_sequential(cfg)
        elif chapter == "droppath" and "val_size" not in record["params"]:  # stored before the engine
            groups = _droppath_sequential(cfg)
        elif chapter == "variational" and "speed" not in record["tables"]:  # stored before the batched group
            groups = _variational_sequential(cfg)
        else:
            groups = chapter_groups(chapter, cfg)
        points.append({"chapter": chapter, "what": "wall time (s)", "measured": record["provenance"]["wall_time_s"],
                       "predict": lambda f, c, g=groups: sum(x.predicted_s(f, c) for x in g)})
        if chapter == "variational":
            runs = record["tables"]["runs"]
            for scheme, label in (("weight-drop", "cuDNN"), ("variational", "time loop")):
                g = next(x for x in groups if x.group.endswith(f" {scheme}"))
                wps = float(runs[runs.scheme == scheme].words_per_s.mean())
                words = cfg.batch_size * cfg.seq_len
                points.append({"chapter": chapter, "what": f"words/s, {scheme} ({label})", "measured": wps,
                               "predict": lambda f, c, g=g, w=words: w / g.step_s(f, c)})
        if chapter == "llm":
            g = groups[0]
            tps = float(record["tables"]["pretrain"].iloc[-1]["tokens_per_s"])  # the early arm: compiled graphs reused
            tokens = cfg.batch_size * cfg.block_size
            points.append({"chapter": chapter, "what": "tokens/s, pretraining", "measured": tps,
                           "predict": lambda f, c, g=g, t=tokens: t / g.step_s(f, c)})
    return points + device_check_points()


def calibrate(points: list[dict] | None = None) -> tuple[float, float, list[dict]]:
    """Fit the fraction of peak and the launch cost to the calibration points (least squares in log space,
    on a grid); return them and each point's residual."""
    points = points if points is not None else calibration_points()
    best = None
    for fraction in [0.05 * i for i in range(1, 21)]:
        for launch in [1e-6 * (1.25 ** j) for j in range(0, 25)]:
            err = sum(math.log(p["predict"](fraction, launch) / p["measured"]) ** 2 for p in points)
            if best is None or err < best[0]:
                best = (err, fraction, launch)
    _, fraction, launch = best
    rows = [{"chapter": p["chapter"], "what": p["what"], "measured": p["measured"],
             "predicted": p["predict"](fraction, launch),
             "error %": 100 * (p["predict"](fraction, launch) / p["measured"] - 1)} for p in points]
    return fraction, launch, rows


def estimate(chapters: list[str], profile: str = "full", fraction: float = DEFAULT_FRACTION,
             launch_s: float = DEFAULT_LAUNCH_S) -> list[dict]:
    """One row per chapter and model group: runs, steps, FLOPs and kernels per step, predicted seconds."""
    import importlib

    rows = []
    for chapter in chapters:
        module = importlib.import_module(f"dropnotes.experiments.{chapter}")
        cfg = module.configure(profile=profile, device="cpu")
        for g in chapter_groups(chapter, cfg):
            rows.append(g.as_dict(fraction, launch_s))
    return rows


predictions_path, stored_prediction = results.predictions_path, results.stored_prediction  # the committed file


def per_chapter(rows: list[dict]) -> dict[str, float]:
    """Predicted seconds per chapter, summed over its groups (rounded to 0.1 s)."""
    out: dict[str, float] = {}
    for r in rows:
        out[r["chapter"]] = out.get(r["chapter"], 0.0) + r["predicted_s"]
    return {c: round(s, 1) for c, s in out.items()}


def store_predictions(rows: list[dict]) -> None:
    """Write :func:`per_chapter` of the full profile's rows to :func:`predictions_path` (atomically)."""
    import json

    from dropnotes.runtime import atomic_write

    body = {"profile": "full", "device": "one H100 (predicted by dropnotes estimate)",
            "predicted_s": per_chapter(rows),
            "how": "python -m dropnotes estimate --profile full --store"}
    atomic_write(predictions_path(), json.dumps(body, indent=1) + "\n")


# ------------------------------------------------------------------ sequential against batched, measured here

def _engine_groups(chapter: str, cfg) -> list[tuple]:
    """The batched groups of an engine chapter: (name, K, one standalone model, the group, example shape,
    max-norm?), at the profile's sizes."""
    from dropnotes.stacked import StackedCNN, StackedMLP
    from dropnotes.models import MLP, SmallCNN

    if chapter == "mechanics":
        k = len(cfg.rates) * cfg.n_seeds
        return [("MLPs", k, lambda: MLP(784, cfg.hidden, 10, p_input=cfg.input_p, p_hidden=0.5),
                 lambda: StackedMLP(k, 784, cfg.hidden, 10, p_input=cfg.input_p, p_hidden=0.5), (784,), False)]
    if chapter == "ensembles":
        k = cfg.n_seeds * (cfg.members + 1)
        return [("MLPs", k, lambda: MLP(784, cfg.hidden, 10, p_input=cfg.p_input, p_hidden=cfg.p_hidden),
                 lambda: StackedMLP(k, 784, cfg.hidden, 10, p_input=cfg.p_input, p_hidden=cfg.p_hidden), (784,), True)]
    if chapter == "interactions":
        from dropnotes.experiments.interactions import CNN_ARMS, mlp, mlp_arms

        kc, km = len(CNN_ARMS) * cfg.n_seeds, len(mlp_arms(cfg)) * cfg.n_seeds
        return [("CNNs", kc, lambda: SmallCNN(placement="before-bn", p=cfg.p),
                 lambda: StackedCNN(kc, p1=cfg.p, p2=cfg.p), (1, 28, 28), False),
                ("MLPs", km, lambda: mlp("dropout", cfg.mlp_hidden, 0.5),
                 lambda: StackedMLP(km, 784, (cfg.mlp_hidden, cfg.mlp_hidden), 10, p_hidden=0.5,
                                    p_connect=[0.5] + [0.0] * (km - 1)), (1, 28, 28), True)]
    if chapter == "droppath":
        from dropnotes.stacked import StackedViT
        from dropnotes.experiments.droppath import arms
        from dropnotes.models import ViT

        k = len(arms(cfg, 0.1)[cfg.depth])
        return [(f"ViTs of depth {cfg.depth} (arms x seeds)", k,
                 lambda: ViT(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, drop_path_rate=0.1),
                 lambda: StackedViT(k, dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, rates=0.1), (3, 32, 32), False)]
    if chapter in ("variational", "llm"):
        return []  # their groups are language models: see _lm_steps
    raise ValueError(f"chapter must be one of {', '.join(COMPARE_CHAPTERS)} (the engine's chapters), got {chapter!r}")


def _sequential_classifier_step(nets, x, y, optimizer: str = "sgd", transform=None):
    """One training step of each of K ordinary models in turn (``torch.optim``), on one shared batch."""
    if optimizer == "adamw":
        opts = [torch.optim.AdamW(n.parameters(), lr=1e-3, weight_decay=0.05, foreach=False) for n in nets]
    else:
        opts = [torch.optim.SGD(n.parameters(), lr=0.01, momentum=0.9, foreach=False) for n in nets]

    def step():
        for net, opt in zip(nets, opts):
            xb = x if transform is None else transform(x)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(xb), y).backward()
            opt.step()
    return step


def _lm_steps(chapter: str, cfg, gen: torch.Generator):
    """Chapter 3's LSTM group and chapter 5's pretraining group: (name, K, batch, sequential step, batched step)."""
    from dropnotes import train
    from dropnotes.stacked import StackedGPT, StackedLSTMLM, _adam_step, _sgd_step

    if chapter == "variational":
        from dropnotes.models import LSTMLM
        from dropnotes.models.lstm_lm import SCHEMES

        vocab = cfg.vocab_cap or 10000
        schemes = list(SCHEMES) * cfg.n_seeds
        k, b, t = len(schemes), cfg.batch_size, cfg.seq_len
        nets = [LSTMLM(vocab, cfg.dim, cfg.layers, s, p_io=cfg.p_io, p_rec=cfg.p_rec, p_emb=cfg.p_emb).train()
                for s in schemes]
        group = StackedLSTMLM.from_models(nets).train()
        lr = 1.0 if cfg.optimizer == "sgd" else 1e-3
        make_opt = (lambda m: torch.optim.SGD(m.parameters(), lr=lr, foreach=False)) if cfg.optimizer == "sgd" else \
            (lambda m: torch.optim.Adam(m.parameters(), lr=lr, foreach=False))
        moments = [(torch.zeros_like(q), torch.zeros_like(q)) for q in group.parameters()]
    else:
        from dropnotes.experiments.llm import _model

        k, b, t, vocab = 3, cfg.batch_size, cfg.block_size, 256
        nets = [_model(cfg, cfg.p).train() for _ in range(k)]
        group = StackedGPT.from_models(nets, p_emb=cfg.p, p_attn=cfg.p, p_resid=cfg.p).train()
        make_opt = lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1,  # noqa: E731
                                               foreach=False)
        moments = [(torch.zeros_like(q), torch.zeros_like(q)) for q in group.parameters()]
    x, y = torch.randint(0, vocab, (b, t), generator=gen), torch.randint(0, vocab, (b, t), generator=gen)
    opts = [make_opt(n) for n in nets]
    params = list(group.parameters())
    ones, alive, step_no = torch.ones(k), torch.ones(k, dtype=torch.bool), torch.zeros((), dtype=torch.long)
    clip = getattr(cfg, "clip", 1.0)

    def sequential():
        for net, opt in zip(nets, opts):
            out = net(x)
            opt.zero_grad(set_to_none=True)
            train.lm_loss(out[0] if isinstance(out, tuple) else out, y).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip, foreach=False)
            opt.step()

    def batched():
        out = group(x, generator=gen)
        logits = out[0] if isinstance(out, tuple) else out
        losses = F.cross_entropy(logits.flatten(0, -2), y.expand(k, -1, -1).flatten(), reduction="none")
        for q in params:
            q.grad = None
        losses.view(k, -1).mean(1).sum().backward()
        step_no.add_(1)
        if chapter == "variational" and cfg.optimizer == "sgd":
            _sgd_step(params, [None] * len(params), ones, None, 0.0, alive, ones * clip)
        else:
            _adam_step(params, moments, step_no, ones * 1e-3, alive, ones * clip, betas=(0.9, 0.95),
                       weight_decay=None if chapter == "variational" else ones * 0.1)

    name = "LSTM LMs (schemes x seeds)" if chapter == "variational" else "GPTs (pretraining arms)"
    return [(name, k, b, sequential, batched)]


def compare_steps(chapter: str, profile: str = "quick", repeats: int = 3) -> list[dict]:
    """Kernels and CPU seconds of one training step of a chapter's K models, trained one at a time
    (``torch.optim``, K steps) against the batched engine (one step), measured here on the CPU."""
    import importlib
    import time

    from dropnotes.stacked import make_step

    module = importlib.import_module(f"dropnotes.experiments.{chapter}")
    cfg = module.configure(profile=profile, device="cpu")
    gen = torch.Generator().manual_seed(0)
    steps = []
    if chapter in ("variational", "llm"):
        steps = _lm_steps(chapter, cfg, gen)
    for name, k, single, stacked, example, max_norm in _engine_groups(chapter, cfg):
        b = cfg.batch_size
        optimizer, transform = ("adamw", _vit_transform()) if chapter == "droppath" else ("sgd", None)
        x, y = torch.rand(b, *example, generator=gen), torch.randint(0, 10, (b,), generator=gen)
        sequential = _sequential_classifier_step([single().train() for _ in range(k)], x, y, optimizer, transform)
        group = stacked().train()
        xs, ys = torch.rand(2 * b, *example, generator=gen), torch.randint(0, 10, (2 * b,), generator=gen)
        idx = torch.randint(0, 2 * b, (k, b), generator=gen)
        vec = torch.full((k,), 0.01)
        constrained = cfg.n_seeds if max_norm else 0  # chapters 2 and 6: one max-norm model per seed
        bufs = ([(torch.zeros_like(p), torch.zeros_like(p)) for p in group.parameters()] if optimizer == "adamw"
                else [torch.zeros_like(p) for p in group.parameters()])
        batched = make_step(group, xs, ys, idx, lr=vec, weight_decay=vec if optimizer == "adamw" else None,
                            momentum=0.9, max_norm=torch.full((constrained,), 3.0) if constrained else None,
                            max_norm_index=torch.arange(constrained) if constrained else None, clip=None, amp_dtype=None,
                            generator=gen, bufs=bufs, alive=torch.ones(k, dtype=torch.bool), died=torch.full((k,), -1),
                            step_no=torch.zeros((), dtype=torch.long), optimizer=optimizer, transform=transform)
        steps.append((name, k, b, sequential, batched))
    rows = []
    for name, k, b, sequential, batched in steps:
        row = {"chapter": chapter, "group": f"{k} {name}", "models": k, "batch": b}
        for label, step in (("sequential", sequential), ("batched", batched)):
            with KernelCounter() as counter:
                step()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            row[f"{label} kernels/step"] = counter.count
            row[f"{label} CPU s/step"] = min(times)
        rows.append(row)
    return rows


def _vit_transform():
    from dropnotes.experiments.droppath import augment
    return augment


COMPARE_CHAPTERS = ("mechanics", "ensembles", "variational", "droppath", "llm", "interactions")


# ------------------------------------------------------------------ the device check: predicted against measured

DEVICE_CHECK_PATH = "device-check.json"  # under results/: a GPU run's measured step times, a calibration source


def checked_steps(chapter: str, cfg) -> list[tuple[str, int, str, Callable]]:
    """The batched training steps of a chapter that carry its predicted time: (group, models, dtype,
    ``build(device) -> (step, group, state)``), each built by the same function the prediction measures."""
    dtype = "bf16" if getattr(cfg, "amp", False) else "fp32"
    if chapter == "mechanics":
        k = len(cfg.rates) * cfg.n_seeds
        return [(f"{k} MLPs {cfg.hidden}", k, dtype, lambda dev: _engine_step_fn(k, cfg, 0, device=dev))]
    if chapter == "ensembles":
        k = cfg.n_seeds * (cfg.members + 1)
        return [(f"{k} MLPs {cfg.hidden}", k, dtype, lambda dev: _engine_step_fn(k, cfg, cfg.n_seeds, device=dev))]
    if chapter == "variational":
        from dropnotes.models.lstm_lm import SCHEMES

        k, (a, kw) = len(SCHEMES) * cfg.n_seeds, _svd_args(cfg)
        return [(f"{k} LSTM LMs {cfg.layers}x{cfg.dim}", k, dtype, lambda dev: _lstm_step_fn(cfg, dev)),
                (f"sparse VD, {cfg.n_seeds} LeNet-300-100", cfg.n_seeds, "fp32",
                 lambda dev: _engine_step_fn(cfg.n_seeds, *a, **kw, device=dev))]
    if chapter == "droppath":
        from dropnotes.experiments.droppath import arms

        out = []
        for depth, models in arms(cfg, 0.1).items():
            k, (a, kw) = len(models), _vit_args(cfg, depth, len(models))
            out.append((f"{k} ViTs depth {depth} dim {cfg.dim}", k, dtype,
                        lambda dev, k=k, a=a, kw=kw: _engine_step_fn(k, cfg, 0, *a, **kw, device=dev)))
        return out
    if chapter == "llm":
        k = 3 * len(cfg.lr_factors)
        return [(f"{k} GPTs {cfg.layers}x{cfg.dim} pretraining", k, dtype,
                 lambda dev: _gpt_step_fn(k, cfg, cfg.batch_size, cfg.p, dev))]
    if chapter == "interactions":
        from dropnotes.experiments.interactions import CNN_ARMS, mlp_arms

        kc, km = len(CNN_ARMS) * cfg.n_seeds, len(mlp_arms(cfg)) * cfg.n_seeds
        return [(f"{kc} CNNs", kc, dtype, lambda dev: _engine_step_fn(kc, cfg, 0, _interaction_model(cfg, "CNN", kc),
                                                                      (1, 28, 28), device=dev)),
                (f"{km} MLPs", km, dtype, lambda dev: _engine_step_fn(km, cfg, cfg.n_seeds, _interaction_model(cfg, "MLP", km),
                                                                      (1, 28, 28), weight_decay=True, device=dev))]
    return []


def _time_step(step, state: list[torch.Tensor], device: torch.device, steps: int) -> tuple[float, bool]:
    """Seconds per call of ``step`` on ``device``: on CUDA captured as the engine captures it and timed with
    CUDA events over ``steps`` replays (no host sync between them); elsewhere eager, by the wall clock.
    Returns the time and whether the step ran as a CUDA graph."""
    import time

    if device.type == "cuda":
        from dropnotes.stacked import _captured

        run = _captured(step, state, device)
        run()
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000 / steps, run is not step
    step()
    begin = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - begin) / steps, False


def device_check(chapters: list[str], profile: str = "full", device: str = "cuda", steps: int = 20) -> list[dict]:
    """Each chapter's batched training steps (:func:`checked_steps`) at ``profile``'s sizes: FLOPs, kernels
    and bytes counted on the meta device with the predicted seconds per step, against the seconds measured
    on ``device`` (one short run: ``steps`` replays of each step; the data are random)."""
    import importlib

    dev = torch.device(device)
    rows = []
    for chapter in chapters:
        cfg = importlib.import_module(f"dropnotes.experiments.{chapter}").configure(profile=profile, device="cpu")
        for name, k, dtype, build in checked_steps(chapter, cfg):
            step, _, _ = build("meta")
            with torch.device("meta"):
                cost = measure(step)
            g = Group(chapter, name, 1, 1, cost.flops, cost.kernels, dtype, captured=True, models_per_step=k,
                      bytes_per_step=cost.bytes)
            step, group, state = build(dev)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            seconds, graphed = _time_step(step, state, dev, steps)
            rows.append({"chapter": chapter, "group": name, "models": k, "dtype": dtype, "flops": cost.flops,
                         "kernels": cost.kernels, "bytes": cost.bytes,
                         "predicted_s": g.step_s(DEFAULT_FRACTION, DEFAULT_LAUNCH_S),
                         "measured_s": seconds, "graphed": graphed, "steps": steps, "device": _device_label(dev),
                         "peak_gib": torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else None})
            del step, group, state
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def _device_label(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type


def device_check_points(path=None) -> list[dict]:
    """Calibration points from a stored device check (``results/device-check.json``, a GPU run's rows):
    each group's measured seconds per step against the model's, at the constants being fitted."""
    import json

    from dropnotes.results import REPO_RESULTS

    path = REPO_RESULTS / DEVICE_CHECK_PATH if path is None else path
    if not path.is_file():
        return []
    points = []
    for r in json.loads(path.read_text())["rows"]:
        if r["device"] == "cpu":
            continue
        g = Group(r["chapter"], r["group"], 1, 1, r["flops"], r["kernels"], r["dtype"], captured=r["graphed"],
                  bytes_per_step=r["bytes"])
        points.append({"chapter": r["chapter"], "what": f"s/step, {r['group']} ({r['device']})", "measured": r["measured_s"],
                       "predict": lambda f, c, g=g: g.step_s(f, c)})
    return points
