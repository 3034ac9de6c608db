"""Every bad input refused before the work starts, with a message that names the parameter.

A battery across the interfaces: the command line (``run``, ``sweep``, ``compute``), ``configure`` (the
Python API of each chapter, which the notebook's first cell and ``compute`` call), the package's
functions and modules, and the environment (results and data folders). Each case asserts the exit
status (2 for the command line) or the exception, and that the message names the parameter. The
papermill path (a bad value or an unknown parameter stopping the first cell) is in test_chapters.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from dropnotes.experiments import REGISTRY, knobs
import torch

from dropnotes import cli, data, functional as DF, layers, models, train
from dropnotes.experiments import cost, droppath, ensembles, interactions, llm, mechanics, variational

# (argv, text the one-line error must contain) -- the parameter's name is always in it.
CLI_CASES = [
    (["run", "mechanics", "-p", "p_example", "nan"], "p_example must be a number in [0, 1), got nan"),
    (["run", "mechanics", "-p", "p_example", "1"], "p_example must be a number in [0, 1), got 1.0"),
    (["run", "mechanics", "-p", "p_example", "-0.1"], "p_example must be a number in [0, 1)"),
    (["run", "mechanics", "-p", "p_hidden", "0.0"], "p_hidden must be a list of at least 2 numbers"),
    (["run", "mechanics", "-p", "p_hidden", "0,0"], "p_hidden must include 0.0 (the no-dropout baseline) and at least one rate"),
    (["run", "mechanics", "-p", "p_hidden", "0.2,0.5"], "p_hidden must include 0.0"),
    (["run", "mechanics", "-p", "p_hidden", "0,x"], "p_hidden must be a list"),
    (["run", "mechanics", "-p", "p_hidden", "0,1.5"], "p_hidden must be a list of at least 2 numbers in [0, 1)"),
    (["run", "mechanics", "-p", "train_size", "0"], "train_size must be an integer in [1, 59,000], got 0"),
    (["run", "mechanics", "-p", "train_size", "70000"], "train_size must be an integer in [1, 59,000], got 70000"),
    (["run", "mechanics", "-p", "profile", "full", "-p", "train_size", "55000"],
     "train_size must be <= 50,000 (MNIST's 60,000 training images less the 10,000 held out"),
    (["run", "mechanics", "-p", "train_size", "1.5"], "train_size must be an integer"),
    (["run", "mechanics", "-p", "epochs", "-1"], "epochs must be an integer in [1, 10,000], got -1"),
    (["run", "mechanics", "-p", "n_seeds", "0"], "n_seeds must be an integer in [1, 100], got 0"),
    (["run", "mechanics", "-p", "seed", "-1"], "seed must be an integer in [0, 2,147,483,647], got -1"),
    (["run", "mechanics", "-p", "seed", "99999999999"], "seed must be an integer in [0, 2,147,483,647]"),
    (["run", "mechanics", "-p", "seed", "2147483647"], "seed must be <= 715827881 with n_seeds=3"),
    (["run", "mechanics", "-p", "seed", "True"], "seed must be an integer"),
    (["run", "mechanics", "-p", "dataset", "cifar"], "dataset='cifar' is not allowed; choose one of 'mnist', 'fashion-mnist'"),
    (["run", "mechanics", "-p", "device", "gpu"], "device='gpu' is not allowed; choose one of 'auto', 'cuda', 'mps', 'cpu'"),
    (["run", "mechanics", "-p", "device", "cuda"], "device='cuda' was requested but CUDA is not available"),
    (["run", "mechanics", "-p", "profile", "3e2"], "profile='3e2' is not allowed"),
    (["run", "mechanics", "-p", "p_input", "0.99999999999999999"], "p_input must be a number in [0, 1)"),
    (["run", "ensembles", "-p", "members", "1"], "members must be an integer in [2, 100], got 1"),
    (["run", "ensembles", "-p", "lr", "0"], "lr must be a number in (0, 10], got 0"),
    (["run", "ensembles", "-p", "lr", "inf"], "lr must be a number in (0, 10]"),
    (["run", "ensembles", "-p", "p_hidden", "half"], "p_hidden must be a number in [0, 1), got 'half'"),
    (["run", "variational", "-p", "p_rec", "-0.1"], "p_rec must be a number in [0, 1), got -0.1"),
    (["run", "variational", "-p", "train_tokens", "100"], "train_tokens must be an integer in [5,000, 929,589], got 100"),
    (["run", "variational", "-p", "mc_samples", "0"], "mc_samples must be an integer in [1, 10,000], got 0"),
    (["run", "droppath", "-p", "dataset", "imagenet"], "dataset='imagenet' is not allowed"),
    (["run", "droppath", "-p", "depth", "2"], "depth must be > 2 (the shallow comparison), got 2"),
    (["run", "droppath", "-p", "train_size", "60000"], "train_size must be an integer in [1, 50,000], got 60000"),
    (["run", "llm", "-p", "p_all", "0"], "p_all must be a number in (0, 0.5), got 0.0"),
    (["run", "llm", "-p", "p_all", "0.5"], "p_all must be a number in (0, 0.5), got 0.5"),
    (["run", "llm", "-p", "pretrain_corpus", "c4"], "pretrain_corpus='c4' is not allowed"),
    (["run", "llm", "-p", "finetune_bytes", "10"], "finetune_bytes must be an integer in [2,048, 1,003,854], got 10"),
    (["run", "interactions", "-p", "p_cnn", "0"], "p_cnn must be a number in (0, 1), got 0.0"),
    (["run", "interactions", "-p", "cnn_epochs", "0"], "cnn_epochs must be an integer in [1, 10,000], got 0"),
    (["run", "cost", "-p", "sizes", "1,x"], "sizes must be a list of at least 1 integers"),
    (["run", "cost", "-p", "sizes", "0"], "sizes must be a list of at least 1 integers in [1, 2,147,483,647]"),
    (["run", "cost", "-p", "sizes", "2000000000"], "sizes must be <="),
    (["run", "cost", "-p", "rounds", "0"], "rounds must be an integer in [1, 1,000], got 0"),
    (["run", "mechanics", "-p", "nosuch", "1"], "unknown parameter 'nosuch'; allowed: profile, device, seed, p_example"),
    (["run", "nosuch"], "unknown chapter 'nosuch'; choose one of mechanics"),
    (["sweep", "mechanics", "-p", "seed", "1,,2"], "parameter seed: empty value in '1,,2'"),
    (["sweep", "mechanics", "-p", "seed", ""], "parameter seed: empty value"),
    (["sweep", "mechanics", "-p", "p_example", "0.1,2"], "p_example must be a number in [0, 1), got 2.0"),
    (["sweep", "mechanics", "-p", "seed", "1,2", "--workers", "0"], "--workers must be an integer >= 1, got 0"),
    (["sweep", "mechanics", "-p", "seed", "1,2", "--workers", "-3"], "--workers must be an integer >= 1, got -3"),
    (["sweep", "mechanics", "-p", "seed", "1", "--executor", "slurm"], "--executor slurm needs Slurm, but sbatch is not on PATH"),
    (["sweep", "mechanics", "-p", "seed", "1", "--timeout-min", "0"], "--timeout-min must be an integer >= 1, got 0"),
    (["sweep", "mechanics", "-p", "p_hidden", "0,0.5;0.5"], "p_hidden must be a list of at least 2 numbers"),
    (["sweep", "droppath", "-p", "depth", "4,1"], "depth must be > 2 (the shallow comparison), got 1"),
    (["compute", "cost", "-p", "rounds", "-2"], "rounds must be an integer in [1, 1,000], got -2"),
    (["compute", "mechanics", "-p", "p_hidden", "[0.0]"], "p_hidden must be a list of at least 2 numbers"),
    (["compute", "mechanics", "-p", "nosuch", "1"], "unknown parameter 'nosuch'"),
    (["compute", "variational", "-p", "p_io", "nan"], "p_io must be a number in [0, 1), got nan"),
    (["compute", "llm", "-p", "device", "tpu"], "device='tpu' is not allowed"),
]


@pytest.mark.parametrize("argv, message", CLI_CASES, ids=[" ".join(a)[:60] for a, _ in CLI_CASES])
def test_command_line_refuses_with_a_named_parameter(tmp_path, capsys, argv, message):
    extra = ["--runs-dir", str(tmp_path / "runs")] if argv[0] in ("run", "sweep") else []
    assert cli.main(argv + extra) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err, "one line, no traceback"
    assert not (tmp_path / "runs").exists(), "nothing started"


def test_parameters_file_errors_are_one_line(tmp_path, capsys):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("seed: [1, 2\n")
    not_a_map = tmp_path / "list.yaml"
    not_a_map.write_text("- 1\n- 2\n")
    wrong_value = tmp_path / "value.yaml"
    wrong_value.write_text("p_example: 2\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("dropout: 0.5\n")
    for path, message in ((tmp_path / "missing.yaml", "cannot read the parameters file"),
                          (bad_yaml, "not valid YAML at line 2"),
                          (not_a_map, "must hold a mapping of parameter names to values, got list"),
                          (wrong_value, "p_example must be a number in [0, 1), got 2"),
                          (unknown, "unknown parameter 'dropout'")):
        assert cli.main(["run", "mechanics", "-f", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_an_unwritable_results_folder_is_refused_at_the_start(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DROPNOTES_RESULTS", str(blocker / "results"))
    for argv in (["run", "mechanics", "--runs-dir", str(tmp_path / "runs")],
                 ["sweep", "mechanics", "-p", "seed", "1,2", "--runs-dir", str(tmp_path / "runs")],
                 ["compute", "cost", "--profile", "quick"]):
        assert cli.main(argv) == 2
        assert "DROPNOTES_RESULTS=" in capsys.readouterr().err
    with pytest.raises(ValueError, match="DROPNOTES_RESULTS=.* is not a writable folder"):
        mechanics.KNOBS.check_namespace({"profile": "quick"})


def test_a_bad_data_folder_is_refused_at_the_start(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DROPNOTES_DATA", str(tmp_path / "typo"))
    assert cli.main(["compute", "cost", "--profile", "quick"]) == 2
    assert "DROPNOTES_DATA=" in capsys.readouterr().err
    with pytest.raises(ValueError, match="DROPNOTES_DATA=.* is not a folder"):
        mechanics.KNOBS.check_namespace({"profile": "quick"})


def test_an_unknown_notebook_parameter_is_refused_by_name():
    ns = {"profile": "quick", "seed": 0, "dropuot": 0.5, "In": [], "_": None, "np": np}
    with pytest.raises(ValueError, match="unknown parameter 'dropuot'; allowed: profile, device, seed, p_example, p_hidden"):
        mechanics.KNOBS.check_namespace(ns)
    mechanics.KNOBS.check_namespace({"profile": "quick", "seed": 3, "np": np})  # modules and known names pass


# configure: the Python API (and the notebook's first cell). Each case: module, kwargs, text.
CONFIGURE_CASES = [
    (mechanics, {"p_hidden": [0.0]}, "p_hidden must be a list of at least 2 numbers"),
    (mechanics, {"p_hidden": "0,0.5,abc"}, "p_hidden must be a list"),
    (mechanics, {"p_example": float("nan")}, "p_example must be a number in [0, 1), got nan"),
    (mechanics, {"p_example": "0.5"}, "p_example must be a number in [0, 1), got '0.5'"),
    (mechanics, {"train_size": -5}, "train_size must be an integer in [1, 59,000], got -5"),
    (mechanics, {"epochs": 2.5}, "epochs must be an integer"),
    (mechanics, {"dataset": "MNIST"}, "dataset='MNIST' is not allowed"),
    (mechanics, {"profile": "fast"}, "profile='fast' is not allowed; choose one of 'smoke', 'quick', 'laptop', 'full', 'auto'"),
    (ensembles, {"members": 1}, "members must be an integer in [2, 100], got 1"),
    (ensembles, {"lr": -0.1}, "lr must be a number in (0, 10]"),
    (variational, {"p_emb": 1.0}, "p_emb must be a number in [0, 1), got 1.0"),
    (variational, {"epochs": 0}, "epochs must be an integer in [1, 1,000], got 0"),
    (droppath, {"depth": 1}, "depth must be > 2"),
    (llm, {"p_all": 0.7}, "p_all must be a number in (0, 0.5), got 0.7"),
    (llm, {"pretrain_steps": 0}, "pretrain_steps must be an integer in [1, 1,000,000], got 0"),
    (interactions, {"p_cnn": -1}, "p_cnn must be a number in (0, 1), got -1"),
    (cost, {"sizes": []}, "sizes must be a list of at least 1 integers"),
    (cost, {"sizes": 3.5}, "sizes must be a list of at least 1 integers"),
    (cost, {"rounds": True}, "rounds must be an integer"),
]


@pytest.mark.parametrize("module, kwargs, message", CONFIGURE_CASES,
                         ids=[f"{m.CHAPTER}-{k}" for m, k, _ in CONFIGURE_CASES])
def test_configure_refuses_with_a_named_parameter(module, kwargs, message):
    with pytest.raises(ValueError) as err:
        module.configure(**{"profile": "quick", **kwargs})
    assert message in str(err.value)


def test_configure_accepts_numpy_and_tensor_values_in_canonical_form():
    a = mechanics.configure(profile="quick", p_example=np.float32(0.25), p_hidden=np.array([0, 0.5]), train_size=np.int64(100))
    b = mechanics.configure(profile="quick", p_example=torch.tensor(0.25), p_hidden=(0.0, 0.5), train_size=100)
    assert a == b and a.p_hidden == (0.0, 0.5) and isinstance(a.train_size, int)


def test_the_device_is_resolved_before_the_profile(monkeypatch):
    monkeypatch.delenv("DROPNOTES_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine...
    cfg = cost.configure(profile="auto", device="cpu")  # ...asked to run on its CPU
    assert cfg.profile == "quick"


# The package's functions and modules.
API_CASES = [
    (lambda: DF.dropout(torch.ones(3), 0.5, training="no"), "training must be True or False, got 'no'"),
    (lambda: DF.dropout(torch.ones(3), 0.5, training=1), "training must be True or False, got 1"),
    (lambda: DF.spatial_dropout(torch.ones(1, 2, 3, 3), 0.5, training="yes"), "training must be True or False"),
    (lambda: DF.drop_path(torch.ones(2, 3), 1.5), "p must be in [0, 1), got 1.5"),
    (lambda: DF.dropout(torch.ones(3), "0.5"), "p must be a number in [0, 1), got '0.5'"),
    (lambda: DF.dropout(torch.ones(3), torch.ones(2)), "p must be a number"),
    (lambda: layers.Dropout(p=-0.5), "p must be in [0, 1), got -0.5"),
    (lambda: models.MLP(784, (512, -1), 10), "hidden must be an integer >= 1, got -1"),
    (lambda: models.MLP(784, (512,), 0), "out_features must be an integer >= 1, got 0"),
    (lambda: models.ViT(dim=-3), "dim must be an integer >= 1, got -3"),
    (lambda: models.ViT(depth=0), "depth must be an integer >= 1, got 0"),
    (lambda: models.SmallCNN(channels=(16, -2)), "channels must be an integer >= 1, got -2"),
    (lambda: models.GPT(layers=-1), "layers must be an integer >= 1, got -1"),
    (lambda: models.LSTMLM(100, dim=0), "dim must be an integer >= 1, got 0"),
    (lambda: train.fit_classifier(models.MLP(4, (3,), 2), torch.ones(8, 4), torch.zeros(8, dtype=torch.long),
                                  torch.ones(2, 4), torch.zeros(2, dtype=torch.long), epochs=1, batch_size=-1,
                                  optimizer=None), "batch_size must be an integer >= 1, got -1"),
    (lambda: list(train.lm_batches(torch.arange(100), 0, 5)), "batch_size must be an integer >= 1, got 0"),
    (lambda: list(train.window_batches(torch.arange(100), 4, -8, 2)), "block_size must be an integer >= 1, got -8"),
]


@pytest.mark.parametrize("call, message", API_CASES, ids=[m[:50] for _, m in API_CASES])
def test_python_api_refuses_with_a_named_parameter(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value)


def test_python_api_accepts_numpy_and_zero_dim_tensor_rates():
    x = torch.ones(10_000)
    for p in (np.float64(0.5), np.float32(0.5), torch.tensor(0.5), 0.5):
        torch.manual_seed(0)
        y = DF.dropout(x, p)
        assert set(y.unique().tolist()) == {0.0, 2.0}
    assert layers.Dropout(np.float64(0.25)).p == 0.25


def test_every_knob_type_is_shown_by_list(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "any (default None)" not in out
    assert "train_size      int or None" in out and "an integer in [1, 59,000]" in out


def test_declared_knobs_match_every_notebook_and_configure():
    """One declaration: each notebook's parameters cell and each configure() signature agree with KNOBS."""
    import inspect


    for chapter in REGISTRY:
        ch = cli.chapter_of(chapter)
        declared = ch.knobs
        cell = cli.chapter_parameters(chapter)
        assert list(cell) == list(declared), chapter
        for name, knob in declared.items():
            default = cell[name]["default"]
            assert declared[name].check(default) == knobs.Knobs.canonical_default(knob), (chapter, name)
        sig = inspect.signature(ch.configure).parameters
        assert set(sig) == set(declared), chapter
        for name, knob in declared.items():
            assert knob.check(sig[name].default) == knobs.Knobs.canonical_default(knob), (chapter, name)


def test_every_parameters_cell_is_generated_from_its_knobs(capsys):
    """The parameters cells' comments come from the knob declarations (with each profile's value), so they cannot
    go stale: `dropnotes params all` checks them, `--write` regenerates them."""
    from dropnotes import notebooks

    for chapter in REGISTRY:
        assert notebooks.parameters_source(cli.chapter_path(chapter)) == cli.generated_parameters(chapter), chapter
    assert cli.main(["params", "all"]) == 0
    text = cli.generated_parameters("mechanics")
    assert "epochs = None  # training epochs (quick: 40; laptop: 80; full: 300)" in text.splitlines()


def test_data_error_for_an_unknown_file():
    with pytest.raises(ValueError, match="relpath='nosuch' is not allowed"):
        data.fetch("nosuch")


def _required(cls):
    import inspect

    import torch.nn as nn

    fill = {"in_features": 4, "out_features": 4, "dim": 8, "heads": 2, "vocab_size": 16, "base": nn.Linear(4, 4),
            "module": nn.Linear(4, 4), "weights": ("weight",), "num_embeddings": 16, "embedding_dim": 4,
            "drop_path": 0.1, "block_size": 3}
    sig = inspect.signature(cls.__init__)
    return {n: fill.get(n, 4) for n, q in list(sig.parameters.items())[1:]
            if q.default is inspect.Parameter.empty and q.kind == q.POSITIONAL_OR_KEYWORD}


def _public_modules():
    import inspect

    import torch.nn as nn

    from dropnotes import layers, models

    out = []
    for mod in (layers, models):
        for name in getattr(mod, "__all__", dir(mod)):
            obj = getattr(mod, name, None)
            if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__.startswith("dropnotes"):
                out.append(obj)
    return out


def _bad_values(cls):
    """(argument, bad value) pairs from each constructor's defaults: non-bool flags, negative and zero sizes,
    out-of-range rates as a float, a NumPy scalar and a 0-d tensor."""
    import inspect

    import numpy as np

    cases = []
    for name, q in list(inspect.signature(cls.__init__).parameters.items())[1:]:
        d = q.default
        if isinstance(d, bool):
            cases.append((name, "yes"))
        elif isinstance(d, int) and name not in ("seed",):
            cases += [(name, -1), (name, 0)]
        elif isinstance(d, float) and (name == "p" or name.startswith("p_") or name.endswith("_p")
                                       or name.endswith("_rate")):
            cases += [(name, 1.5), (name, np.float64(-0.1)), (name, torch.tensor(2.0))]
    return cases


CASES = [(cls, arg, bad) for cls in _public_modules() for arg, bad in _bad_values(cls)]


@pytest.mark.parametrize("cls,arg,bad", CASES, ids=[f"{c.__name__}-{a}-{b!r}" for c, a, b in CASES])
def test_every_public_module_refuses_bad_arguments_by_name(cls, arg, bad):
    """Issue 34, item 9: each public layer and model of dropnotes refuses a bad size, rate or flag with a
    ValueError naming the argument (a string flag is not taken as true, a negative size is not passed on)."""
    kwargs = {**_required(cls), arg: bad}
    with pytest.raises(ValueError, match=arg):
        cls(**kwargs)


def test_concrete_dropout_refuses_a_rate_out_of_range_as_float_or_tensor():
    from dropnotes import functional as DF

    x = torch.ones(3)
    for bad in (1.5, 0.0, torch.tensor(1.5)):
        with pytest.raises(ValueError, match="p must be in"):
            DF.concrete_dropout(x, bad)
    assert DF.concrete_dropout(x, 0.2, training=False) is x


def test_the_last_refusals_a_new_user_meets(tmp_path, monkeypatch, capsys):
    """Issue 47, item 6: each input below was accepted, or refused with a wrong or multi-line message."""
    with pytest.raises(ValueError, match="inverted must be True or False, got 'no'"):
        DF.dropout(torch.ones(4), 0.5, inverted="no")
    with pytest.raises(ValueError, match="p_hidden must be a list .* got '0,,0.5'"):
        mechanics.KNOBS["p_hidden"].parse("0,,0.5")
    assert cli.main(["compute", "mechanics", "-p", "p_hidden", "0,,0.5"]) == 2
    assert "p_hidden must be" in capsys.readouterr().err
    assert cli.main(["run", "mechanics", "--all"]) == 2
    assert "not both" in capsys.readouterr().err
    assert "e.g. 0,0.5" not in cost.KNOBS["sizes"].allowed()
    cost.KNOBS["sizes"].parse(cost.KNOBS["sizes"].allowed().split("e.g. ")[1].rstrip(")"))  # its example is accepted
    bad = tmp_path / "data"
    (bad / "mnist").mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
                 "train-labels-idx1-ubyte.gz"):
        (bad / "mnist" / name).write_bytes(b"not the file")
    monkeypatch.setenv("DROPNOTES_DATA", str(bad))
    monkeypatch.setenv("DROPNOTES_RESULTS", str(tmp_path / "results"))
    assert cli.main(["compute", "mechanics", "--profile", "smoke"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("dropnotes: data error:") and "corrupt" in err[-1] and "Traceback" not in "".join(err)
