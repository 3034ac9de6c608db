"""The stacked transformers of chapters 4 and 5: :class:`StackedViT` and :class:`StackedGPT`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from dropnotes.runtime import check_positive_int, check_probability
from dropnotes.stacked.noise import _per_model, _seeded, _values, _weight, dropout_mult, unit_noise
from dropnotes.models import ViT
from dropnotes.models import GPT

# ------------------------------------------------------------------ the transformers of chapters 4 and 5

def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Each model's ``nn.Linear``: x (K, M, in), w (K, out, in) in torch's layout, b (K, out) -> (K, M, out)."""
    if b is None:
        return torch.bmm(x, w.transpose(1, 2))
    return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


def _norm_linear(x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""Each model's ``nn.Linear(nn.LayerNorm(x))``, the norm's (K, D) affine folded into the linear layer:
    :math:`(\hat x \odot \gamma + \beta) W^\top + c = \hat x (W \odot \gamma)^\top + (W\beta + c)`. The same
    function, with one pass fewer over the (K, M, D) activations forward and backward (the products with
    the weights are (K, out, D), a small fraction of them); gradients reach gamma and beta through the fold."""
    w_folded = w * ln_w.unsqueeze(1)
    b_folded = torch.baddbmm(b.unsqueeze(1), ln_b.unsqueeze(1), w.transpose(1, 2)).squeeze(1)  # w's gradient column-major
    return torch.baddbmm(b_folded.unsqueeze(1), F.layer_norm(x, x.shape[-1:]), w_folded.transpose(1, 2))


def _drop_path_mult(rate: torch.Tensor, n: int, device, generator) -> torch.Tensor | None:
    """Stochastic depth per model and sample: a (K, N, 1) multiplier, 0 or 1/(1-r_k) (Huang et al. 2016);
    None when no model drops."""
    return unit_noise(torch.ones(len(rate), n, 1, device=device), rate.to(device), generator=generator)


_BLOCK_TENSORS = ("ln1_w", "ln1_b", "qkv_w", "qkv_b", "proj_w", "proj_b", "ln2_w", "ln2_b", "fc1_w", "fc1_b",
                  "fc2_w", "fc2_b")


class _StackedTransformer(nn.Module):
    """What :class:`StackedViT` and :class:`StackedGPT` share: ``depth`` pre-norm blocks of K models,
    ``x + branch(Attn(LN(x)))`` then ``x + branch(MLP(LN(x)))``, every linear layer a ``bmm`` over the models
    and the attention of all K x N sequences one ``scaled_dot_product_attention`` call (one per run of models
    sharing an attention-dropout rate). Activations are (K, N·T, D)."""

    def _add_blocks(self, k: int, depth: int, d: int) -> None:
        shapes = {"ln1_w": (d,), "ln1_b": (d,), "qkv_w": (3 * d, d), "qkv_b": (3 * d,), "proj_w": (d, d),
                  "proj_b": (d,), "ln2_w": (d,), "ln2_b": (d,), "fc1_w": (4 * d, d), "fc1_b": (4 * d,),
                  "fc2_w": (d, 4 * d), "fc2_b": (d,)}
        for j in range(depth):
            for name in _BLOCK_TENSORS:  # the linear layers' weights stored for their bmm (see _weight)
                shape = shapes[name]
                self.register_parameter(f"b{j}_{name}", _weight(k, *shape) if len(shape) == 2 else
                                        nn.Parameter(torch.empty(k, *shape)))

    def _single(self) -> nn.Module:
        """One standalone model of the group's shape (its own initialisation)."""
        raise NotImplementedError

    @torch.no_grad()
    def reset_parameters(self, seeds: Sequence[int] | None = None) -> None:
        """Model k initialised as its standalone model is under ``torch.manual_seed(seeds[k])`` (default k)."""
        for i, m in _seeded(seeds, self.k, self._single):
            self._copy_in(m, i)

    @torch.no_grad()
    def _copy_in(self, m: nn.Module, i: int) -> None:
        """Model ``i`` of the group becomes the standalone model ``m``."""
        for name, t in self._tensors(m).items():
            getattr(self, name)[i].copy_(t)

    @torch.no_grad()
    def _copy_out(self, m: nn.Module, i: int) -> nn.Module:
        """The standalone model ``m`` becomes model ``i`` of the group; returns it."""
        for name, t in self._tensors(m).items():
            t.copy_(getattr(self, name)[i])
        return m

    @staticmethod
    def _block_tensors(j: int, ln1, ln2, attn, fc1, fc2) -> dict[str, torch.Tensor]:
        tensors = (ln1.weight, ln1.bias, attn.qkv.weight, attn.qkv.bias, attn.proj.weight, attn.proj.bias, ln2.weight,
                   ln2.bias, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
        return {f"b{j}_{name}": t for name, t in zip(_BLOCK_TENSORS, tensors)}

    def _attention(self, h: torch.Tensor, j: int, n: int, t: int, causal: bool, attn_runs: tuple | None) -> torch.Tensor:
        """Attention of the block's first layer norm of ``h``; ``attn_runs``: the models' attention-dropout
        rates as runs (first model, end, rate) of neighbours with one rate, each run one fused SDPA call."""
        k, d, heads = self.k, self.dim, self.heads
        g = lambda name: getattr(self, f"b{j}_{name}")  # noqa: E731
        qkv = _norm_linear(h, g("ln1_w"), g("ln1_b"), g("qkv_w"), g("qkv_b"))
        q, key, v = qkv.view(k * n, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        if attn_runs is None:
            y = F.scaled_dot_product_attention(q, key, v, is_causal=causal)
        else:  # SDPA takes one rate: one call per run of models sharing one (model-major rows: slices, no copies)
            parts = [F.scaled_dot_product_attention(q[a * n:b * n], key[a * n:b * n], v[a * n:b * n], dropout_p=p,
                                                    is_causal=causal) for a, b, p in attn_runs]
            y = parts[0] if len(parts) == 1 else torch.cat(parts, 0)
        y = y.transpose(1, 2).reshape(k, n * t, d)
        return _linear(y, getattr(self, f"b{j}_proj_w"), getattr(self, f"b{j}_proj_b"))

    def _block(self, h: torch.Tensor, j: int, n: int, t: int, *, causal: bool, residual=None,
               attn_runs: tuple | None = None) -> torch.Tensor:
        """One block; ``residual(h, out, which)`` adds the attention (0) or MLP (1) branch ``out`` to ``h`` with
        the models' noise on it (None: plain sums)."""
        g = lambda name: getattr(self, f"b{j}_{name}")  # noqa: E731
        add = residual or (lambda h_, out, _: h_ + out)
        h = add(h, self._attention(h, j, n, t, causal, attn_runs), 0)
        m = _linear(F.gelu(_norm_linear(h, g("ln2_w"), g("ln2_b"), g("fc1_w"), g("fc1_b"))), g("fc2_w"), g("fc2_b"))
        return add(h, m, 1)


class StackedViT(_StackedTransformer):
    """K Vision Transformers (:class:`~dropnotes.models.ViT`: patch embedding, learned positions, pre-norm
    blocks, mean pooling, a linear head) as one group, every linear layer a ``bmm`` over the models and the
    attention of all K x N images one call of ``scaled_dot_product_attention``.

    Model k drops the branches of block j with rate ``p_path[k][j]`` (stochastic depth, one draw per model,
    sample and branch, as :class:`~dropnotes.layers.DropPath`), so depth-wise schedules and rates differ per
    model. Parameters have shape (K, ...) in torch's layout (a linear weight is (K, out, in)); activations
    are (K, N·T, D). Attention and MLP dropout are not stacked (chapter 4 trains without them).
    """

    def __init__(self, k: int, *, image_size: int = 32, patch: int = 4, channels: int = 3, classes: int = 10,
                 dim: int = 192, depth: int = 12, heads: int = 3, p_path=0.0, seeds: Sequence[int] | None = None) -> None:
        super().__init__()

        self.k = check_positive_int("k", k)
        self.depth, self.heads, self.dim = check_positive_int("depth", depth), heads, dim
        self._shape = dict(image_size=image_size, patch=patch, channels=channels, classes=classes, dim=dim,
                           depth=depth, heads=heads)
        with torch.device("meta"):
            ViT(**self._shape, p_path=0.0)  # validates the shape arguments
        per_model = _values("p_path", p_path, k)
        table = [[check_probability("p_path", float(r)) for r in (row if isinstance(row, (list, tuple)) else [row] * depth)]
                 for row in per_model]
        if any(len(row) != depth for row in table):
            raise ValueError(f"p_path must give one rate per block ({depth}) for each model")
        if any(r >= 1.0 for row in table for r in row):
            raise ValueError("p_path must be < 1 (a branch dropped always has no gradient)")
        self.register_buffer("p_path", torch.tensor(table, dtype=torch.float32))  # (K, depth)
        self._drops = any(r > 0 for row in table for r in row)  # known on the host: no sync in the step
        self.patch, self.tokens = patch, (image_size // patch) ** 2
        d, e = dim, channels * patch * patch
        for name, shape in {"embed_w": (d, e), "embed_b": (d,), "pos": (self.tokens, d), "norm_w": (d,),
                            "norm_b": (d,), "head_w": (classes, d), "head_b": (classes,)}.items():
            linear = name in ("embed_w", "head_w")  # stored for their bmm (see _weight)
            self.register_parameter(name, _weight(k, *shape) if linear else nn.Parameter(torch.empty(k, *shape)))
        self._add_blocks(k, depth, d)
        self.reset_parameters(seeds)

    @classmethod
    def _tensors(cls, m: nn.Module) -> dict[str, torch.Tensor]:
        """One ViT's tensors under the group's names, as views in the group's per-model shapes."""
        out = {"embed_w": m.embed.weight.view(m.embed.weight.shape[0], -1), "embed_b": m.embed.bias, "pos": m.pos[0],
               "norm_w": m.norm.weight, "norm_b": m.norm.bias, "head_w": m.head.weight, "head_b": m.head.bias}
        for j, b in enumerate(m.blocks):
            out.update(cls._block_tensors(j, b.norm1, b.norm2, b.attn, b.mlp[0], b.mlp[3]))
        return out

    def _single(self) -> nn.Module:

        return ViT(**self._shape, p_path=0.0)

    @classmethod
    def from_models(cls, models: Sequence[nn.Module]) -> "StackedViT":
        """Stack K :class:`~dropnotes.models.ViT` of one shape, each with its blocks' drop-path rates."""
        first = models[0]
        for m in models:
            if any(b.attn.p_attn > 0 or b.mlp[2].p > 0 or b.skip_dropped for b in m.blocks):
                raise ValueError("StackedViT stacks drop-path only: p_attn, p and skip_dropped must be 0/False")
        blocks = first.blocks[0]
        out = cls(len(models), image_size=int(math.isqrt(first.pos.shape[1])) * first.embed.stride[0],
                  patch=first.embed.stride[0], channels=first.embed.in_channels, classes=first.head.out_features,
                  dim=first.pos.shape[2], depth=len(first.blocks), heads=blocks.attn.heads,
                  p_path=[[b.drop_path.p for b in m.blocks] for m in models])
        for i, m in enumerate(models):
            out._copy_in(m, i)
        return out.to(first.pos.device)

    def model(self, i: int) -> nn.Module:
        """Model ``i`` as a standalone :class:`~dropnotes.models.ViT` with its per-block rates."""
        m = self._single().to(self.pos.device)
        for block, r in zip(m.blocks, self.p_path[i].tolist()):
            block.drop_path.p = r
        return self._copy_out(m, i)

    def extra_repr(self) -> str:
        return f"k={self.k}, depth={self.depth}, dim={self.dim}, heads={self.heads}, tokens={self.tokens}"

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) or (K, N, C, H, W) -> (K or 1, N·T, C·p·p), in the order of the patch conv."""
        p = self.patch
        *lead, c, h, w = x.shape
        x = x.reshape(-1, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (KN, H/p, W/p, C, p, p)
        return x.reshape(lead[0] if len(lead) == 2 else 1, -1, c * p * p)

    def forward(self, x: torch.Tensor, per_model: bool = False, generator: torch.Generator | None = None,
                masks: list | None = None) -> torch.Tensor:
        """``x``: images (N, C, H, W) for every model, or with ``per_model`` each model's own (K, N, C, H, W);
        returns logits (K, N, classes). In training, ``masks`` (2 per block, each (K, N, 1)) replace the
        drop-path draws."""
        k, t, d = self.k, self.tokens, self.dim
        n = x.shape[1] if per_model else x.shape[0]
        h = _linear(self._patches(x).expand(k, -1, -1), self.embed_w, self.embed_b)
        h = (h.view(k, n, t, d) + self.pos.unsqueeze(1)).view(k, n * t, d)
        drops = self.training and (self._drops or masks is not None)
        for j in range(self.depth):
            def residual(h: torch.Tensor, out: torch.Tensor, which: int) -> torch.Tensor:
                mult = masks[2 * j + which] if masks is not None else _drop_path_mult(
                    self.p_path[:, j], n, out.device, generator)  # (K, N, 1): one draw per model and sample
                return torch.addcmul(h.view(k, n, t * d), out.view(k, n, t * d), mult.to(out.dtype)).view(k, n * t, d)

            h = self._block(h, j, n, t, causal=False, residual=residual if drops else None)
        # the final norm's affine commutes with the mean over tokens: applied to the (K, N, D) pooled features
        pooled = F.layer_norm(h, (d,)).view(k, n, t, d).mean(2)
        return _linear(torch.addcmul(self.norm_b.unsqueeze(1), pooled, self.norm_w.unsqueeze(1)), self.head_w, self.head_b)


def _runs(rates: Sequence[float]) -> tuple[tuple[int, int, float], ...]:
    """Runs (first, end, rate) of neighbouring models that share one rate."""
    out: list[list] = []
    for i, r in enumerate(rates):
        if out and out[-1][2] == r:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1, r])
    return tuple(tuple(run) for run in out)


class StackedGPT(_StackedTransformer):
    """K byte-level GPTs (:class:`~dropnotes.models.GPT`: token and position embeddings, pre-norm causal
    blocks, a head tied to the token embedding) as one group, for chapter 5's pretraining and fine-tuning
    arms. Model k has its own dropout rates on the embedding (``p_emb``), the attention probabilities
    (``p_attn``) and the residual branches (``p_resid``), held in (K,) buffers that :meth:`set_rates` changes
    in place during training (early dropout). The attention's rates are also kept on the host as runs of
    models sharing one (``attention_runs``): each run is one fused SDPA call with its ``dropout_p``, drawn from
    the device's default generator, so a captured step is captured again when they change. The noise sites
    are those of :class:`~dropnotes.models.GPT`; a site no model will ever use (``max_rate`` 0) is skipped."""

    def __init__(self, k: int, *, vocab_size: int = 256, block_size: int = 64, dim: int = 64, layers: int = 2,
                 heads: int = 2, p_emb=0.0, p_attn=0.0, p_resid=0.0, max_rate: float | None = None,
                 seeds: Sequence[int] | None = None) -> None:
        super().__init__()

        self.k = check_positive_int("k", k)
        self._shape = dict(vocab_size=vocab_size, block_size=block_size, dim=dim, layers=layers, heads=heads)
        with torch.device("meta"):
            GPT(**self._shape)  # validates the shape arguments
        self.vocab, self.block_size, self.dim, self.depth, self.heads = vocab_size, block_size, dim, layers, heads
        rates = {n: _values(n, v, k, check=check_probability) for n, v in (("p_emb", p_emb), ("p_attn", p_attn),
                                                                            ("p_resid", p_resid))}
        for name, values in rates.items():
            self.register_buffer(name, torch.tensor([float(v) for v in values]))
        self.attention_runs = _runs([float(v) for v in rates["p_attn"]])
        top = max(v for values in rates.values() for v in values) if max_rate is None else float(max_rate)
        self._drops = top > 0  # the noise sites exist in the step (their rates may later be 0)
        for name, shape in {"tok": (vocab_size, dim), "pos": (block_size, dim), "lnf_w": (dim,), "lnf_b": (dim,)}.items():
            self.register_parameter(name, nn.Parameter(torch.empty(k, *shape)))
        self._add_blocks(k, layers, dim)
        self.reset_parameters(seeds)

    @classmethod
    def _tensors(cls, m: nn.Module) -> dict[str, torch.Tensor]:
        out = {"tok": m.tok.weight, "pos": m.pos.weight, "lnf_w": m.ln_f.weight, "lnf_b": m.ln_f.bias}
        for j, b in enumerate(m.blocks):
            out.update(cls._block_tensors(j, b.ln1, b.ln2, b.attn, b.mlp[0], b.mlp[2]))
        return out

    def _single(self) -> nn.Module:

        return GPT(**self._shape)

    @classmethod
    def from_models(cls, models: Sequence[nn.Module], *, p_emb=0.0, p_attn=0.0, p_resid=0.0,
                    max_rate: float | None = None) -> "StackedGPT":
        """Stack K :class:`~dropnotes.models.GPT` of one shape (copies of one checkpoint for fine-tuning), with
        the group's per-model rates."""
        first = models[0]
        out = cls(len(models), vocab_size=first.tok.num_embeddings, block_size=first.block_size,
                  dim=first.tok.embedding_dim, layers=len(first.blocks), heads=first.blocks[0].attn.heads,
                  p_emb=p_emb, p_attn=p_attn, p_resid=p_resid, max_rate=max_rate)
        for i, m in enumerate(models):
            out._copy_in(m, i)
        return out.to(first.tok.weight.device)

    def model(self, i: int) -> nn.Module:
        """Model ``i`` as a standalone :class:`~dropnotes.models.GPT` (dropout off)."""
        return self._copy_out(self._single().to(self.tok.device), i)

    def set_rates(self, p_emb=None, p_attn=None, p_resid=None) -> None:
        """Change the per-model rates in place (a scalar or one per model; None leaves one unchanged)."""
        for name, value in (("p_emb", p_emb), ("p_attn", p_attn), ("p_resid", p_resid)):
            if value is not None:
                values = _per_model(name, value, self.k, check=check_probability)
                if bool((values > 0).any()) and not self._drops:
                    raise ValueError(f"{name}: this group was built without noise sites (max_rate 0)")
                getattr(self, name).copy_(values)
                if name == "p_attn":  # on the host: the attention's calls (a captured step must be captured again)
                    self.attention_runs = _runs(values.tolist())

    def extra_repr(self) -> str:
        return f"k={self.k}, layers={self.depth}, dim={self.dim}, heads={self.heads}, block_size={self.block_size}"

    def forward(self, ids: torch.Tensor, per_model: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """``ids``: (N, T) for every model, or each model's own (K, N, T); returns logits (K, N, T, V)."""
        k, d = self.k, self.dim
        ids = ids if per_model else ids.unsqueeze(0).expand(k, -1, -1)
        _, n, t = ids.shape
        if t > self.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size={self.block_size}")
        x = torch.gather(self.tok, 1, ids.reshape(k, -1, 1).expand(-1, -1, d)).view(k, n, t, d)
        x = x + self.pos[:, :t].unsqueeze(1)
        drops = self.training and self._drops
        if drops:
            x = unit_noise(x, self.p_emb, generator=generator)
        h = x.view(k, n * t, d)
        residual = None
        if drops:
            residual = lambda h_, out, _: torch.addcmul(h_, out, dropout_mult(out, self.p_resid, generator=generator))  # noqa: E731
        for j in range(self.depth):
            h = self._block(h, j, n, t, causal=True, residual=residual, attn_runs=self.attention_runs if drops else None)
        # the head is tied to the token embedding; the final norm's affine folded into it (its bias: tok @ beta)
        return _norm_linear(h, self.lnf_w, self.lnf_b, self.tok, torch.zeros_like(self.tok[..., 0])).view(
            k, n, t, self.vocab)
