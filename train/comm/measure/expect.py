"""What a step's collectives should put on this node's link: the wire expectation, per op.

A ring algorithm has every member of a group send busbw_factor x the op's bytes to its ring
successor. On loopback (every rank on one machine) all those sends are counted, so the node's
share is every local member. On a NIC only the sends whose successor sits on another node leave
the machine: with ranks placed node by node, a group spanning several nodes has one such edge
per node (a DDP or FSDP ring), while HSDP's replicate groups (ranks s, s+S, s+2S, ...) have one
per local rank. Backends differ from the ring formulas: on the emulated 2-node testbed gloo's
reduce_scatter put an all-reduce's bytes on the wire (docs/BENCHMARKS.md, FSDP and HSDP across
two emulated nodes), so its factor is the all-reduce's.
"""
from __future__ import annotations

from train.comm.busbw import busbw_factor

MEASURED_FACTOR_OP = {("gloo", "reduce_scatter"): "all_reduce"}


def wire_factor(op: str, group_size: int, backend: str) -> float:
    return busbw_factor(MEASURED_FACTOR_OP.get((backend, op), op), max(1, group_size))


def groups(kind: str, world: int, shard: int) -> list[list[int]]:
    """The rank lists of one group kind: world (DDP), shard (contiguous) or replicate (strided)."""
    replicate = world // shard
    if kind == "shard":
        return [list(range(r * shard, (r + 1) * shard)) for r in range(replicate)]
    if kind == "replicate":
        return [[r * shard + i for r in range(replicate)] for i in range(shard)]
    return [list(range(world))]


class LinkShare:
    """How many ring sends of each group kind this node's counted interface carries."""

    def __init__(self, rank: int, world: int, local_world: int, shard: int, loopback: bool, backend: str):
        self.node = lambda r: r // max(1, local_world)  # noqa: E731  (torchrun places ranks node by node)
        self.me, self.world, self.shard = self.node(rank), world, shard
        self.loopback, self.backend = loopback, backend
        self._edges = {kind: self._count(kind) for kind in ("world", "shard", "replicate")}

    def _count(self, kind: str) -> int:
        n = 0
        for members in groups(kind, self.world, self.shard if kind != "world" else self.world):
            for i, r in enumerate(members):
                successor = members[(i + 1) % len(members)]
                if self.node(r) == self.me and len(members) > 1 and (self.loopback or self.node(successor) != self.me):
                    n += 1
        return n

    def bytes(self, op: str, kind: str, group_size: int, sent_bytes: float) -> float:
        return self._edges[kind] * wire_factor(op, group_size, self.backend) * sent_bytes
