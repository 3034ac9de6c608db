"""dropnotes estimate: FLOPs and kernels measured on the meta device, and the fitted time model."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from dropnotes import cli, estimate, results
from dropnotes.experiments._base import record_config


def test_kernel_counter_skips_views_and_counts_launches():
    with torch.device("meta"):
        a, b = torch.empty(4, 8), torch.empty(8, 3)
        with estimate.KernelCounter() as k:
            c = (a @ b).relu()
            c.view(12), c.t(), c.unsqueeze(0).expand(2, 4, 3)  # views launch nothing
            c.t().reshape(-1)  # a copy: one kernel
    assert k.count == 3 and k.by_op == {"mm": 1, "relu": 1, "clone": 1}, k.by_op


def test_flops_of_a_linear_step_are_the_textbook_count():
    with torch.device("meta"):
        lin = torch.nn.Linear(64, 32, bias=False)
        flops, kernels, moved = estimate.meta_step(lin, torch.empty(16, 64), torch.zeros(16, dtype=torch.long),
                                                    loss=torch.nn.functional.cross_entropy)
    # forward 2*B*in*out, backward (weight gradient only: the input needs none) 2*B*in*out
    assert flops == 2 * 16 * 64 * 32 * 2
    assert kernels > 0
    # at least: the input and the weight read, the weight's gradient written, SGD reading and writing the weight
    assert moved >= 4 * (16 * 64 + 3 * 64 * 32)


def test_bytes_count_each_distinct_element_once():
    with torch.device("meta"):
        a, big = torch.empty(1000, 100), torch.empty(50000, 100)
        with estimate.KernelCounter() as k:
            a + 1.0  # read 400 kB, write 400 kB
        assert k.bytes == 2 * 4 * 1000 * 100
        with estimate.KernelCounter() as k:
            a * torch.empty(1, 100).expand(1000, 100)  # a broadcast operand is read once
        assert k.bytes == 4 * (2 * 1000 * 100 + 100)
        rows = torch.zeros(10, dtype=torch.long)
        with estimate.KernelCounter() as k:
            big[rows]  # a gather reads the rows it returns, not its source
        assert k.bytes == 2 * 4 * 10 * 100 + 8 * 10
        dst = torch.empty(1000, 100)
        with estimate.KernelCounter() as k:
            dst.copy_(a)  # reads its source, writes its destination (which it does not read)
        assert k.bytes == 2 * 4 * 1000 * 100
        with estimate.KernelCounter() as k:
            a.new_zeros(1000, 100), torch.zeros_like(a)  # write only: the template is not read
        assert k.bytes == 2 * 4 * 1000 * 100


def test_a_memory_bound_group_is_timed_by_its_bytes():
    g = estimate.Group("c", "g", runs=1, steps=10, flops_per_step=1.0, kernels_per_step=1,
                       bytes_per_step=estimate.BANDWIDTH_FRACTION * estimate.PEAK_BANDWIDTH)
    assert g.step_s(0.1, 1e-6) == pytest.approx(1.0)  # one second per step: bytes / (fraction * bandwidth)


def test_a_group_is_compute_or_launch_bound():
    g = estimate.Group("c", "g", runs=2, steps=10, flops_per_step=67e12 * 0.1, kernels_per_step=100)
    assert g.step_s(0.1, 1e-6) == pytest.approx(1.0)  # compute-bound: one second per step
    assert g.predicted_s(0.1, 1e-6) == pytest.approx(20.0)
    g2 = estimate.Group("c", "g", runs=1, steps=10, flops_per_step=0.0, kernels_per_step=300, captured=True)
    assert g2.step_s(0.1, 1e-5) == pytest.approx(300 * 1e-5 / 3)  # launch-bound, inside a CUDA graph


def test_calibration_recovers_known_constants():
    groups = [estimate.Group("c", "compute", 1, 100, 67e12 * 0.01, 10),
              estimate.Group("c", "launch", 1, 100, 1e6, 2000)]
    points = [{"chapter": "c", "what": g.group, "measured": g.predicted_s(0.3, 1.25e-6 * 1.25 ** 4),
               "predict": lambda f, c, g=g: g.predicted_s(f, c)} for g in groups]
    fraction, launch, rows = estimate.calibrate(points)
    assert fraction == pytest.approx(0.3) and launch == pytest.approx(1.25e-6 * 1.25 ** 4)
    assert all(abs(r["error %"]) < 1e-6 for r in rows)


@pytest.mark.slow
def test_estimate_covers_every_chapter_as_json(capsys):
    assert cli.main(["estimate", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["chapter"] for r in rows} == set(cli.REGISTRY)
    for r in rows:
        assert set(r) == {"chapter", "group", "runs", "steps", "flops_per_step", "kernels_per_step", "predicted_s"}
        assert r["predicted_s"] >= 0 and math.isfinite(r["predicted_s"])
    mech = [r for r in rows if r["chapter"] == "mechanics"]
    assert mech[0]["runs"] == 1 and "batched" in mech[0]["group"]  # all arms x seeds in one group
    # the committed predictions the chapters' run boxes quote are this estimate's
    stored = json.loads(results.predictions_path().read_text())["predicted_s"]
    fresh = estimate.per_chapter(rows)
    assert stored == pytest.approx(fresh, abs=0.11), (
        "results/estimate-full.json is out of date: run `python -m dropnotes estimate --profile full --store`")


def test_estimate_refuses_bad_input(capsys):
    assert cli.main(["estimate", "nosuch"]) == 2
    assert "unknown chapter 'nosuch'" in capsys.readouterr().err
    assert cli.main(["estimate", "--profile", "auto"]) == 2
    assert "--profile must be 'smoke', 'quick', 'laptop' or 'full'" in capsys.readouterr().err


@pytest.mark.slow
def test_the_engine_chapters_fit_in_three_h100_minutes():
    """Issue 17's goal: chapters 1, 2 and 6 at their full profiles, every arm x seed in one batched group,
    predicted at <= 3 minutes each on one H100 (with the calibrated constants)."""
    rows = estimate.estimate(["mechanics", "ensembles", "interactions"], "full")
    for chapter in ("mechanics", "ensembles", "interactions"):
        mine = [r for r in rows if r["chapter"] == chapter]
        assert sum(r["predicted_s"] for r in mine) <= 180, (chapter, mine)
        trained = [r for r in mine if "batched" in r["group"]]
        assert trained and all(r["runs"] == 1 for r in trained)


def test_meta_autocast_casts_as_cuda_autocast_does():
    """On the meta device the estimate runs a bf16 step under MetaAutocast: a matmul casts its fp32 inputs
    (one copy each, every use: the engine disables autocast's cache) and returns bf16, layer_norm and softmax
    run in fp32, and the backward returns fp32 gradients to fp32 weights."""
    from dropnotes.amp import autocast

    with torch.device("meta"):
        w = torch.empty(64, 32, requires_grad=True)
        x = torch.empty(8, 32)
        with estimate.KernelCounter() as k:
            with autocast("meta", torch.bfloat16):
                y = torch.nn.functional.linear(x, w)
                z = torch.nn.functional.layer_norm(y, (64,))
                y2 = x @ w.t()
            y.float().sum().backward()
    assert (y.dtype, y2.dtype, z.dtype, w.grad.dtype) == (torch.bfloat16, torch.bfloat16, torch.float32, torch.float32)
    assert k.by_op["_to_copy"] >= 5  # x and w twice, y up for layer_norm, y up for the loss, the gradient back


def test_foreach_ops_count_their_multi_tensor_launches():
    """A torch._foreach_* op is one launch per 110 tensors (or 320 x 65,536 elements) on its fast path, and one
    kernel per tensor when its lists' shapes or dtypes differ (PyTorch's slow path)."""
    with torch.device("meta"):
        small = [torch.empty(3, 100) for _ in range(120)]
        with estimate.KernelCounter() as k:
            torch._foreach_mul_(small, 0.5)
        assert k.count == 2
        big = [torch.empty(40 * 65536)]
        with estimate.KernelCounter() as k:
            torch._foreach_add_(big, big)
        assert k.count == 1
        with estimate.KernelCounter() as k:
            torch._foreach_add_([torch.empty(400 * 65536)], 1.0)  # 400 chunks: two launches of 320 blocks
        assert k.count == 2
        with estimate.KernelCounter() as k:
            torch._foreach_add_(small[:4], [torch.empty(3, 1)] * 4)  # broadcasting: the slow path
        assert k.count == 4
        with estimate.KernelCounter() as k:
            torch._foreach_lerp_(small[:2], small[2:4], 0.1)
        assert k.bytes == 3 * 2 * 300 * 4  # two lists read, the first written


def test_attention_is_counted_as_the_fused_kernels_of_a_gpu():
    q = torch.empty(2, 3, 64, 16, device="meta", requires_grad=True)
    with estimate.KernelCounter() as k:
        estimate.measure(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True).sum().backward())
    ops = set(k.by_op)
    assert {"_scaled_dot_product_efficient_attention", "_scaled_dot_product_efficient_attention_backward"} <= ops
    assert not ops & {"bmm", "_softmax", "_safe_softmax"}  # no (T x T) scores written out


def test_device_check_times_the_predicted_steps_and_feeds_calibration(tmp_path, capsys):
    """`estimate --device-check` builds each batched step with the function the prediction measures, times it
    (here on the CPU, eagerly) and writes its rows; rows measured on a GPU become calibration points."""
    out = tmp_path / "check.json"
    assert cli.main(["estimate", "mechanics", "--device-check", "--profile", "quick", "--steps", "1",
                     "--device", "cpu", "--out", str(out)]) == 0
    assert "measured/predicted" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [r["chapter"] for r in rows] == ["mechanics"] and rows[0]["measured_s"] > 0 and rows[0]["predicted_s"] > 0
    assert estimate.device_check_points(out) == []  # a CPU's timings are not an H100's
    gpu = dict(rows[0], device="NVIDIA H100 80GB HBM3", graphed=True, measured_s=2 * rows[0]["predicted_s"])
    out.write_text(json.dumps({"rows": [gpu]}))
    (point,) = estimate.device_check_points(out)
    assert point["predict"](estimate.DEFAULT_FRACTION, estimate.DEFAULT_LAUNCH_S) == pytest.approx(rows[0]["predicted_s"])
    assert cli.main(["estimate", "--device-check", "--steps", "0"]) == 2
    assert "--steps must be a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["lstm", "gpt"])
def test_the_estimated_step_is_the_engines_training_step(which, monkeypatch):
    """The estimator counts the step the engine trains with (make_lm_step / make_window_step), not a copy of its
    own: the factory is called, and one step advances the step count once (a copy once advanced it twice)."""
    from dropnotes.experiments import llm, variational
    from dropnotes.experiments.costs import llm as llm_costs
    from dropnotes.experiments.costs import variational as variational_costs

    # patched where the chapters' cost modules look them up
    name, chapter = {"lstm": ("make_lm_step", variational_costs), "gpt": ("make_window_step", llm_costs)}[which]
    calls = []
    real = getattr(chapter, name)
    monkeypatch.setattr(chapter, name, lambda *a, **kw: calls.append(kw["step_no"]) or real(*a, **kw))
    if which == "lstm":
        step, _, _ = variational_costs.lstm_step_fn(variational.configure("smoke", device="cpu"), "cpu")
    else:
        cfg = llm.configure("smoke", device="cpu")
        step, _, _ = llm_costs.gpt_step_fn(3, cfg, cfg.batch_size, cfg.p_all, "cpu")
    step()
    assert len(calls) == 1 and int(calls[0]) == 1


@pytest.mark.slow
def test_the_wall_time_predicted_on_this_cpu_holds_within_30_percent(tmp_path, monkeypatch):
    """The prediction a laptop run prints before it starts (dropnotes.estimate.local), checked on a small profile:
    chapter 1 at quick with fewer epochs, predicted from its own steps timed here, against the training and
    evaluation time the run then measures."""
    from dropnotes.estimate.local import predict_here
    from dropnotes.experiments import mechanics

    monkeypatch.setenv("DROPNOTES_RESULTS", str(tmp_path))
    monkeypatch.setenv("DROPNOTES_PROGRESS", "0")
    pred = predict_here("mechanics", "quick", epochs=12)
    assert pred["measured"] and all(g["seconds"] > 0 for g in pred["groups"])
    cfg = mechanics.configure("quick", device="cpu", epochs=12)
    _, finals = mechanics.run_mnist_sweep(cfg)
    measured = finals.attrs["train_s"]
    assert 0.7 * measured <= pred["predicted_s"] <= 1.3 * measured, (pred["predicted_s"], measured)


def test_the_estimator_rebuilds_a_stored_config_under_its_current_names():
    """An old record's renamed parameter (input_p, now p_input) reaches the config the estimator times."""
    from dropnotes.experiments import mechanics

    params = dataclasses.asdict(mechanics.configure("smoke", device="cpu", p_input=0.3))
    params["input_p"] = params.pop("p_input")
    cfg = record_config("mechanics", {"params": params})
    assert cfg.p_input == 0.3 and cfg == mechanics.configure("smoke", device="cpu", p_input=0.3)
