"""Sharded steps whose collectives block the training thread (FSDP2 on gloo, on CPU), replayed op
by op: the measured step less its own ops, plus each op at the target network's cost. Nothing
overlaps there, so the prefetching replay of replay.replay_sharded (a GPU's streams) does not apply.

Besides the network's cost a call may pay what the run showed beyond it: a per-call overhead from
the base run (`call_overhead_ms`) and a floor, its duration on a link too fast to hold it
(`call_floor_ms`): the hosts' own time per call, which no faster link removes.
"""
from __future__ import annotations

import statistics

from train.comm.plan.replay import _add, _groups, _result


def _serial_costs(tl: dict, net, groups: dict, scale: dict):
    """(op, Cost) per recorded op in launch order, as the target network would serve them one by
    one. A network with a token-bucket shaper (`net.burst()`) refills it in the measured compute
    gaps between ops (the step's tail and start before the first) and spends it on each op that
    crosses the NIC."""
    ops = sorted(tl["ops"], key=lambda o: o["launch_ms"])
    bucket = net.burst() if hasattr(net, "burst") else 0.0
    fill = net.rate_bit_s / 8 / 1e3 if bucket else 0.0  # bytes per ms
    credit, prev = 0.0, (ops[0]["launch_ms"] - (tl["step_ms"] - ops[-1]["done_ms"])) if ops else 0.0
    for op in ops:
        sent, group = op["sent_bytes"] * scale.get(op["group"], 1.0), groups[op["group"]]
        credit = min(bucket, credit + max(0.0, op["launch_ms"] - prev) * fill)
        cost = net.op_cost(op["op"], sent, group, credit) if bucket else net.op_cost(op["op"], sent, group)
        if bucket:
            used = net.nic_bytes(op["op"], sent, group)
            credit = max(0.0, credit - used) if used else min(bucket, credit + cost.time_s * 1e3 * fill)
        prev = op["done_ms"]
        yield op, cost


def _call_keys(ops):
    """A recorded call's identity across steps and runs of one configuration: op, phase, unit,
    group and its occurrence among those (launch order)."""
    seen: dict = {}
    for op in ops:
        key = (op["op"], op["phase"], op["unit"], op["group"])
        seen[key] = seen.get(key, -1) + 1
        yield (*key, seen[key])


def replay_serial(tl: dict, net, groups: dict, scale: dict | None = None, overhead: dict | None = None,
                  floor: dict | None = None) -> dict:
    """A sharded step whose collectives block the training thread (FSDP on gloo): the measured
    step less its own collectives (they never overlap, so their union is their sum) plus each
    recorded op at the target network's cost, plus overhead[(op, group)] ms per call
    (`call_overhead_ms`), and never less than floor[call] (`call_floor_ms`: what the call took on
    a link too fast to hold it). Exposed comm is all of comm time."""
    tiers, ops_ms, phase_ms = [0.0, 0.0, 0.0, 0.0], {}, {"forward": 0.0, "backward": 0.0}
    costs = list(_serial_costs(tl, net, groups, scale or {}))
    for (op, cost), key in zip(costs, _call_keys(o for o, _ in costs)):
        ms = cost.time_s * 1e3 + (overhead or {}).get((op["op"], op["group"]), 0.0)
        ms = max(ms, (floor or {}).get(key, 0.0))
        _add(tiers, cost)
        ops_ms[f"{op['op']}_ms"] = ops_ms.get(f"{op['op']}_ms", 0.0) + ms
        phase_ms[op["phase"]] = phase_ms.get(op["phase"], 0.0) + ms
    comm = sum(ops_ms.values())
    return _result(tl, comm, comm, *tiers, {"exposed_forward_ms": phase_ms["forward"],
                                            "exposed_backward_ms": phase_ms["backward"],
                                            "units": len(tl["units"]), **ops_ms})


def call_floor_ms(timelines: list[dict]) -> dict:
    """Per recorded call (`_call_keys`): its median duration in a run on a link too fast to hold
    it: what the hosts take per call, which no faster link removes."""
    got: dict = {}
    for tl in timelines:
        ops = sorted(tl["ops"], key=lambda o: o["launch_ms"])
        for op, key in zip(ops, _call_keys(ops)):
            got.setdefault(key, []).append(op["done_ms"] - op["launch_ms"])
    return {k: statistics.median(v) for k, v in got.items()}


def call_overhead_ms(timelines: list[dict], world: int, net, shard_size: int | None = None) -> dict:
    """Per (op, group): the median time a recorded blocking call took beyond `net`'s cost for it
    (on the network it ran on). A sweep times calls back to back; in training each call wakes
    gloo's threads in every rank, which on busy shared cores costs scheduler time slices."""
    extra: dict = {}
    for tl in timelines:
        groups, scale = _groups(tl, world, net, shard_size)
        for op, cost in _serial_costs(tl, net, groups, scale):
            extra.setdefault((op["op"], op["group"]), []).append(op["done_ms"] - op["launch_ms"] - cost.time_s * 1e3)
    return {k: statistics.median(v) for k, v in extra.items()}


def synchronous(summary: dict) -> bool:
    """Whether a run's sharded collectives blocked its training thread: FSDP2 on gloo (CPU)."""
    return summary.get("backend") == "gloo" and summary.get("parallel", {}).get("strategy") in ("fsdp", "hsdp")


