"""Non-causal pre-LayerNorm Transformer over token features (for text8-like sequences)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfn.errors import ConfigError, DataError
from bfn.networks.embeddings import ConditionEmbedding, check_inputs, resolve_labels


class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention (Vaswani et al. 2017) via `F.scaled_dot_product_attention`."""

    def __init__(self, *, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, heads, L, D/heads)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))  # (B, L, D)


class LocalMixing(nn.Module):
    """Depthwise 1-D convolution along the sequence (each feature mixes its `kernel` nearest tokens), zero
    padded, so a token sees its neighbours from the first step of training without attention having to learn
    where they are."""

    def __init__(self, *, dim: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)

    def forward(self, x: Tensor) -> Tensor:  # (B, L, D)
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: x + attn(LN(x)), [x + local(LN(x))], then x + MLP(LN(x))."""

    def __init__(self, *, dim: int, heads: int, mlp_ratio: float, dropout: float, local_kernel: int = 0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim=dim, heads=heads, dropout=dropout)
        self.local = None
        if local_kernel:
            self.norm_local = nn.LayerNorm(dim)
            self.local = LocalMixing(dim=dim, kernel=local_kernel)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.dropout(self.attn(self.norm1(x)))
        if self.local is not None:
            x = x + self.dropout(self.local(self.norm_local(x)))
        return x + self.dropout(self.mlp(self.norm2(x)))


class Transformer(nn.Module):
    """Non-causal Transformer: [B, L, in_features] -> [B, L, out_features], L <= `seq_len`.

    Time (plus label) embedding is added to every token before the first block; positions are learned.

    Args:
        in_features: features per token in.
        out_features: features per token out.
        seq_len: maximum sequence length (size of the learned positional table).
        dim: width of the tokens.
        depth: number of blocks.
        heads: attention heads.
        mlp_ratio: MLP width / dim.
        dropout: dropout on attention weights and on each residual branch.
        num_classes: number of class labels for class-conditional use; label `num_classes` is the null label.
        local_kernel: when > 0, every block also mixes each token with its neighbours by a depthwise
            convolution of this (odd) width (see `LocalMixing`).
    """

    def __init__(self, *, in_features: int, out_features: int, seq_len: int, dim: int = 256, depth: int = 4,
                 heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 num_classes: int | None = None, local_kernel: int = 0) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"heads ({heads}) must divide dim ({dim})")
        if seq_len < 1 or depth < 1:
            raise ConfigError(f"seq_len and depth must be >= 1, got seq_len={seq_len}, depth={depth}")
        if local_kernel < 0 or (local_kernel and local_kernel % 2 == 0):
            raise ConfigError(f"local_kernel must be 0 (none) or an odd width, got {local_kernel}")
        self.in_features = in_features
        self.seq_len = seq_len
        self.num_classes = num_classes
        self.embed_in = nn.Linear(in_features, dim)
        self.pos = nn.Parameter(torch.randn(1, seq_len, dim) * 0.02)
        self.embed = ConditionEmbedding(dim=dim, features=dim, num_classes=num_classes)
        self.blocks = nn.ModuleList(
            Block(dim=dim, heads=heads, mlp_ratio=mlp_ratio, dropout=dropout, local_kernel=local_kernel)
            for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_features)
        # zero init: the network starts by predicting 0 for every token
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.ndim != 3 or x.shape[2] != self.in_features or x.shape[1] > self.seq_len:
            raise DataError(f"Transformer expects input [B, L <= {self.seq_len}, {self.in_features}], "
                            f"got {list(x.shape)}")
        check_inputs(x, t, "Transformer")
        labels = resolve_labels(cond, self.num_classes, x.shape[0], x.device, "Transformer")
        emb = self.embed(t, labels)  # (B, D)
        h = self.embed_in(x) + self.pos[:, : x.shape[1]] + emb[:, None, :]  # (B, L, D)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm_out(h))
