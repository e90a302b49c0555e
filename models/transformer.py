"""GPT-style decoder: token + position embeddings, pre-norm blocks with causal SDPA, tied head."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.base import ZooModel
from models.registry import check_dropout, check_positive, register


@dataclass(kw_only=True, frozen=True)
class TransformerConfig:
    n_layer: int = 2
    """Transformer blocks."""
    n_head: int = 2
    """Attention heads (d_model must divide by it)."""
    d_model: int = 64
    """Residual stream width."""
    block_size: int = 128
    """Longest context the position embedding covers."""
    vocab_size: int | None = None
    """None takes the data's vocabulary; a larger one (GPT-2's 50304) keeps byte ids valid."""
    dropout: float = 0.0
    """Dropout on attention and residual branches."""
    tie_embeddings: bool = True
    """Share the token embedding with the output head."""
    bias: bool = True
    """Biases in linear layers and LayerNorms."""

    def __post_init__(self):
        check_positive("transformer", n_layer=self.n_layer, n_head=self.n_head, d_model=self.d_model,
                       block_size=self.block_size)
        if self.vocab_size is not None:
            check_positive("transformer", vocab_size=self.vocab_size)
        if self.d_model % self.n_head:
            raise ValueError(f"model.d_model={self.d_model} must divide by model.n_head={self.n_head}")
        check_dropout(self.dropout)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        d = cfg.d_model
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.ln1 = nn.LayerNorm(d, bias=cfg.bias)
        self.qkv = nn.Linear(d, 3 * d, bias=cfg.bias)
        self.proj = nn.Linear(d, d, bias=cfg.bias)
        self.ln2 = nn.LayerNorm(d, bias=cfg.bias)
        self.fc = nn.Linear(d, 4 * d, bias=cfg.bias)
        self.out = nn.Linear(4 * d, d, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)
        # (B, T, D) -> (B, heads, T, D/heads): SDPA picks flash/memory-efficient kernels where it can.
        q, k, v = (t.view(B, T, self.n_head, D // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))

    def forward(self, x):
        x = x + self.drop(self.attention(self.ln1(x)))
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))


@register("transformer")
class Transformer(ZooModel):
    task, unit = "text", "tokens"
    FLAVORS = {
        "debug": TransformerConfig(n_layer=2, n_head=2, d_model=64, block_size=128),
        "small": TransformerConfig(n_layer=4, n_head=4, d_model=256, block_size=256),
        "gpt2-small": TransformerConfig(n_layer=12, n_head=12, d_model=768, block_size=1024, vocab_size=50304),
        "gpt2-medium": TransformerConfig(n_layer=24, n_head=16, d_model=1024, block_size=1024, vocab_size=50304),
    }

    def __init__(self, cfg: TransformerConfig, data_spec: dict):
        super().__init__()
        vocab = cfg.vocab_size or data_spec["vocab_size"]
        if vocab < data_spec["vocab_size"]:
            raise ValueError(f"model.vocab_size={vocab} is smaller than the data's vocabulary ({data_spec['vocab_size']})")
        self.seq_len = data_spec["seq_len"]
        if self.seq_len > cfg.block_size:
            raise ValueError(f"data.seq_len={self.seq_len} is longer than model.block_size={cfg.block_size}")
        self.cfg, self.vocab = cfg, vocab
        self.tok = nn.Embedding(vocab, cfg.d_model)
        self.pos = nn.Embedding(cfg.block_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.head = nn.Linear(cfg.d_model, vocab, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.tok.weight
        self.apply(self._init)
        for block in self.blocks:  # GPT-2: residual projections scaled by 1/sqrt(2 x layers)
            for layer in (block.proj, block.out):
                nn.init.normal_(layer.weight, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def shard_units(self) -> list[nn.Module]:
        return list(self.blocks)  # the embeddings and the head stay with the root (the head may be tied)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        T = inputs.shape[1]  # inputs (B, T) token ids -> logits (B, T, vocab)
        x = self.drop(self.tok(inputs) + self.pos(torch.arange(T, device=inputs.device)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def forward(self, inputs, targets):
        return F.cross_entropy(self.logits(inputs).flatten(0, 1), targets.flatten())

    def flops_per_item(self) -> float:
        """Per token: 6 x N (non-embedding matmul weights, plus the head) + 12 x layers x d x T
        for attention scores and values (PaLM appendix B), T = the data's sequence length."""
        c = self.cfg
        matmul = sum(m.weight.numel() for b in self.blocks for m in (b.qkv, b.proj, b.fc, b.out))
        matmul += self.head.weight.numel()
        return 6.0 * matmul + 12.0 * c.n_layer * c.d_model * self.seq_len
