"""The pieces the testbed validation relies on: FSDP2's per-rank memory, gloo's flat rings behind a
shared NIC, the serial replay of blocking sharded collectives, the per-bucket overhead of a DDP run,
and calibration that tells an op that is slow on a link from a host ceiling."""
import json
import math

import pytest
import torch

from runner import read_summary, torchrun
from tiny import tiny
from train.comm.plan.costmodel import Link, SharedNics, load_calibration
from train.comm.plan.replay import bucket_overhead_ms, predict, replay_step
from train.comm.plan.serial import call_floor_ms, synchronous
from train.comm.plan.schedule import held_bytes


def test_held_bytes_pads_dim0_to_the_shard_and_counts_optimizer_state():
    shapes = [(10, 3), (5,), (7, 2, 2)]
    # shard 4: ceil(10/4)=3 rows x 3, ceil(5/4)=2, ceil(7/4)=2 rows x 4 -> 9 + 2 + 8 = 19 elements
    adam = held_bytes(shapes, 4, 4, "adam")
    assert adam == {"param_bytes": 76, "grad_bytes": 76, "optim_bytes": 2 * 76 + 3 * 4}  # 2 moments, a step each
    assert held_bytes(shapes, 1, 4, "sgd", 0.9)["optim_bytes"] == (30 + 5 + 28) * 4  # momentum, no step
    assert held_bytes(shapes, 1, 4, "sgd", 0.0)["optim_bytes"] == 0
    assert held_bytes(shapes, 2, 4, "rmsprop", 0.9)["optim_bytes"] == 2 * (15 + 3 + 16) * 4 + 3 * 4


def test_held_bytes_equal_what_an_fsdp_run_holds(tmp_path):
    """3 ranks: the mlp's 64- and 10-row parameters do not divide, FSDP2 pads them."""
    from models import build_model
    run_dir = tmp_path / "run"
    done = torchrun(["-m", "train", "--recipe", "mlp", "--run-dir", str(run_dir),
                     *tiny("mlp", "dist.strategy=fsdp", "optim.name=rmsprop", "train.batch_size=48", steps=2)],
                    nproc=3)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = read_summary(run_dir)
    with torch.device("meta"):
        model = build_model("mlp", "debug", {"input_shape": (1, 28, 28), "num_classes": 10})
    assert model.num_params() == summary["model"]["params"]
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert summary["memory"] == held_bytes(shapes, 3, 4, "rmsprop", summary["config"]["optim"]["momentum"])
    assert summary["memory"] != held_bytes(shapes, 1, 4, "rmsprop", 0.9)  # sharded, not DDP's
    assert synchronous(summary)  # gloo: the replay must take FSDP's collectives as blocking


def shared_net(rate=100e6):
    return SharedNics(2, Link(math.inf, 1.0, 0.0, host_bit_s=8e9), Link(rate, 0.5, 0.0))


def test_shared_nics_are_gloo_flat_rings_behind_one_nic_per_node():
    net = shared_net()
    fsdp = net.group(4)  # one ring over both nodes: one edge per node crosses, 3/4 of the array on it
    assert (fsdp.size, fsdp.per_node) == (4, 2)
    assert net.op_cost("all_gather", 1e6, fsdp).time_s == pytest.approx(0.75e6 * 8 / 50e6)
    shard, replicate = net.group(2), net.group(2, stride=2)  # HSDP: shards inside a node, replicas across
    assert shard.nodes == 1 and net.op_cost("all_gather", 1e6, shard).time_s == pytest.approx(0.5e6 * 8 / 8e9)
    # the two replicate groups of a node all-reduce side by side over the one NIC: twice the bytes on it
    assert net.op_cost("all_reduce", 1e6, replicate).time_s == pytest.approx(2 * 1e6 * 8 / 50e6)
    assert net.at_rate(200e6).op_cost("all_reduce", 1e6, replicate).time_s == pytest.approx(2 * 1e6 * 8 / 100e6)
    # emulated nodes on one machine: both nodes' shard groups share its CPUs, loopback runs at half speed
    testbed = SharedNics(2, net.intra, net.inter, hosts_shared=2)
    assert testbed.op_cost("all_gather", 1e6, shard).time_s == pytest.approx(2 * 0.5e6 * 8 / 8e9)
    assert testbed.op_cost("all_gather", 1e6, fsdp).time_s == net.op_cost("all_gather", 1e6, fsdp).time_s


def sharded_timeline():
    ops = [{"op": "all_gather", "group": "shard", "group_size": 4, "unit": 0, "phase": "forward",
            "sent_bytes": 1e6, "launch_ms": 1.0, "done_ms": 21.0},
           {"op": "reduce_scatter", "group": "shard", "group_size": 4, "unit": 0, "phase": "backward",
            "sent_bytes": 1e6, "launch_ms": 30.0, "done_ms": 60.0}]
    return {"step": 2, "strategy": "fsdp", "world_size": 4, "step_ms": 80.0, "forward_ms": 5.0, "backward_ms": 10.0,
            "compute_end_ms": 70.0, "exposed_ms": 50.0, "ops": ops,
            "units": [{"unit": 0, "forward_start_ms": 22.0, "forward_end_ms": 25.0}]}


def test_serial_replay_swaps_each_blocking_op_for_its_cost():
    tl, net = sharded_timeline(), shared_net()
    ag, rs = 0.75e6 * 8 / 50e6 * 1e3, 0.75e6 * 8 / 50e6 * 1e3  # 120 ms each at 100 Mbit/s x 0.5
    got = replay_step(tl, 4, net, serial=True)
    assert got["all_gather_ms"] == pytest.approx(ag) and got["reduce_scatter_ms"] == pytest.approx(rs)
    assert got["comm_ms"] == got["exposed_ms"] == pytest.approx(ag + rs)
    assert got["step_ms"] == pytest.approx(80.0 - 50.0 + ag + rs)  # compute kept, the ops replaced
    assert got["exposed_forward_ms"] == pytest.approx(ag)
    # on a GPU the same gather would be prefetched under compute: the overlapping replay differs
    assert replay_step(tl, 4, net)["step_ms"] != pytest.approx(got["step_ms"])
    assert predict([tl, tl], 4, net.at_rate(200e6), serial=True)["comm_ms"] == pytest.approx((ag + rs) / 2)


def test_bucket_overhead_is_the_median_time_beyond_the_cost():
    link = Link(8e9, 1.0, 0.0)  # 1 ms per MB
    buckets = [{"index": 0, "sent_bytes": 1e6, "ready_ms": 1.0, "ready_max_ms": 3.0, "done_ms": 9.0},   # 3 -> 4: +5
               {"index": 1, "sent_bytes": 1e6, "ready_ms": 2.0, "ready_max_ms": 2.0, "done_ms": 12.0},  # 9 -> 10: +2
               {"index": 2, "sent_bytes": 2e6, "ready_ms": 4.0, "ready_max_ms": 4.0, "done_ms": 18.0}]  # 12 -> 14: +4
    tl = {"step": 2, "step_ms": 30.0, "exposed_ms": 14.0, "compute_end_ms": 4.0, "buckets": buckets}
    assert bucket_overhead_ms([tl], 2, link) == pytest.approx(4.0)
    # replayed with it, each bucket pays it once: 3 -> 4+4, -> 9+4, -> 15+4 = 19
    assert replay_step(tl, 2, link, overhead_ms=4.0)["exposed_ms"] == pytest.approx(19.0 - 4.0)


def test_calibration_takes_a_slow_op_on_a_link_as_link_bound_when_the_host_is_faster(tmp_path):
    def sweep(name, link, busbw):
        path = tmp_path / name
        fits = {op: {"alpha_us": 100.0, "busbw_gbit_s_fit": b} for op, b in busbw.items()}
        path.write_text(json.dumps({"world_size": 2, "link_bit_s": link, "results": [], "fits": fits}))
        return path
    shaped = sweep("shaped.json", 100e6, {"all_reduce": 0.094, "all_gather": 0.074, "reduce_scatter": 0.047})
    loopback = sweep("lo.json", None, {"all_reduce": 9.0, "all_gather": 3.0, "reduce_scatter": 0.05})
    alone = load_calibration([shaped])["ops"]
    assert "efficiency" not in alone["all_gather"] and alone["all_gather"]["host_bit_s"] == pytest.approx(0.074e9)
    both = load_calibration([shaped, loopback])["ops"]
    assert both["all_gather"]["efficiency"] == pytest.approx(0.74)  # the host moves 3 Gbit/s: the link held it
    assert both["all_gather"]["host_bit_s"] == pytest.approx(3e9)
    # reduce_scatter's loopback fit is no faster than its shaped one: the host may be what held both
    assert "efficiency" not in both["reduce_scatter"]
    assert Link(100e6, ops=both).effective_bit_s("all_gather") == pytest.approx(0.074e9)


def test_serial_replay_spends_a_token_bucket_refilled_in_compute_gaps():
    tl = sharded_timeline()  # 20 ms of compute before the gather (step tail + start), 9 ms before the scatter
    net = SharedNics(2, Link(math.inf, 1.0, 0.0), Link(100e6, 0.5, 0.0), burst_bytes=100e3)  # 12.5 kB per ms
    full = 0.75e6 * 8 / 50e6 * 1e3
    got = replay_step(tl, 4, net, serial=True)
    # the gather finds the bucket full (100 kB), the scatter finds 9 ms x 12.5 kB = 112.5 kB -> 100 kB
    assert got["all_gather_ms"] == pytest.approx((0.75e6 - 100e3) * 8 / 50e6 * 1e3)
    assert got["reduce_scatter_ms"] == pytest.approx((0.75e6 - 100e3) * 8 / 50e6 * 1e3)
    tl["ops"][1]["launch_ms"] = 23.0  # 2 ms after the gather: 25 kB
    assert replay_step(tl, 4, net, serial=True)["reduce_scatter_ms"] == pytest.approx((0.75e6 - 25e3) * 8 / 50e6 * 1e3)
    assert replay_step(tl, 4, SharedNics(2, net.intra, net.inter), serial=True)["all_gather_ms"] == pytest.approx(full)


def test_calibration_compares_a_slow_fit_only_with_sweeps_of_its_own_world_size(tmp_path):
    def sweep(name, link, world, bus, alpha_us=3000.0):
        path = tmp_path / name
        path.write_text(json.dumps({"world_size": world, "link_bit_s": link, "results": [],
                                    "fits": {"all_gather": {"alpha_us": alpha_us, "busbw_gbit_s_fit": bus}}}))
        return path
    lo = sweep("lo.json", None, 2, 16.0)                # 2 ranks on loopback
    shaped = sweep("shaped.json", 100e6, 4, 0.09, 0.0)  # 4 ranks, 2 per node, 100 Mbit/s
    fast = sweep("fast.json", 10e9, 4, 5.4)             # the same 4 ranks on a link they cannot fill
    ops = load_calibration([lo, shaped, fast])["ops"]["all_gather"]
    assert ops["efficiency"] == pytest.approx(0.9)
    assert ops["host_bit_s"] == pytest.approx(5.4e9)  # 4 ranks' ceiling, not loopback's 2 ranks'
    assert ops["host_hop_latency_s"] == pytest.approx(1e-3)  # 3000 us over a 4-rank ring's 3 steps
    link = Link(1e9, ops={"all_gather": ops})
    # small: the hosts' latency, not the link, sets the time; large: the link
    assert link.collective_time("all_gather", 1e3, 4) == pytest.approx(3e-3 + 750 * 8 / 5.4e9)
    assert link.collective_time("all_gather", 1e9, 4) == pytest.approx(0.75e9 * 8 / 0.9e9)


def test_bucket_replay_gives_the_exposed_comm_of_the_rank_ready_last():
    link = Link(8e9, 1.0, 0.0)  # 1 ms per MB
    buckets = [{"index": 0, "sent_bytes": 1e6, "ready_ms": 1.0, "ready_max_ms": 1.0},
               {"index": 1, "sent_bytes": 2e6, "ready_ms": 4.0, "ready_max_ms": 10.0}]  # the peer is 6 ms late
    tl = {"step": 2, "step_ms": 30.0, "exposed_ms": 9.0, "compute_end_ms": 4.0, "buckets": buckets}
    got = replay_step(tl, 2, link)
    assert got["exposed_ms"] == pytest.approx(8.0)  # this rank: 4 -> 12, 6 ms of it waiting for the peer
    assert got["exposed_last_ready_ms"] == pytest.approx(2.0)  # the late rank: 10 -> 12
    assert got["step_last_ready_ms"] == pytest.approx(30.0 - 9.0 + 2.0)


def test_a_call_never_beats_its_floor_from_a_run_on_a_fast_link():
    fast = sharded_timeline()  # the same configuration on a fast link: the gather 20 ms, the scatter 30 ms
    floor = call_floor_ms([fast, fast])
    assert floor == {("all_gather", "forward", 0, "shard", 0): 20.0, ("reduce_scatter", "backward", 0, "shard", 0): 30.0}
    net = shared_net(1e12)  # a link so fast that the model alone says ~0 ms
    got = replay_step(sharded_timeline(), 4, net, serial=True, floor_ms=floor)
    assert got["all_gather_ms"] == pytest.approx(20.0) and got["reduce_scatter_ms"] == pytest.approx(30.0)
    slow = replay_step(sharded_timeline(), 4, shared_net(), serial=True, floor_ms=floor)  # 120 ms each: the link
    assert slow["all_gather_ms"] == pytest.approx(0.75e6 * 8 / 50e6 * 1e3)
