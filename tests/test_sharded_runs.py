"""Sharded runs as a user launches them: torchrun, summary.json, events, DCP checkpoints, restarts."""
import pytest

from runner import python_m, read_scalars, read_summary, torchrun
from test_faults import kill_rank_1_once, popen
from tiny import tiny
from train import checkpoint_sharded

OP_KEYS = ("calls_per_step", "sent_bytes_per_step", "time_ms_median", "busbw_gbit_s_median")


def test_fsdp_run_reports_ops_and_resumes_at_another_world_size(tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny("transformer", "dist.strategy=fsdp", "train.resume=auto", steps=4)
    done = torchrun(["-m", "train", "--recipe", "transformer", "--run-dir", str(run_dir), *overrides])
    assert done.returncode == 0, done.stderr[-3000:]
    summary = read_summary(run_dir)
    assert summary["parallel"] == {"strategy": "fsdp", "world_size": 2, "shard_size": 2, "replicate_size": 1,
                                   "reshard_after_forward": True}
    ops = summary["comm"]["ops"]
    assert set(ops) == {"all_gather", "reduce_scatter"}
    for op in ops.values():
        assert all(op[k] > 0 for k in OP_KEYS)
    assert ops["all_gather"]["sent_bytes_per_step"] == 2 * ops["reduce_scatter"]["sent_bytes_per_step"]
    assert summary["comm"]["exposed_ms_median"] > 0
    assert {"param_bytes", "grad_bytes", "optim_bytes"} <= set(summary["memory"])
    timeline = summary["comm"]["timelines"][0]
    assert {o["op"] for o in timeline["ops"]} == {"all_gather", "reduce_scatter"} and timeline["units"]
    scalars = read_scalars(run_dir)
    for tag in ("comm/all_gather/sent_bytes", "comm/reduce_scatter/busbw_gbit_s", "time/exposed_forward_ms",
                "time/exposed_backward_ms", "comm/all_gather/calls"):
        assert tag in scalars, tag
    assert "Communication per step (fsdp" in done.stdout and "reduce_scatter" in done.stdout
    saved = checkpoint_sharded.list_checkpoints(run_dir)
    assert [p.name for p in saved] == ["step_00000004.dcp"]

    # A save cut short leaves a hidden temporary folder, or (never renamed by rank 0) no train
    # state: neither counts, so the step-4 checkpoint is still the one resumed from.
    (run_dir / "checkpoints" / ".step_00000006.dcp.tmp").mkdir()
    (run_dir / "checkpoints" / "step_00000005.dcp").mkdir()
    assert checkpoint_sharded.list_checkpoints(run_dir) == saved

    # One process picks up the two ranks' shards (DCP reshards) and continues.
    more = python_m(["train", "--recipe", "transformer", "--run-dir", str(run_dir),
                     *[o for o in overrides if not o.startswith("train.steps")], "train.steps=6"], timeout=180)
    assert more.returncode == 0, more.stderr[-3000:]
    resumed = read_summary(run_dir)
    assert resumed["start_step"] == 4 and resumed["steps"] == 6 and resumed["world_size"] == 1


def test_hsdp_four_ranks_show_all_three_ops(tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny("transformer", "dist.strategy=hsdp", "dist.shard_size=2", steps=3)
    done = torchrun(["-m", "train", "--recipe", "transformer", "--run-dir", str(run_dir), *overrides], nproc=4)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = read_summary(run_dir)
    assert summary["parallel"]["shard_size"] == 2 and summary["parallel"]["replicate_size"] == 2
    ops = summary["comm"]["ops"]
    assert ops["all_reduce"]["sent_bytes_per_step"] * 2 == ops["reduce_scatter"]["sent_bytes_per_step"]
    assert ops["all_reduce"]["calls_per_step"] == ops["reduce_scatter"]["calls_per_step"]


def test_ddp_checkpoint_under_fsdp_stops_with_one_line(tmp_path):
    run_dir = tmp_path / "run"
    first = torchrun(["-m", "train", "--recipe", "mlp", "--run-dir", str(run_dir), *tiny("mlp", steps=2)])
    assert first.returncode == 0, first.stderr[-3000:]
    again = torchrun(["-m", "train", "--recipe", "mlp", "--run-dir", str(run_dir),
                      *tiny("mlp", "dist.strategy=fsdp", "train.resume=auto", steps=4)])
    assert again.returncode != 0
    lines = [ln for ln in again.stderr.splitlines() if ln.startswith("gradwire: error:")]
    assert lines and "written by a ddp run" in lines[0] and "dist.strategy=ddp" in lines[0]
    assert "/train/" not in again.stderr  # no worker traceback (torchrun adds its own ChildFailedError report)


def test_sigkilled_fsdp_worker_restarts_and_ends_with_the_same_loss(tmp_path):
    overrides = tiny("mlp", "model.flavor=small", "dist.strategy=fsdp", "train.ckpt_every=20", "train.log_every=50",
                     "train.resume=auto", steps=300)
    whole = tmp_path / "whole"
    done = torchrun(["-m", "train", "--recipe", "mlp", "--run-dir", str(whole), *overrides])
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "killed"
    proc = popen(["--recipe", "mlp", "--run-dir", str(run_dir), *overrides], nproc=2, extra=["--max-restarts=2"])
    kill_rank_1_once(proc, lambda: checkpoint_sharded.list_checkpoints(run_dir), "a sharded checkpoint")
    killed, uninterrupted = read_summary(run_dir), read_summary(whole)
    assert killed["completed"] and 0 < killed["start_step"] < 300  # the restarted group resumed
    assert killed["final_loss"] == uninterrupted["final_loss"]


@pytest.mark.parametrize("overrides, message", [
    (["dist.strategy=fsdp", "comm.hook=fp16"], "comm.hook='fp16' is a DDP comm hook"),
    (["dist.strategy=fsdp", "train.precision=fp16"], "train.precision='fp16' is not supported"),
    (["dist.strategy=hsdp", "dist.shard_size=3"], "dist.shard_size=3 does not divide"),
    (["dist.strategy=hsdp", "dist.shard_size=1"], None),  # 1 divides 1: allowed, nothing to shard
    (["dist.strategy=fdsp"], "did you mean 'fsdp'"),
    (["dist.reshard_after_forward=0"], "dist.reshard_after_forward=0 is not allowed"),
    (["dist.reduce_dtype=fp8"], "dist.reduce_dtype='fp8' is not allowed"),
])
def test_bad_sharded_settings_stop_before_any_group(tmp_path, overrides, message):
    done = python_m(["train", "--recipe", "mlp", "--run-dir", str(tmp_path / "run"), *tiny("mlp", *overrides, steps=1)])
    if message is None:
        assert done.returncode == 0, done.stderr[-2000:]
        return
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "run" / "summary.json").exists()


def test_layout_checks_that_need_the_world_size():
    from train.distributed import DistConfig
    from train.errors import ConfigError
    assert DistConfig(strategy="hsdp", shard_size=2).layout(8, 4) == (2, 4)
    assert DistConfig(strategy="hsdp").layout(8, 4) == (4, 2)  # default: the ranks of one node
    assert DistConfig(strategy="fsdp").layout(8, 4) == (8, 1)
    with pytest.raises(ConfigError, match="equals the world size"):
        DistConfig(strategy="hsdp", shard_size=4).layout(4, 4)
    with pytest.raises(ConfigError, match="does not divide the shard group"):
        DistConfig(strategy="fsdp", reshard_after_forward=3).layout(4, 4)
