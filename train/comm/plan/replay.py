"""Replay a step's timeline (measured, or synthetic from schedule.py) on another network and world size.

DDP timelines: buckets are all-reduced in index order (DDP launches bucket i+1 only after bucket i),
on one channel: bucket i starts when every rank has it ready and bucket i-1 is done.

Sharded timelines (FSDP, HSDP): compute is a chain of shard units' windows, forward then backward.
A unit's compute waits for its all-gather; the all-gather of the next unit in the measured order
is issued when the current unit starts (FSDP's prefetch), a unit's reduce-scatter when its
backward ends, HSDP's all-reduce across replicas when that reduce-scatter is done. Collectives
share each GPU's links: one at a time, in the order they are issued.

Sharded runs on gloo (CPU) are replayed serially instead (serial.py): FSDP issues every gloo
collective on the training thread and waits for it, so nothing overlaps and the step is its compute
plus each op in turn, whatever the prefetch would allow on a GPU.

Either way compute is what was measured, less the waits the run itself had; only communication
is replaced, by the target network's cost (`net.op_cost`: a flat costmodel.Link or a
network.Topology).
"""
from __future__ import annotations

import heapq
import math
import statistics

STANDARD_RATES_GBIT = (1, 10, 25, 100, 200, 400, 800)


def _result(tl: dict, comm_ms: float, exposed: float, intra_ms: float, inter_ms: float,
            intra_b: float, inter_b: float, extra: dict | None = None) -> dict:
    compute_only = tl["step_ms"] - tl.get("exposed_ms", 0.0)  # the measured step less its own waits
    step = compute_only + exposed
    return {"comm_ms": comm_ms, "exposed_ms": exposed, "step_ms": step,
            "exposed_pct": 100 * exposed / step if step else 0.0,
            "scaling_efficiency": compute_only / step if step else 1.0,
            "comm_intra_ms": intra_ms, "comm_inter_ms": inter_ms,
            "intra_bytes": intra_b, "inter_bytes": inter_b, **(extra or {})}


def replay_buckets(tl: dict, world: int, net, overhead_ms: float = 0.0) -> dict:
    """overhead_ms: what each bucket's all-reduce costs in training beyond the network's alpha-beta
    time (`bucket_overhead_ms`, measured on a run: waking gloo's threads on busy cores)."""
    group = net.group(world)
    ops_ms = {"all_reduce_ms": 0.0}
    done, first = -math.inf, None
    tiers = [0.0, 0.0, 0.0, 0.0]
    for b in sorted(tl["buckets"], key=lambda b: (b.get("index", 0), b["ready_ms"])):
        # every rank must have the bucket ready (ready_max_ms, when the run recorded it)
        start = max(b.get("ready_max_ms", b["ready_ms"]), done)
        first = start if first is None else first
        cost = net.op_cost("all_reduce", b["sent_bytes"], group)
        done = start + cost.time_s * 1e3 + overhead_ms
        _add(tiers, cost)
        ops_ms["all_reduce_ms"] += cost.time_s * 1e3 + overhead_ms
    if first is None:
        done = first = tl["compute_end_ms"]
    # the rank that had its buckets ready last waits for nobody: its exposed comm is the network's alone
    last_ready = max((b.get("ready_max_ms", b["ready_ms"]) for b in tl["buckets"]), default=tl["compute_end_ms"])
    exposed_last = max(0.0, done - max(last_ready, tl["compute_end_ms"]))
    ops_ms.update(exposed_last_ready_ms=exposed_last,
                  step_last_ready_ms=tl["step_ms"] - tl.get("exposed_ms", 0.0) + exposed_last)
    return _result(tl, done - first, max(0.0, done - tl["compute_end_ms"]), *tiers, ops_ms)


def bucket_overhead_ms(timelines: list[dict], world: int, net) -> float:
    """The median time a measured bucket took beyond `net`'s cost for it, from when it could start
    (every rank had it ready and the bucket before it was done) to its completion. A sweep times
    collectives back to back, with gloo's threads awake; in training each bucket wakes them on
    cores that backward keeps busy, which costs a scheduler's time slice on a loaded machine."""
    extra = []
    for tl in timelines:
        group, done = net.group(world), -math.inf
        for b in sorted(tl.get("buckets", []), key=lambda b: (b.get("index", 0), b["ready_ms"])):
            start = max(b.get("ready_max_ms", b["ready_ms"]), done)
            cost = net.op_cost("all_reduce", b["sent_bytes"], group).time_s * 1e3
            extra.append(b["done_ms"] - start - cost)
            done = b["done_ms"]
    return max(0.0, statistics.median(extra)) if extra else 0.0


def _add(tiers: list, cost) -> None:
    tiers[0] += cost.intra_s * 1e3
    tiers[1] += (cost.time_s - cost.intra_s) * 1e3
    tiers[2] += cost.intra_bytes
    tiers[3] += cost.inter_bytes


class _Channel:
    """Collectives in issue order on one channel; an op issued later never starts earlier."""

    def __init__(self, net, groups: dict, scale: dict):
        self.net, self.groups, self.scale = net, groups, scale
        self.queue: list = []
        self.free, self.first, self.last, self.seq = 0.0, math.inf, -math.inf, 0
        self.done: dict = {}
        self.tiers = [0.0, 0.0, 0.0, 0.0]
        self.ops_ms: dict = {}  # "<op>_ms": the op's calls' summed time, as a run reports it
        self.followers: dict = {}  # op index -> ops issued when it completes

    def issue(self, i: int, at: float) -> None:
        heapq.heappush(self.queue, (at, self.seq, i))
        self.seq += 1

    def run(self, ops: list, until=None) -> None:
        """Schedule queued ops in issue order until op `until` is done (all, if None)."""
        while self.queue and (until is None or until not in self.done):
            at, _, i = heapq.heappop(self.queue)
            op = ops[i]
            cost = self.net.op_cost(op["op"], op["sent_bytes"] * self.scale.get(op["group"], 1.0),
                                    self.groups[op["group"]])
            start = max(at, self.free)
            self.free = self.done[i] = start + cost.time_s * 1e3
            self.first, self.last = min(self.first, start), max(self.last, self.free)
            _add(self.tiers, cost)
            self.ops_ms[f"{op['op']}_ms"] = self.ops_ms.get(f"{op['op']}_ms", 0.0) + cost.time_s * 1e3
            for j in self.followers.get(i, ()):
                self.issue(j, self.free)

    def wait(self, ops: list, needed: list) -> float:
        for i in needed:
            self.run(ops, until=i)
        return max((self.done[i] for i in needed), default=-math.inf)


def _backward_windows(tl: dict, units: list[dict]) -> list[dict]:
    """A run records forward windows of its leaf units only (FSDP's hooks give backward none).
    Backward compute is then laid out in reverse unit order, each unit r x its forward, r = the
    step's backward compute / forward compute (both measured, less exposed comm); the rest of
    forward's compute (head, loss: what no leaf window holds) goes first, x (1 + r)."""
    order = sorted(units, key=lambda u: u["forward_start_ms"])
    leaf = sum(u["forward_end_ms"] - u["forward_start_ms"] for u in order)
    fwd = max(leaf, tl.get("forward_ms") or 0.0)
    r = tl["backward_ms"] / fwd if fwd > 0 and tl.get("backward_ms") else 2.0
    t = order[-1]["forward_end_ms"] + (1 + r) * (fwd - leaf)
    out = {}
    for u in reversed(order):
        d = r * (u["forward_end_ms"] - u["forward_start_ms"])
        out[u["unit"]] = {**u, "backward_start_ms": t, "backward_end_ms": t + d}
        t += d
    return [out[u["unit"]] for u in units]


def _overlap(intervals: list, lo: float, hi: float) -> float:
    """Length of the union of intervals within [lo, hi]."""
    total, reach = 0.0, lo
    for a, b in sorted(intervals):
        a, b = max(a, reach), min(b, hi)
        if b > a:
            total, reach = total + b - a, b
    return total


def replay_sharded(tl: dict, net, groups: dict, scale: dict | None = None) -> dict:
    """groups: {"shard": Group, "replicate": Group} on the target; scale: sent-bytes factor per
    group (HSDP's all-reduce carries 1/shard_size of a unit: a new shard size rescales it)."""
    ops, units = tl["ops"], tl["units"]
    laid_out = bool(units) and any("backward_start_ms" not in u for u in units)
    if laid_out:
        units = _backward_windows(tl, units)
    win = {u["unit"]: u for u in units}
    # the root (the last unit) is no event of the chain when its window encloses all the others'
    last = max(units, key=lambda u: u["unit"])
    held = len(units) > 1 and all(last["forward_start_ms"] <= v["forward_start_ms"] and
                                  v["forward_end_ms"] <= last["forward_end_ms"] for v in units)
    inner = [u for u in units if not (held and u is last)]
    fwd = sorted(inner, key=lambda u: u["forward_start_ms"])
    bwd = sorted(inner, key=lambda u: u["backward_start_ms"])
    is_event = {u["unit"] for u in inner}
    by = {}  # (op, phase, unit) -> [op index]
    for i, op in enumerate(ops):
        by.setdefault((op["op"], op["phase"], op["unit"]), []).append(i)
    ch = _Channel(net, groups, scale or {})
    for i, op in enumerate(ops):  # HSDP: the all-reduce of a unit follows its reduce-scatter
        if op["op"] == "all_reduce" and by.get(("reduce_scatter", op["phase"], op["unit"])):
            ch.followers.setdefault(by[("reduce_scatter", op["phase"], op["unit"])][-1], []).append(i)
    led = {i for v in ch.followers.values() for i in v}

    def triggers(phase: str) -> dict:
        """all-gathers of a phase by the unit whose compute start issues them (None: phase start)."""
        gathers = sorted((i for i, o in enumerate(ops) if o["op"] == "all_gather" and o["phase"] == phase),
                         key=lambda i: (ops[i].get("launch_ms") or 0.0, ops[i]["unit"] in is_event))
        out: dict = {}
        for k, i in enumerate(gathers):
            prev = ops[gathers[k - 1]]["unit"] if k else None
            out.setdefault(prev if prev in is_event else None, []).append(i)
        return out

    clock, prev_meas, exposed = 0.0, 0.0, {"forward": 0.0, "backward": 0.0}
    for phase, order, s_key, e_key in (("forward", fwd, "forward_start_ms", "forward_end_ms"),
                                       ("backward", bwd, "backward_start_ms", "backward_end_ms")):
        trig = triggers(phase)
        for i in trig.get(None, []):
            ch.issue(i, clock)
        for k, u in enumerate(order):
            need = by.get(("all_gather", phase, u["unit"]), [])
            if k == 0:  # units that are no event (the root) must be gathered before the first
                need = need + [i for (o, p, n), v in by.items() if o == "all_gather" and p == phase
                               and n not in is_event for i in v]
            # the run's own waits for these gathers (launch to done) are taken out of the gap before
            # the unit and out of its window: compute only (a synthetic gather, done at launch, had
            # none; laid-out backward windows hold none)
            spans = [] if laid_out and phase == "backward" else \
                [(ops[i]["launch_ms"], ops[i]["done_ms"]) for i in need
                 if ops[i].get("launch_ms") is not None and ops[i].get("done_ms") is not None]
            gap = u[s_key] - prev_meas - _overlap(spans, prev_meas, u[s_key])
            duration = u[e_key] - u[s_key] - _overlap(spans, u[s_key], u[e_key])
            ready = clock + max(0.0, gap)
            for i in trig.get(u["unit"], []):  # reaching a unit issues the next unit's gather
                ch.issue(i, ready)
            start = max(ready, ch.wait(ops, need))
            exposed[phase] += start - ready
            clock = start + max(0.0, duration)
            prev_meas = u[e_key]
            if phase == "backward":
                for i in by.get(("reduce_scatter", "backward", u["unit"]), []) + \
                        [i for i in by.get(("all_reduce", "backward", u["unit"]), []) if i not in led]:
                    ch.issue(i, clock)
    compute_end = clock if laid_out else clock + max(0.0, tl["compute_end_ms"] - prev_meas)
    for i, op in enumerate(ops):  # the rest (the root's reductions) once backward is done
        if op["phase"] == "backward" and op["op"] != "all_gather" and op["unit"] not in is_event and i not in led:
            ch.issue(i, compute_end)
    ch.run(ops)
    tail = max(0.0, ch.last - compute_end)
    exposed["backward"] += tail
    comm = ch.last - ch.first if ch.done else 0.0
    return _result(tl, comm, exposed["forward"] + exposed["backward"], *ch.tiers,
                   {"exposed_forward_ms": exposed["forward"], "exposed_backward_ms": exposed["backward"],
                    "units": len(win), **ch.ops_ms})


def _groups(tl: dict, world: int, net, shard_size: int | None) -> tuple[dict, dict]:
    measured = {op["group"]: op["group_size"] for op in tl["ops"]}
    shard = (shard_size or measured.get("shard", world)) if tl.get("strategy") == "hsdp" else world
    groups = {"shard": net.group(shard), "replicate": net.group(world // shard, stride=shard)}
    return groups, {"replicate": measured.get("shard", shard) / shard}


def replay_step(tl: dict, world: int, net, shard_size: int | None = None, serial: bool = False,
                overhead_ms=0.0, floor_ms: dict | None = None) -> dict:
    """One timeline at `world` ranks on `net`. Sharded timelines keep their strategy: FSDP shards
    over the world, HSDP over `shard_size` (default: the measured one); `serial`: their collectives
    block compute (`synchronous(summary)`), as on gloo. overhead_ms: per DDP bucket (a number,
    `bucket_overhead_ms`) or per serial sharded call ({(op, group): ms}, `call_overhead_ms`)."""
    if "ops" not in tl:
        return replay_buckets(tl, world, net, overhead_ms or 0.0)
    groups, scale = _groups(tl, world, net, shard_size)
    if serial:
        from train.comm.plan.serial import replay_serial  # serial.py builds on this module's helpers
        return replay_serial(tl, net, groups, scale, overhead_ms or None, floor_ms)
    return replay_sharded(tl, net, groups, scale)


def predict(timelines: list[dict], world: int, net, shard_size: int | None = None, serial: bool = False,
            overhead_ms=0.0, floor_ms: dict | None = None) -> dict:
    """Medians over the sampled steps (a figure a step lacks, such as an op it did not run, counts 0)."""
    steps = [replay_step(tl, world, net, shard_size, serial, overhead_ms, floor_ms) for tl in timelines]
    return {k: statistics.median(s.get(k, 0.0) for s in steps) for k in {k for s in steps for k in s}}


def required_rate(timelines: list[dict], world: int, net, target: float, lo: float = 1e6, hi: float = 1e15,
                  shard_size: int | None = None, serial: bool = False) -> float | None:
    """Smallest rate (bit/s) whose exposed comm is <= target x step; None if even `hi` misses it
    (then latency, the host's ceiling or the intra-node link, not the NIC, is the limit).
    Exposed comm never grows with the rate, so a bisection on the log of the rate finds the edge."""
    def meets(rate: float) -> bool:
        return predict(timelines, world, net.at_rate(rate), shard_size, serial)["exposed_pct"] <= 100 * target
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
