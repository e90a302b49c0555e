"""Faults, for real: SIGTERM, a SIGKILLed rank under --max-restarts, a peer that stops answering."""
import os
import signal
import subprocess
import sys
import time

import psutil
import torch

from runner import REPO, env, read_scalars, read_summary
from tiny import tiny
from train import checkpoint

LONG = tiny("mlp", "model.flavor=small", "train.log_every=10", steps=100000)


def popen(args, nproc=None, extra=()):
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *extra] \
        if nproc else [sys.executable]
    return subprocess.Popen([*head, "-m", "train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env(), cwd=REPO, start_new_session=True)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def wait_for_progress(proc: subprocess.Popen) -> None:
    """Block until rank 0 printed a progress line after a few steps (pytest-timeout bounds it)."""
    while not proc.stdout.readline().startswith("step     10/"):
        assert proc.poll() is None, "the run ended before it made progress"


def newest_step(run_dir) -> int:
    found = checkpoint.list_checkpoints(run_dir)
    return int(found[0].name[5:13]) if found else -1


def worker(proc: subprocess.Popen, rank: int) -> psutil.Process | None:
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "train" in child.cmdline():
                return child
        except psutil.Error:
            continue
    return None


def kill_rank_1_once(proc: subprocess.Popen, ready, what: str) -> str:
    """When `ready()` holds, SIGKILL rank 1's worker; wait for the restarted group to finish.
    Returns torchrun's stderr; the whole process group is killed if anything hangs."""
    try:
        wait_for(ready, 120, what)
        victim = wait_for(lambda: worker(proc, 1), 10, "rank 1's process")
        victim.send_signal(signal.SIGKILL)
        try:
            _, err = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"restarted group did not finish:\n{(e.stderr or b'')[-6000:]!r}") from None
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    assert proc.returncode == 0, err[-3000:]
    return err


def test_sigterm_checkpoints_flushes_and_exits_143(tmp_path):
    run_dir = tmp_path / "run"
    proc = popen(["--recipe", "mlp", "--run-dir", str(run_dir), *LONG])
    try:
        wait_for_progress(proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    summary = read_summary(run_dir)
    assert summary["stopped_by_signal"] == signal.SIGTERM and not summary["completed"]
    assert 0 < summary["steps"] < 100000
    assert newest_step(run_dir) == summary["steps"]  # the final checkpoint is the step it stopped at
    assert len(read_scalars(run_dir)["train/loss"]) >= 1


def run_to_end(run_dir, overrides, extra=()):
    proc = popen(["--recipe", "mlp", "--run-dir", str(run_dir), *overrides], nproc=2, extra=extra)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]


def test_sigkilled_rank_restarts_and_matches_uninterrupted_run(tmp_path):
    overrides = tiny("mlp", "model.flavor=small", "train.ckpt_every=20", "train.log_every=50",
                     "train.resume=auto", steps=400)
    run_to_end(tmp_path / "whole", overrides)
    run_dir = tmp_path / "killed"
    proc = popen(["--recipe", "mlp", "--run-dir", str(run_dir), *overrides], nproc=2, extra=["--max-restarts=2"])
    kill_rank_1_once(proc, lambda: newest_step(run_dir) >= 60, "a checkpoint at step 60")
    summary = read_summary(run_dir)
    assert summary["completed"] and 0 < summary["start_step"] < 400  # the restarted group resumed
    a = torch.load(checkpoint.list_checkpoints(tmp_path / "whole")[0], weights_only=True)["model"]
    b = torch.load(checkpoint.list_checkpoints(run_dir)[0], weights_only=True)["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_peer_that_stops_answering_fails_the_job_within_the_timeout(tmp_path):
    run_dir = tmp_path / "run"
    proc = popen(["--recipe", "mlp", "--run-dir", str(run_dir), *LONG, "dist.timeout_s=4"], nproc=2)
    stopped = None
    try:
        wait_for_progress(proc)
        stopped = wait_for(lambda: worker(proc, 1), 10, "rank 1's process")
        stopped.suspend()  # SIGSTOP: alive but silent, the worst kind of peer
        t0 = time.monotonic()
        line = ""
        while "gradwire: error: rank 0" not in line:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "torchrun ended without rank 0's error"
            assert time.monotonic() - t0 < 4 + 20, "rank 0 did not give up within timeout + margin"
        elapsed = time.monotonic() - t0
    finally:
        if stopped is not None:
            stopped.kill()
        try:
            proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert elapsed < 4 + 20
    assert "all_reduce" in line or "all_gather" in line  # it says which collective it was waiting on
    assert "dist.timeout_s=4" in line
    assert proc.returncode != 0
    assert len(read_scalars(run_dir)["train/loss"]) >= 1  # what was logged before the hang is on disk


def test_restarted_workers_continue_the_run_without_resume_auto(tmp_path):
    # No train.resume=auto: a restarted worker must still continue this job's run, not exit 2
    # ("already holds a run") until torchrun's restarts are used up.
    run_dir = tmp_path / "run"
    overrides = tiny("mlp", "train.ckpt_every=10", "train.log_every=50", steps=300)
    proc = popen(["--recipe", "mlp", "--run-dir", str(run_dir), *overrides], nproc=2, extra=["--max-restarts=1"])
    err = kill_rank_1_once(proc, lambda: newest_step(run_dir) >= 20, "a checkpoint at step 20")
    assert "already holds a run" not in err and "torchrun restart 1: continuing this run" in err
    summary = read_summary(run_dir)
    assert summary["completed"] and 0 < summary["start_step"] < 300
