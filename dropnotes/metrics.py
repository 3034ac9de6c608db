"""Evaluation metrics on predicted class probabilities: error, NLL, calibration, AUROC."""

from __future__ import annotations

import torch

__all__ = ["error_rate", "nll", "expected_calibration_error", "reliability", "auroc"]


def error_rate(probs: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of inputs whose most probable class is wrong."""
    return float((probs.argmax(-1) != y).float().mean())


def nll(probs: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood (nats) of the true class."""
    return float(-torch.log(probs.gather(-1, y[:, None]).squeeze(-1).clamp_min(eps)).mean())


def reliability(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> dict[str, torch.Tensor]:
    """Per confidence bin (equal width on [0, 1]): count, mean confidence and accuracy of the top class."""
    conf, pred = probs.max(-1)
    correct = (pred == y).float()
    idx = (conf * bins).long().clamp(max=bins - 1)
    count = torch.bincount(idx, minlength=bins).float()
    conf_sum = torch.bincount(idx, weights=conf, minlength=bins)
    acc_sum = torch.bincount(idx, weights=correct, minlength=bins)
    safe = count.clamp_min(1)
    return {"count": count, "confidence": conf_sum / safe, "accuracy": acc_sum / safe}


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """ECE (Naeini et al. 2015; Guo et al. 2017): the bin-weighted mean of ``abs(accuracy - confidence)``."""
    r = reliability(probs, y, bins)
    return float((r["count"] / r["count"].sum() * (r["accuracy"] - r["confidence"]).abs()).sum())


def auroc(scores_in: torch.Tensor, scores_out: torch.Tensor) -> float:
    """Area under the ROC curve for telling ``out`` from ``in`` by a score that is higher for ``out``.

    Equal to the Mann-Whitney probability P(score_out > score_in) + P(tie)/2, computed from ranks.
    """
    scores = torch.cat([scores_in, scores_out]).double()
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=scores.dtype, device=scores.device)
    # average the ranks of ties
    uniq, inverse = torch.unique(scores, return_inverse=True)
    rank_sum = torch.zeros(len(uniq), dtype=scores.dtype, device=scores.device).index_add_(0, inverse, ranks)
    rank_cnt = torch.zeros_like(rank_sum).index_add_(0, inverse, torch.ones_like(ranks))
    ranks = (rank_sum / rank_cnt)[inverse]
    n_in, n_out = len(scores_in), len(scores_out)
    r_out = ranks[n_in:].sum()
    return float((r_out - n_out * (n_out + 1) / 2) / (n_in * n_out))
