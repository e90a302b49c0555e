"""The wire expectation: which ring sends leave a node, per group kind and placement."""
import pytest

from train.comm.measure.expect import LinkShare, groups, wire_factor


def test_groups_follow_the_mesh():
    assert groups("shard", 8, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert groups("replicate", 8, 4) == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert groups("world", 4, 4) == [[0, 1, 2, 3]]


@pytest.mark.parametrize("rank, world, local, shard, loopback, edges", [
    (0, 4, 2, 4, False, {"world": 1, "shard": 1, "replicate": 0}),   # fsdp ring over 2 nodes: 1 edge leaves each
    (2, 4, 2, 2, False, {"world": 1, "shard": 0, "replicate": 2}),   # hsdp: shards stay in the node
    (0, 8, 4, 2, False, {"world": 1, "shard": 0, "replicate": 2}),   # rings 0-2-4-6, 1-3-5-7: one edge each leaves
    (1, 2, 2, 2, True, {"world": 2, "shard": 2, "replicate": 0}),    # loopback counts every local rank's sends
])
def test_edges_leaving_a_node(rank, world, local, shard, loopback, edges):
    assert LinkShare(rank, world, local, shard, loopback, "gloo")._edges == edges


def test_gloo_reduce_scatter_costs_an_all_reduce_on_the_wire():
    assert wire_factor("reduce_scatter", 4, "gloo") == wire_factor("all_reduce", 4, "gloo") == 1.5
    assert wire_factor("reduce_scatter", 4, "nccl") == 0.75
    share = LinkShare(0, 4, 2, 4, False, "gloo")
    assert share.bytes("all_gather", "shard", 4, 1000) == 750
