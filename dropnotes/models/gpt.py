"""A small byte-level GPT in the spirit of nanoGPT, with three separate dropout knobs.

Token + position embedding -> ``p_emb`` dropout -> ``layers`` pre-norm blocks
(``x + Dropout_resid(Attn(LN(x)))``, ``x + Dropout_resid(MLP(LN(x)))``; causal attention through
``scaled_dot_product_attention`` with ``dropout_p = p_attn``) -> LN -> a head tied to the token
embedding. :meth:`GPT.set_dropout` changes the rates during training (early dropout).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from dropnotes.layers import Dropout, SelfAttention
from dropnotes.runtime import check_positive_int, check_probability


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, p_attn: float, p_resid: float) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, p_attn=p_attn, causal=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop_attn, self.drop_mlp = Dropout(p_resid), Dropout(p_resid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_attn(self.attn(self.ln1(x)))
        return x + self.drop_mlp(self.mlp(self.ln2(x)))


class GPT(nn.Module):
    def __init__(self, vocab_size: int = 256, block_size: int = 64, dim: int = 64, layers: int = 2, heads: int = 2,
                 p_emb: float = 0.0, p_attn: float = 0.0, p_resid: float = 0.0) -> None:
        super().__init__()
        self.block_size = check_positive_int("block_size", block_size)
        self.tok = nn.Embedding(check_positive_int("vocab_size", vocab_size), check_positive_int("dim", dim))
        self.pos = nn.Embedding(block_size, dim)
        self.drop_emb = Dropout(check_probability("p_emb", p_emb))
        p_attn, p_resid = check_probability("p_attn", p_attn), check_probability("p_resid", p_resid)
        self.blocks = nn.ModuleList(Block(dim, heads, p_attn, p_resid) for _ in range(check_positive_int("layers", layers)))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.tok.weight  # weight tying
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def set_dropout(self, p_emb: float | None = None, p_attn: float | None = None, p_resid: float | None = None) -> None:
        """Change the dropout rates in place (``None`` leaves one unchanged)."""
        if p_emb is not None:
            self.drop_emb.p = check_probability("p_emb", p_emb)
        for b in self.blocks:
            if p_attn is not None:
                b.attn.p_attn = check_probability("p_attn", p_attn)
            if p_resid is not None:
                b.drop_attn.p = b.drop_mlp.p = check_probability("p_resid", p_resid)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """``idx`` (N, T) with T <= block_size -> logits (N, T, vocab)."""
        t = idx.shape[1]
        if t > self.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size={self.block_size}")
        x = self.drop_emb(self.tok(idx) + self.pos(torch.arange(t, device=idx.device)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def num_params(self) -> int:
        """Parameters, counting the tied embedding once and leaving out the position table (nanoGPT's count)."""
        return sum(p.numel() for p in self.parameters()) - self.pos.weight.numel()

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6N plus the attention scores, 12·layers·dim·block (nanoGPT's estimate)."""
        return 6 * self.num_params() + 12 * len(self.blocks) * self.tok.embedding_dim * self.block_size
