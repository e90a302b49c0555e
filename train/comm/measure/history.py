"""A run's per-step figures in constant memory, however long the run.

The instrumentation appends each step's figure dict (TensorBoard tag -> number). Two things
are kept, both of fixed size:

- bins over the step axis for the report: at most `bins` consecutive ranges of steps, each
  holding per tag count, min, max, sum and a small sample (for the bin's median and quartiles). When the
  bins are full, neighbours merge pairwise and every bin covers twice as many steps, so a run
  of 10 steps has 10 bins of one step and a run of 10^6 steps has between bins/2 and bins.
- a uniform reservoir of the steady steps' dicts (after `warmup`) for the run's medians in
  summary.json: exact up to `reservoir` steady steps, an unbiased sample beyond.

Neither grows with the step count, so memory, summary.json and the report's render time are
flat (scripts/bench_report.py measures it).
"""
from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field


def thin(values: list[float], k: int) -> list[float]:
    """k values spread evenly over the sorted values: keeps the quantiles' shape when merging."""
    if len(values) <= k:
        return sorted(values)
    ordered = sorted(values)
    return [ordered[round(i * (len(ordered) - 1) / (k - 1))] for i in range(k)]


@dataclass
class Stat:
    """One tag within one bin."""
    n: int = 0
    lo: float = math.inf
    hi: float = -math.inf
    total: float = 0.0
    sample: list = field(default_factory=list)

    def merged(self, other: "Stat", k: int) -> "Stat":
        return Stat(self.n + other.n, min(self.lo, other.lo), max(self.hi, other.hi),
                    self.total + other.total, thin(self.sample + other.sample, k))


@dataclass
class Bin:
    start: int  # first step index (counted from the first append) of the range
    steps: int = 0
    stats: dict = field(default_factory=dict)  # tag -> Stat


def numbers(fig: dict) -> dict:
    """The numeric figures of a step (None and non-numbers are skipped, bools are not figures)."""
    return {k: float(v) for k, v in fig.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class StepHistory:
    def __init__(self, bins: int = 64, sample: int = 16, reservoir: int = 1024, warmup: int = 2,
                 first_step: int = 0, seed: int = 0):
        if bins < 2 or bins % 2:
            raise ValueError(f"bins={bins} must be an even number >= 2")
        self.max_bins, self.k, self.capacity, self.warmup = bins, sample, reservoir, warmup
        self.first_step = first_step  # the run's step number of the first append (a resumed run)
        self.width = 1  # steps per bin, a power of two
        self.bins: list[Bin] = []
        self.count = 0
        self.warm: list[dict] = []  # the warmup steps: the medians' fallback for a run shorter than them
        self.reservoir: list[dict] = []
        self.steady_seen = 0
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return self.count

    def append(self, fig: dict) -> None:
        values = numbers(fig)
        if self.count // self.width == len(self.bins) and len(self.bins) == self.max_bins:
            self._halve()
        if self.count // self.width == len(self.bins):
            self.bins.append(Bin(start=self.count))
        b, k = self.bins[-1], self.k
        b.steps += 1
        # Reservoir within the bin, one draw per step for all its figures (this runs every step):
        # each step of the bin is equally likely to be in the sample.
        slot = self.rng.randrange(b.steps) if b.steps > k else -1
        stats = b.stats
        for tag, v in values.items():
            st = stats.get(tag)
            if st is None:
                st = stats[tag] = Stat()
            st.n += 1
            st.total += v
            if v < st.lo:
                st.lo = v
            if v > st.hi:
                st.hi = v
            if len(st.sample) < k:
                st.sample.append(v)
            elif 0 <= slot < k:
                st.sample[slot] = v
        if self.count < self.warmup:
            self.warm.append(values)
        else:
            self.steady_seen += 1
            if len(self.reservoir) < self.capacity:
                self.reservoir.append(values)
            else:  # Algorithm R: each steady step kept with probability capacity / seen
                j = self.rng.randrange(self.steady_seen)
                if j < self.capacity:
                    self.reservoir[j] = values
        self.count += 1

    def _halve(self) -> None:
        merged = []
        for a, b in zip(self.bins[::2], self.bins[1::2]):
            stats = dict(a.stats)
            for tag, s in b.stats.items():
                stats[tag] = stats[tag].merged(s, self.k) if tag in stats else s
            merged.append(Bin(a.start, a.steps + b.steps, stats))
        self.bins, self.width = merged, self.width * 2

    # -- what the summary and the report read ------------------------------------------------
    def steady(self) -> list[dict]:
        """Step dicts to take run medians over: the steady reservoir, else the warmup steps."""
        return self.reservoir or self.warm

    def median(self, tag: str) -> float | None:
        values = [f[tag] for f in self.steady() if tag in f]
        return statistics.median(values) if values else None

    def has(self, tag: str) -> bool:
        return any(tag in b.stats for b in self.bins)

    def tags(self) -> set:
        return {t for b in self.bins for t in b.stats}

    def series(self, tag: str) -> dict:
        """Per bin holding `tag`: step (start, as the run numbers it), width, mean, median, min, max,
        q1 and q3 (the quartiles of the bin's sample: the middle half of its steps)."""
        out = {k: [] for k in ("step", "width", "mean", "median", "min", "max", "q1", "q3")}
        for b in self.bins:
            s = b.stats.get(tag)
            if s is None or not s.n:
                continue
            out["step"].append(self.first_step + b.start)
            out["width"].append(b.steps)
            out["mean"].append(s.total / s.n)
            out["median"].append(statistics.median(s.sample))
            out["min"].append(s.lo)
            out["max"].append(s.hi)
            q = statistics.quantiles(s.sample, n=4, method="inclusive") if len(s.sample) > 1 else s.sample * 3
            out["q1"].append(q[0])
            out["q3"].append(q[2])
        return out

