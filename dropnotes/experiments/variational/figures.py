"""Chapter 3's figures and stored evidence: learning curves, the sparsity of the learned rates, the scale axis and
its points, the stored full run and the facts the page glues."""

from __future__ import annotations

import pandas as pd

from dropnotes import results
from dropnotes.models import SparseMLP
from dropnotes.experiments._base import plain
from dropnotes.experiments.store import stored_full as _stored_full
from dropnotes.stats import mean_sd
from dropnotes.experiments.variational.config import (CHAPTER, PAPER_VARIATIONAL_MEDIUM, PAPER_ZAREMBA_MEDIUM,
                                                      PAPER_ZAREMBA_SMALL_NOREG)


def plot_curves(curves: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharex=True)
    for scheme, g in curves.groupby("scheme", sort=False):
        m = g.groupby("epoch")[["train_ppl", "valid_ppl"]].mean()
        line, = axes[1].plot(m.index, m.valid_ppl, marker="o", ms=3, label=scheme)
        axes[0].plot(m.index, m.train_ppl, marker="o", ms=3, color=line.get_color(), label=scheme)
    axes[0].set(xlabel="epoch", ylabel="perplexity", title="training (with dropout on)", yscale="log")
    axes[1].set(xlabel="epoch", title="validation", yscale="log")
    axes[1].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def plot_sparsity(model: SparseMLP):
    """Histogram of log α per layer, with the pruning threshold."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.4, 3.2))
    for k, layer in enumerate(model.layers):
        ax.hist(layer.log_alpha.detach().cpu().flatten().numpy(), bins=80, histtype="step", density=True,
                label=f"fc{k + 1} ({layer.weight.numel():,} weights)")
    ax.axvline(model.layers[0].threshold, color="k", ls="--", lw=1)
    ax.set(xlabel="log α", ylabel="density")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


# The figure of every scale on one axis (dropnotes.page.plot_scales): test perplexity per scheme.
SCALE_AXIS = ("test perplexity", "log")
PAPER_POINTS = {"none": PAPER_ZAREMBA_SMALL_NOREG, "naive": PAPER_ZAREMBA_MEDIUM, "variational": PAPER_VARIATIONAL_MEDIUM}
PAPER_POINTS_LABEL = "papers (none: Zaremba's small net; naive, variational: the medium net)"
# Perplexities over different vocabularies are not comparable: one panel per vocabulary, the papers' values (over
# the full 10,000-word vocabulary) on that panel only (dropnotes.page.plot_scales).
PAPER_PANEL = 10000
SCALE_PANEL_TITLE = "{:,}-word vocabulary"


def scale_panel(label: str, live: dict | None = None) -> int:
    """The vocabulary of the run a scale-figure series comes from: this page's run (``live``) or a stored one
    ("stored laptop run ...")."""
    if not label.startswith("stored"):
        return int(live["vocab"])
    record = results.load_repo_result(CHAPTER, label.split()[1])
    return int(record["provenance"].get("vocab") or record["params"].get("vocab_cap") or PAPER_PANEL)


def scale_points(tables: dict) -> pd.DataFrame:
    """Test perplexity per scheme (at each model's best validation epoch), mean and SD over seeds, from ``runs``."""
    return mean_sd(tables["runs"], "scheme", "test_ppl")


def stored_full() -> dict | None:
    return _stored_full(CHAPTER)


def stored_facts(stored: dict) -> dict:
    """The measured numbers the chapter's prose quotes from its stored full run, to be glued (never typed):
    throughputs, perplexities and sparse VD's result, keyed ``var-...``."""
    from IPython.display import Markdown

    runs, svd, epochs = stored["tables"]["runs"], stored["tables"]["svd"], stored["params"]["epochs"]
    wps = runs.groupby("scheme").words_per_s.mean()
    ppl = runs.groupby("scheme").test_ppl.mean().sort_values()
    fused = wps.drop(["naive-recurrent", "variational"])
    epoch_s = runs.groupby("scheme").train_s.mean().sum() / epochs  # the five schemes, one seed each, per epoch
    last = svd[svd.epoch == svd.epoch.max()].mean(numeric_only=True)
    order = list(ppl.index)
    lead = "In this state dropout only slows training: " if order[0] == "none" else ""
    return plain({"var-epochs-run": epochs, "var-loop-kwps": wps[["naive-recurrent", "variational"]].mean() / 1000,
                  "var-fused-kwps-min": fused.min() / 1000, "var-fused-kwps-max": fused.max() / 1000,
                  "var-epoch-s": epoch_s, "var-hours-39": 39 * epoch_s / 3600,
                  "var-ppl-min": ppl.min(), "var-ppl-max": ppl.max(),
                  "var-order": Markdown(f"{lead}{order[0]} is best, {order[1]} next, {order[-1]} last."),
                  "var-wd-speedup": wps["weight-drop"] / wps["variational"],
                  "var-wd-ppl-gap": 100 * abs(1 - ppl["weight-drop"] / ppl["variational"]),
                  "var-svd-epochs": int(last.epoch), "var-svd-fc1": 100 * last.sparsity_fc1,
                  "var-svd-fc2": 100 * last.sparsity_fc2, "var-svd-fc3": 100 * last.sparsity_fc3,
                  "var-svd-compression": last.compression, "var-svd-error": 100 * last.test_error})
