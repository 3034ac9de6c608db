"""Chapter 6 and 7 helpers: the variance-shift formula, BN statistics, the benchmark and dropout removal."""

import pytest
import torch

from dropnotes import bench
from dropnotes.experiments import cost, interactions
from dropnotes.layers import Dropout, SelfAttention
from dropnotes.models import GPT, SmallCNN


@pytest.mark.parametrize("c", [0.0, 1.0])
def test_variance_shift_formula_matches_simulation(c):
    r = interactions.variance_shift_check(c, 1.0, 0.3, n=400_000)
    # sd of a sample variance of 400k heavy-ish draws is well under 1 %; 3 % is > 5 sigma
    assert r["train var (measured)"] == pytest.approx(r["train var (predicted)"], rel=0.03)
    assert r["shift ratio (measured)"] == pytest.approx(r["shift ratio eval/train (predicted)"], rel=0.03)


def test_dropout_before_bn_shifts_the_running_variance():
    torch.manual_seed(0)
    x = torch.randn(512, 1, 28, 28)
    shifts = {}
    for placement in ("none", "before-bn"):
        model = SmallCNN(placement=placement, p=0.5)
        model.train()
        with torch.no_grad():
            for bn in model.bn_layers:
                bn.momentum = None  # cumulative average: the training-mode variance
            for k in range(0, 512, 128):
                model(x[k:k + 128])
        shifts[placement] = interactions.bn_shift(model, x)[1]
    assert shifts["none"] < 1.05 < 1.3 < shifts["before-bn"]
    fixed = interactions.reestimate_bn(model, x)
    assert interactions.bn_shift(fixed, x)[1] < 1.05
    with pytest.raises(ValueError, match="placement"):
        SmallCNN(placement="middle")


def test_strip_and_set_rate():
    model = GPT(block_size=8, dim=16, layers=2, heads=2, p_emb=0.1, p_attn=0.1, p_resid=0.1)
    cost.set_rate(model, 0.0)
    assert all(m.p == 0 for m in model.modules() if isinstance(m, Dropout))
    cost.strip_dropout(model)
    assert not any(isinstance(m, Dropout) for m in model.modules())
    assert all(m.p_attn == 0 for m in model.modules() if isinstance(m, SelfAttention))
    model(torch.zeros(1, 8, dtype=torch.long))


def test_bench_table_and_cli(tmp_path, capsys):
    table = bench.run_bench("cpu", (4096,), min_run_time=0.01, variants=("dropout", "gaussian_dropout"))
    assert list(table.variant) == ["dropout", "gaussian_dropout"] and (table["ms (dropnotes)"] > 0).all()
    assert table.ratio.iloc[0] > 0 and table.ratio.isna().iloc[1]
    out = tmp_path / "b.csv"
    assert bench.main(["--device", "cpu", "--sizes", "4096", "--min-run-time", "0.01", "--out", str(out)]) == 0
    assert "copy bandwidth" in capsys.readouterr().out and out.read_text().startswith("variant,")
    with pytest.raises(SystemExit):
        bench.main(["--sizes", "1,x"])


def test_cost_sizes_parameter():
    assert cost.configure("quick", sizes="16,32").sizes == (16, 32)
    with pytest.raises(ValueError, match="sizes must be"):
        cost.configure("quick", sizes="1,x")
    with pytest.raises(ValueError, match="sizes"):
        cost.configure("quick", sizes=[0])
