"""Data-parallel wrapping: the one module that knows DDP (and the sharded strategies).

The loop sees one face, `Wrapped`: the module to call, a context that skips gradient sync on
non-final micro-steps, and the model itself for parameters and state dicts.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from train.distributed import DistConfig, DistContext


@dataclass
class Wrapped:
    strategy: str
    model: nn.Module           # the bare model: parameters, num_params, state dicts
    module: nn.Module          # what forward calls (the DDP wrapper, or the model itself)
    ddp: DDP | None = None     # for the comm hook and DDP's own logging data

    def sync_context(self, last_micro_step: bool):
        """no_sync on non-final micro-steps. It must wrap forward *and* backward: DDP decides at
        forward time whether the coming backward reduces, so wrapping only backward still syncs."""
        if last_micro_step or self.ddp is None:
            return contextlib.nullcontext()
        return self.ddp.no_sync()

    def close(self) -> None:
        """Drop the wrapper (and its reducer) before the process group goes (see teardown)."""
        self.ddp = None
        self.module = self.model


def wrap(model: nn.Module, cfg: DistConfig, ctx: DistContext) -> Wrapped:
    if not ctx.distributed:
        return Wrapped("none", model, model)
    ddp = DDP(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
              bucket_cap_mb=cfg.bucket_cap_mb, gradient_as_bucket_view=cfg.gradient_as_bucket_view,
              static_graph=cfg.static_graph, find_unused_parameters=cfg.find_unused_parameters)
    return Wrapped("ddp", model, ddp, ddp)
