"""Replay a step's measured bucket timeline on another link and world size.

Buckets are reduced in index order on one channel (DDP launches bucket i only after bucket
i-1, whatever finished first): bucket i starts when it is ready and bucket i-1 is done,
start_i = max(ready_i, done_{i-1}), and takes the ring all-reduce time of its sent bytes on the
target link (costmodel.Link). Compute is what was measured; only communication is replaced.
Times are ms from the start of backward, as the recorder writes them.
"""
from __future__ import annotations

import math
import statistics

from train.comm.costmodel import Link
from train.errors import UsageError

STANDARD_RATES_GBIT = (1, 10, 25, 100, 200, 400, 800)
TIMELINE_KEYS = ("step_ms", "exposed_ms", "compute_end_ms", "buckets")
BUCKET_KEYS = ("ready_ms",)


def check_timelines(timelines: list, where: str) -> None:
    """Name the first missing key instead of failing with a KeyError deep inside the replay."""
    for i, tl in enumerate(timelines):
        missing = [k for k in TIMELINE_KEYS if not isinstance(tl, dict) or k not in tl]
        if missing:
            raise UsageError(f"{where}: comm.timelines[{i}] lacks {', '.join(missing)}")
        for j, b in enumerate(tl["buckets"]):
            if "ready_ms" not in b or ("sent_bytes" not in b and "grad_bytes" not in b):
                raise UsageError(f"{where}: comm.timelines[{i}].buckets[{j}] needs ready_ms and sent_bytes")


def bucket_order(buckets: list[dict]) -> list[dict]:
    # index is DDP's launch order; list order when a hand-made timeline leaves it out
    return sorted(buckets, key=lambda b: b.get("index", 0)) if all("index" in b for b in buckets) else list(buckets)


def replay_step(tl: dict, world: int, link: Link) -> dict:
    """Predicted comm, exposed comm and step time (ms) of one measured timeline."""
    done = -math.inf
    first = None
    for b in bucket_order(tl["buckets"]):
        start = max(b["ready_ms"], done)
        first = start if first is None else first
        sent = b.get("sent_bytes", b.get("grad_bytes"))
        done = start + link.collective_time("all_reduce", sent, world) * 1e3
    if first is None:  # nothing to reduce (every parameter frozen)
        done = first = tl["compute_end_ms"]
    exposed = max(0.0, done - tl["compute_end_ms"])
    compute_only = tl["step_ms"] - tl["exposed_ms"]  # the measured step without its own exposed comm
    step = compute_only + exposed
    return {"comm_ms": done - first, "exposed_ms": exposed, "step_ms": step,
            "exposed_pct": 100 * exposed / step if step else 0.0,
            "scaling_efficiency": compute_only / step if step else 1.0}


def predict(timelines: list[dict], world: int, link: Link) -> dict:
    """Medians over the sampled steps, each figure on its own (so they need not add up exactly)."""
    steps = [replay_step(tl, world, link) for tl in timelines]
    return {k: statistics.median(s[k] for s in steps) for k in steps[0]}


def required_rate(timelines: list[dict], world: int, link: Link, target: float,
                  lo: float = 1e3, hi: float = 1e15) -> float | None:
    """Smallest rate (bit/s) whose exposed comm is <= target x step; None if even `hi` misses it
    (then latency or the host's own ceiling, not the link, is the limit). Exposed comm never
    grows with the rate (every bucket finishes no later on a faster link), so a bisection on
    the log of the rate finds the edge; the answer is the upper end, which meets the target."""
    def meets(rate: float) -> bool:
        return predict(timelines, world, link.at_rate(rate))["exposed_pct"] <= 100 * target
    if not meets(hi):
        return None
    if meets(lo):
        return lo
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if meets(mid) else (mid, hi)
        if hi / lo < 1.001:
            break
    return hi


def synthetic_timeline(grad_bytes: float, bucket_bytes: float, forward_ms: float, backward_ms: float) -> dict:
    """A step for a model we cannot run: buckets of `bucket_bytes` become ready uniformly through
    backward (reverse layer order, equal compute per gradient byte), and nothing else waits on
    the network; the optimizer step is left out (it is small next to forward and backward)."""
    n = max(1, math.ceil(grad_bytes / bucket_bytes))
    buckets, left = [], grad_bytes
    for i in range(n):
        size = min(bucket_bytes, left)
        left -= size
        buckets.append({"index": i, "grad_bytes": size, "sent_bytes": size,
                        "ready_ms": backward_ms * (grad_bytes - left) / grad_bytes if grad_bytes else backward_ms})
    return {"step": 0, "step_ms": forward_ms + backward_ms, "forward_ms": forward_ms, "backward_ms": backward_ms,
            "compute_end_ms": backward_ms, "exposed_ms": 0.0, "buckets": buckets}
