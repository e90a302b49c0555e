"""The alpha-beta cost model of a collective on one link, link rates, calibration from sweeps.

time(bytes) = alpha + beta x bytes for one collective at a fixed world size and link. To move
to another world size n and link rate R, a ring algorithm is assumed: each rank's bottleneck
link carries busbw_factor(op, n) x bytes (2(n-1)/n for all_reduce), and the ring takes 2(n-1)
latency hops for all_reduce ((n-1) for the gathers and scatters, 1 for broadcast). `Link` is
flat (every rank behind one link); network.Topology adds the node tier (NVLink inside a node).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from train.comm.busbw import COLLECTIVES, busbw_factor
from train.errors import UsageError

RATE_UNITS = {"": 1.0, "bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}
RATE_FORMS = "a number of bit/s, or a number with kbit, mbit, gbit or tbit (e.g. 100gbit, 200mbit, 25Gbit/s)"


def parse_rate(text: str, flag: str = "link rate", require_unit: bool = False) -> float:
    """'100gbit' | '200mbit' | '25Gbit/s' | '1e9' -> bits per second (decimal, as tc and vendors count).

    The planner passes require_unit: there a bare '100' is more likely Gbit/s meant than 100 bit/s."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kmgt]?bit)?(?:/s|ps)?\s*", str(text), re.I)
    if not m or (require_unit and not m.group(2)):
        forms = RATE_FORMS.split(", or ", 1)[1] if require_unit else RATE_FORMS
        raise UsageError(f"{flag} {text!r} is not understood (use {forms})")
    value = float(m.group(1)) * RATE_UNITS[(m.group(2) or "").lower()]
    if not 0 < value < math.inf:
        raise UsageError(f"{flag} {text!r} must be positive")
    return value


def hops(op: str, world: int) -> int:
    """Latency steps of the ring algorithm."""
    if world <= 1:
        return 0
    return {"all_reduce": 2 * (world - 1), "broadcast": 1, "reduce": 1}.get(op, world - 1)


@dataclass
class AlphaBeta:
    alpha_s: float     # fixed cost per collective, seconds
    beta_s_per_byte: float

    def predict(self, num_bytes: float) -> float:
        return self.alpha_s + self.beta_s_per_byte * num_bytes


def fit_alpha_beta(sizes: list[float], times: list[float]) -> AlphaBeta:
    """Least squares on relative error (each point weighted 1/t), so small sizes count as much as
    large ones; alpha is clamped at 0 (a negative latency is a fit artefact)."""
    if len(sizes) < 2 or len(sizes) != len(times):
        raise ValueError("need at least two (size, time) points")
    w = [1.0 / t for t in times]
    # minimise sum w^2 (a + b x - t)^2: the 2x2 normal equations
    sw = sum(wi * wi for wi in w)
    sx = sum(wi * wi * x for wi, x in zip(w, sizes))
    sxx = sum(wi * wi * x * x for wi, x in zip(w, sizes))
    st = sum(wi * wi * t for wi, t in zip(w, times))
    sxt = sum(wi * wi * x * t for wi, x, t in zip(w, sizes, times))
    det = sw * sxx - sx * sx
    if det == 0:
        raise ValueError("sizes must differ")
    a = (st * sxx - sx * sxt) / det
    b = (sw * sxt - sx * st) / det
    if a < 0:  # refit the slope through the origin
        a, b = 0.0, sxt / sxx
    return AlphaBeta(a, b)


@dataclass(frozen=True)
class Group:
    """The ranks one collective spans: how many, and how many of them share a node (those talk over
    the intra-node link; the rest of the way is the NIC). size is a multiple of per_node."""
    size: int
    per_node: int = 1

    @property
    def nodes(self) -> int:
        return self.size // self.per_node


@dataclass(frozen=True)
class Cost:
    """One collective: its time (intra_s of it in the intra-node phase), and the bytes each member
    sends on each tier (wire bytes)."""
    time_s: float
    intra_bytes: float = 0.0
    inter_bytes: float = 0.0
    algorithm: str = "ring"
    intra_s: float = 0.0


@dataclass
class Link:
    """A rank's bottleneck link: its nominal rate, the share of it a collective achieves, the
    latency of one ring hop, and the most the host's stack can push through any link (CPU
    copies, TCP): a collective moves bytes at the smaller of rate x efficiency and that ceiling.
    `ops` holds per-op overrides from calibration ({op: {"efficiency", "host_bit_s"}}): gloo's
    gathers and scatters do not reach its all_reduce's efficiency."""
    rate_bit_s: float
    efficiency: float = 1.0
    hop_latency_s: float = 5e-6  # a typical NCCL ring step on a modern fabric; calibrate for yours
    host_bit_s: float = math.inf
    ops: dict = field(default_factory=dict)

    def effective_bit_s(self, op: str = "all_reduce") -> float:
        own = self.ops.get(op, {})
        return min(self.rate_bit_s * own.get("efficiency", self.efficiency), own.get("host_bit_s", self.host_bit_s))

    def hop_latency(self, op: str = "all_reduce") -> float:
        """Per-hop latency of `op`: its own calibrated one (each op's fit has its own alpha)."""
        return self.ops.get(op, {}).get("hop_latency_s", self.hop_latency_s)

    def collective_time(self, op: str, num_bytes: float, world: int) -> float:
        if world <= 1:
            return 0.0
        wire_bytes = busbw_factor(op, world) * num_bytes
        return self.time_for(op, wire_bytes, wire_bytes, hops(op, world))

    def time_for(self, op: str, link_bytes: float, host_bytes: float, steps: int) -> float:
        """The slower of the link (its latency per step, its rate x efficiency) and the hosts (their
        own latency per step, when a host-bound sweep measured one, and their ceiling): on loaded
        cores a small collective costs the hosts milliseconds that no link rate removes."""
        own = self.ops.get(op, {})
        link = steps * self.hop_latency(op) + link_bytes * 8 / (self.rate_bit_s * own.get("efficiency", self.efficiency))
        host = steps * own.get("host_hop_latency_s", self.hop_latency(op)) + \
            host_bytes * 8 / own.get("host_bit_s", self.host_bit_s)
        return max(link, host)

    def op_cost(self, op: str, num_bytes: float, group: Group) -> Cost:
        """Flat: every member sits behind this one link (a ring over the whole group)."""
        n = group.size
        return Cost(self.collective_time(op, num_bytes, n), 0.0, busbw_factor(op, n) * num_bytes if n > 1 else 0.0)

    def group(self, size: int, stride: int = 1) -> Group:
        return Group(size, 1)

    def at_rate(self, rate_bit_s: float) -> "Link":
        return replace(self, rate_bit_s=rate_bit_s)


LINK_BOUND = (0.8, 1.05)  # busbw / link rate of a sweep that measured the link itself
HOST_MARGIN = 1.25  # a fit this far below another of the same op was not held by the host


def _read_sweep(path) -> dict:
    try:
        sweep = json.loads(Path(path).read_text())
        fits = sweep["fits"]
        world = int(sweep["world_size"])
        if not fits or not all(f["busbw_gbit_s_fit"] > 0 and f["alpha_us"] >= 0 for f in fits.values()):
            raise ValueError("no usable fit")
        return {"fits": fits, "world": world, "link": sweep.get("link_bit_s"), "backend": sweep.get("backend")}
    except OSError as e:
        raise UsageError(f"--calibration {str(path)!r} cannot be read ({e.strerror})") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UsageError(f"--calibration {str(path)!r} is not a sweep JSON with per-op fits "
                         f"(make one with: torchrun ... -m train.comm.sweep --link RATE --json PATH)") from None


def load_calibration(paths: list) -> dict:
    """From sweep JSONs (train.comm.sweep --link RATE --json PATH): what transfers to another link,
    per op, each from its own fit (`fits.<op>`).

    A sweep whose fit of an op reached 80-105% of the link it ran on measured the link: its
    busbw / rate is the efficiency that op achieves, and alpha / hops the per-hop latency
    (the slowest such link wins: it is the one the link surely limited). So did a fit far below
    its link when another sweep of the same op at the same world size moved over 1.25x more (the
    host can, so the link held it: gloo's all_gather reaches ~65-76% of a shaped link, its reduce_scatter ~50%). A fit
    far below its link with nothing faster beside it (or on an unshaped one) measured the host:
    its bus rate is the host's ceiling for that op. A fit above its link is noise and is ignored.
    The absolute bandwidth never transfers. all_reduce's figures are also given at the top level
    (the DDP path and the default)."""
    fits_by_op: dict = {}
    sources, backends = [], set()
    for path in paths:
        sweep = _read_sweep(path)
        backends.add(sweep["backend"])
        if len(backends) > 1:  # gloo's ops and NCCL's reach different shares of a link
            raise UsageError(f"--calibration mixes backends ({', '.join(sorted(map(str, backends)))}): "
                             f"calibrate with sweeps of one backend, the one the target runs")
        for op, fit in sweep["fits"].items():
            if op not in COLLECTIVES:
                continue
            bus, link = fit["busbw_gbit_s_fit"] * 1e9, sweep["link"]
            if link and bus > LINK_BOUND[1] * link:
                continue
            hop = fit["alpha_us"] * 1e-6 / max(1, hops(op, sweep["world"]))
            fits_by_op.setdefault(op, []).append((link, bus, hop, sweep["world"]))
        sources.append(str(path))
    ops = {}
    for op, fits in fits_by_op.items():
        top = {w: max(b for _, b, _, v in fits if v == w) for *_, w in fits}  # fewer ranks per core move more
        mine: dict = {}
        bound = []
        for link, bus, hop, world in fits:
            if link and (bus >= LINK_BOUND[0] * link or top[world] > HOST_MARGIN * bus):
                bound.append((link, min(1.0, bus / link), hop))
            else:
                if bus < mine.get("host_bit_s", math.inf):  # the slowest host fit, with its own latency
                    mine["host_bit_s"], mine["host_hop_latency_s"] = bus, hop
                mine.setdefault("hop_latency_s", hop)
        if bound:
            _, mine["efficiency"], mine["hop_latency_s"] = min(bound)
        if mine:
            ops[op] = mine
    out: dict = {"sources": sources, "backend": backends.pop() if backends else None, "ops": ops}
    out.update(ops.get("all_reduce", {}))
    out.setdefault("hop_latency_s", Link.hop_latency_s)
    return out


def format_rate(bit_s: float) -> str:
    for unit, scale in (("Tbit/s", 1e12), ("Gbit/s", 1e9), ("Mbit/s", 1e6)):
        if bit_s >= scale:
            return f"{bit_s / scale:.3g} {unit}"
    return f"{bit_s:.3g} bit/s" if not math.isinf(bit_s) else "inf"


@dataclass
class SharedNics:
    """Nodes of `ranks_per_node` ranks behind one NIC each, collectives as gloo runs them: one flat
    ring over a group's ranks in rank order (no hierarchy). A ring that spans nodes crosses each
    node's NIC on one edge per direction; every edge carries busbw_factor x the bytes, and the ring
    moves at its slowest edge: the NIC, shared by the groups that run side by side on the node
    (HSDP's replicate groups: one per local rank). A group inside one node runs on `intra` (on the
    testbed: loopback, its speed the host's). This is the emulated testbed's network (and any
    cluster with one NIC per node and flat rings); network.Topology is NCCL's hierarchical one."""
    ranks_per_node: int
    intra: Link
    inter: Link
    hosts_shared: int = 1  # nodes whose intra-node groups share one host's CPUs (testbed: all of them)
    # A token-bucket shaper on each NIC (tc tbf on the testbed, burst credits of cloud instances):
    # its bucket holds max(burst_bytes, burst_s of traffic); after an idle gap that much passes at once.
    burst_bytes: float = 0.0
    burst_s: float = 0.0

    def group(self, size: int, stride: int = 1) -> Group:
        per_node = min(size, self.ranks_per_node) if stride == 1 else max(1, self.ranks_per_node // stride)
        return Group(size, per_node if size % per_node == 0 else 1)

    def burst(self) -> float:
        return max(self.burst_bytes, self.inter.rate_bit_s / 8 * self.burst_s)

    def nic_bytes(self, op: str, num_bytes: float, group: Group) -> float:
        """Bytes the op puts on one direction of a node's NIC: one ring edge per group beside it."""
        if group.size <= 1 or group.nodes <= 1:
            return 0.0
        return busbw_factor(op, group.size) * num_bytes * max(1, self.ranks_per_node // group.per_node)

    def op_cost(self, op: str, num_bytes: float, group: Group, credit_bytes: float = 0.0) -> Cost:
        """credit_bytes: what the NIC's token bucket holds when the op starts (replay.replay_serial
        knows the idle gaps); the op's first bytes up to it pass at once."""
        n = group.size
        if n <= 1:
            return Cost(0.0)
        edge = busbw_factor(op, n) * num_bytes
        if group.nodes <= 1:
            # loopback moves bytes with the host's CPUs: groups of nodes on one host split them
            t = self.intra.collective_time(op, num_bytes, n) * self.hosts_shared
            return Cost(t, edge, 0.0, "ring", t)
        on_nic = self.nic_bytes(op, num_bytes, group)
        t = self.inter.time_for(op, max(0.0, on_nic - credit_bytes), on_nic, hops(op, n))
        return Cost(t, 0.0, edge, "ring", 0.0)

    def at_rate(self, rate_bit_s: float) -> "SharedNics":
        return replace(self, inter=self.inter.at_rate(rate_bit_s))

    @property
    def rate_bit_s(self) -> float:
        return self.inter.rate_bit_s
