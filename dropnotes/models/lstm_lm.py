"""A word-level LSTM language model with every RNN dropout scheme of chapter 3.

``embedding -> LSTM layers -> linear decoder``; the hidden state is carried from one BPTT window to
the next (Zaremba et al. 2014). ``scheme`` picks where the noise goes (:data:`SCHEMES`). The schemes form
a ladder in which each rung changes one thing:

* ``none``: no dropout.
* ``naive``: a fresh mask at every time step on the non-recurrent connections only (embedding
  output, between layers, before the decoder), rate ``p_io`` (Zaremba et al. 2014).
* ``tied``: the same connections and rate, with one mask per sequence, the same at every time step.
* ``tied-recurrent``: ``tied`` plus a tied mask on :math:`h_{t-1}` in the recurrence, rate ``p_rec``.
* ``variational``: ``tied-recurrent`` plus word-type embedding dropout ``p_emb``: Gal & Ghahramani's
  (2016) scheme ("tied" masks, shared by the four gates).
* ``per-step-recurrent``: ``tied-recurrent`` with a fresh mask on :math:`h_{t-1}` at every time step, at the
  same rate and placement: the use of recurrent dropout that Gal & Ghahramani argue against.
* ``weight-drop``: ``variational`` with DropConnect on :math:`W_{hh}` (one mask per window, rate
  ``p_rec``) instead of the masks on :math:`h_{t-1}` (Merity et al. 2018), so the fused ``nn.LSTM``
  kernel still runs.

The schemes with masks on :math:`h_{t-1}` run an explicit time loop over the same ``nn.LSTM``
parameters (:func:`lstm_loop`), which equals ``nn.LSTM`` when no mask is applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from dropnotes import functional as DF
from dropnotes.layers import WeightDrop
from dropnotes.runtime import check_choice, check_flag, check_positive_int, check_probability



@dataclass(frozen=True)
class Scheme:
    """Where one dropout scheme puts its noise. ``io``: on the non-recurrent connections, ``"step"`` (a fresh
    mask at every time step) or ``"tied"`` (one mask per sequence); ``rec``: on the recurrence, ``"step"`` or
    ``"tied"`` masks on :math:`h_{t-1}`, or ``"weight"`` (DropConnect on :math:`W_{hh}`, one mask per window);
    ``emb``: word types dropped from the embedding. None: no noise there."""

    io: str | None = None
    rec: str | None = None
    emb: bool = False

    @property
    def time_loop(self) -> bool:
        """A mask on :math:`h_{t-1}`: the recurrence runs step by step (no fused kernel)."""
        return self.rec in ("step", "tied")


# Chapter 3's ladder, in training order (see the module docstring).
SCHEMES = {"none": Scheme(), "naive": Scheme("step"), "tied": Scheme("tied"), "tied-recurrent": Scheme("tied", "tied"),
           "variational": Scheme("tied", "tied", True), "per-step-recurrent": Scheme("tied", "step"),
           "weight-drop": Scheme("tied", "weight", True)}
State = list[tuple[torch.Tensor, torch.Tensor]]


def lstm_loop(x: torch.Tensor, lstm: nn.LSTM, state: tuple[torch.Tensor, torch.Tensor] | None,
              h_mask: torch.Tensor | None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """One-layer ``nn.LSTM`` (batch first) run step by step, with ``h_{t-1}`` multiplied by
    ``h_mask[:, t]`` before the recurrent matmul. ``h_mask`` is (N, T, H) or (N, 1, H) (one mask for
    every step); ``None`` applies none. The input projection is one matmul for the whole window."""
    n, t, _ = x.shape
    hid = lstm.hidden_size
    h, c = state if state is not None else (x.new_zeros(n, hid), x.new_zeros(n, hid))
    gates_x = F.linear(x, lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0)  # (N, T, 4H)
    outputs = []
    for step in range(t):
        hm = h if h_mask is None else h * h_mask[:, min(step, h_mask.shape[1] - 1)]
        i, f, g, o = (gates_x[:, step] + F.linear(hm, lstm.weight_hh_l0)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs, dim=1), (h, c)


def scheme_rates(scheme: Scheme, p_io: float, p_rec: float, p_emb: float) -> tuple[float, float, float]:
    """The rates a scheme uses; those of the sites it leaves alone are 0."""
    return (p_io if scheme.io else 0.0, p_rec if scheme.rec else 0.0, p_emb if scheme.emb else 0.0)


class LSTMLM(nn.Module):
    def __init__(self, vocab_size: int, dim: int = 200, layers: int = 2, scheme: str = "none", p_io: float = 0.0,
                 p_rec: float = 0.0, p_emb: float = 0.0, init_range: float = 0.1, tie_weights: bool = False) -> None:
        super().__init__()
        self.scheme = check_choice("scheme", scheme, SCHEMES)
        self.p_io, self.p_rec, self.p_emb = scheme_rates(SCHEMES[scheme], *(check_probability(n, v) for n, v in
                                                                          (("p_io", p_io), ("p_rec", p_rec), ("p_emb", p_emb))))
        self.embed = nn.Embedding(check_positive_int("vocab_size", vocab_size), check_positive_int("dim", dim))
        self.lstms = nn.ModuleList(nn.LSTM(dim, dim, batch_first=True) for _ in range(check_positive_int("layers", layers)))
        self.rnns = nn.ModuleList(WeightDrop(m, ("weight_hh_l0",), self.p_rec) if SCHEMES[scheme].rec == "weight" else m
                                  for m in self.lstms)
        self.decoder = nn.Linear(dim, vocab_size)
        for prm in self.parameters():  # Zaremba et al.'s uniform initialisation
            nn.init.uniform_(prm, -init_range, init_range)
        if check_flag("tie_weights", tie_weights):
            self.decoder.weight = self.embed.weight

    @property
    def locked(self) -> bool:
        return SCHEMES[self.scheme].io == "tied"

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        if self.locked:
            return DF.variational_dropout(x, self.p_io, self.training)
        return DF.dropout(x, self.p_io, self.training)

    def _h_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        rec = SCHEMES[self.scheme].rec
        if not self.training or self.p_rec == 0.0 or rec not in ("step", "tied"):
            return None
        n, t, _ = x.shape
        shape = (n, t if rec == "step" else 1, self.embed.embedding_dim)
        return torch.bernoulli(x.new_full(shape, 1.0 - self.p_rec)) / (1.0 - self.p_rec)

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """``ids`` (N, T) -> logits (N, T, vocab) and the final state of every layer."""
        x = DF.embedding_dropout(ids, self.embed.weight, self.p_emb, self.training)
        new_state = []
        for k, rnn in enumerate(self.rnns):
            x = self._drop(x)
            s = state[k] if state is not None else None
            h_mask = self._h_mask(x)
            if h_mask is not None:
                x, s = lstm_loop(x, self.lstms[k], s, h_mask)
            else:
                x, (h, c) = rnn(x, None if s is None else (s[0].unsqueeze(0), s[1].unsqueeze(0)))
                s = (h.squeeze(0), c.squeeze(0))
            new_state.append(s)
        return self.decoder(self._drop(x)), new_state
