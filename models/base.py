"""The one interface every model of the zoo offers the training loop."""
from __future__ import annotations

import torch
from torch import nn


class ZooModel(nn.Module):
    name: str = ""
    task: str = ""   # "image" | "text": which data the model consumes
    unit: str = ""   # "samples" | "tokens": the throughput unit

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy loss; computed inside forward so DDP sees the whole graph."""
        raise NotImplementedError

    def count_items(self, inputs: torch.Tensor) -> int:
        return int(inputs.numel() if self.unit == "tokens" else inputs.shape[0])

    def shard_units(self) -> list[nn.Module]:
        """Submodules that sharded data parallel wraps one by one (each all-gathers its parameters
        just before it runs and frees them after); the rest belongs to the root unit."""
        return []

    def num_params(self) -> int:
        """Trainable parameters; a tied tensor counts once (parameters() deduplicates)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def flops_per_item(self) -> float:
        """Training FLOPs (forward + backward ~ 3 x forward) per sample or per token."""
        raise NotImplementedError
