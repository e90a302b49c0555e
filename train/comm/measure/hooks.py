"""The DDP comm hooks a user can choose, and a counter of the bytes they hand to collectives.

The counter wraps `torch.distributed.all_reduce`, because that call is the only place that
sees every byte: PowerSGD launches its second collective from a future callback, long after
the hook returned, so counting inside the hook would miss it. The wrapper adds a dict update
per collective and changes nothing else.
"""
from __future__ import annotations

import time

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

from train.comm.config import CommConfig


def build_hook(cfg: CommConfig):
    """(state, hook) for DDP.register_comm_hook, or None for plain DDP."""
    if cfg.hook == "allreduce":
        return None, default_hooks.allreduce_hook
    if cfg.hook == "fp16":
        return None, default_hooks.fp16_compress_hook
    if cfg.hook == "bf16":
        return None, default_hooks.bf16_compress_hook
    if cfg.hook == "powersgd":
        state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=cfg.powersgd_rank,
                                            start_powerSGD_iter=cfg.powersgd_start_iter)
        return state, powerSGD_hook.powerSGD_hook
    return None


class CollectiveCounter:
    """Counts bytes and calls of all_reduce while `active` (the final micro-step's backward)."""

    def __init__(self):
        self.active = False
        self.bytes = 0
        self.calls = 0
        self.first_launch: float | None = None
        self._original = None

    def install(self) -> None:
        if self._original is not None:
            return
        original = self._original = dist.all_reduce

        def counting_all_reduce(tensor: torch.Tensor, *args, **kwargs):
            if self.active:
                self.bytes += tensor.numel() * tensor.element_size()
                self.calls += 1
                if self.first_launch is None:
                    self.first_launch = time.perf_counter()
            return original(tensor, *args, **kwargs)

        dist.all_reduce = counting_all_reduce

    def reset(self) -> None:
        self.bytes, self.calls, self.first_launch = 0, 0, None

    def uninstall(self) -> None:
        if self._original is not None:
            dist.all_reduce = self._original
            self._original = None
