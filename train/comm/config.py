"""Configuration of the communication instrumentation."""
from __future__ import annotations

from dataclasses import dataclass

from train.errors import check_choice, check_range

HOOKS = ("allreduce", "fp16", "bf16", "powersgd", "none")


@dataclass(kw_only=True)
class CommConfig:
    hook: str = "allreduce"
    """DDP comm hook the recorder wraps: allreduce | fp16 | bf16 | powersgd | none (plain DDP, no figures)."""
    record: bool = True
    """Measure the hook's buckets; false registers the same hook bare (to price the measurement itself)."""
    powersgd_rank: int = 2
    """PowerSGD matrix approximation rank."""
    powersgd_start_iter: int = 2
    """PowerSGD runs vanilla allreduce for this many steps first (at least 2, DDP's requirement)."""
    nic: str = ""
    """Interface(s) whose counters give wire bytes, comma-separated; "" = *_SOCKET_IFNAME, else non-loopback, else lo."""
    timeline_steps: int = 8
    """How many steps' bucket timelines summary.json keeps for the planner's replay."""

    def __post_init__(self):
        check_choice("comm.hook", self.hook, HOOKS)
        check_range("comm.powersgd_rank", self.powersgd_rank, 1)
        check_range("comm.powersgd_start_iter", self.powersgd_start_iter, 2)
        check_range("comm.timeline_steps", self.timeline_steps, 0)
