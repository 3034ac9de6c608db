import random

import numpy as np
import pytest
import torch

from dropnotes import runtime


def test_resolve_profile_explicit_and_auto(monkeypatch):
    assert runtime.resolve_profile("quick") == "quick"
    assert runtime.resolve_profile("full") == "full"
    monkeypatch.delenv("DROPNOTES_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.resolve_profile("auto") == "quick"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.resolve_profile("auto") == "full"


def test_env_overrides_auto_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("DROPNOTES_PROFILE", "quick")
    assert runtime.resolve_profile("auto") == "quick"
    assert runtime.resolve_profile("full") == "full"  # an explicit profile wins
    monkeypatch.setenv("DROPNOTES_PROFILE", "fastest")
    with pytest.raises(ValueError, match="DROPNOTES_PROFILE.*'smoke', 'quick', 'laptop', 'full'"):
        runtime.resolve_profile("auto")


def test_unknown_profile_names_allowed_values():
    with pytest.raises(ValueError, match=r"profile='fastest'.*'smoke', 'quick', 'laptop', 'full', 'auto'"):
        runtime.resolve_profile("fastest")


def test_select_device():
    assert runtime.select_device("cpu").type == "cpu"
    assert runtime.select_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="device='tpu'.*'auto', 'cuda', 'mps', 'cpu'"):
        runtime.select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            runtime.select_device("cuda")


def test_seed_everything_repeats_all_generators():
    def draw():
        return random.random(), np.random.rand(), torch.rand(3)

    runtime.seed_everything(7)
    a = draw()
    runtime.seed_everything(7)
    b = draw()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    with pytest.raises(ValueError, match="seed"):
        runtime.seed_everything(-1)


def test_deterministic_mode_toggles():
    runtime.set_deterministic(True)
    try:
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        runtime.set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.5", None, True])
def test_check_probability_rejects(bad):
    with pytest.raises(ValueError, match="^rate "):
        runtime.check_probability("rate", bad)


def test_check_probability_accepts_bounds():
    assert runtime.check_probability("p", 0) == 0.0
    assert runtime.check_probability("p", 0.999) == 0.999
    assert runtime.check_probability("p", 1.0, allow_one=True) == 1.0


def test_profile_config_overrides_and_checks():
    table = {"quick": {"epochs": 3, "lr": 0.1}, "full": {"epochs": 100, "lr": 0.1}}
    assert runtime.profile_config("quick", table) == ("quick", {"epochs": 3, "lr": 0.1})
    resolved, cfg = runtime.profile_config("full", table, epochs=7, n_seeds=None)
    assert resolved == "full" and cfg == {"epochs": 7, "lr": 0.1}
    assert table["full"]["epochs"] == 100  # the defaults are not modified
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        runtime.profile_config("quick", table, epochs=0)


def test_named_streams_are_independent_and_reproducible():
    a = torch.rand(5, generator=runtime.stream(3, "subset"))
    assert torch.equal(a, torch.rand(5, generator=runtime.stream(3, "subset")))
    assert not torch.equal(a, torch.rand(5, generator=runtime.stream(3, "masks")))
    assert not torch.equal(a, torch.rand(5, generator=runtime.stream(4, "subset")))
    # No offset arithmetic: stream (s, name) is not stream (s + k, name) for any small k.
    assert runtime.stream_seed(0, "masks") not in {runtime.stream_seed(k, "subset") for k in range(10_001)}


def test_seed_blocks_are_disjoint_across_a_sweep():
    from dropnotes.experiments import interactions, mechanics

    blocks = [mechanics.configure(profile="quick", seed=s, n_seeds=2).seeds for s in (1, 2, 3)]
    assert blocks == [[2, 3], [4, 5], [6, 7]]
    assert mechanics.configure(profile="quick", n_seeds=3).seeds == [0, 1, 2]  # seed 0 is always 0..n-1
    assert interactions.configure(profile="quick", seed=5).seeds == [5]  # one seed: the seed itself


def test_one_timer_synchronises_and_measures():
    import time

    with runtime.Timer("cpu") as t:
        time.sleep(0.05)
    assert 0.04 < t.seconds < 1.0
    started = runtime.Timer("cpu").start()
    time.sleep(0.02)
    assert started.elapsed() >= 0.015


def test_atomic_write_leaves_old_or_new(tmp_path):
    path = tmp_path / "r.json"
    runtime.atomic_write(path, "old")
    with pytest.raises(RuntimeError):
        with runtime.atomic_file(path, "w") as fh:
            fh.write("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_every_chapter_has_a_smoke_profile_on_the_quick_code_path():
    """smoke sets the same knobs as quick (the same code path), only smaller, and configure accepts it."""

    from dropnotes.experiments import REGISTRY

    for chapter in REGISTRY:
        module = REGISTRY[chapter].module
        d = module.PROFILE_DEFAULTS
        assert set(d["smoke"]) == set(d["quick"]), chapter
        assert module.configure(profile="smoke", device="cpu").profile == "smoke"


def test_a_cpu_without_fast_bf16_runs_the_bf16_profiles_in_float32(monkeypatch):
    """On a CPU whose bf16 products are slower than float32 (no native bf16 dot products), a profile's bf16 autocast
    would cost orders of magnitude: the profile runs in float32 instead, says so, and its config records it."""
    import warnings

    from dropnotes import runtime

    defaults = {"laptop": {"amp": True, "epochs": 3}, "quick": {"amp": False, "epochs": 1},
                "full": {"amp": True, "epochs": 9}}
    monkeypatch.setenv(runtime.BF16_OVERRIDE, "0")
    monkeypatch.setitem(runtime._CPU_RATES, "bf16", 1e9)
    monkeypatch.setitem(runtime._CPU_RATES, "fp32", 1e11)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, cfg = runtime.profile_config("laptop", defaults, "cpu")
    assert cfg["amp"] is False and any("bf16 autocast off" in str(w.message) for w in caught)
    assert runtime.profile_config("full", defaults, "cpu")[1]["amp"] is True  # a GPU's profile, as the estimator counts it
    monkeypatch.setenv(runtime.BF16_OVERRIDE, "1")
    assert runtime.profile_config("laptop", defaults, "cpu")[1]["amp"] is True
    assert runtime.profile_config("laptop", defaults, "meta")[1]["amp"] is True  # the estimator counts a GPU's step
    monkeypatch.delenv(runtime.BF16_OVERRIDE)
    runtime._CPU_RATES.clear()
    fast = runtime.cpu_bf16_fast(size=64, repeats=1)
    assert set(runtime._CPU_RATES) == {"fp32", "bf16"} and fast == (runtime._CPU_RATES["bf16"] >= runtime._CPU_RATES["fp32"])


def test_notebook_kernel_threads(tmp_path):
    """``notebooks.execute(threads=n)`` caps the kernel's compute threads (the test suite runs two chapters at
    once that way); a bad value names the parameter."""
    import nbformat

    from dropnotes import notebooks

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("threads = 0", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import os, torch\nprint(os.environ.get('OMP_NUM_THREADS'), torch.get_num_threads())")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "probe.ipynb"
    nbformat.write(nb, src)
    notebooks.execute(src, tmp_path / "out.ipynb", {}, threads=1)
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert out.cells[-1].outputs[0]["text"].split() == ["1", "1"]
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        notebooks.execute(src, tmp_path / "out.ipynb", {}, threads=0)
