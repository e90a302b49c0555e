"""Byte/char-level LSTM language model: embedding -> multi-layer LSTM -> vocabulary logits."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.base import ZooModel
from models.registry import check_dropout, check_positive, register


@dataclass(kw_only=True, frozen=True)
class LSTMConfig:
    emb: int = 32
    """Embedding width."""
    hidden: int = 64
    """LSTM hidden width."""
    layers: int = 1
    """Stacked LSTM layers."""
    dropout: float = 0.0
    """Dropout between LSTM layers and before the head."""
    tie_embeddings: bool = False
    """Share the embedding with the output head (needs emb == hidden)."""

    def __post_init__(self):
        check_positive("lstm", emb=self.emb, hidden=self.hidden, layers=self.layers)
        check_dropout(self.dropout)
        if self.tie_embeddings and self.emb != self.hidden:
            raise ValueError(f"model.tie_embeddings=true needs model.emb == model.hidden (got {self.emb} and {self.hidden})")


@register("lstm")
class LSTMLanguageModel(ZooModel):
    """The hidden state is reset (zeros) for every batch, never carried over.

    The text data hands out independent random windows, so the state left by one batch row
    belongs to unrelated text: carrying it would feed the model context that is not there.
    Resetting also makes every step a pure function of its batch, which exact resume needs.
    """

    task, unit = "text", "tokens"
    FLAVORS = {"debug": LSTMConfig(emb=32, hidden=64, layers=1),
               "small": LSTMConfig(emb=256, hidden=512, layers=2),
               "base": LSTMConfig(emb=512, hidden=1024, layers=3)}

    def __init__(self, cfg: LSTMConfig, data_spec: dict):
        super().__init__()
        self.cfg = cfg
        vocab = data_spec["vocab_size"]
        self.embed = nn.Embedding(vocab, cfg.emb)
        self.lstm = nn.LSTM(cfg.emb, cfg.hidden, cfg.layers, batch_first=True,
                            dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden, vocab)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight

    def reset_state(self) -> None:
        """Nothing to reset between batches: the state never outlives a forward (see class docstring)."""

    def shard_units(self) -> list[nn.Module]:
        # nn.LSTM runs its stacked layers in one fused call, so the stack is one unit; the
        # embedding and the head (possibly tied to it) stay with the root.
        return [self.lstm]

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(inputs))  # (B, T) -> (B, T, hidden); zero initial state
        return self.head(self.drop(out))        # (B, T, vocab)

    def forward(self, inputs, targets):
        logits = self.logits(inputs)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def flops_per_item(self) -> float:
        """6 x (LSTM weights + head weight) per token; the embedding lookup does no multiply-adds."""
        lstm = sum(p.numel() for n, p in self.lstm.named_parameters() if n.startswith("weight"))
        return 6.0 * (lstm + self.head.weight.numel())
