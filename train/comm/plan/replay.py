"""Replay a step's measured bucket timeline on another link and world size.

Buckets are reduced in the order they became ready, on one channel: bucket i starts when it
is ready on every rank and bucket i-1 is done, and takes the ring all-reduce time of its sent bytes on the
target link (costmodel.Link). Compute is what was measured; only communication is replaced.
"""
from __future__ import annotations

import math
import statistics

from train.comm.plan.costmodel import Link

STANDARD_RATES_GBIT = (1, 10, 25, 100, 200, 400, 800)


def replay_step(tl: dict, world: int, link: Link) -> dict:
    """Predicted comm, exposed comm and step time (ms) of one measured timeline."""
    done = -math.inf
    first = None
    for b in sorted(tl["buckets"], key=lambda b: b["ready_ms"]):
        # A collective starts once every rank has the bucket ready (ready_max_ms, when the run
        # recorded it) and the previous bucket is done.
        start = max(b.get("ready_max_ms", b["ready_ms"]), done)
        first = start if first is None else first
        done = start + link.collective_time("all_reduce", b["sent_bytes"], world) * 1e3
    if first is None:
        done = first = tl["compute_end_ms"]
    exposed = max(0.0, done - tl["compute_end_ms"])
    compute_only = tl["step_ms"] - tl["exposed_ms"]  # the measured step without its own exposed comm
    step = compute_only + exposed
    return {"comm_ms": done - first, "exposed_ms": exposed, "step_ms": step,
            "exposed_pct": 100 * exposed / step if step else 0.0,
            "scaling_efficiency": compute_only / step if step else 1.0}


def predict(timelines: list[dict], world: int, link: Link) -> dict:
    """Medians over the sampled steps."""
    steps = [replay_step(tl, world, link) for tl in timelines]
    return {k: statistics.median(s[k] for s in steps) for k in steps[0]}


def required_rate(timelines: list[dict], world: int, link: Link, target: float,
                  lo: float = 1e6, hi: float = 1e15) -> float | None:
    """Smallest rate (bit/s) whose exposed comm is <= target x step; None if even `hi` misses it
    (then latency or the host's own ceiling, not the link, is the limit). Exposed comm never grows with the rate, so a
    bisection on the log of the rate finds the edge."""
    def meets(rate: float) -> bool:
        return predict(timelines, world, link.at_rate(rate))["exposed_pct"] <= 100 * target
    if not meets(hi):
        return None
    if meets(lo):
        return lo
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if meets(mid) else (mid, hi)
        if hi / lo < 1.001:
            break
    return hi


def synthetic_timeline(grad_bytes: float, bucket_bytes: float, forward_ms: float, backward_ms: float) -> dict:
    """A step for a model we cannot run: buckets of `bucket_bytes` become ready uniformly through
    backward (reverse layer order, equal cost per byte), and nothing else waits on the network."""
    n = max(1, math.ceil(grad_bytes / bucket_bytes))
    buckets, left = [], grad_bytes
    for i in range(n):
        size = min(bucket_bytes, left)
        left -= size
        buckets.append({"index": i, "grad_bytes": size, "sent_bytes": size,
                        "ready_ms": backward_ms * (grad_bytes - left) / grad_bytes})
    return {"step": 0, "step_ms": forward_ms + backward_ms, "forward_ms": forward_ms, "backward_ms": backward_ms,
            "compute_end_ms": backward_ms, "exposed_ms": 0.0, "buckets": buckets}
