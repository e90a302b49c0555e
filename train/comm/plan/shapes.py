"""Model shapes the planner knows by name, and what it derives from a shape: parameters per shard
unit, FLOPs per token, activation bytes per token.

Counts follow the published configs (GPT-2: LayerNorm with biases, biased linears, tied
embeddings, learned positions, 4h MLP; Llama 3: RMSNorm, no biases, grouped-query attention,
SwiGLU MLP, untied head). Shard units are one per layer, plus the embedding and the head (see
Shape.units).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    hidden: int
    heads: int
    vocab: int
    seq_len: int
    kv_heads: int = 0   # 0: as many as heads (no grouped-query attention)
    ffn: int = 0        # 0: 4 x hidden
    gated: bool = False  # SwiGLU: three FFN matrices instead of two
    gpt2: bool = False   # biases, LayerNorm with bias, tied head, learned positions

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * (self.kv_heads or self.heads)

    @property
    def ffn_dim(self) -> int:
        return self.ffn or 4 * self.hidden

    def layer_params(self) -> int:
        h, kv, f = self.hidden, self.kv_dim, self.ffn_dim
        attn = 2 * h * h + 2 * h * kv
        mlp = (3 if self.gated else 2) * h * f
        if self.gpt2:  # biases of qkv, proj, fc, out; two LayerNorms with weight and bias
            return attn + mlp + (h + 2 * kv) + h + f + h + 4 * h
        return attn + mlp + 2 * h

    def units(self, seq_len: int) -> tuple[list[int], list[float], bool]:
        """Shard units as FSDP wraps a decoder: (parameters, forward FLOPs per token, whether the
        last unit is a root held gathered from forward to backward). GPT-2 ties its embedding to
        its head, so both (and the positions, the final norm) form that root; Llama 3's embedding
        and head (with the final norm) are units of their own, first and last in forward."""
        h, v = self.hidden, self.vocab
        layers = [self.layer_params()] * self.layers
        flops = [self.layer_flops_per_token(seq_len)] * self.layers
        if self.gpt2:
            return layers + [v * h + self.seq_len * h + 2 * h], flops + [self.head_flops_per_token()], True
        return [v * h] + layers + [v * h + h], [0.0] + flops + [self.head_flops_per_token()], False

    def params(self) -> int:
        return sum(self.units(self.seq_len)[0])

    def layer_flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs: 2 per weight of the layer's matmuls, plus attention scores and values
        (2 x 2 x h x seq per token: the causal mask halves it, kernels do not save it)."""
        h, kv, f = self.hidden, self.kv_dim, self.ffn_dim
        return 2.0 * (2 * h * h + 2 * h * kv + (3 if self.gated else 2) * h * f) + 4.0 * h * seq_len

    def head_flops_per_token(self) -> float:
        return 2.0 * self.hidden * self.vocab

    def flops_per_token(self, seq_len: int) -> float:
        """Model FLOPs (forward + backward = 3 x forward), as MFU counts them."""
        return 3.0 * (self.layers * self.layer_flops_per_token(seq_len) + self.head_flops_per_token())

    def activation_bytes_per_token(self, dtype_bytes: int) -> dict:
        """What backward needs per token, with flash attention (no seq x seq scores kept).
        Per layer: norm inputs, the qkv/proj inputs, q k v, the attention output, the MLP's input,
        its up/gate outputs, activation and product. Checkpointing keeps each layer's input and
        recomputes one layer at a time. The head's logits are kept in fp32 for the loss."""
        h, kv, f = self.hidden, self.kv_dim, self.ffn_dim
        per_layer = dtype_bytes * (6 * h + 2 * kv + (4 if self.gated else 2) * f)
        logits = (dtype_bytes + 4) * self.vocab
        return {"full": self.layers * per_layer + logits,
                "checkpointed": self.layers * dtype_bytes * h + per_layer + logits}


SHAPES = {
    "gpt2-small": Shape("gpt2-small", 12, 768, 12, 50257, 1024, gpt2=True),
    "gpt2-medium": Shape("gpt2-medium", 24, 1024, 16, 50257, 1024, gpt2=True),
    "gpt2-large": Shape("gpt2-large", 36, 1280, 20, 50257, 1024, gpt2=True),
    "gpt2-xl": Shape("gpt2-xl", 48, 1600, 25, 50257, 1024, gpt2=True),
    "llama3-8b": Shape("llama3-8b", 32, 4096, 32, 128256, 8192, kv_heads=8, ffn=14336, gated=True),
    "llama3-70b": Shape("llama3-70b", 80, 8192, 64, 128256, 8192, kv_heads=8, ffn=28672, gated=True),
    "llama3-405b": Shape("llama3-405b", 126, 16384, 128, 128256, 8192, kv_heads=8, ffn=53248, gated=True),
}
