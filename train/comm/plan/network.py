"""A cluster's network in two tiers: GPUs of a node on NVLink, nodes on one NIC per GPU.

A collective over a group that spans several nodes runs hierarchically, as NCCL does on
rail-optimised fabrics: an intra-node phase (a ring over the node's members, on NVLink) and an
inter-node phase (each member carries 1/per_node of the array to its peers on other nodes, all
members' NICs at once). all_reduce = reduce-scatter inside, all-reduce across, all-gather inside;
all_gather and reduce_scatter likewise. The phases' times add up: NCCL pipelines them in chunks,
so this bounds it from above by the intra-node time. Latency grows with the nodes a group spans,
not its GPUs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from train.comm.busbw import busbw_factor
from train.comm.plan.costmodel import Cost, Group, Link, hops

ALGORITHMS = ("auto", "ring", "tree")


@dataclass(frozen=True)
class GPU:
    name: str
    tflops: float        # peak dense bf16, TFLOP/s (the vendor's figure without sparsity)
    memory_bytes: float  # HBM
    nvlink_bit_s: float  # intra-node bandwidth per GPU, one direction


# Vendor datasheets (SXM parts). NVLink: A100 600 GB/s, H100/H200 900 GB/s, B200 1.8 TB/s, counted
# both directions; a GPU sends half of it.
GPUS = {
    "a100-40gb": GPU("a100-40gb", 312.0, 40 * 2**30, 300e9 * 8),
    "a100-80gb": GPU("a100-80gb", 312.0, 80 * 2**30, 300e9 * 8),
    "h100": GPU("h100", 989.0, 80 * 2**30, 450e9 * 8),
    "h200": GPU("h200", 989.0, 141e9, 450e9 * 8),
    "b200": GPU("b200", 2250.0, 180e9, 900e9 * 8),
}


@dataclass
class Topology:
    """gpus_per_node GPUs per node on `intra` (NVLink), each with its own NIC `inter` into a fabric
    whose oversubscription divides what every NIC gets (all inter-node traffic is taken to cross
    the oversubscribed tier: a pessimistic bound for groups that stay under one leaf)."""
    gpus_per_node: int
    intra: Link
    inter: Link
    oversubscription: float = 1.0
    algorithm: str = "auto"  # all_reduce across nodes: NCCL's ring, its tree, or the faster of both

    def group(self, size: int, stride: int = 1) -> Group:
        """The group of `size` ranks r, r+stride, r+2*stride... with ranks numbered node by node.
        Contiguous groups (stride 1) fill a node first; strided ones (HSDP's replicate groups)
        keep gpus_per_node / stride members on each node they touch."""
        g = self.gpus_per_node
        if stride == 1:
            per_node = math.gcd(size, g) if size < g else g
        else:
            per_node = g // stride if stride < g and g % stride == 0 else 1
        per_node = max(1, min(per_node, size))
        if size % per_node:
            per_node = 1
        return Group(size, per_node)

    def op_cost(self, op: str, num_bytes: float, group: Group) -> Cost:
        g, m = group.per_node, group.nodes
        intra_bytes = busbw_factor(op, g) * num_bytes if g > 1 else 0.0
        t_intra = self.intra.collective_time(op, num_bytes, g) if g > 1 else 0.0
        if m <= 1:
            return Cost(t_intra, intra_bytes, 0.0, "nvlink", t_intra)
        inter_bytes = busbw_factor(op, m) * num_bytes / g
        bandwidth_s = inter_bytes * 8 * self.oversubscription / self.inter.effective_bit_s(op)
        ring = hops(op, m) * self.inter.hop_latency_s
        # NCCL's double binary tree: 2 log2(nodes) steps for all_reduce, the same bytes per NIC
        # (its two trees each carry half); gathers and scatters have only the ring.
        tree = 2 * math.ceil(math.log2(m)) * self.inter.hop_latency_s if op == "all_reduce" else math.inf
        use_tree = self.algorithm == "tree" or (self.algorithm == "auto" and tree < ring)
        algo, latency = ("tree", tree) if use_tree and tree < math.inf else ("ring", ring)
        return Cost(t_intra + latency + bandwidth_s, intra_bytes, inter_bytes, algo, t_intra)

    def at_rate(self, rate_bit_s: float) -> "Topology":
        """The same cluster with another NIC rate per GPU."""
        return replace(self, inter=self.inter.at_rate(rate_bit_s))

    @property
    def rate_bit_s(self) -> float:
        return self.inter.rate_bit_s
