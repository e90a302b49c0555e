"""MLP image classifier: flattened image -> hidden layers (ReLU) -> class logits."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from models.base import ZooModel
from models.registry import check_dropout, check_positive, register


@dataclass(kw_only=True, frozen=True)
class MLPConfig:
    hidden: list = field(default_factory=lambda: [64])
    """Widths of the hidden layers."""
    dropout: float = 0.0
    """Dropout after each hidden activation."""

    def __post_init__(self):
        if not isinstance(self.hidden, (list, tuple)) or not self.hidden:
            raise ValueError(f"model.hidden={self.hidden!r} must be a non-empty list of widths")
        for width in self.hidden:
            check_positive("mlp", hidden=width)
        check_dropout(self.dropout)


@register("mlp")
class MLP(ZooModel):
    task, unit = "image", "samples"
    FLAVORS = {"debug": MLPConfig(hidden=[64]), "small": MLPConfig(hidden=[256, 128]),
               "base": MLPConfig(hidden=[1024, 1024])}

    def __init__(self, cfg: MLPConfig, data_spec: dict):
        super().__init__()
        widths = [math.prod(data_spec["input_shape"]), *cfg.hidden, data_spec["num_classes"]]
        layers = []
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers += [nn.ReLU(), nn.Dropout(cfg.dropout)]
        self.net = nn.Sequential(nn.Flatten(), *layers)

    def shard_units(self) -> list[nn.Module]:
        return [m for m in self.net if isinstance(m, nn.Linear)]  # one unit per layer

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)  # (B, C, H, W) -> (B, classes)

    def forward(self, inputs, targets):
        return F.cross_entropy(self.logits(inputs), targets)

    def flops_per_item(self) -> float:
        """6 x weight-matrix parameters per sample: 2 for the forward multiply-add, 4 for backward."""
        return 6.0 * sum(m.weight.numel() for m in self.net if isinstance(m, nn.Linear))
