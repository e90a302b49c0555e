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
