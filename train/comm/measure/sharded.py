"""A sharded step's figures from its recorded ops: per-op calls, sent bytes, time and busbw, comm
time and exposed comm in forward and backward.

comm time = the time some collective was in flight (the union of the ops' intervals: FSDP's ops
spread over the whole step, so DDP's first-launch-to-last-completion span would count compute).
exposed comm = in-flight time not covered by compute. Forward compute is measured per leaf unit
(forward hooks run inside FSDP's, after its all-gather has been waited for); backward has no
such windows, so all its in-flight time counts. On gloo FSDP issues every collective
synchronously on the training thread, so nothing overlaps and both figures are exact.
"""
from __future__ import annotations

from train.comm.busbw import busbw_factor, gbit_per_s

OPS = ("all_reduce", "all_gather", "reduce_scatter")


def union(intervals) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for a, b in sorted(i for i in intervals if i[1] > i[0]):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def length(intervals) -> float:
    return sum(b - a for a, b in intervals)


def uncovered(intervals, covers) -> float:
    """Time in `intervals` that no interval of `covers` overlaps (both unions)."""
    total = 0.0
    covers = union(covers)
    for a, b in union(intervals):
        hidden = sum(max(0.0, min(b, d) - max(a, c)) for c, d in covers)
        total += (b - a) - hidden
    return total


def op_figures(ops: list[dict]) -> dict:
    """Per op: calls, sent bytes, time (ms, summed: an op's calls queue on one stream) and busbw."""
    out = {}
    for name in OPS:
        mine = [o for o in ops if o["op"] == name]
        if not mine:
            continue
        sent = sum(o["sent_bytes"] for o in mine)
        time_ms = sum(o["done_ms"] - o["launch_ms"] for o in mine)
        algbw = gbit_per_s(sent, time_ms / 1e3)
        size = max(1, mine[0]["group_size"])
        out[name] = {"calls": len(mine), "sent_bytes": sent, "time_ms": time_ms,
                     "busbw_gbit_s": algbw * busbw_factor(name, size), "group": mine[0]["group"], "group_size": size}
    return out


def sharded_step(tl: dict) -> dict:
    """comm_ms, exposed (forward, backward) and per-op figures of one recorded step."""
    ops = tl["ops"]
    span = lambda phase: [(o["launch_ms"], o["done_ms"]) for o in ops if o["phase"] == phase]  # noqa: E731
    compute = [(u["forward_start_ms"], u["forward_end_ms"]) for u in tl["units"]]
    exposed_forward = uncovered(span("forward"), compute)
    exposed_backward = length(union(span("backward")))
    return {"comm_ms": length(union((o["launch_ms"], o["done_ms"]) for o in ops)),
            "exposed_forward_ms": exposed_forward, "exposed_backward_ms": exposed_backward,
            "exposed_ms": exposed_forward + exposed_backward, "ops": op_figures(ops)}
