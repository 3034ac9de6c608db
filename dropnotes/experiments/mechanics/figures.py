"""Chapter 1's figures and stored evidence: learning curves, the evidence paragraph the page glues, the scale axis
and its points, the stored runs."""

from __future__ import annotations

import pandas as pd

from dropnotes.stats import mean_sd
from dropnotes.experiments.store import stored_full as _stored_full
from dropnotes import results
from dropnotes.experiments.mechanics.config import CHAPTER, DELTA_PP, PAPER_DROPOUT_RELU, PAPER_NO_DROPOUT
from dropnotes.experiments.mechanics.rules import plateaus, rule_power


def plot_curves(curves: pd.DataFrame, title: str = ""):
    """Test and train error (mean over seeds) against epoch, one colour per rate; returns the figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharex=True)
    for i, (rate, g) in enumerate(curves.groupby("p")):
        m = g.groupby("epoch")[["train_error", "test_error"]].mean() * 100
        colour = f"C{i}"
        axes[0].plot(m.index, m.test_error, color=colour, label=f"p = {rate:g}")
        axes[1].plot(m.index, m.train_error, color=colour, label=f"p = {rate:g}")
    axes[0].set(xlabel="epoch", ylabel="test error (%)", title="test")
    axes[1].set(xlabel="epoch", ylabel="train error (%)", title="train (eval mode)")
    axes[0].legend(frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def stored(profile: str) -> dict | None:
    """The committed result of ``profile`` (``laptop`` or ``full``) of this chapter, if one exists."""

    return results.load_result(CHAPTER, profile)


def evidence_text(record: dict, verdicts: pd.DataFrame) -> str:
    """What a stored evidence run measured, at what scale, beside the paper's values and with its verdicts: the
    chapter's sentences, generated from the record (no number in them is typed)."""
    prm, prov, s = record["params"], record["provenance"], record["tables"]["summary"].set_index("p")
    hidden = " x ".join(map(str, prm["hidden"]))
    tests = plateaus(record)
    conv = "; ".join(p.text(f"p = {r:g}", "pp") for r, p in tests.items()) or "no curves stored"
    speed = record["metrics"]
    rows = verdicts.set_index("claim")
    direction = rows.loc["dropout lowers the test error of a ReLU MLP on MNIST"]
    level = rows.loc["3 x 1024 ReLU dropout net reaches the paper's error"]
    errs = ", ".join(f"{s.loc[p, 'test error %']:.2f} % at p = {p:g}" for p in s.index)
    return (f"The stored **{record['profile']}** run trained the {hidden} ReLU net on {prm['train_size']:,} MNIST "
            f"images for {prm['epochs']} epochs, {prm['n_seeds']} seeds per rate, in "
            f"{'bf16' if prm.get('amp') else 'fp32'} on {prov.get('cpu') or prov['device']} "
            f"({prov.get('threads', '?')} threads), in {prov['wall_time_s'] / 60:.0f} minutes. "
            f"Its training ran at {speed['train_gflops_per_s']:.0f} GFLOP/s, against "
            f"{speed['matmul_2048_gflops_per_s']:.0f} GFLOP/s for a 2048³ product in the same precision on the same "
            f"machine. Plateau test per arm (δ = {DELTA_PP:.4g} pp, a quarter of the reference effect): {conv}. "
            f"Mean test error: {errs}; {cite_t()} report {PAPER_NO_DROPOUT:.2f} % for Simard et al.'s "
            f"standard net and {PAPER_DROPOUT_RELU:.2f} % for the dropout net. "
            f"The direction claim reads **{direction.verdict}**, the level claim **{level.verdict}**. "
            f"Its shortfall against the paper's setting: {direction.scale}. {rule_power(record)}").strip()


def cite_t() -> str:
    return "{cite:t}`srivastava2014dropout`"


# The figure of every scale on one axis (dropnotes.page.plot_scales): test error per hidden-layer rate.
SCALE_AXIS = ("test error (%)", "log")
PAPER_POINTS = {"p = 0": PAPER_NO_DROPOUT, "p = 0.5": PAPER_DROPOUT_RELU}
PAPER_POINTS_LABEL = "paper (p = 0: Simard et al.'s net)"


def scale_points(tables: dict) -> pd.DataFrame:
    """Test error (%) per hidden-layer rate, mean and SD over seeds, from a run's ``finals``."""
    return mean_sd(tables["finals"], "p", "test_error", 100, label=lambda p: f"p = {p:g}")


def stored_full() -> dict | None:
    """The committed full-profile result of this chapter, if one exists."""
    return _stored_full(CHAPTER)
