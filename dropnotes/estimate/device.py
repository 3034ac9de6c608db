"""Steps measured on a real device: the batched engine against its models one at a time on this CPU
(``--compare``), and each chapter's batched steps timed on a GPU against their predictions (``--device-check``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from dropnotes.estimate.counter import KernelCounter, measure
from dropnotes.estimate.groups import _engine_step_fn, _gpt_step_fn, _interaction_model, _lstm_step_fn, _svd_args, _vit_args
from dropnotes.estimate.timemodel import DEFAULT_FRACTION, DEFAULT_LAUNCH_S, Group


# ------------------------------------------------------------------ sequential against batched, measured here

def _engine_groups(chapter: str, cfg) -> list[tuple]:
    """The batched groups of an engine chapter: (name, K, one standalone model, the group, example shape,
    max-norm?), at the profile's sizes."""
    from dropnotes.stacked import StackedCNN, StackedMLP
    from dropnotes.models import MLP, SmallCNN

    if chapter == "mechanics":
        k = len(cfg.rates) * cfg.n_seeds
        return [("MLPs", k, lambda: MLP(784, cfg.hidden, 10, p_input=cfg.p_input, p_hidden=0.5),
                 lambda: StackedMLP(k, 784, cfg.hidden, 10, p_input=cfg.p_input, p_hidden=0.5), (784,), False)]
    if chapter == "ensembles":
        k = cfg.n_seeds * (cfg.members + 1)
        return [("MLPs", k, lambda: MLP(784, cfg.hidden, 10, p_input=cfg.p_input, p_hidden=cfg.p_hidden),
                 lambda: StackedMLP(k, 784, cfg.hidden, 10, p_input=cfg.p_input, p_hidden=cfg.p_hidden), (784,), True)]
    if chapter == "interactions":
        from dropnotes.experiments.interactions import CNN_ARMS, mlp, mlp_arms

        kc, km = len(CNN_ARMS) * cfg.n_seeds, len(mlp_arms(cfg)) * cfg.n_seeds
        return [("CNNs", kc, lambda: SmallCNN(placement="before-bn", p=cfg.p),
                 lambda: StackedCNN(kc, p_before_bn=cfg.p, p_after_bn=cfg.p), (1, 28, 28), False),
                ("MLPs", km, lambda: mlp("dropout", cfg.mlp_hidden, 0.5),
                 lambda: StackedMLP(km, 784, (cfg.mlp_hidden, cfg.mlp_hidden), 10, p_hidden=0.5,
                                    p_connect=[0.5] + [0.0] * (km - 1)), (1, 28, 28), True)]
    if chapter == "droppath":
        from dropnotes.stacked import StackedViT
        from dropnotes.experiments.droppath import arms
        from dropnotes.models import ViT

        k = len(arms(cfg, 0.1)[cfg.depth])
        return [(f"ViTs of depth {cfg.depth} (arms x seeds)", k,
                 lambda: ViT(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, p_path=0.1),
                 lambda: StackedViT(k, dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, p_path=0.1), (3, 32, 32), False)]
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
        return [(f"{k} MLPs {cfg.hidden}", k, dtype, lambda dev: _engine_step_fn(k, cfg, 0, device=dev))]  # no max-norm
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
