"""Evaluation metrics on predicted class probabilities: error, NLL, calibration, AUROC."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["error_rate", "nll", "brier", "expected_calibration_error", "reliability", "auroc", "fit_temperature"]


def error_rate(probs: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of inputs whose most probable class is wrong."""
    return float((probs.argmax(-1) != y).float().mean())


def nll(probs: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood (nats) of the true class."""
    return float(-torch.log(probs.gather(-1, y[:, None]).squeeze(-1).clamp_min(eps)).mean())


def brier(probs: torch.Tensor, y: torch.Tensor) -> float:
    """Mean Brier score (Brier 1950): the squared distance between the predicted probabilities and the
    one-hot label, summed over classes (0 is perfect, 2 the worst)."""
    return float(((probs - F.one_hot(y, probs.shape[-1]).to(probs.dtype)) ** 2).sum(-1).mean())


def fit_temperature(logits: torch.Tensor, y: torch.Tensor, max_iter: int = 100) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 that minimises the NLL of ``softmax(logits / T)``
    on held-out data (L-BFGS on log T). Fit it on a validation split, never on the test set."""
    logits, y = logits.detach().float(), y.detach()
    log_t = torch.zeros((), device=logits.device, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), y)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return float(log_t.detach().exp())


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


def auroc(scores_in, scores_out) -> float:
    """Area under the ROC curve for telling ``out`` from ``in`` by a score that is higher for ``out``
    (tensors or arrays).

    Equal to the Mann-Whitney probability P(score_out > score_in) + P(tie)/2, computed from average ranks.
    """
    as_np = lambda v: np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=float)  # noqa: E731
    s_in, s_out = as_np(scores_in), as_np(scores_out)
    s = np.concatenate([s_in, s_out])
    order = np.argsort(s, kind="mergesort")
    _, first, counts = np.unique(s[order], return_index=True, return_counts=True)
    ranks = np.empty_like(s)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # the average rank of each run of ties
    n_in, n_out = len(s_in), len(s_out)
    return float((ranks[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))
