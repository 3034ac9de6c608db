r"""Monte-Carlo dropout at test time (Gal & Ghahramani 2016) and predictive summaries.

:func:`mc_predict` puts a model in eval mode (so batch norm uses its running statistics), turns
only the dropout-family layers back on, runs ``samples`` stochastic passes and restores every
module's previous mode. Averages are taken over *probabilities*, not log-probabilities
(Srivastava et al. 2014, §7.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from dropnotes.layers import STOCHASTIC_TYPES
from dropnotes.runtime import check_positive_int

__all__ = ["mc_predict", "ClassifierSummary", "classifier_summary", "regression_summary"]


@torch.no_grad()
def mc_predict(model: nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    """Stack the outputs of ``samples`` stochastic passes: shape ``(samples, *model(x).shape)``.

    Only dropout-family layers (:data:`dropnotes.layers.STOCHASTIC_TYPES`) are active; every
    module's ``training`` flag is restored afterwards, even on error.
    """
    samples = check_positive_int("samples", samples)
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        for m in model.modules():
            if isinstance(m, STOCHASTIC_TYPES):
                m.training = True
        return torch.stack([model(x) for _ in range(samples)])
    finally:
        for m, mode in modes.items():
            m.training = mode


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1)


@dataclass
class ClassifierSummary:
    """Predictive summaries of MC class probabilities (all per input)."""

    mean: torch.Tensor  # (N, K) averaged probabilities
    entropy: torch.Tensor  # predictive entropy H[E p]
    expected_entropy: torch.Tensor  # E H[p] (aleatoric part)
    mutual_information: torch.Tensor  # H[E p] - E H[p] (epistemic part, BALD)
    variance: torch.Tensor  # variance of the predicted class's probability across samples


def classifier_summary(logits: torch.Tensor) -> ClassifierSummary:
    """Summarise stacked logits of shape (S, N, K) from :func:`mc_predict`."""
    probs = logits.float().softmax(-1)
    mean = probs.mean(0)
    entropy = _entropy(mean)
    expected = _entropy(probs).mean(0)
    top = mean.argmax(-1)
    var = probs.gather(-1, top.expand(probs.shape[0], -1).unsqueeze(-1)).squeeze(-1).var(0, unbiased=False)
    return ClassifierSummary(mean, entropy, expected, (entropy - expected).clamp_min(0.0), var)


def regression_summary(outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictive mean and standard deviation over the sample axis of (S, N, ...) outputs."""
    return outputs.mean(0), outputs.std(0, unbiased=False)
