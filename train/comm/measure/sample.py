"""A bounded, evenly spread sample of per-step records (the step timelines the planner replays).

Building a timeline (a dict per bucket or op) every step would cost time on every step and
memory growing with the run. Instead the caller asks `wants(step)` first: steps on the current
stride are kept, and when 2k are held every other one is dropped and the stride doubles, so the
kept steps always cover the whole run evenly with at most 2k records in memory.
"""
from __future__ import annotations


class EvenSample:
    def __init__(self, k: int, first_step: int):
        self.k, self.first = k, first_step
        self.stride = 1
        self.kept: list[dict] = []

    def wants(self, step: int) -> bool:
        return self.k > 0 and step >= self.first and (step - self.first) % self.stride == 0

    def add(self, record) -> None:
        self.kept.append(record)
        if len(self.kept) > 2 * self.k:
            self.kept = self.kept[::2]
            self.stride *= 2

    def last(self):
        return self.kept[-1] if self.kept else None

    def sample(self) -> list[dict]:
        """k records evenly spread over the kept ones (all of them when fewer)."""
        n = len(self.kept)
        if n <= self.k:
            return list(self.kept)
        return [self.kept[i * n // self.k] for i in range(self.k)]
