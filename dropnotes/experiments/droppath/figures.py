"""Chapter 4's figures and stored evidence: the drop-path sweep, the scale axis and its points, the stored full run."""

from __future__ import annotations

import pandas as pd

from dropnotes.experiments.store import stored_full as _stored_full
from dropnotes.stats import mean_sd
from dropnotes.experiments.droppath.config import CHAPTER


def plot_sweep(runs: pd.DataFrame, depth: int):
    import matplotlib.pyplot as plt

    deep = runs[(runs.depth == depth) & (runs.schedule == "linear")]
    g = deep.groupby("rate")
    fig, ax = plt.subplots(figsize=(5.4, 3.4))
    ax.errorbar(g.test_error.mean().index, 100 * (1 - g.test_error.mean()), yerr=100 * g.test_error.std().fillna(0),
                marker="o", capsize=3, label="test")
    ax.plot(g.train_error.mean().index, 100 * (1 - g.train_error.mean()), marker="s", ls="--", label="train (eval mode)")
    ax.set(xlabel="drop-path rate of the last block (linear schedule)", ylabel="accuracy (%)")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


# The figure of every scale on one axis (dropnotes.page.plot_scales): test error per depth, rate and schedule.
SCALE_AXIS = ("test error (%)", "linear")


def scale_points(tables: dict) -> pd.DataFrame:
    """Test error (%) per depth, drop-path rate and schedule, mean and SD over seeds, from a run's ``runs``."""
    return mean_sd(tables["runs"], ["depth", "rate", "schedule"], "test_error", 100,
                   label=lambda k: f"depth {k[0]}, {k[2]} {k[1]:g}")


def stored_full() -> dict | None:
    return _stored_full(CHAPTER)
