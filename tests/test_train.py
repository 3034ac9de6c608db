import pytest
import torch
import torch.nn as nn

from dropnotes import train
from dropnotes.models import MLP


def _blobs(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 5, generator=g) + 2.0 * y[:, None].float()
    return x, y


def test_fit_classifier_learns_and_records_history():
    torch.manual_seed(0)
    x, y = _blobs()
    xt, yt = _blobs(seed=1)
    model = MLP(5, (16,), 2, p_hidden=0.2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    hist = train.fit_classifier(model, x, y, xt, yt, epochs=6, batch_size=32, optimizer=opt, eval_every=2)
    assert hist.epoch.tolist() == [2, 4, 6]
    assert hist.test_error.iloc[-1] < 0.1  # separable blobs
    assert hist.train_loss.iloc[-1] < hist.train_loss.iloc[0]
    assert model.training  # the loop leaves the model as it found it


def test_max_norm_projects_rows():
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.mul_(100)
    train.max_norm_(nn.Sequential(lin), 2.0)
    assert torch.all(lin.weight.norm(dim=1) <= 2.0 + 1e-5)


def test_lm_batches_shift_targets_by_one():
    tokens = torch.arange(101)
    batches = list(train.lm_batches(tokens, batch_size=4, seq_len=10))
    x, y = batches[0]
    assert x.shape == (4, 10) and torch.equal(y, x + 1)
    assert sum(b[0].shape[1] for b in batches) == 25


def test_evaluate_lm_matches_uniform_model():
    class Uniform(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.zeros(*x.shape, 7) + self.w

    nll = train.evaluate_lm(Uniform(), torch.randint(0, 7, (500,)), batch_size=4, seq_len=16)
    assert nll == pytest.approx(torch.log(torch.tensor(7.0)).item(), rel=1e-6)


def test_progress_env(monkeypatch, capsys):
    from dropnotes import runtime

    monkeypatch.setenv("DROPNOTES_PROGRESS", "1")
    assert runtime.progress_mode() == "lines"  # pytest's stderr is not a terminal: lines, not a bar
    assert list(runtime.progress(range(3), "demo", every_s=0.0)) == [0, 1, 2]
    assert capsys.readouterr().err.splitlines()[-1].startswith("demo: epoch 3/3")
    monkeypatch.setenv("DROPNOTES_PROGRESS", "0")
    assert runtime.progress_mode() == "off" and not train.show_progress()
    assert list(runtime.progress(range(3), "demo", every_s=0.0)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("DROPNOTES_PROGRESS")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setitem(__import__("sys").modules, "ipykernel", object())
    assert runtime.progress_mode() == "off"  # a notebook page stays clean unless asked
