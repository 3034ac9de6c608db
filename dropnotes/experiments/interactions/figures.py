"""Chapter 6's figures and stored evidence: the dropout x weight-decay grid, the scale axis and its points, the
stored full run and the facts the page glues."""

from __future__ import annotations

import pandas as pd

from dropnotes.experiments._base import plain
from dropnotes.experiments.store import stored_full as _stored_full
from dropnotes.stats import mean_sd
from dropnotes.experiments.interactions.config import CHAPTER


def plot_grid(g: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    im = ax.imshow(g.values, cmap="viridis_r")
    ax.set_xticks(range(g.shape[1]), [f"{c:g}" for c in g.columns])
    ax.set_yticks(range(g.shape[0]), [f"{r:g}" for r in g.index])
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            ax.text(j, i, f"{g.values[i, j]:.2f}", ha="center", va="center", color="w", fontsize=9)
    ax.set(xlabel="weight decay", ylabel="dropout rate (hidden)")
    fig.colorbar(im, ax=ax, label="test error (%)")
    fig.tight_layout()
    return fig


# The figure of every scale on one axis (dropnotes.page.plot_scales): test error per CNN arm and per MLP arm at the
# base learning rate. The papers' values are for other data and nets: no points.
SCALE_AXIS = ("test error (%)", "log")


def scale_points(tables: dict) -> pd.DataFrame:
    """Test error (%) per CNN arm and per MLP arm at the base learning rate, mean and SD over seeds."""
    mlp = tables["mlp"]
    mlp = mlp[mlp.lr == mlp.lr.min()]
    label = lambda k: f"MLP {k[0]}" + (f", wd {k[2]:g}" if k[2] else "") + (f", max-norm {k[1]:g}" if k[1] else "")  # noqa: E731
    return pd.concat([mean_sd(tables["cnn"], "arm", "test_error", 100, label=lambda a: f"CNN {a}"),
                      mean_sd(mlp, ["kind", "max_norm", "weight_decay"], "test_error", 100, label=label)],
                     ignore_index=True)


def stored_full() -> dict | None:
    return _stored_full(CHAPTER)


def stored_facts(stored: dict) -> dict:
    """The measured numbers the chapter's prose quotes from its stored full run, to be glued (never typed),
    keyed ``int-...``."""
    t, p, d = stored["tables"], stored["params"], stored.get("defaults") or {}
    cnn, mlp = t["cnn"], t["mlp"]
    base = mlp[(mlp.weight_decay == 0) & (mlp.max_norm == 0) & (mlp.lr == mlp.lr.min())]
    none, drop = base[base.kind == "none"], base[(base.kind == "dropout") & (base.p == 0.5)]
    before = cnn[cnn.arm == "before-bn (pixel)"]
    after = cnn[cnn.arm == "after-bn (pixel)"]
    b, a, r = 100 * before.test_error.mean(), 100 * after.test_error.mean(), 100 * t["reestimated"].test_error.mean()
    return plain({"int-seeds": p["n_seeds"], "int-cnn-epochs": p["cnn_epochs"], "int-cnn-epochs-default": d.get("cnn_epochs"),
                  "int-mlp-epochs": p["mlp_epochs"], "int-mlp-epochs-default": d.get("mlp_epochs"),
                  "int-mlp-none": 100 * none.test_error.mean(), "int-mlp-dropout": 100 * drop.test_error.mean(),
                  "int-cnn-before": b, "int-cnn-after": a, "int-cnn-gap": b - a, "int-reest-recovered": 100 * (b - r) / (b - a),
                  "int-shift-before": before["bn2 shift"].mean(), "int-shift-after": after["bn2 shift"].mean()})
