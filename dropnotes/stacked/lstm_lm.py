"""The stacked LSTM language models of chapter 3 (:class:`StackedLSTMLM`), their fused layer, windows, evaluation
and the truncated-BPTT loop (:func:`make_lm_step`, :func:`fit_stacked_lm`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from dropnotes.models.lstm_lm import SCHEMES, scheme_rates
from dropnotes.amp import autocast
from dropnotes.runtime import check_choice, check_positive_int, check_probability, progress
from dropnotes.stacked.fit import FitResult, _BestEpochs, _captured, _mark_dead
from dropnotes.stacked.noise import _generators, _per_model, _values, _weight
from dropnotes.stacked.optim import _adam_step, _sgd_step
from dropnotes.models import LSTMLM
from dropnotes.train import lm_batches

# ------------------------------------------------------------------ the LSTM language models of chapter 3

LM_SCHEMES = SCHEMES  # chapter 3's ladder of dropout schemes


class StackedLSTMLM(nn.Module):
    """K word-level LSTM language models (:class:`~dropnotes.models.LSTMLM`), each with its own dropout
    scheme, as one group: every time step of every layer is one batched cell (a ``bmm`` over the models).

    Model k's ``scheme`` sets where its noise goes, exactly as in :class:`~dropnotes.models.LSTMLM`
    (:data:`~dropnotes.models.lstm_lm.SCHEMES`: masks on the non-recurrent connections fresh at every step or
    tied in time, rate ``p_io``; masks on :math:`h_{t-1}` fresh or tied, or DropConnect on W_hh with one mask
    per window, ``p_rec``; word types dropped from the embedding, ``p_emb``). Parameters have shape (K, ...);
    the state of each layer is a pair of (K, N, dim) tensors, carried from one BPTT window to the next by
    the caller.
    """

    def __init__(self, k: int, vocab_size: int, dim: int, layers: int, *, scheme="none", p_io=0.0, p_rec=0.0,
                 p_emb=0.0, init_range: float = 0.1, seeds: Sequence[int] | None = None) -> None:
        super().__init__()
        self.k = check_positive_int("k", k)
        self.vocab, self.dim = check_positive_int("vocab_size", vocab_size), check_positive_int("dim", dim)
        self.layers = check_positive_int("layers", layers)
        self.schemes = tuple(_values("scheme", scheme, k, check=lambda n, v: check_choice(n, v, LM_SCHEMES)))
        rates = {n: _values(n, v, k, check=check_probability) for n, v in (("p_io", p_io), ("p_rec", p_rec),
                                                                            ("p_emb", p_emb))}
        for i, s in enumerate(self.schemes):  # the rates a scheme does not use are 0, as in LSTMLM
            rates["p_io"][i], rates["p_rec"][i], rates["p_emb"][i] = scheme_rates(
                LM_SCHEMES[s], rates["p_io"][i], rates["p_rec"][i], rates["p_emb"][i])
        for name, values in rates.items():
            self.register_buffer(name, torch.tensor([float(v) for v in values]))
        self._rates = {name: [float(v) for v in values] for name, values in rates.items()}  # on the host
        for name, (site, kind) in self._FLAGS.items():
            self.register_buffer(name, torch.tensor([getattr(LM_SCHEMES[s], site) == kind for s in self.schemes]))
        per_model = [self._uses_of(i) for i in range(k)]
        self._uses = {site: any(u[site] for u in per_model) for site in per_model[0]}  # sites some model uses
        # the models with DropConnect on W_hh: their masks are drawn and applied to their weights only
        self.register_buffer("wd_index", torch.tensor([i for i, u in enumerate(per_model) if u["w_hh"]], dtype=torch.long),
                             persistent=False)  # follows from the schemes: not part of the state
        d, g = dim, 4 * dim
        self.embed = nn.Parameter(torch.empty(k, vocab_size, d))
        self.w_ih, self.w_hh = nn.ParameterList(), nn.ParameterList()
        self.b_ih, self.b_hh = nn.ParameterList(), nn.ParameterList()
        for _ in range(layers):
            self.w_ih.append(_weight(k, g, d))  # stored for its bmm (see _weight); W_hh's gradient is _LSTMLayer's
            self.w_hh.append(nn.Parameter(torch.empty(k, g, d)))
            self.b_ih.append(nn.Parameter(torch.empty(k, g)))
            self.b_hh.append(nn.Parameter(torch.empty(k, g)))
        self.dec_w, self.dec_b = _weight(k, vocab_size, d), nn.Parameter(torch.empty(k, vocab_size))
        self.init_range = init_range
        self.reset_parameters(seeds)

    @torch.no_grad()
    def reset_parameters(self, seeds: Sequence[int] | None = None) -> None:
        """Zaremba et al.'s uniform initialisation, model k from its own seed."""
        for i, g in _generators(seeds, self.k):
            for p in self.parameters():
                p[i].copy_(torch.empty(p.shape[1:]).uniform_(-self.init_range, self.init_range, generator=g))

    def _pairs(self, m: nn.Module):
        """(group parameter, the LSTMLM's tensor) for every parameter of one LSTMLM."""
        out = [(self.embed, m.embed.weight), (self.dec_w, m.decoder.weight), (self.dec_b, m.decoder.bias)]
        for i, lstm in enumerate(m.lstms):
            out += [(self.w_ih[i], lstm.weight_ih_l0), (self.w_hh[i], lstm.weight_hh_l0),
                    (self.b_ih[i], lstm.bias_ih_l0), (self.b_hh[i], lstm.bias_hh_l0)]
        return out

    @classmethod
    def from_models(cls, models: Sequence[nn.Module]) -> "StackedLSTMLM":
        """Stack K :class:`~dropnotes.models.LSTMLM` (untied weights) with their schemes and rates."""
        first = models[0]
        out = cls(len(models), first.embed.num_embeddings, first.embed.embedding_dim, len(first.lstms),
                  scheme=[m.scheme for m in models], p_io=[m.p_io for m in models], p_rec=[m.p_rec for m in models],
                  p_emb=[m.p_emb for m in models])
        with torch.no_grad():
            for i, m in enumerate(models):
                for dst, src in out._pairs(m):
                    dst[i].copy_(src)
        return out.to(first.embed.weight.device)

    def model(self, i: int) -> nn.Module:
        """Model ``i`` as a standalone :class:`~dropnotes.models.LSTMLM` (e.g. for MC-dropout evaluation)."""

        m = LSTMLM(self.vocab, self.dim, self.layers, self.schemes[i], p_io=float(self.p_io[i]),
                   p_rec=float(self.p_rec[i]), p_emb=float(self.p_emb[i])).to(self.embed.device)
        with torch.no_grad():
            for src, dst in self._pairs(m):
                dst.copy_(src[i])
        return m

    def extra_repr(self) -> str:
        return f"k={self.k}, vocab={self.vocab}, {self.layers} x {self.dim}, schemes={list(self.schemes)}"

    def replicas(self, i: int, s: int) -> "StackedLSTMLM":
        """``s`` copies of model ``i`` as a group that shares its weights (expanded views: no copy), each copy
        drawing its own masks: MC dropout's ``s`` stochastic passes as one batched forward (inference only)."""
        i, s = int(i), check_positive_int("s", s)
        if not 0 <= i < self.k:
            raise ValueError(f"i must be in [0, {self.k - 1}], got {i}")
        with torch.device("meta"):  # the structure only; its parameters are replaced below
            out = StackedLSTMLM(1, self.vocab, self.dim, self.layers, scheme=self.schemes[i], init_range=self.init_range)
        out.k, out.schemes, out._uses = s, (self.schemes[i],) * s, self._uses_of(i)
        out._rates = {name: [values[i]] * s for name, values in self._rates.items()}
        for name, _ in list(out.named_buffers()):
            if name != "wd_index":
                setattr(out, name, getattr(self, name)[i:i + 1].expand(s).clone())
        out.wd_index = torch.arange(s if out._uses["w_hh"] else 0, device=self.wd_index.device)
        view = lambda p: p.detach()[i:i + 1].expand(s, *p.shape[1:])  # noqa: E731
        for name in ("embed", "dec_w", "dec_b"):
            delattr(out, name)
            setattr(out, name, view(getattr(self, name)))
        for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
            tensors = [view(p) for p in getattr(self, name)]
            delattr(out, name)
            setattr(out, name, tensors)
        return out

    # A flag buffer per kind of noise: (the Scheme field, its value), and the rate it uses.
    _FLAGS = {"io_step": ("io", "step"), "locked": ("io", "tied"), "h_step": ("rec", "step"), "h_tied": ("rec", "tied"),
              "weight_drop": ("rec", "weight")}
    _RATE = {"io": "p_io", "rec": "p_rec"}

    def _uses_of(self, i: int) -> dict[str, bool]:
        """Which noise sites model ``i`` uses; ``_uses`` records those some model of the group uses."""
        scheme, rate = LM_SCHEMES[self.schemes[i]], {n: values[i] for n, values in self._rates.items()}
        uses = {name: getattr(scheme, site) == kind and rate[self._RATE[site]] > 0
                for name, (site, kind) in self._FLAGS.items()}
        uses["w_hh"] = uses.pop("weight_drop")
        return {"emb": scheme.emb and rate["p_emb"] > 0, **uses}

    def _time_mask(self, p: torch.Tensor, step: str, tied: str, shape, dtype, device, generator) -> torch.Tensor | None:
        """A (K, N, T or 1, D) multiplier: a fresh mask at every step for the models flagged ``step``, one mask
        per sequence for those flagged ``tied`` (Bernoulli, scaled by 1/(1-p)), 1 for the others; None when
        no model uses either."""
        k, n, t, d = shape
        keep = (1.0 - p).to(dtype).view(k, 1, 1, 1)
        one = torch.ones((), dtype=dtype, device=device)
        draw = lambda steps: (torch.rand((k, n, steps, d), device=device, generator=generator) < keep) * (1.0 / keep)  # noqa: E731
        mult = None
        if self._uses[step]:
            mult = torch.where(getattr(self, step).view(k, 1, 1, 1), draw(t), one)
        if self._uses[tied]:
            flag = getattr(self, tied).view(k, 1, 1, 1)
            tied_mult = torch.where(flag, draw(1), one)
            mult = tied_mult if mult is None else torch.where(flag, tied_mult.expand(k, n, t, d), mult)
        return mult

    def draw_masks(self, n: int, t: int, generator: torch.Generator | None = None, dtype=torch.float32) -> dict:
        """Every multiplier of one training window of N sequences of T steps (what :meth:`forward` draws when
        none are given): ``emb`` (K, V), ``io`` one per site (inputs of each layer, then the decoder's input),
        ``h`` and ``w_hh`` one per layer (``w_hh``: (len(wd_index), 4D, D), the models with DropConnect on W_hh
        only, in the order of ``wd_index``). A site that no model uses is None."""
        dev, k, d = self.embed.device, self.k, self.dim
        emb = None
        if self._uses["emb"]:
            keep = (1.0 - self.p_emb).to(dtype).view(k, 1)
            emb = (torch.rand((k, self.vocab), device=dev, generator=generator) < keep) * (1.0 / keep)
        io = [self._time_mask(self.p_io, "io_step", "locked", (k, n, t, d), dtype, dev, generator)
              for _ in range(self.layers + 1)]
        h = [self._time_mask(self.p_rec, "h_step", "h_tied", (k, n, t, d), dtype, dev, generator)
             for _ in range(self.layers)]
        w_hh = []
        for _ in range(self.layers):
            if not self._uses["w_hh"]:
                w_hh.append(None)
                continue
            keep = (1.0 - self.p_rec[self.wd_index]).to(dtype).view(-1, 1, 1)
            w_hh.append((torch.rand((len(keep), 4 * d, d), device=dev, generator=generator) < keep) * (1.0 / keep))
        return {"emb": emb, "io": io, "h": h, "w_hh": w_hh}

    def forward(self, ids: torch.Tensor, state: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                generator: torch.Generator | None = None, masks: dict | None = None):
        """``ids``: (N, T) for every model, or each model's own (K, N, T); returns logits (K, N, T, V) and the
        final state of every layer. In training, ``masks`` (from :meth:`draw_masks`) replace the draw."""
        k = self.k
        if ids.dim() == 2:
            ids = ids.unsqueeze(0).expand(k, -1, -1)
        _, n, t = ids.shape
        if self.training and masks is None:
            masks = self.draw_masks(n, t, generator)
        if not self.training:
            masks = None
        x = torch.gather(self.embed, 1, ids.reshape(k, -1, 1).expand(-1, -1, self.dim)).view(k, n, t, self.dim)
        if masks is not None and masks["emb"] is not None:  # word types dropped: every occurrence of a word
            x = x * torch.gather(masks["emb"], 1, ids.reshape(k, -1)).view(k, n, t, 1)
        new_state = []
        for layer in range(self.layers):
            if masks is not None and masks["io"][layer] is not None:
                x = x * masks["io"][layer]
            s = state[layer] if state is not None else None
            x, s = self._lstm(layer, x, s, masks)
            new_state.append(s)
        if masks is not None and masks["io"][-1] is not None:
            x = x * masks["io"][-1]
        logits = torch.baddbmm(self.dec_b.unsqueeze(1).to(x.dtype), x.flatten(1, 2), self.dec_w.transpose(1, 2).to(x.dtype))
        return logits.view(k, n, t, self.vocab), new_state

    def _lstm(self, layer: int, x: torch.Tensor, state, masks):
        k, n, t, d = x.shape
        w_ih = self.w_ih[layer].to(x.dtype)
        bias = (self.b_ih[layer] + self.b_hh[layer]).to(x.dtype).unsqueeze(1)
        h_mask = masks["h"][layer] if masks is not None else None
        gates_x = torch.baddbmm(bias, x.flatten(1, 2), w_ih.transpose(1, 2)).view(k, n, t, 4 * d)
        h, c = state if state is not None else (x.new_zeros(k, n, d), x.new_zeros(k, n, d))
        # under autocast W_hh is cast once per window, not at every step; DropConnect on W_hh (one mask per
        # window) scales the weights of the models that use it, before the cast
        if masks is not None and masks["w_hh"][layer] is not None:
            w_hh = _ScaledRowsCast.apply(self.w_hh[layer], gates_x.dtype, self.wd_index, masks["w_hh"][layer])
        else:
            w_hh = self.w_hh[layer].to(gates_x.dtype)
        out, h, c = _LSTMLayer.apply(gates_x, h, c, w_hh, h_mask, torch.is_grad_enabled())
        return out, (h, c)


class _ScaledRowsCast(torch.autograd.Function):
    """``w`` (K, ...) cast to ``dtype``, with the models ``index`` first multiplied elementwise by ``mult``
    (len(index), ...): DropConnect on some models of a group, the product in ``w``'s dtype and rounded once.
    The scaling is diagonal, so the backward casts the gradient back and scales the same rows: one pass over
    the (K, ...) tensor each way, where autograd's index_select and index_copy would add a second gradient of
    W's full size and sum the two."""

    @staticmethod
    def forward(ctx, w, dtype, index, mult):
        ctx.save_for_backward(index, mult)
        ctx.w_dtype = w.dtype
        out = w.to(dtype, copy=True)
        return out.index_copy_(0, index, (w.index_select(0, index) * mult).to(dtype))

    @staticmethod
    def backward(ctx, g):
        index, mult = ctx.saved_tensors
        gw = g.to(ctx.w_dtype, copy=True)
        return gw.index_copy_(0, index, gw.index_select(0, index) * mult), None, None, None


class _LSTMLayer(torch.autograd.Function):
    r"""One LSTM layer of K models over a window: the time loop written out forward and backward.

    Forward, per step: :math:`g = G^x_t + (h_{t-1} \odot m_t) W_{hh}^\top` (one ``baddbmm``), then the gates
    (PyTorch's order i, f, g, o), :math:`c_t = f c_{t-1} + i \tanh g`, :math:`h_t = o \tanh c_t`. Backward runs
    the recurrence in reverse with one ``bmm`` per step for :math:`\partial h_{t-1}`, and computes the weight
    gradient :math:`\partial W_{hh} = \sum_t \partial g_t^\top (h_{t-1} \odot m_t)` once per window, as one
    ``bmm`` over all steps, instead of accumulating one outer product per step as autograd does: that
    accumulation read and wrote a full copy of W_hh's gradient 35 times per window. ``gates_x``: (K, N, T, 4D),
    the input projections with both biases; ``h_mask``: (K, N, T or 1, D) or None; ``w``: (K, 4D, D)."""

    @staticmethod
    def forward(ctx, gates_x, h, c, w, h_mask, save=True):
        k, n, t_len, d = *gates_x.shape[:3], h.shape[-1]
        w_t = w.transpose(1, 2)
        dev, g_dtype = w.device, torch.result_type(gates_x, w)  # the dtype the baddbmm returns
        u_dtype = torch.promote_types(g_dtype, c.dtype)
        # what the backward reads, written in place step by step (no per-step copies, no stacking): every
        # step's gates, [tanh g, c_{t-1}, i] (what d c multiplies into d i, d f, d tanh g), tanh c and the masked
        # h_{t-1} that met W_hh (in W's dtype: the product and the cast are one kernel)
        out = torch.empty(k, n, t_len, d, dtype=u_dtype, device=dev)
        if save:
            acts = torch.empty(k, n, t_len, 4 * d, dtype=g_dtype, device=dev)
            us = torch.empty(k, n, t_len, 3 * d, dtype=u_dtype, device=dev)
            tcs = torch.empty(k, n, t_len, d, dtype=u_dtype, device=dev)
            hms = torch.empty(k, n, t_len, d, dtype=w.dtype, device=dev)
            us[:, :, 0, d:2 * d].copy_(c)
        for step in range(t_len):
            m = None if h_mask is None else h_mask[:, :, min(step, h_mask.shape[2] - 1)]
            if save:
                hm = hms[:, :, step]
                torch.mul(h, m, out=hm) if m is not None else hm.copy_(h)
            else:
                hm = (h if m is None else h * m).to(w.dtype)
            g = torch.baddbmm(gates_x[:, :, step], hm, w_t)
            a = torch.sigmoid(g, out=acts[:, :, step]) if save else torch.sigmoid(g)  # i, f, o (the g slot unused)
            tg = torch.tanh(g[..., 2 * d:3 * d], out=us[:, :, step, :d]) if save else torch.tanh(g[..., 2 * d:3 * d])
            nxt = us[:, :, step + 1, d:2 * d] if save and step + 1 < t_len else None  # c_t, read by the next step
            c = torch.addcmul(a[..., d:2 * d] * c, a[..., :d], tg, out=nxt)
            if save:
                us[:, :, step, 2 * d:].copy_(a[..., :d])
            tc = torch.tanh(c, out=tcs[:, :, step]) if save else torch.tanh(c)
            h = torch.mul(a[..., 3 * d:], tc, out=out[:, :, step])
        if save:
            ctx.save_for_backward(w, h_mask, acts, us, tcs, hms)
        ctx.dtypes = (gates_x.dtype, h.dtype, c.dtype)
        return out, h.clone(), c  # h is a view of out; the last step's c is its own tensor

    @staticmethod
    def backward(ctx, d_out, d_h, d_c):
        w, h_mask, acts, us, tcs, hms = ctx.saved_tensors
        gx_dtype, h_dtype, c_dtype = ctx.dtypes
        k, n, t_len, d = tcs.shape
        one = torch.ones((), dtype=acts.dtype, device=w.device)
        # the nonlinearities' derivatives need no recurrence: once for the whole window, not once per step.
        # sigmoid' = a (1 - a) for i, f, o; tanh' = 1 - tanh^2 for the g slot and for c
        deriv = torch.addcmul(acts, acts, acts, value=-1)
        torch.addcmul(one, us[..., :d], us[..., :d], value=-1, out=deriv[..., 2 * d:3 * d])
        dtanh_c = torch.addcmul(one, tcs, tcs, value=-1)
        d_gates = torch.empty_like(acts)  # (K, N, T, 4D), filled step by step
        dh, dc = d_h, d_c
        for step in range(t_len - 1, -1, -1):  # few kernels per step: the loop is launch-bound on a GPU
            a, tc = acts[:, :, step], tcs[:, :, step]
            dht = d_out[:, :, step] + dh
            dc = torch.addcmul(dc, dht * a[..., 3 * d:], dtanh_c[:, :, step])
            ds = d_gates[:, :, step]  # d i, d f, d tanh(g), d o, each before its nonlinearity's derivative
            torch.mul(us[:, :, step].view(k, n, 3, d), dc.unsqueeze(2), out=ds[..., :3 * d].view(k, n, 3, d))
            torch.mul(dht, tc, out=ds[..., 3 * d:])
            dg = ds.mul_(deriv[:, :, step])
            dc = dc * a[..., d:2 * d]
            dhm = torch.bmm(dg.to(w.dtype), w)
            dh = dhm if h_mask is None else dhm * h_mask[:, :, min(step, h_mask.shape[2] - 1)]
        dw = torch.bmm(d_gates.flatten(1, 2).transpose(1, 2).to(w.dtype), hms.flatten(1, 2))
        return d_gates.to(gx_dtype), dh.to(h_dtype), dc.to(c_dtype), dw, None, None


def lm_windows(tokens: torch.Tensor, batch_size: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The stream cut into ``batch_size`` rows (as :func:`dropnotes.train.lm_batches` does) and read as its
    full windows: inputs and targets of shape (windows, N, T). The last, shorter window is left out, so
    that every training step has one shape (a CUDA graph replays one shape)."""
    n, t = check_positive_int("batch_size", batch_size), check_positive_int("seq_len", seq_len)
    rows = (tokens.numel() - 1) // n
    windows = rows // t
    if windows < 1:
        raise ValueError(f"the token stream ({tokens.numel()} tokens) holds no window of {n} x {t}")
    x, y = tokens[: rows * n].view(n, rows), tokens[1: rows * n + 1].view(n, rows)
    cut = lambda a: a[:, : windows * t].reshape(n, windows, t).transpose(0, 1)  # noqa: E731
    return cut(x), cut(y)


def _graphed(fn: Callable, inputs: Sequence[torch.Tensor], capture: bool) -> Callable:
    """``fn`` of static copies of ``inputs``: ``call(*new)`` copies ``new`` into them and runs ``fn``, or, with
    ``capture`` (CUDA), replays ``fn`` captured once as a CUDA graph and returns its static outputs (valid
    until the next call). The same copies run on every device, so the CPU exercises the data flow the GPU
    replays; ``fn`` must draw no random numbers and keep no Python state."""
    import warnings

    static = [t.clone() for t in inputs]
    graph, out = None, None
    if capture:
        try:
            dev = static[0].device
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for _ in range(2):
                    fn(*static)
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = fn(*static)
        except Exception as err:  # noqa: BLE001 - any capture failure falls back to the eager function
            warnings.warn(f"CUDA graph capture of an evaluation pass failed ({type(err).__name__}: {err}); "
                          "running it eagerly", RuntimeWarning, stacklevel=3)
            graph = None

    def call(*new: torch.Tensor):
        for s, t in zip(static, new):
            s.copy_(t)
        if graph is None:
            return fn(*static)
        graph.replay()
        return out

    return call


@torch.no_grad()
def lm_window_losses_stacked(model: StackedLSTMLM, tokens: torch.Tensor, batch_size: int, seq_len: int,
                             amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every model's mean next-token cross-entropy (nats) per window over a token stream, in eval mode, an
    LSTM group's state carried across windows (the windows of :func:`dropnotes.train.lm_batches`, the last one
    included): (K, windows) losses and each window's token count. On CUDA the pass over one full window is
    captured once as a CUDA graph (:func:`_graphed`) and replayed for each; a shorter last window runs eagerly."""

    was = model.training
    model.eval()
    k = model.k
    recurrent = isinstance(model, StackedLSTMLM)  # a GPT group has no state: each window on its own

    def window(x: torch.Tensor, y: torch.Tensor, *flat: torch.Tensor):
        state = [(flat[2 * j], flat[2 * j + 1]) for j in range(len(flat) // 2)] if recurrent else None
        with autocast(x.device.type, amp_dtype, cache_enabled=False):
            logits, new = model(x, state) if recurrent else (model(x), [])
        ce = F.cross_entropy(logits.float().flatten(0, 2), y.expand(k, -1, -1).flatten(), reduction="none")
        return (ce.view(k, -1).mean(1), *[t for pair in new for t in pair])

    batches = list(lm_batches(tokens, batch_size, seq_len))
    losses, counts, run = [], [], None
    state = []
    if recurrent and batches:
        n = batches[0][0].shape[0]
        state = [tokens.new_zeros((k, n, model.dim), dtype=torch.float32) for _ in range(2 * model.layers)]
    for x, y in batches:
        if x.shape == batches[0][0].shape:
            run = run or _graphed(window, [x, y, *state], capture=x.is_cuda)
            out = run(x, y, *state)
        else:
            out = window(x, y, *state)
        losses.append(out[0].clone())
        state = list(out[1:])
        counts.append(y.numel())
    model.train(was)
    return torch.stack(losses, 1).double().cpu(), torch.tensor(counts, dtype=torch.float64)


@torch.no_grad()
def mc_window_losses(model: StackedLSTMLM, i: int, tokens: torch.Tensor, batch_size: int, seq_len: int, *,
                     samples: int, chunk: int = 25, amp_dtype: torch.dtype | None = None,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MC dropout for model ``i`` (Gal & Ghahramani 2016): ``samples`` stochastic passes over the stream, each
    with its own masks and its own state carried across windows, the *probabilities* of each target
    averaged before the log. The passes run ``chunk`` at a time as one group (:meth:`StackedLSTMLM.replicas`),
    so a window costs one batched forward per chunk instead of one per pass. Returns the per-window mean
    cross-entropy (nats) and each window's token count, as :func:`dropnotes.train.lm_window_losses` does."""

    samples, chunk = check_positive_int("samples", samples), check_positive_int("chunk", chunk)
    sizes = [min(chunk, samples - start) for start in range(0, samples, chunk)]
    per_chunk, counts = [], []
    for s in sizes:
        group = model.replicas(i, s).train()  # training mode: the masks are on
        state, lse = None, []
        for x, y in lm_batches(tokens, batch_size, seq_len):
            with autocast(x.device.type, amp_dtype):
                logits, state = group(x, state, generator=generator)
            logp = torch.log_softmax(logits.float(), -1).gather(-1, y.expand(s, -1, -1).unsqueeze(-1)).squeeze(-1)
            lse.append(torch.logsumexp(logp, 0))  # (N, T): log of the summed probabilities of this chunk
            if len(per_chunk) == 0:
                counts.append(y.numel())
        per_chunk.append(lse)
    losses = [-(torch.logsumexp(torch.stack(parts), 0) - math.log(samples)).mean() for parts in zip(*per_chunk)]
    return torch.stack(losses).double().cpu(), torch.tensor(counts, dtype=torch.float64)


def make_lm_step(model: StackedLSTMLM, ids: torch.Tensor, tgt: torch.Tensor, hs: list[torch.Tensor],
                 cs: list[torch.Tensor], *, lr: torch.Tensor, clip: torch.Tensor | None, optimizer: str, moments: list,
                 amp_dtype: torch.dtype | None, generator: torch.Generator | None, alive: torch.Tensor,
                 died: torch.Tensor, step_no: torch.Tensor, total: torch.Tensor) -> Callable[[], None]:
    """One truncated-BPTT step of every model of ``model`` (what :func:`fit_stacked_lm` runs, and what ``dropnotes
    estimate`` counts): the window ``ids`` -> ``tgt`` ((B, T), shared by the models) from the carried state
    (``hs``, ``cs``: per layer (K, B, dim)), the per-model mean loss, the backward, the dead-model marking (which
    advances ``step_no``), clipping, SGD (or Adam with ``moments``) at the per-model rates ``lr``, the new state
    written back, and the losses added to ``total``. Every tensor it touches is an argument (graph capture)."""
    k, dev, params = model.k, ids.device, list(model.parameters())

    def step() -> None:
        with autocast(dev.type, amp_dtype, cache_enabled=False):
            logits, new = model(ids, list(zip(hs, cs)), generator=generator)
        losses = F.cross_entropy(logits.float().flatten(0, 2), tgt.expand(k, -1, -1).flatten(), reduction="none")
        losses = losses.view(k, -1).mean(1)
        for p in params:
            p.grad = None
        losses.sum().backward()
        _mark_dead(losses, alive, died, step_no)
        if optimizer == "adam":
            _adam_step(params, moments, step_no, lr, alive, clip)
        else:
            _sgd_step(params, [None] * len(params), lr, None, 0.0, alive, clip)
        with torch.no_grad():
            for (h, c), h_static, c_static in zip(new, hs, cs):  # the state carried to the next window
                h_static.copy_(h)
                c_static.copy_(c)
            total.add_(losses.detach())

    return step


def fit_stacked_lm(model: StackedLSTMLM, train_tokens: torch.Tensor, valid_tokens: torch.Tensor, *, epochs: int,
                   batch_size: int, seq_len: int, lr, lr_decay: float = 1.0, decay_after: int = 0, clip=None,
                   optimizer: str = "sgd", amp_dtype: torch.dtype | None = None,
                   lr_schedule: Callable[[int], float] | None = None,
                   generator: torch.Generator | None = None, restore_best: bool = True, capture: bool = True,
                   desc: str = "LSTM LMs") -> FitResult:
    """Truncated BPTT for the K language models of ``model`` together (Zaremba et al. 2014): plain SGD (or
    ``optimizer="adam"``, ``torch.optim.Adam``'s update) with per-model learning rates, divided by
    ``lr_decay`` every epoch after ``decay_after``, and multiplied during epoch ``e`` (0-based) by
    ``lr_schedule(e)`` where one is given (e.g. :func:`dropnotes.train.cosine_factor`, as an epoch-wise
    ``torch.optim.lr_scheduler``); each model's gradient clipped to norm ``clip[k]``; the state carried across
    the windows of an epoch (zero at its start).

    After every epoch each model's validation loss is measured (eval mode) and its best epoch kept
    (restored at the end with ``restore_best``); a model whose loss stops being finite is frozen and
    reported, as in :func:`fit_stacked`. On CUDA the whole step (forward over the window, backward,
    clipping, SGD, the state carried) is captured once as a CUDA graph and replayed. Nothing is read
    back to the host inside an epoch. The history's losses are in nats (``train_loss``, ``val_loss``)."""
    k = model.k
    epochs = check_positive_int("epochs", epochs)
    optimizer = check_choice("optimizer", optimizer, ("sgd", "adam"))
    dev = train_tokens.device
    if generator is None:
        generator = torch.Generator(dev).manual_seed(0)
    xs, ys = lm_windows(train_tokens, batch_size, seq_len)
    lr_k = _per_model("lr", lr, k).to(dev)
    lr_now = lr_k.clone()
    clip_k = None if clip is None else _per_model("clip", clip, k).to(dev)
    params = list(model.parameters())
    alive = torch.ones(k, dtype=torch.bool, device=dev)
    died = torch.full((k,), -1, dtype=torch.long, device=dev)
    step_no = torch.zeros((), dtype=torch.long, device=dev)
    ids, tgt = torch.zeros_like(xs[0]), torch.zeros_like(ys[0])
    hs = [torch.zeros(k, batch_size, model.dim, device=dev) for _ in range(model.layers)]
    cs = [torch.zeros_like(h) for h in hs]
    total = torch.zeros(k, device=dev)
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params] if optimizer == "adam" else []
    mask_gen = None if dev.type == "cuda" else generator  # CUDA graphs draw from the device's default generator

    step = make_lm_step(model, ids, tgt, hs, cs, lr=lr_now, clip=clip_k, optimizer=optimizer, moments=moments,
                        amp_dtype=amp_dtype, generator=mask_gen, alive=alive, died=died, step_no=step_no, total=total)
    if dev.type == "cuda":
        torch.cuda.manual_seed(int(torch.randint(0, 2**62, (), generator=generator, device=generator.device)))
    state = params + list(model.buffers()) + hs + cs + [alive, died, step_no, total] + [t for mv in moments for t in mv]
    run_step = _captured(step, state, dev) if dev.type == "cuda" and capture else step
    best = _BestEpochs(list(model.parameters()), k, dev, restore_best)
    rows = []
    for epoch in progress(range(1, epochs + 1), desc):
        model.train()
        factor = 1.0 if lr_schedule is None else float(lr_schedule(epoch - 1))
        lr_now.copy_(lr_k * factor / lr_decay ** max(0, epoch - decay_after))
        for t in hs + cs + [total]:
            t.zero_()
        for w in range(xs.shape[0]):
            ids.copy_(xs[w])
            tgt.copy_(ys[w])
            run_step()
        losses, counts = lm_window_losses_stacked(model, valid_tokens, batch_size, seq_len, amp_dtype)
        val = ((losses * counts).sum(1) / counts.sum()).float().to(dev)
        best.update(val, alive, epoch)
        train_loss, val_host, alive_now = (total / xs.shape[0]).tolist(), val.tolist(), alive.tolist()
        for m in range(k):
            rows.append({"model": m, "epoch": epoch, "train_loss": train_loss[m], "val_loss": val_host[m],
                         "alive": alive_now[m]})
    return best.result(rows, died)
