"""The cluster planner's arithmetic: hierarchical collectives, strategy volumes against ZeRO's and
the FSDP paper's figures, memory, the replay of sharded schedules (by hand), shapes, the CLI."""
import json

import pytest

from train.comm.plan.cluster import Cluster, Job, memory, plan_strategy
from train.comm.plan.costmodel import Group, Link
from train.comm.plan.network import GPUS, Topology
from train.comm.plan.replay import replay_step
from train.comm.plan.schedule import sharded_timeline
from train.comm.plan.shapes import SHAPES

FREE = dict(efficiency=1.0, hop_latency_s=0.0)


def topo(gpn, nic=8e9, intra=80e9, latency=0.0, algorithm="ring"):
    return Topology(gpn, Link(intra, **FREE), Link(nic, 1.0, latency), 1.0, algorithm)


def job(layers=4, per_layer=1_000_000, tokens=1000.0, b=2):
    return Job("test", [per_layer] * layers, [2.0 * per_layer] * layers, False, 6.0 * per_layer * layers,
               None, tokens, b, b, bucket_bytes=per_layer * b)


def inter_bytes(strategy, world, gpn, shard=None, j=None):
    j = j or job()
    cl = Cluster(GPUS["h100"], world // gpn, topo(gpn), 989.0, 0.4)
    r = plan_strategy(j, cl, strategy, rates_bit_s=[100e9], target=0.05, shard=shard)
    return r["bytes_per_gpu_per_step"]


@pytest.mark.parametrize("world", [2, 16, 64])
def test_zero3_moves_one_and_a_half_times_ddp(world):
    # flat (one GPU per node): ZeRO-3 = 2 all-gathers + 1 reduce-scatter of M, DDP = 1 all-reduce of M
    m = job().params * 2
    ddp, fsdp = inter_bytes("ddp", world, 1), inter_bytes("fsdp", world, 1)
    assert ddp["inter_node"] == pytest.approx(2 * m * (world - 1) / world)
    assert fsdp["inter_node"] == pytest.approx(1.5 * ddp["inter_node"])
    assert inter_bytes("fsdp-noreshard", world, 1)["inter_node"] == pytest.approx(ddp["inter_node"])


@pytest.mark.parametrize("world, gpn", [(64, 8), (1024, 8), (32, 4)])
def test_fsdp_paper_cross_host_traffic(world, gpn):
    m = job().params * 2
    # full sharding with every GPU its own host: 3M(W-1)/W per GPU
    assert inter_bytes("fsdp", world, 1)["inter_node"] == pytest.approx(3 * m * (world - 1) / world)
    # hybrid, sharded inside a host of G GPUs: only the gradient all-reduce of M/G leaves it,
    # 2(M/G)(R-1)/R over R = W/G replicas; the paper's 2M(W-1)/(G W) to within (G-1)/(W-1)
    hsdp = inter_bytes("hsdp", world, gpn, shard=gpn)
    exact = 2 * (m / gpn) * (world / gpn - 1) / (world / gpn)
    assert hsdp["inter_node"] == pytest.approx(exact)
    assert hsdp["inter_node"] == pytest.approx(2 * m * (world - 1) / (gpn * world), rel=(gpn - 1) / (world - 1))
    assert hsdp["intra_node"] == pytest.approx(3 * m * (gpn - 1) / gpn)
    # full sharding over the same nodes: NVLink takes the node's share, each NIC 3(N-1)/N x M/G
    nodes = world // gpn
    assert inter_bytes("fsdp", world, gpn)["inter_node"] == pytest.approx(3 * m / gpn * (nodes - 1) / nodes)


def test_hierarchical_all_reduce_by_hand():
    t = topo(4, nic=8e9, intra=80e9)  # NIC 1 GB/s, NVLink 10 GB/s, no latency
    c = t.op_cost("all_reduce", 1e9, t.group(8))  # 2 nodes x 4
    assert c.intra_bytes == pytest.approx(2 * 3 / 4 * 1e9) and c.inter_bytes == pytest.approx(2 * 1 / 2 * 1e9 / 4)
    assert c.time_s == pytest.approx(1.5e9 / 10e9 + 0.25e9 / 1e9)
    inside = t.op_cost("all_gather", 1e9, t.group(4))
    assert inside.inter_bytes == 0 and inside.time_s == pytest.approx(0.75e9 / 10e9)


def test_latency_grows_with_nodes_not_gpus_and_tree_beats_ring_at_scale():
    wide, thin = topo(8, latency=5e-6), topo(1, latency=5e-6)
    at = lambda t, algo, n: Topology(t.gpus_per_node, t.intra, t.inter, 1.0, algo).op_cost(  # noqa: E731
        "all_reduce", 0, t.group(n)).time_s
    assert at(wide, "ring", 1024) == pytest.approx(2 * 127 * 5e-6)  # 128 nodes, not 1024 GPUs
    assert at(thin, "ring", 128) == pytest.approx(2 * 127 * 5e-6)
    assert at(wide, "tree", 1024) == pytest.approx(2 * 7 * 5e-6)
    assert at(wide, "auto", 1024) == at(wide, "tree", 1024)
    assert wide.op_cost("all_gather", 0, wide.group(1024)).algorithm == "ring"  # no tree for gathers


@pytest.mark.parametrize("size, stride, per_node", [(8, 1, 8), (32, 1, 8), (2, 1, 2), (32, 32, 1), (4, 2, 4),
                                                    (16, 4, 2)])
def test_group_placement(size, stride, per_node):
    assert topo(8).group(size, stride) == Group(size, per_node)


UNITS = [{"unit": 0, "forward_start_ms": 0.0, "forward_end_ms": 2.0, "backward_start_ms": 10.0, "backward_end_ms": 14.0},
         {"unit": 1, "forward_start_ms": 2.0, "forward_end_ms": 4.0, "backward_start_ms": 6.0, "backward_end_ms": 10.0},
         {"unit": 2, "forward_start_ms": 0.0, "forward_end_ms": 5.0, "backward_start_ms": 5.0, "backward_end_ms": 15.0}]


def op(kind, unit, phase, nbytes, launch, group="shard", size=2):
    return {"op": kind, "group": group, "group_size": size, "unit": unit, "phase": phase, "sent_bytes": nbytes,
            "launch_ms": launch, "done_ms": launch}


SHARDED = {"step": 3, "strategy": "fsdp", "step_ms": 16.0, "exposed_ms": 0.0, "compute_end_ms": 15.0, "units": UNITS,
           "ops": [op("all_gather", 2, "forward", 1e6, 0.0), op("all_gather", 0, "forward", 2e6, 0.0),
                   op("all_gather", 1, "forward", 2e6, 0.0), op("all_gather", 1, "backward", 2e6, 5.0),
                   op("all_gather", 0, "backward", 2e6, 6.0), op("reduce_scatter", 1, "backward", 2e6, 10.0),
                   op("reduce_scatter", 0, "backward", 2e6, 14.0), op("reduce_scatter", 2, "backward", 1e6, 15.0)]}


def test_sharded_replay_by_hand():
    # world 2, 1 GB/s, no latency: a gather or scatter of B bytes takes B/2 / 1e6 ms.
    got = replay_step(SHARDED, 2, Link(8e9, **FREE))
    # forward: root 0-0.5, unit 0 0.5-1.5 (unit 0 waits 1.5 ms), unit 1 1.5-2.5 (issued as unit 0 is
    # reached), unit 0 runs 1.5-3.5, unit 1 3.5-5.5. backward: unit 1's gather 5.5-6.5 under the 2 ms
    # of head; unit 1 7.5-11.5, unit 0's gather 7.5-8.5; its scatter 11.5-12.5; unit 0 11.5-15.5, its
    # scatter 15.5-16.5; compute ends at 16.5, the root's scatter 16.5-17.0 is exposed.
    assert got["exposed_forward_ms"] == pytest.approx(1.5)
    assert got["exposed_backward_ms"] == pytest.approx(0.5)
    assert got["step_ms"] == pytest.approx(18.0) and got["comm_ms"] == pytest.approx(17.0)
    fast = replay_step(SHARDED, 2, Link(8e15, **FREE))
    assert fast["exposed_ms"] == pytest.approx(0.0, abs=1e-3) and fast["step_ms"] == pytest.approx(16.0)


def test_sharded_replay_removes_the_runs_own_waits():
    measured = json.loads(json.dumps(SHARDED))
    measured["ops"][1]["done_ms"] = 1.0  # unit 0's gather finished 1 ms into its window: the run waited
    measured["units"][0]["forward_end_ms"] = 3.0
    measured["units"][1].update(forward_start_ms=3.0, forward_end_ms=5.0)
    measured["exposed_ms"] = 1.0
    fast = replay_step(measured, 2, Link(8e15, **FREE))
    assert fast["exposed_ms"] == pytest.approx(0.0, abs=1e-3) and fast["step_ms"] == pytest.approx(15.0)


def test_hsdp_replay_rescales_the_replicate_all_reduce():
    tl = sharded_timeline("hsdp", [1e6] * 3, [1.0, 1.0, 0.5], 2, 2, root_held=True)
    assert {o["op"] for o in tl["ops"]} == {"all_gather", "reduce_scatter", "all_reduce"}
    # shards inside a node: only the all-reduce across the 2 replicas (2 nodes) crosses, 3 units of
    # 1e6 / shard bytes each, ring factor 2 x 1/2
    same = replay_step(tl, 4, topo(2))
    assert same["inter_bytes"] == pytest.approx(3 * 1e6 / 2)
    wider = replay_step(tl, 8, topo(4), shard_size=4)  # 4-way shards: the all-reduce carries half as much
    assert wider["inter_bytes"] == pytest.approx(3 * 1e6 / 4)


def test_memory_per_strategy():
    j = job(layers=4, per_layer=1000)
    ddp = memory(j, "ddp", 1, False)
    assert ddp["per_gpu_bytes"] == 16 * 4000  # bf16: 2 + 2 + 12 B per parameter (ZeRO's K = 12)
    fsdp = memory(j, "fsdp", 8, False)
    assert fsdp["param_bytes"] + fsdp["grad_bytes"] + fsdp["optim_bytes"] == 16 * 4000 / 8
    assert fsdp["working_bytes"] == 2 * 1000 * 2 + 1000 * 2
    assert memory(j, "fsdp-noreshard", 8, False)["working_bytes"] == 4000 * 2 + 1000 * 2
    s = SHAPES["llama3-70b"]
    acts = s.activation_bytes_per_token(2)
    assert acts["checkpointed"] < acts["full"] / 5


@pytest.mark.parametrize("name, published", [("gpt2-small", 124e6), ("gpt2-medium", 355e6), ("gpt2-large", 774e6),
                                             ("gpt2-xl", 1.558e9), ("llama3-8b", 8.03e9), ("llama3-70b", 70.6e9),
                                             ("llama3-405b", 405.9e9)])
def test_shapes_match_published_parameter_counts(name, published):
    assert SHAPES[name].params() == pytest.approx(published, rel=0.01)


def llama70b_on(nodes, tokens=8192.0):
    s = SHAPES["llama3-70b"]
    units, flops, held = s.units(s.seq_len)
    j = Job(s.name, units, flops, held, s.flops_per_token(s.seq_len), s.activation_bytes_per_token(2), tokens, 2, 2)
    g = GPUS["h100"]
    return j, Cluster(g, nodes, Topology(8, Link(g.nvlink_bit_s, 0.8, 2e-6), Link(100e9, 0.9, 5e-6)), g.tflops, 0.4)


def test_checkpointing_only_when_needed_and_it_costs_recompute():
    j, cl = llama70b_on(128)
    auto = plan_strategy(j, cl, "fsdp", rates_bit_s=[400e9], target=0.05)
    off = plan_strategy(j, cl, "fsdp", rates_bit_s=[400e9], target=0.05, checkpointing="off")
    assert auto["memory"]["fits"] and auto["memory"]["activation_checkpointing"]
    assert not off["memory"]["fits"]  # 8,192 tokens of full activations do not fit in 80 GiB
    assert auto["compute_ms"] == pytest.approx(off["compute_ms"] * 4 / 3)  # backward 3x forward instead of 2x
    small = Job(j.name, j.unit_params, j.unit_flops_per_token, j.root_held, j.model_flops_per_token,
                j.act_bytes_per_token, 512.0, 2, 2)
    assert not plan_strategy(small, cl, "fsdp", rates_bit_s=[400e9], target=0.05)["memory"]["activation_checkpointing"]


def test_hsdp_shard_grows_by_nodes_until_it_fits():
    j, cl = llama70b_on(128)
    r = plan_strategy(j, cl, "hsdp", rates_bit_s=[400e9], target=0.05)
    s = r["shard_size"]
    assert r["memory"]["fits"] and s % 8 == 0 and 1024 % s == 0 and s > 8
    half = memory(j, "hsdp", s // 2, True)
    assert half["per_gpu_bytes"] > r["memory"]["usable_bytes"]  # the next smaller whole-node shard does not fit


def test_per_op_bytes_add_up_to_the_tiers():
    j, cl = llama70b_on(4, tokens=1024.0)
    for strategy in ("ddp", "fsdp", "hsdp"):
        b = plan_strategy(j, cl, strategy, rates_bit_s=[400e9], target=0.05, shard=8)["bytes_per_gpu_per_step"]
        assert sum(o["intra_node"] for o in b["ops"].values()) == pytest.approx(b["intra_node"])
        assert sum(o["inter_node"] for o in b["ops"].values()) == pytest.approx(b["inter_node"])


def sync(kind, unit, phase, launch, done):
    return {**op(kind, unit, phase, 2e6, launch), "done_ms": done}


# As the recorder on main writes a gloo FSDP step: forward windows of the leaf units only (taken
# after FSDP has waited for their gather), no backward windows, every collective synchronous.
RECORDED = {"step": 7, "strategy": "fsdp", "step_ms": 20.0, "forward_ms": 5.0, "backward_ms": 10.0,
            "optimizer_ms": 1.0, "compute_end_ms": 19.0, "exposed_ms": 8.0, "exposed_forward_ms": 3.0,
            "exposed_backward_ms": 5.0,
            "units": [{"unit": 0, "forward_start_ms": 2.0, "forward_end_ms": 4.0},
                      {"unit": 1, "forward_start_ms": 5.0, "forward_end_ms": 7.0}],
            "ops": [sync("all_gather", 2, "forward", 0.0, 1.0), sync("all_gather", 0, "forward", 1.0, 2.0),
                    sync("all_gather", 1, "forward", 4.0, 5.0), sync("all_gather", 1, "backward", 8.0, 9.0),
                    sync("reduce_scatter", 1, "backward", 11.0, 12.0), sync("all_gather", 0, "backward", 12.0, 13.0),
                    sync("reduce_scatter", 0, "backward", 15.0, 16.0), sync("reduce_scatter", 2, "backward", 16.0, 17.0)]}


def test_a_recorded_step_without_backward_windows_replays_by_hand():
    got = replay_step(RECORDED, 2, Link(8e9, **FREE))  # every op 1 ms
    # forward: the run's waits come out (units 0 and 1 compute 2 ms each, back to back); root 0-1,
    # unit 0's gather 1-2 (unit 0 waits 2 ms), unit 1's 2-3 under unit 0. Backward, laid out at
    # r = 10/5 = 2: head 3 ms, unit 1 9-13 (its gather 6-7), unit 0 13-17 (its gather 9-10), the
    # scatters 13-14, 17-18, the root's 18-19: 2 ms after compute ends.
    assert got["exposed_forward_ms"] == pytest.approx(2.0)
    assert got["exposed_backward_ms"] == pytest.approx(2.0)
    assert got["step_ms"] == pytest.approx(20.0 - 8.0 + 4.0)
    assert replay_step(RECORDED, 2, Link(8e15, **FREE))["step_ms"] == pytest.approx(12.0, abs=1e-3)
