"""Chapter 5's verdicts: the margins declared with the rules, the per-window table the rules read again, the
plateau gate of fine-tuning, the claims and :func:`verdicts` / :func:`rejudge`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from dropnotes import results
from dropnotes.experiments._base import config_of
from dropnotes.experiments.judging import judged
from dropnotes.experiments.llm.config import ARMS, CHAPTER, LN2, LLMConfig, first_eval
from dropnotes.stats import Paired, blocks, compare_examples, plateau
from dropnotes.verdict import Verdict, verdict_table

# The verdict rules, as functions of what was measured (unit-tested on synthetic inputs in tests/test_verdict_rules.py).
# Every comparison is paired on the same test-half windows over seeds (stats.compare_examples, in bits per byte), with
# the book's one variance model: seed, window and their interaction.
# "Early dropout does not beat no dropout": the largest gain of early dropout over none (bits per byte on the test
# half) that still counts as "not beating" it. Liu et al. 2025 give no effect on this scale to take a fraction of
# (their measures are downstream scores of larger models), so the margin is a resolution, not a fraction: a gain
# under a hundredth of a bit per byte is one this chapter treats as no practical gain. It was stated with the rule
# (commit 3da432c), before any laptop run of the chapter was stored, and is not to be moved after reading a run.
EARLY_MARGIN_BPB = 0.01
# Convergence (rules 2, declared before any run judged by them). Pretraining needs no plateau gate: its claims are
# about single-epoch pretraining, one pass over the corpus at a fixed token budget (Liu et al. compare models after
# the same pass), so "still improving at the end of the pass" is the regime under test, not a flaw of the run.
# Fine-tuning compares early-stopped minima, which a schedule cut short would overstate: each arm's validation-half
# curve (bits per byte, the regular evaluations; its cosine decay included, since the claim is about the minimum the
# whole schedule reaches, and an arm still improving while its rate anneals had its minimum cut short) takes the plateau
# test (stats.plateau) with δ a quarter of the chapter's resolution EARLY_MARGIN_BPB: an arm whose late quarter still
# gains less than that cannot move a comparison by a practical amount in another quarter. stats.blocks decides
# whether an arm still improving could change the verdict.
FT_DELTA_BPB = EARLY_MARGIN_BPB / 4
NO_WINDOWS = "per-window losses not stored"


def window_table(pre: dict, ft: dict) -> pd.DataFrame:
    """The record table the rules read again (:func:`rejudge`): per model judged, its test-half window losses
    (nats, packed) at the step the rules read (pretraining: the final step; fine-tuning: the step chosen on the
    validation half), with that step's validation-half loss and the run's key (method, arm, rate, slice, seed)."""
    rows = []
    for arm in ARMS:
        for r in pre[arm]:
            rows.append({"method": "pretrain", "arm": arm, "p": float(r.get("p", np.nan)), "size": 0,
                         "seed": int(r["seed"]), "lr": float(r.get("lr", np.nan)),
                         "step": int(r.get("final", {}).get("step", -1)),
                         "valid_loss": float(r.get("final", {}).get("valid_loss", np.nan)),
                         "losses": results.pack_values(r["final_windows"])})
    for (method, q, size), runs in ft.items():
        for r in runs:
            row = r.get("row", {})
            rows.append({"method": method, "arm": "", "p": float(q), "size": int(size), "seed": int(r["seed"]),
                         "lr": np.nan, "step": int(r["best"]["step"]), "valid_loss": float(r["best"]["valid_loss"]),
                         "losses": results.pack_values(r["best"]["windows"]), "epochs": float(row.get("epochs", np.nan)),
                         "overfit_bpb": float(row.get("overfit_bpb", np.nan))})
    return pd.DataFrame(rows)


def _sel(table: pd.DataFrame, **where) -> pd.DataFrame:
    out = table
    for k, v in where.items():
        out = out[np.isclose(out[k].astype(float), v)] if isinstance(v, float) else out[out[k] == v]
    return out.sort_values("seed")


def _bpb_windows(table: pd.DataFrame, **where) -> list[np.ndarray]:
    """One array of test-half window losses per seed, in bits per byte, in seed order."""
    return [results.unpack_values(t) / LN2 for t in _sel(table, **where).losses]


def _mean_bpb(windows: list[np.ndarray]) -> float:
    return float(np.mean([w.mean() for w in windows]))


def arm_plateau(curves: pd.DataFrame | None, method: str, p: float, size: int, eval_every: int):
    """The plateau test (:func:`dropnotes.stats.plateau`, δ = :data:`FT_DELTA_BPB`) of one fine-tuning arm from its
    stored validation-half curves (bits per byte at the regular evaluations, one curve per seed), or the reason it
    cannot run (a text)."""
    if curves is None or not {"method", "p", "size", "valid_bpb"} <= set(curves):
        return "learning curves not stored with their runs' keys"
    arm = _sel(curves, method=method, p=float(p), size=int(size))
    arm = arm[(arm.step % eval_every == 0) | (arm.step == arm.step.max())]
    per_seed = [g.sort_values("step").valid_bpb.to_numpy() for _, g in arm.groupby("seed")]
    if len(per_seed) < 2 or min(map(len, per_seed)) < 4:
        return (f"the plateau test needs 2 seeds and 4 evaluation points per arm; {method} p = {p:g} has "
                f"{len(per_seed)} and {min(map(len, per_seed), default=0)}")
    return plateau(per_seed, FT_DELTA_BPB)


def _numbers(r: Paired, sign: float = 1.0, margin: float | None = None) -> dict:
    """A row's numeric fields in bits per byte from a paired comparison: the effect signed so that > 0 is the
    claim's direction, its two-sided 95 % interval, the margin of a "does not beat" claim or the plateau gate's δ."""
    lo, hi = sorted((sign * r.low, sign * r.high))
    return {"effect": float(sign * r.diff), "low": float(lo), "high": float(hi), "margin": margin, "unit": "bpb"}


def rule_resolved(verdict: str, best_steps: dict, first_eval: int) -> str:
    """A best validation loss on the first evaluation may lie anywhere before it: the grid did not resolve the
    minimum, so the comparison of minima is *inconclusive* whatever it measured."""
    early = [f"{k}" for k, s in best_steps.items() if s <= first_eval]
    if early:
        return f"inconclusive (the minimum of {', '.join(early)} falls on the first evaluation, step {first_eval})"
    return verdict


def rule_crossing(gains: list[tuple]) -> str:
    """Dropout's gain per slice, from the smallest to the largest, as (gain, SE, df) of its paired comparison
    (:class:`~dropnotes.stats.Paired`'s ``diff``, ``se``, ``df``; without df: the normal): it must help on the smallest
    (beyond the two-sided 95 % t factor at its df), not on the largest, and shrink monotonically in between (a rise
    beyond that factor, at the smaller df of the two slices, times their combined SE refutes the crossing, a rise
    within noise leaves it inconclusive)."""
    def c(df):
        return float(sps.t.ppf(0.975, df)) if math.isfinite(df) else float(sps.norm.ppf(0.975))

    g = [(float(x[0]), float(x[1]), float(x[2]) if len(x) > 2 else math.inf) for x in gains]
    (g0, s0, f0), (gl, sl, fl) = g[0], g[-1]
    if g0 < -c(f0) * s0:
        return "not reproduced (dropout hurts on the smallest slice)"
    if g0 <= c(f0) * s0:
        return "inconclusive (no gain shown on the smallest slice)"
    if gl > c(fl) * sl:
        return "not reproduced (the gain persists on the largest slice)"
    rises = [(a, b) for a, b in zip(g, g[1:]) if b[0] > a[0]]
    if any(b[0] - a[0] > c(min(a[2], b[2])) * math.hypot(a[1], b[1]) for a, b in rises):
        return "not reproduced (the gain does not shrink monotonically)"
    return "inconclusive (not monotone: a rise within noise)" if rises else "reproduced"


# The claims of the closing table, in order, without their measured numbers.
CLAIMS = {
    "pretrain": dict(claim="single-epoch pretraining: dropout only slows learning", source="Liu et al. 2025",
                     paper="no dropout better on every downstream task (BERT, Pythia 160M/1.4B)"),
    "early": dict(claim="early dropout does not beat no dropout in single-epoch pretraining",
                  source="Liu et al. 2025 (against Liu et al. 2023)", paper="early dropout also degrades results"),
    "finetune": dict(claim="fine-tuning many epochs on small data: dropout lowers the best validation loss",
                     source="rule of thumb (nanoGPT: train.py 'for finetuning try 0.1+'; train_shakespeare_char.py)",
                     kind="rule of thumb",
                     paper="dropout 0.1+ for fine-tuning; 0.2 for the small Shakespeare set ('we expect to overfit'); "
                           "no ablation value quoted"),
    "lora": dict(claim="LoRA dropout helps LoRA fine-tuning on small data",
                 source="rule of thumb (common LoRA fine-tuning configs)", kind="rule of thumb",
                 paper="lora_dropout 0.05-0.1 used; no ablation value quoted"),
    "crossing": dict(claim="dropout's benefit shrinks as the data grow, and vanishes near one epoch",
                     source="our test, in fine-tuning, of what two pretraining papers found: dropout helps against "
                            "repeated data (Xue et al. 2023), not in single-epoch pretraining (Liu et al. 2025)",
                     kind="our test", setting="Xue et al. 2023",
                     paper="pretraining: dropout helps with repeated data, not in a single epoch; no fine-tuning claim"),
}


def _not_judged(why: str, ours: str = "") -> pd.DataFrame:
    return verdict_table(Verdict(**meta, ours=ours or why, verdict=f"not judged ({why})") for meta in CLAIMS.values())


def _gated(rule: str, r: Paired, why: str) -> tuple[str, str | None]:
    """A rule verdict read with the plateau gate (``why``: what blocks it, '' when nothing does), and its decide."""
    verdict = f"not converged ({why}; it read: {rule})" if why else rule
    decide = r.decide() if rule.startswith("inconclusive") else (why or None)
    return verdict, decide


def _finetune_row(key: str, t: pd.DataFrame, curves, cfg: LLMConfig, method: str, rates, what: str) -> Verdict:
    """Rows 3 and 4: the best rate above 0 (chosen on the validation half: mean over seeds of each run's early-stopped
    validation loss) against 0, paired on the test-half windows at each run's chosen step, gated on each arm's plateau."""
    size = cfg.finetune_bytes
    runs = {q: _sel(t, method=method, p=float(q), size=size) for q in rates}
    best_q = min((q for q in rates if q > 0), key=lambda q: runs[q].valid_loss.mean())
    bpb = {q: _mean_bpb(_bpb_windows(t, method=method, p=float(q), size=size)) for q in rates}
    steps = lambda q: "/".join(str(int(s)) for s in runs[q].step)  # noqa: E731
    ours = f"{what}: best bpb " + ", ".join(f"p={q:g} {bpb[q]:.3f} (step {steps(q)})" for q in rates)
    if method == "full":
        ours += "; rise after the minimum " + ", ".join(f"p={q:g} {runs[q].overfit_bpb.mean():+.3f}" for q in rates)
    tests = {q: arm_plateau(curves, method, q, size, cfg.eval_every) for q in (0.0, best_q)}
    why = next((v for v in tests.values() if isinstance(v, str)), "")
    if why:
        return Verdict(**CLAIMS[key], ours=ours, verdict=f"not judged ({why})", unit="bpb", margin=FT_DELTA_BPB)
    r = compare_examples(_bpb_windows(t, method=method, p=0.0, size=size),
                         _bpb_windows(t, method=method, p=float(best_q), size=size))
    rule = rule_resolved(r.verdict(), {f"p={q:g} (seed {s})": int(st) for q in (0.0, best_q)
                                       for s, st in zip(runs[q].seed, runs[q].step)}, first_eval(cfg))
    verdict, decide = _gated(rule, r, blocks(r.diff, tests[0.0], tests[best_q]))
    if rule.startswith("inconclusive (the minimum"):
        decide = f"evaluations before step {first_eval(cfg)} would resolve the minimum"
    ours += (f"; p={best_q:g} vs 0: {r.diff:+.3f} bpb, 95 % interval {r.low:+.3f} to {r.high:+.3f}; plateau: "
             + "; ".join(p.text(f"p={q:g}", "bpb") for q, p in tests.items()))
    return Verdict(**CLAIMS[key], ours=ours, verdict=verdict, decide=decide, **_numbers(r, margin=FT_DELTA_BPB))


def _tables(rec: dict) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The window table and the curves the rules read, from a run's record (its runs, or its stored tables)."""
    t = rec.get("windows")
    if t is None:
        t = window_table(rec["pre"], rec["ft"])
    curves = rec.get("curves")
    return t, (pd.DataFrame(curves) if curves is not None else None)


def verdicts(rec: dict, cfg: LLMConfig) -> pd.DataFrame:
    """The closing table, with the rules stated in the chapter: every comparison paired on the test-half windows over
    seeds (:func:`dropnotes.stats.compare_examples`, in bits per byte), the fine-tuning rows gated on each arm's
    plateau (:data:`FT_DELTA_BPB`). ``rec``: a run's record (``pre``, ``ft``, ``curves``) or the stored tables
    (``windows``, ``curves``); a record without per-window losses reads *not judged*."""
    if rec.get("windows") is None and "pre" not in rec:
        return _not_judged(NO_WINDOWS)
    t, curves = _tables(rec)
    p, rows = cfg.p_all, []
    pre = {a: _bpb_windows(t, method="pretrain", arm=a) for a in ARMS}
    bpb = {a: _mean_bpb(w) for a, w in pre.items()}
    seeds = len(pre["none"])
    lrs = {a: "/".join(f"{x:g}" for x in _sel(t, method="pretrain", arm=a).lr) for a in ARMS}
    chose = f"; rates chosen on validation: none {lrs['none']}, dropout {lrs['dropout']}" if len(cfg.lr_factors) > 1 else ""
    seen = ""
    if rec.get("pretrain_tokens") and rec.get("corpus_tokens"):
        single = rec["pretrain_tokens"] <= rec["corpus_tokens"]
        seen = (f"; {rec['pretrain_tokens']:,} of {rec['corpus_tokens']:,} bytes seen"
                + ("" if single else " (more than one epoch!)"))
    # 1. no plateau gate: one pass over the corpus is the claim's regime (see FT_DELTA_BPB's comment)
    r = compare_examples(pre["dropout"], pre["none"])  # diff: dropout - none (> 0: no dropout better, the paper's way)
    rows.append(Verdict(**CLAIMS["pretrain"],
                        ours=(f"test-half bpb {bpb['none']:.3f} (p=0) vs {bpb['dropout']:.3f} (p={p:g}), {r.diff:+.3f}, "
                              f"95 % interval {r.low:+.3f} to {r.high:+.3f}; {seeds} seed{'s' if seeds > 1 else ''}"
                              + seen + chose),
                        verdict=(v := r.verdict()), decide=r.decide() if v.startswith("inconclusive") else None,
                        **_numbers(r)))
    # 2. early dropout's gain over none (diff = none - early, > 0: early better) against the margin, one-sided
    r = compare_examples(pre["none"], pre["early"])
    rule = r.not_better(EARLY_MARGIN_BPB, shown=f"{EARLY_MARGIN_BPB:g} bpb")
    decide = None
    if rule.startswith("inconclusive"):
        s = r.seeds_to_decide(effect=abs(EARLY_MARGIN_BPB - r.diff))
        decide = (f"{s} seeds would bound early dropout's gain away from the {EARLY_MARGIN_BPB:g} bpb margin at the "
                  f"measured gain {r.diff:+.3g} and spread" if s else r.decide())
    # the effect is signed the paper's way (> 0: early worse than none); the claim holds while the gain stays below
    # the margin, i.e. the effect above -margin
    rows.append(Verdict(**CLAIMS["early"],
                        ours=(f"early ({cfg.early_fraction:.0%} of steps at p={p:g}) {bpb['early']:.3f} vs none "
                              f"{bpb['none']:.3f} bpb (gain of early {r.diff:+.3f}, 95 % interval {r.low:+.3f} to "
                              f"{r.high:+.3f}; margin {EARLY_MARGIN_BPB:g} bpb, stated in advance)"),
                        verdict=rule, decide=decide, **_numbers(r, sign=-1.0, margin=EARLY_MARGIN_BPB)))
    # 3-4. fine-tuning on the main slice: full and LoRA, gated on each arm's plateau
    rows.append(_finetune_row("finetune", t, curves, cfg, "full", cfg.finetune_rates, f"{cfg.finetune_bytes:,} bytes"))
    rows.append(_finetune_row("lora", t, curves, cfg, "LoRA", cfg.lora_rates, f"rank {cfg.lora_rank}"))
    # 5. the crossing over slice sizes
    wins = {size: (_bpb_windows(t, method="full", p=0.0, size=size), _bpb_windows(t, method="full", p=float(p), size=size))
            for size in cfg.sizes}
    epochs = {size: float(_sel(t, method="full", p=0.0, size=size).epochs.mean()) for size in cfg.sizes}
    paired = {size: compare_examples(*w) for size, w in wins.items()}
    ours = "; ".join(f"{s or 'all'} bytes ({epochs[s]:.1f} epochs): gain {r.diff:+.3f} bpb ({r.low:+.3f} to {r.high:+.3f})"
                     for s, r in paired.items())
    tests = {(s, q): arm_plateau(curves, "full", q, s, cfg.eval_every) for s in cfg.sizes for q in (0.0, p)}
    why = next((v for v in tests.values() if isinstance(v, str)), "")
    if why:
        rows.append(Verdict(**CLAIMS["crossing"], ours=ours, verdict=f"not judged ({why})", unit="bpb",
                            margin=FT_DELTA_BPB))
        return verdict_table(rows)
    small, large = cfg.sizes[0], cfg.sizes[-1]
    # how much the gain shrinks from the smallest slice to the largest (> 0: it shrinks), paired on the same windows
    # and seeds (each seed's two slices share its pretrained base)
    shrink = compare_examples([a - b for a, b in zip(*wins[small])], [a - b for a, b in zip(*wins[large])])
    steps = {f"p={q:g} on {s or 'all'} bytes (seed {sd})": int(st) for s in cfg.sizes for q in (0.0, p)
             for sd, st in zip(_sel(t, method="full", p=float(q), size=s).seed, _sel(t, method="full", p=float(q), size=s).step)}
    rule = rule_resolved(rule_crossing([(r.diff, r.se, r.df) for r in paired.values()]), steps, first_eval(cfg))
    late = [f"on {s or 'all'} bytes, {b}" for s in cfg.sizes
            if (b := blocks(paired[s].diff, tests[s, 0.0], tests[s, p]))]
    verdict = f"not converged ({'; '.join(late)}; it read: {rule})" if late else rule
    decide = None
    if rule.startswith("inconclusive (the minimum"):
        decide = f"evaluations before step {first_eval(cfg)} would resolve the minima"
    elif rule.startswith("inconclusive (no gain"):
        decide = f"the smallest slice's gain: {paired[small].decide()}"
    elif rule.startswith("inconclusive"):
        decide = f"the shrinking of the gain: {shrink.decide()}"
    elif late:
        decide = "; ".join(late)
    rows.append(Verdict(**CLAIMS["crossing"], ours=ours, verdict=verdict, decide=decide,
                        **_numbers(shrink, margin=FT_DELTA_BPB)))
    return verdict_table(rows)


def rejudge(record: dict) -> pd.DataFrame:
    """The rule verdicts of a stored run, computed again from its stored tables with the current rules: its
    per-window losses (``windows``) and curves. A record without per-window losses (the laptop run stored before
    rules 2) reads *not judged (per-window losses not stored)* on every row."""
    cfg = config_of(LLMConfig, record)
    tables = record["tables"]
    if tables.get("windows") is None:
        return judged(CHAPTER, cfg, _not_judged(NO_WINDOWS))
    m = record.get("metrics", {})
    rec = {"windows": tables["windows"], "curves": tables.get("curves"),
           "pretrain_tokens": m.get("pretrain_tokens"), "corpus_tokens": m.get("corpus_tokens")}
    return judged(CHAPTER, cfg, verdicts(rec, cfg))
