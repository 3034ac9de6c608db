"""Chapter 2's figures and the points of its scale plot."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dropnotes.experiments.store import stored_full as _stored_full
from dropnotes.experiments.ensembles.config import CHAPTER, PAPER_T2
from dropnotes.stats import mean_sd

# --------------------------------------------------------------------------- figures


def plot_mc_curve(curve: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    ax.errorbar(curve.k, curve["mc error %"], yerr=curve["sd %"], marker="o", capsize=3, label="MC averaging")
    ax.axhline(curve["weight scaling %"].iloc[0], color="C1", ls="--", label="weight scaling")
    ax.set(xscale="log", xlabel="sampled sub-networks k", ylabel="test error (%)")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def plot_reliability(reliab: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    for name, r in reliab.items():
        keep = r["count"] > 0
        ax.plot(r["confidence"][keep].cpu(), r["accuracy"][keep].cpu(), marker="o", ms=3, label=name)
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def plot_rotation(rot: pd.DataFrame, classes: tuple[int, ...] = (1, 5, 7)):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
    for i, c in enumerate(classes):
        for j, row in rot.iterrows():
            axes[0].scatter(np.full(len(row.logits), row.angle), row.logits[:, c], s=3, color=f"C{i}", alpha=0.3,
                            label=str(c) if j == 0 else None)
            axes[1].scatter(np.full(len(row.probs), row.angle), row.probs[:, c], s=3, color=f"C{i}", alpha=0.3)
    axes[0].set(xlabel="rotation (degrees)", ylabel="softmax input", title="softmax input (MC samples)")
    axes[1].set(xlabel="rotation (degrees)", ylabel="softmax output", title="softmax output (MC samples)")
    axes[0].legend(title="class", frameon=False, markerscale=3)
    axes[2].plot(rot.angle, rot.mc_entropy, marker="o", label="MC dropout: entropy")
    axes[2].plot(rot.angle, rot.mc_mutual_information, marker="o", label="MC dropout: mutual information")
    axes[2].plot(rot.angle, rot.ensemble_entropy, marker="s", label="ensemble: entropy")
    axes[2].set(xlabel="rotation (degrees)", ylabel="nats", title="predictive uncertainty")
    axes[2].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def plot_regression(reg: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.fill_between(reg["grid"], reg["mean"] - 2 * reg["std"], reg["mean"] + 2 * reg["std"], alpha=0.25,
                    label="mean ± 2 std")
    ax.plot(reg["grid"], reg["mean"], label="MC mean")
    ax.scatter(reg["x"], reg["y"], s=8, color="k", label="training data")
    ax.set(xlabel="x", ylabel="y")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


# The figure of every scale on one axis (dropnotes.page.plot_scales): test error per way of predicting.
SCALE_AXIS = ("test error (%)", "log")
PAPER_POINTS = {"single net": PAPER_T2["none"], "dropout, weight scaling": PAPER_T2["dropout"]}
PAPER_POINTS_LABEL = "paper (Srivastava et al. Table 2: standard net; dropout, no max-norm)"


def scale_points(tables: dict) -> pd.DataFrame:
    """Test error (%) of the single nets, the ensemble and the dropout net (weight scaling, MC), mean and SD over
    seeds (and members), from a run's ``quality``."""
    q = tables["quality"]
    q = q[~q.model.str.contains("temperature")]
    return mean_sd(q, "model", "error", 100)


def stored_full() -> dict | None:
    return _stored_full(CHAPTER)
