"""Chapter 5's figures and generated facts: the pretraining and fine-tuning curves, the points of the scale plot and
the numbers the page glues in from a stored run."""

from __future__ import annotations

import pandas as pd

from dropnotes.experiments._base import config_of, plain
from dropnotes.experiments.store import stored_full as _stored_full
from dropnotes.experiments.llm.config import CHAPTER, LLMConfig
from dropnotes.stats import mean_sd


def _first_seed(curves: pd.DataFrame) -> pd.DataFrame:
    """The curves the figures draw: the first seed's, at each arm's chosen rate (older records: all of them)."""
    if "seed" in curves:
        curves = curves[(curves.seed == curves.seed.min()) & curves.chosen.astype(bool)]
    return curves.assign(run=curves.run.str.replace(r" (seed|lr)=\S+", "", regex=True))


def plot_pretraining(curves: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.4, 3.4))
    for run, g in _first_seed(curves[curves.run.str.startswith("pretrain")]).groupby("run", sort=False):
        ax.plot(g.step, g.valid_bpb, label=run.replace("pretrain ", ""))
    ax.set(xlabel="step", ylabel="validation bits per byte")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def plot_finetuning(curves: pd.DataFrame, size: int):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, method in zip(axes, ("full", "LoRA")):
        sel = _first_seed(curves[curves.run.str.startswith(method)])
        sel = sel[sel.run.str.endswith(f"size={size}")]
        for run, g in sel.groupby("run", sort=False):
            ax.plot(g.epochs, g.valid_bpb, marker="o", ms=2, label=run.split(" size")[0])
        ax.set(xlabel="epochs over the fine-tuning slice", title=f"{method} fine-tuning")
        ax.legend(frameon=False, fontsize=8)
    axes[0].set(ylabel="validation bits per byte")
    fig.tight_layout()
    return fig


# The figure of every scale on one axis (dropnotes.page.plot_scales): bits per byte on the test half, pretraining
# per arm and fine-tuning (full, on the main slice) per rate. The papers report other models' losses: no points.
SCALE_AXIS = ("bits per byte (test half)", "linear")


def scale_points(tables: dict) -> pd.DataFrame:
    """Pretraining bpb per arm and the best full fine-tuning bpb per rate on the main slice, mean and SD over seeds."""
    pre = tables["pretrain"]
    pre = pre[pre.chosen] if "chosen" in pre else pre
    ft = tables["finetune"]
    main = ft[(ft.method == "full") & (ft["size"] == ft.loc[ft.method == "LoRA", "size"].iloc[0])] \
        if (ft.method == "LoRA").any() else ft[ft.method == "full"]
    return pd.concat([mean_sd(pre, "arm", "final_bpb", label=lambda a: f"pretrain {a}"),
                      mean_sd(main, "p", "best_bpb", label=lambda q: f"fine-tune p = {q:g}")], ignore_index=True)


def stored_full() -> dict | None:
    return _stored_full(CHAPTER)


def stored_facts(stored: dict) -> dict:
    """The measured numbers the chapter's prose quotes from its stored full run, to be glued (never typed),
    keyed ``llm-...``."""
    from IPython.display import Markdown

    t, p = stored["tables"], stored["params"]
    pre, ft, curves = t["pretrain"], t["finetune"], _first_seed(t["curves"])
    if "chosen" in pre:  # several seeds and rates: each arm's kept runs, averaged over seeds
        pre = pre[pre.chosen.astype(bool)].groupby("arm", sort=False).mean(numeric_only=True).reset_index()
    if "seed" in ft:
        ft = ft.groupby(["method", "p", "size"], as_index=False, sort=False).mean(numeric_only=True)
    pre = pre.set_index("arm")
    full = ft[ft.method == "full"]
    main = full[full["size"] == p["finetune_bytes"]].set_index("p")
    q = float(config_of(LLMConfig, stored).p_all)  # a stored run's params under their current names
    best = lambda size, rate: float(full[(full["size"] == size) & (full.p == rate)].best_bpb.iloc[0])  # noqa: E731
    sizes = sorted(full["size"].unique())
    small, large, whole = sizes[0], sizes[-2], sizes[-1]
    corpus = stored["provenance"].get("corpus", {})
    return plain({"llm-python": Markdown(f"Python {corpus.get('python', '?')}"), "llm-corpus-mb": corpus.get("bytes", 0) / 1e6,
                  "llm-steps-run": int(curves[curves.run == "pretrain none"].step.max()),
                  "llm-steps-allowed": p["pretrain_steps"],
                  "llm-bpb-none": pre.final_bpb["none"], "llm-bpb-dropout": pre.final_bpb["dropout"],
                  "llm-bpb-early": pre.final_bpb["early"], "llm-p": q,
                  "llm-tps-none": pre.tokens_per_s["none"] / 1e6, "llm-mfu-none": 100 * pre.mfu["none"],
                  "llm-tps-early": pre.tokens_per_s["early"] / 1e6, "llm-mfu-early": 100 * pre.mfu["early"],
                  "llm-params-m": float(main.trainable.iloc[0]) / 1e6, "llm-ft-steps": p["finetune_steps"],
                  "llm-ft-kb": p["finetune_bytes"] / 1000, "llm-ft-epochs": float(main.epochs.iloc[0]),
                  "llm-rise-0": main.overfit_bpb[0.0], "llm-rise-p": main.overfit_bpb[q], "llm-rise-2p": main.overfit_bpb[2 * q],
                  "llm-best-0": main.best_bpb[0.0], "llm-best-p": main.best_bpb[q], "llm-best-step-0": int(main.best_step[0.0]),
                  "llm-small-kb": small / 1000, "llm-small-epochs": float(full[full["size"] == small].epochs.iloc[0]),
                  "llm-small-gain": best(small, 0.0) - best(small, q), "llm-large-kb": large / 1000,
                  "llm-large-gain": best(large, 0.0) - best(large, q), "llm-all-gain": best(whole, 0.0) - best(whole, q)})
