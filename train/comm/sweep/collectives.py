"""The five collectives of the sweep: how to run each, and how to check its result exactly.

Inputs hold small integers that depend on the rank (as nccl-tests fills them), so every
reduced value is exact in floating point and a wrong element is a real error, not rounding.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

OPS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "all_to_all")


def pattern(count: int, device, dtype) -> torch.Tensor:
    return (torch.arange(count, device=device) % 7 + 1).to(dtype)


class Collective:
    """Buffers for one op at one size; `run()` is timed, `check()` fills, runs once and counts errors."""

    def __init__(self, op: str, count: int, rank: int, world: int, device, dtype):
        self.op, self.count, self.rank, self.world = op, count, rank, world
        self.device, self.dtype = device, dtype
        chunk = count // world
        sizes = {"all_reduce": (count, count), "all_gather": (chunk, count), "reduce_scatter": (count, chunk),
                 "broadcast": (count, count), "all_to_all": (count, count)}[op]
        self.inp = torch.zeros(sizes[0], device=device, dtype=dtype)
        self.out = self.inp if op in ("all_reduce", "broadcast") else torch.zeros(sizes[1], device=device, dtype=dtype)

    def run(self) -> None:
        if self.op == "all_reduce":
            dist.all_reduce(self.inp)
        elif self.op == "all_gather":
            dist.all_gather_into_tensor(self.out, self.inp)
        elif self.op == "reduce_scatter":
            dist.reduce_scatter_tensor(self.out, self.inp)
        elif self.op == "broadcast":
            dist.broadcast(self.inp, src=0)
        else:
            dist.all_to_all_single(self.out, self.inp)

    def expected_and_fill(self) -> torch.Tensor:
        n, r, c = self.world, self.rank, self.count
        base = pattern(c, self.device, self.dtype)
        chunk = c // n
        tri = n * (n + 1) // 2
        if self.op == "all_reduce":
            self.inp.copy_(base * (r + 1))
            return base * tri
        if self.op == "all_gather":
            self.inp.copy_(base[:chunk] * (r + 1))
            return torch.cat([base[:chunk] * (j + 1) for j in range(n)])
        if self.op == "reduce_scatter":
            self.inp.copy_(base * (r + 1))
            return base[r * chunk:(r + 1) * chunk] * tri
        if self.op == "broadcast":
            self.inp.copy_(base if r == 0 else torch.zeros_like(base))
            return base
        # all_to_all: chunk j of rank r holds (r n + j + 1) x pattern; rank r receives chunk r of each j
        self.inp.copy_(torch.cat([base[:chunk] * (r * n + j + 1) for j in range(n)]))
        return torch.cat([base[:chunk] * (j * n + r + 1) for j in range(n)])

    def check(self) -> int:
        """Wrong elements on this rank after one correctly-filled run."""
        expected = self.expected_and_fill()
        self.run()
        return count_wrong(self.out, expected)


def count_wrong(got: torch.Tensor, expected: torch.Tensor) -> int:
    return int((got != expected).sum().item())

