"""The official BFN text8 network: a non-causal GPT-2-style Transformer (24 layers, 12 heads, width 768) with the
official text input adapter (Linear of 2 theta - 1, fixed sinusoidal positions of base 1000, Linear of 2t - 1)
and the skip head (a Linear on [final LayerNorm output, adapter output]).

Parameter and buffer names equal the official ones without the leading `net.` (see `bfn.models.official`).
bfn's `DiscreteFlow` already feeds 2 theta - 1 for K > 2, so the adapter applies its Linear directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfn.errors import ConfigError
from bfn.networks.embeddings import check_inputs


def positions_base1000(seq_len: int, dim: int) -> Tensor:
    """Fixed positional table [seq_len, dim] as the official adapter builds it: column 2j holds
    sin(p / 1000^(2j/dim)), column 2j+1 holds cos(p / 1000^((2j+1)/dim)) (base 1000, and the cosine exponent
    offset by one, unlike Vaswani et al.'s 10000 and 2j)."""
    pos = torch.arange(seq_len, dtype=torch.float32)[:, None]
    table = torch.zeros(seq_len, dim)
    table[:, 0::2] = torch.sin(pos / 1000.0 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    table[:, 1::2] = torch.cos(pos / 1000.0 ** (torch.arange(1, dim, 2, dtype=torch.float32) / dim))
    return table


class TextInputAdapter(nn.Module):
    """[B, L, K] values 2 theta - 1 and t [B] -> token embeddings [B, L, D]."""

    pos_embedding: Tensor

    def __init__(self, vocab_size: int, seq_len: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("pos_embedding", positions_base1000(seq_len, dim))
        self.inp_embedding = nn.Linear(vocab_size, dim)
        self.t_embedding = nn.Linear(1, dim)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t_emb = self.t_embedding((2 * t.float() - 1)[:, None, None])  # (B, 1, D)
        return self.inp_embedding(x) + self.pos_embedding[: x.shape[1]] + t_emb


class SelfAttention(nn.Module):
    def __init__(self, n_head: int, n_embd: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = (z.reshape(b, n, self.n_head, d // self.n_head).transpose(1, 2)
                   for z in self.c_attn(x).split(d, dim=2))  # 3 x (B, heads, L, D/heads)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(b, n, d)))


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-LayerNorm block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, n_head: int, n_embd: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = SelfAttention(n_head, n_embd, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Trunk(nn.Module):
    """Dropout, the blocks `h`, and the final LayerNorm `ln_f`."""

    def __init__(self, n_layer: int, n_head: int, n_embd: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(Block(n_head, n_embd, dropout, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(x)
        for block in self.h:
            x = block(x)
        return self.ln_f(x)


class OfficialText8GPT(nn.Module):
    """The official BFN text8 Transformer (170,175,003 parameters at the defaults).

    Args:
        in_features, out_features, seq_len: filled in by bfn (27, 27, 256).
        n_layer, n_head, n_embd, dropout, bias: as the official config (24, 12, 768, 0, True).
        init_std: std of the GPT-2 initialisation of Linear weights (residual projections get
            init_std / sqrt(2 n_layer)).
    """

    def __init__(self, *, in_features: int = 27, out_features: int = 27, seq_len: int = 256, n_layer: int = 24,
                 n_head: int = 12, n_embd: int = 768, dropout: float = 0.0, bias: bool = True,
                 init_std: float = 0.02) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ConfigError(f"n_embd {n_embd} must be divisible by n_head {n_head}")
        self.seq_len = seq_len
        self.input_adapter = TextInputAdapter(in_features, seq_len, n_embd)
        self.transformer = Trunk(n_layer, n_head, n_embd, dropout, bias)
        self.lm_head = nn.Linear(2 * n_embd, out_features, bias=bias)
        for name, p in self.named_parameters():
            if p.ndim == 2:
                std = init_std / (2 * n_layer) ** 0.5 if name.endswith("c_proj.weight") else init_std
                nn.init.normal_(p, std=std)
            elif name.endswith(".bias") and "ln_" not in name:
                nn.init.zeros_(p)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """x [B, L, K] (2 theta - 1), t [B] -> logits [B, L, out_features]."""
        check_inputs(x, t, type(self).__name__)
        if x.shape[1] > self.seq_len:
            raise ValueError(f"sequences of {x.shape[1]} tokens exceed the positional table ({self.seq_len})")
        x_in = self.input_adapter(x, t)
        return self.lm_head(torch.cat([self.transformer(x_in), x_in], dim=-1))
