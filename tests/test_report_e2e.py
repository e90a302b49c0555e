"""What a user sees at the console and in the run folder, from real runs."""
from __future__ import annotations

import re

from tests.runner import python_m, read_summary, torchrun
from tests.tiny import tiny


def test_two_rank_run_explains_its_figures_and_names_the_next_commands(tmp_path):
    run_dir = tmp_path / "run"
    # The debug MLP's 0.2 MB of gradients fit DDP's default 25 MiB bucket: one bucket, no overlap.
    done = torchrun(["-m", "train", "--recipe", "mlp", "--run-dir", str(run_dir),
                     *tiny("mlp", "train.eval_every=2", steps=4)])
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert len(re.findall(r"step +\d+/4 \| eval loss \d+\.\d{4}", out)) == 2
    assert re.search(r"one bucket \(0\.19 MiB of grads <= dist\.bucket_cap_mb=25\).*dist\.bucket_cap_mb=0\.024", out)
    assert "lo counts all 2 local ranks" in out and "loopback is no link" in out
    assert f"tensorboard --logdir {run_dir}" in out
    plan = f"python -m train.comm.plan {run_dir}/summary.json --world 64"
    assert plan in out
    summary = read_summary(run_dir)
    assert summary["comm"]["buckets_per_step"] == 1 and "link_gbit_s" in summary["net"]
    assert (run_dir / "report.png").stat().st_size > 10_000
    planned = python_m(plan.split()[2:])  # the printed command works as printed
    assert planned.returncode == 0, planned.stderr[-2000:]


def test_quick_start_keeps_a_loss_floor_while_eval_is_printed(tmp_path):
    """The mlp recipe as the README runs it (200 steps), in one process for speed."""
    run_dir = tmp_path / "run"
    done = python_m(["train", "--recipe", "mlp", "--run-dir", str(run_dir)], timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    train = [float(v) for v in re.findall(r"\| loss (\d+\.\d+) \|", done.stdout)]
    evals = [float(v) for v in re.findall(r"\| eval loss (\d+\.\d+)", done.stdout)]
    assert len(train) == 11 and len(evals) == 4  # log_every 20, eval_every 50
    assert train[-1] < train[0] - 0.5 and evals[-1] < evals[0]  # it learns ...
    assert min(train) > 0.5 and min(evals) > 1.0  # ... and the noisy labels keep a visible floor
    assert evals[-1] > train[-1]  # held-out loss above train loss: the gap memorising opens
    assert "no peer" in done.stdout  # world size 1 explains why nothing was measured
    assert f"--config {run_dir}/config.toml" in done.stdout and f"tensorboard --logdir {run_dir}" in done.stdout
