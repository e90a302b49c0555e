"""The planner's command line: the 70B plan, replays of sharded runs from summary.json, DDP buckets
in index order, per-op calibration, every numeric input checked, bad input in one line."""
import json

import pytest

from runner import python_m
from train.comm.plan.cli import main
from train.comm.plan.costmodel import Link, load_calibration
from train.comm.plan.replay import replay_step
from train.comm.plan.schedule import sharded_timeline


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_llama3_70b_on_1024_h100():
    done = python_m(["train.comm.plan", "--model", "llama3-70b", "--gpu", "h100", "--nodes", "128", "--gpus-per-node",
                     "8", "--strategy", "ddp,fsdp,hsdp", "--json"])
    assert done.returncode == 0, done.stderr
    s = {r["strategy"]: r for r in json.loads(done.stdout)["strategies"]}
    assert not s["ddp"]["memory"]["fits"] and s["fsdp"]["memory"]["fits"] and s["hsdp"]["memory"]["fits"]
    assert s["hsdp"]["bytes_per_gpu_per_step"]["inter_node"] < s["fsdp"]["bytes_per_gpu_per_step"]["inter_node"]
    need = s["fsdp"]["required"]["nic_gbit_s"]
    assert need is not None and 0 < need < float("inf")
    rows = s["fsdp"]["rates"]
    assert [r["nic_gbit_s"] for r in rows] == [25, 50, 100, 200, 400, 800]
    assert all(a["exposed_ms"] >= b["exposed_ms"] and a["step_ms"] >= b["step_ms"] for a, b in zip(rows, rows[1:]))
    slower = [r for r in rows if r["nic_gbit_s"] < need]
    assert all(r["exposed_pct"] > 5 for r in slower) and slower  # below the requirement, the target is missed


def test_table_and_headline(capsys):
    code, out, _ = run(capsys, "--model", "llama3-8b", "--nodes", "4", "--strategy", "fsdp", "--nic", "100gbit,400gbit",
                       "--train-tokens", "1e12", "--deadline-days", "10", "--json")
    assert code == 0
    h = json.loads(out)["strategies"][0]["headline"]
    assert h["days_to_train"] == pytest.approx(1e12 / h["tokens_per_s"] / 86400)
    assert h["gpus_for_deadline"] % 8 == 0 and h["gpus_for_deadline"] >= 32 * h["days_to_train"] / 10
    st = h["storage"]
    assert st["checkpoint_bytes"] == pytest.approx(12 * 8.03e9, rel=0.01)
    assert st["read_gbyte_s"] == pytest.approx(h["tokens_per_s"] * 4 / 1e9)  # 128k vocabulary: 4 B per token
    code, out, _ = run(capsys, "--model", "gpt2-xl", "--nodes", "2", "--strategy", "fsdp,hsdp")
    assert code == 0 and "## hsdp (shard 8 x replicate 2)" in out and "assumptions:" in out


def summary(tmp_path, timelines, strategy="fsdp", shard=4, world=4):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"world_size": world, "model": {"name": "transformer"},
                                "parallel": {"strategy": strategy, "world_size": world, "shard_size": shard,
                                             "replicate_size": world // shard, "reshard_after_forward": True},
                                "comm": {"hook": None, "timelines": timelines}}))
    return str(path)


@pytest.mark.parametrize("strategy, shard, replicate", [("fsdp", 4, 1), ("hsdp", 2, 2)])
def test_a_sharded_run_replays_on_another_world_and_topology(tmp_path, capsys, strategy, shard, replicate):
    tl = sharded_timeline(strategy, [4e6] * 5, [5.0] * 4 + [2.0], shard, replicate, root_held=True)
    path = summary(tmp_path, [tl], strategy, shard)
    code, out, _ = run(capsys, path, "--world", "64", "--gpus-per-node", "8", "--link", "10gbit", "--json")
    assert code == 0
    r = json.loads(out)
    assert r["inputs"]["strategy"] == strategy and r["inputs"]["world"] == 64
    row = r["rates"][0]
    assert row["link_gbit_s"] == 10 and row["exposed_ms"] > 0 and row["inter_bytes"] > 0
    flat = run(capsys, path, "--world", "64", "--link", "10gbit", "--json")[1]
    assert json.loads(flat)["rates"][0]["inter_bytes"] > row["inter_bytes"]  # NVLink takes the node's share


def test_ddp_buckets_replay_in_index_order():
    # bucket 1 is ready before bucket 0 (a parameter used early in forward), but DDP launches 0 first
    tl = {"step": 0, "step_ms": 20.0, "exposed_ms": 0.0, "compute_end_ms": 10.0,
          "buckets": [{"index": 0, "sent_bytes": 1e6, "ready_ms": 8.0}, {"index": 1, "sent_bytes": 1e6, "ready_ms": 2.0}]}
    got = replay_step(tl, 2, Link(8e9, 1.0, 0.0))  # 1 ms per bucket
    # index order: 0 at 8 -> 9, then 1 at 9 -> 10 (ready order would have given 2 -> 3, 8 -> 9)
    assert got["comm_ms"] == pytest.approx(2.0) and got["exposed_ms"] == pytest.approx(0.0)
    tl["compute_end_ms"] = 9.0
    assert replay_step(tl, 2, Link(8e9, 1.0, 0.0))["exposed_ms"] == pytest.approx(1.0)


def test_calibration_is_per_op(tmp_path):
    path = tmp_path / "sweep.json"  # gloo on a 150 Mbit/s link: all_gather and reduce_scatter lag all_reduce
    fits = {op: {"alpha_us": 200.0, "busbw_gbit_s_fit": bus} for op, bus in
            (("all_reduce", 0.139), ("all_gather", 0.125), ("reduce_scatter", 0.070))}
    path.write_text(json.dumps({"world_size": 2, "link_bit_s": 150e6, "results": [], "fits": fits}))
    cal = load_calibration([path])
    assert cal["efficiency"] == pytest.approx(0.139 / 0.15)
    assert cal["ops"]["all_gather"]["efficiency"] == pytest.approx(0.125 / 0.15)
    assert cal["ops"]["reduce_scatter"]["host_bit_s"] == pytest.approx(0.070e9)  # 47% of the link: not link-bound
    link = Link(150e6, cal["efficiency"], 0.0, ops=cal["ops"])
    # a 2-rank all_gather of 1 MB puts half of it on the link, at all_gather's own 125 Mbit/s, after
    # its own latency (200 us over the ring's one hop), not the Link's default
    assert link.collective_time("all_gather", 1e6, 2) == pytest.approx(200e-6 + 0.5e6 * 8 / 0.125e9)
    assert link.effective_bit_s("reduce_scatter") == pytest.approx(0.070e9)
    assert link.effective_bit_s("all_gather") < link.effective_bit_s("all_reduce")


@pytest.mark.parametrize("flag, value", [
    ("--params", "-1"), ("--params", "nan"), ("--params", "inf"), ("--params", "0"), ("--mfu", "0"), ("--mfu", "1.5"),
    ("--mfu", "nan"), ("--efficiency", "-0.1"), ("--intra-efficiency", "2"), ("--hop-latency-us", "-1"),
    ("--intra-latency-us", "nan"), ("--target-exposed", "1"), ("--target-exposed", "0"), ("--accel-tflops", "-989"),
    ("--gpu-memory-gb", "0"), ("--tokens-per-step", "-1"), ("--items-per-step", "inf"), ("--train-tokens", "-1e12"),
    ("--deadline-days", "0"), ("--checkpoint-write-s", "nan"), ("--bytes-per-token", "0"), ("--oversubscription", "0.5"),
    ("--host-gbit", "0"), ("--bucket-mb", "-25"), ("--compute-ms", "0"), ("--world", "0"), ("--nodes", "-2"),
    ("--gpus-per-node", "0"), ("--shard-size", "0"), ("--layers", "0"), ("--seq-len", "-1"), ("--vocab", "0"),
    ("--nic", "100"), ("--nic", "-100gbit"), ("--intra", "fast"), ("--link", "1e999gbit"), ("--nic", "nan"),
])
def test_every_number_is_checked(capsys, flag, value):
    code, out, err = run(capsys, "--model", "llama3-8b", "--nodes", "2", flag, value)
    assert code == 2 and out == ""
    assert err.startswith("gradwire: error: ") and len(err.strip().splitlines()) == 1
    assert flag in err or "link rate" in err, err


@pytest.mark.parametrize("args, fragment", [
    (["--model", "llama3-8b", "--strategy", "fsdp,hsd"], "did you mean 'hsdp'"),
    (["--model", "llama3-8b", "--nodes", "4", "--shard-size", "3"], "--shard-size 3 does not divide the 32 GPUs"),
    (["--model", "llama3-8b", "--nodes", "6", "--shard-size", "12"], "divide --gpus-per-node 8"),
    (["--model", "llama3-405b", "--nodes", "1"], "llama3-405b fits no strategy"),
    (["--model", "llama3-8b", "--gpu", "h1000"], "did you mean 'h100'"),
    (["--model", "llama3-8b", "--nic", "400"], "--nic: link rate '400' is not understood"),
    (["--model", "lama3-8b"], "did you mean 'llama3-8b'"),
    (["--model", "llama3-8b", "--world", "12"], "--world 12 is not a multiple of --gpus-per-node 8"),
    (["--layers", "4", "--hidden", "64"], "needs --heads, --vocab"),
    (["--model", "llama3-8b", "--deadline-days", "3"], "--deadline-days needs --train-tokens"),
])
def test_bad_input_is_one_line(capsys, args, fragment):
    code, out, err = run(capsys, *args)
    assert code == 2 and out == "" and fragment in err and len(err.strip().splitlines()) == 1, err


def test_calibration_refuses_mixed_backends(tmp_path, capsys):
    paths = []
    for backend in ("gloo", "nccl"):
        path = tmp_path / f"{backend}.json"
        path.write_text(json.dumps({"world_size": 2, "backend": backend, "link_bit_s": 150e6, "results": [],
                                    "fits": {"all_reduce": {"alpha_us": 100.0, "busbw_gbit_s_fit": 0.14}}}))
        paths += ["--calibration", str(path)]
    assert load_calibration([tmp_path / "gloo.json"])["backend"] == "gloo"
    code, _, err = run(capsys, "--model", "llama3-8b", *paths)
    assert code == 2 and "mixes backends (gloo, nccl)" in err


def test_a_custom_gpu_from_explicit_figures(capsys):
    code, out, _ = run(capsys, "--model", "llama3-8b", "--nodes", "2", "--gpu", "custom", "--accel-tflops", "500",
                       "--gpu-memory-gb", "96", "--intra", "200gbit", "--strategy", "fsdp", "--json")
    assert code == 0
    r = json.loads(out)
    assert r["inputs"]["tflops"] == 500 and r["inputs"]["memory_bytes"] == 96e9 and r["inputs"]["intra_bit_s"] == 200e9
    code, _, err = run(capsys, "--model", "llama3-8b", "--gpu", "custom", "--accel-tflops", "500")
    assert code == 2 and "--gpu custom needs --gpu-memory-gb, --intra" in err
