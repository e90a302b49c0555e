"""End to end: torchrun with 2 processes trains each recipe, writes events and summary.json."""
import pytest

from runner import read_scalars, read_summary, torchrun
from tiny import tiny

SUMMARY_KEYS = ("world_size", "backend", "model", "steps", "first_loss", "final_loss", "time", "throughput")


@pytest.mark.parametrize("recipe", ["mlp", "lstm", "transformer"])
def test_torchrun_two_ranks_learns(tmp_path, recipe):
    run_dir = tmp_path / "run"
    overrides = tiny(recipe, "train.log_every=5", "optim.warmup_steps=2", "optim.lr=3e-3", steps=30)
    done = torchrun(["-m", "train", "--recipe", recipe, "--run-dir", str(run_dir), *overrides])
    assert done.returncode == 0, done.stderr[-3000:]
    summary = read_summary(run_dir)
    for key in SUMMARY_KEYS:
        assert key in summary, key
    assert summary["world_size"] == 2 and summary["backend"] == "gloo" and summary["steps"] == 30
    assert summary["model"]["name"] == recipe and summary["model"]["params"] > 0
    assert summary["time"]["step_ms_median"] > 0
    assert list(summary["throughput"].values())[0] > 0
    assert summary["final_loss"] < summary["first_loss"]
    scalars = read_scalars(run_dir)
    loss = [v for _, v in scalars["train/loss"]]
    assert len(loss) >= 5 and loss[-1] < loss[0]
    for tag in ("train/lr", "train/grad_norm", "time/step_ms"):
        assert tag in scalars
    unit = summary["model"]["unit"]
    assert f"throughput/{unit}_per_s" in scalars
    assert "step     30/30" in done.stdout  # the progress line, printed once by rank 0
    assert done.stdout.count("step     30/30") == 1
    assert (run_dir / "config.toml").exists()
    assert (run_dir / "checkpoints" / "step_00000030.pt").exists()


NETWORK_TAGS = ("comm/grad_bytes", "comm/sent_bytes", "comm/buckets", "comm/time_ms", "comm/busbw_gbit_s",
                "comm/algbw_gbit_s", "comm/overlap_pct", "time/exposed_comm_ms", "time/forward_ms",
                "time/backward_ms", "time/optimizer_ms", "time/data_ms", "net/tx_bytes", "net/rx_bytes",
                "net/wire_ratio", "ranks/step_ms_max", "ranks/step_ms_min", "ranks/slowest")


def test_network_figures_reach_tensorboard_and_summary(tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny("transformer", "dist.bucket_cap_mb=0.05", steps=8)  # several buckets, so overlap exists
    done = torchrun(["-m", "train", "--recipe", "transformer", "--run-dir", str(run_dir), *overrides])
    assert done.returncode == 0, done.stderr[-3000:]
    scalars = read_scalars(run_dir)
    for tag in NETWORK_TAGS:
        assert tag in scalars, tag
    by_step = {tag: dict(scalars[tag]) for tag in NETWORK_TAGS}
    for step, step_ms in scalars["time/step_ms"]:
        assert by_step["comm/grad_bytes"][step] > 0 and by_step["comm/sent_bytes"][step] > 0
        assert 0 <= by_step["comm/overlap_pct"][step] <= 100
        assert by_step["comm/busbw_gbit_s"][step] > 0
        assert 0 <= by_step["time/exposed_comm_ms"][step] <= by_step["comm/time_ms"][step] <= step_ms
        assert by_step["net/wire_ratio"][step] >= 1.0  # loopback carried at least the ring expectation
        assert by_step["ranks/step_ms_min"][step] <= by_step["ranks/step_ms_max"][step]
    summary = read_summary(run_dir)
    comm, net = summary["comm"], summary["net"]
    for key in ("hook", "grad_bytes_per_step", "sent_bytes_per_step", "buckets_per_step", "time_ms_median",
                "exposed_ms_median", "overlap_pct", "busbw_gbit_s_median", "timelines"):
        assert key in comm, key
    assert comm["buckets_per_step"] > 1
    for key in ("iface", "tx_bytes_per_step", "wire_ratio"):
        assert key in net, key
    assert net["iface"] == "lo" and net["tx_bytes_per_step"] >= net["expected_tx_bytes_per_step"]
    timeline = comm["timelines"][0]
    assert sum(b["sent_bytes"] for b in timeline["buckets"]) == comm["sent_bytes_per_step"]
    assert all(b["done_ms"] >= b["ready_ms"] for b in timeline["buckets"])
    assert all(b["ready_max_ms"] >= b["ready_ms"] for b in timeline["buckets"])  # the peer's readiness, aligned
    assert (run_dir / "report.png").stat().st_size > 10_000
    assert "Communication per step (hook allreduce, gloo, world 2" in done.stdout

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0, "histograms": 0})
    acc.Reload()
    assert "comm/bucket_bytes" in acc.Tags()["histograms"]
    assert any(t.startswith("comm/ddp") for t in acc.Tags()["tensors"])
    layout = acc.Tensors("custom_scalars__config__")[0] if "custom_scalars__config__" in acc.Tags()["tensors"] else None
    assert layout is not None  # the "Network" dashboard ships with the run
