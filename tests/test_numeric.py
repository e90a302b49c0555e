"""Non-finite numbers: refused up front, stopped at the step they appear, never checkpointed."""
import math
import subprocess
import sys

import pytest
import torch

from mp import run_ranks
from runner import REPO, env, python_m, read_summary
from tests_support import make_trainer
from tiny import tiny
from train import checkpoint, checkpoint_sharded
from train.config import load_config
from train.errors import ConfigError
from train.guard import INJECT_ENV, Divergence, Guard, all_ranks_ok, first_nonfinite

# -- up front: every numeric setting finite and in range ------------------------------------

@pytest.mark.parametrize("override, fragment", [
    ("optim.lr=nan", "optim.lr=nan is not a finite number (must be finite and > 0)"),
    ("optim.lr=inf", "optim.lr=inf is not a finite number"),
    ("optim.weight_decay=nan", "optim.weight_decay=nan"),
    ("optim.beta1=1.0", "optim.beta1=1.0 is out of range (must be >= 0 and < 1)"),
    ("optim.beta2=nan", "optim.beta2=nan"),
    ("optim.eps=inf", "optim.eps=inf"),
    ("optim.momentum=-inf", "optim.momentum=-inf"),
    ("optim.min_lr_ratio=nan", "optim.min_lr_ratio=nan"),
    ("optim.grad_clip=inf", "optim.grad_clip=inf"),
    ("train.peak_tflops=nan", "train.peak_tflops=nan"),
    ("train.seed=-1", "train.seed=-1 is out of range"),
    ("dist.timeout_s=inf", "dist.timeout_s=inf"),
    ("dist.timeout_s=1e300", "dist.timeout_s=1e+300 is out of range"),
    ("dist.bucket_cap_mb=nan", "dist.bucket_cap_mb=nan"),
    ("data.eval_fraction=nan", "data.eval_fraction=nan"),
    ("train.nonfinite=skip:0", "train.nonfinite='skip:0' is not allowed (choose stop or skip:N with 1 <= N"),
    ("train.nonfinite=ignore", "train.nonfinite='ignore' is not allowed"),
])
def test_numeric_settings_must_be_finite_and_in_range(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config("mlp", None, [override])
    assert fragment in str(err.value)


def test_a_bounded_skip_policy_is_accepted():
    assert load_config("mlp", None, ["train.nonfinite=skip:3"]).train.nonfinite == "skip:3"


# -- the guard, in one process ---------------------------------------------------------------

def params(trainer) -> dict:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_stop_policy_stops_before_the_update(monkeypatch):
    monkeypatch.setenv(INJECT_ENV, "1")
    trainer = make_trainer("mlp", tiny("mlp", steps=4))
    trainer.run_step(0)
    before = params(trainer)
    with pytest.raises(Divergence) as err:
        trainer.run_step(1)
    assert err.value.step == 1 and err.value.figure == "train/grad_norm" and math.isnan(err.value.value)
    after = params(trainer)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the bad step changed nothing


def test_skip_policy_skips_a_bounded_number_of_steps_and_logs_each(monkeypatch, capsys):
    monkeypatch.setenv(INJECT_ENV, "2,3")
    summary = make_trainer("mlp", tiny("mlp", "train.nonfinite=skip:2", steps=6)).run()
    assert summary["completed"] and summary["stopped_by"] is None
    assert summary["nonfinite"]["skipped_steps"] == [2, 3]
    warnings = [l for l in capsys.readouterr().err.splitlines() if "update skipped" in l]
    assert len(warnings) == 2 and "step 2:" in warnings[0] and "step 3:" in warnings[1]

    summary = make_trainer("mlp", tiny("mlp", "train.nonfinite=skip:1", steps=6)).run()
    assert not summary["completed"] and summary["stopped_by"] == "nonfinite"
    assert summary["steps"] == 3 and summary["nonfinite"]["stopped"]["step"] == 3


def test_fp16_keeps_the_scalers_skip_and_rescale(monkeypatch):
    monkeypatch.setenv(INJECT_ENV, "2")
    trainer = make_trainer("mlp", tiny("mlp", "train.precision=fp16", steps=5))
    summary = trainer.run()
    assert summary["completed"] and summary["nonfinite"]["skipped_steps"] == []
    assert trainer.scaler.get_scale() == 2.0 ** 15  # the scaler skipped step 2 and halved its scale


def test_fp16_stops_once_the_scaler_cannot_be_the_answer():
    # lr=1e30 blows the weights up after one step: every later gradient is NaN, whatever the scale.
    trainer = make_trainer("mlp", tiny("mlp", "train.precision=fp16", "optim.lr=1e30", steps=40))
    summary = trainer.run()
    assert summary["stopped_by"] == "nonfinite" and not summary["completed"]
    assert trainer.scaler.get_scale() < 1.0 and "grad scaler" in summary["nonfinite"]["stopped"]["why"]


def test_a_checkpoint_of_nonfinite_state_is_refused(tmp_path):
    trainer = make_trainer("mlp", tiny("mlp", steps=4), run_dir=tmp_path)
    trainer.save_checkpoint(1)
    with torch.no_grad():
        next(trainer.model.parameters())[0] = float("inf")
    with pytest.raises(Divergence, match="checkpoint refused"):
        trainer.save_checkpoint(2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step_00000001.pt"]
    with pytest.raises(checkpoint.NonFiniteState, match="not finite"):
        checkpoint.save(tmp_path, 3, {"optimizer": {"state": {0: {"exp_avg": torch.tensor([math.nan])}}}}, keep=1)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step_00000001.pt"]


def test_rotation_never_prunes_the_newest_good_behind_bad_files(tmp_path):
    for step in (1, 2):
        checkpoint.save(tmp_path, step, {"w": torch.ones(2)}, keep=2)
    torn = checkpoint.checkpoint_dir(tmp_path) / "step_00000003.pt"
    torch.save({"w": torch.ones(2)}, torn)  # renamed into place, killed before its checksum
    checkpoint.save(tmp_path, 4, {"w": torch.ones(2)}, keep=2)
    names = [p.name for p in checkpoint.list_checkpoints(tmp_path)]
    assert "step_00000002.pt" in names and "step_00000001.pt" not in names  # two good ones kept


def test_resume_skips_a_nonfinite_checkpoint(tmp_path, capsys):
    checkpoint.save(tmp_path, 1, {"step": 1, "model": {"w": torch.ones(2)}}, keep=3)
    nan = checkpoint.checkpoint_dir(tmp_path) / "step_00000002.pt"  # as an unguarded version wrote them
    torch.save({"step": 2, "model": {"w": torch.full((2,), math.nan)}}, nan)
    nan.with_suffix(".sha256").write_text(checkpoint._sha256(nan))
    path, state = checkpoint.load_newest(tmp_path)
    assert state["step"] == 1 and "model.w is not finite" in capsys.readouterr().err


def test_first_nonfinite_names_the_entry():
    assert first_nonfinite({"model": {"a": torch.ones(3), "b": torch.tensor([1.0, math.inf])}}) == "model.b"
    assert first_nonfinite({"model": {"a": torch.ones(3)}, "lr": [0.1], "rng": [torch.zeros(4, dtype=torch.uint8)]}) is None
    assert first_nonfinite({"scheduler": {"_last_lr": [math.nan]}}) == "scheduler._last_lr[0]"


# -- every rank agrees ------------------------------------------------------------------------

def _verdicts(rank, world):
    assert all_ranks_ok(True) is True
    assert all_ranks_ok(rank != 1) is False  # one rank's bad state is every rank's verdict
    _fsdp_guard(rank)


def _fsdp_guard(rank):
    from torch.distributed.fsdp import fully_shard
    torch.manual_seed(0)
    model = fully_shard(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1)))
    guard = Guard("stop", rank, False, loud=False)
    loss = model(torch.randn(4, 8)).pow(2).mean()
    (loss * float("nan") if rank == 1 else loss).backward()  # NaN on rank 1 only
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # a DTensor, reduced over ranks
    with pytest.raises(Divergence, match="train/grad_norm=nan"):
        guard.admit(3, norm, torch.amp.GradScaler("cpu", enabled=False))
    with torch.no_grad():  # one rank's shard goes bad: every rank refuses the checkpoint
        next(model.parameters()).to_local().fill_(math.nan if rank == 1 else 0.0)
    with pytest.raises(Divergence, match="checkpoint refused"):
        guard.check_state(4, {"model": model.state_dict()}, torch.device("cpu"))


def test_all_ranks_share_the_verdict_under_fsdp_too(tmp_path):
    """The verdict helper, and the guard on FSDP2's DTensor norm and sharded state (2 gloo ranks)."""
    run_ranks(_verdicts, 2, tmp_path)


# -- end to end: the cases ----------------------------------------------------------

@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_nan_on_one_rank_stops_every_rank_at_that_step_and_resume_uses_the_last_good(tmp_path, strategy):
    run_dir = tmp_path / "run"
    args = ["--recipe", "mlp", "--run-dir", str(run_dir), f"dist.strategy={strategy}",
            *tiny("mlp", "train.ckpt_every=2", steps=8)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "train", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO,
                          env={**env(), INJECT_ENV: "5:1"})  # NaN loss at step 5, on rank 1 only
    assert done.returncode != 0
    errors = [l for l in done.stderr.splitlines() if l.startswith("gradwire: error:")]
    assert len(errors) == 1 and "step 5: train/grad_norm=nan is not finite" in errors[0], done.stderr[-3000:]
    # Rank 0 printed the line; rank 1, the poisoned one, left through the guard's exit code too
    # (torchrun may stop rank 0 before its own exit, so only one exit code is certain).
    assert "exitcode  : 3" in done.stderr
    summary = read_summary(run_dir)
    assert summary["completed"] is False and summary["stopped_by"] == "nonfinite" and summary["steps"] == 5
    assert summary["nonfinite"]["stopped"]["figure"] == "train/grad_norm"
    lister = checkpoint.list_checkpoints if strategy == "ddp" else checkpoint_sharded.list_checkpoints
    assert lister(run_dir)[0].name.startswith("step_00000004.")  # the one before the bad step
    if strategy != "ddp":
        return  # DCP resume is the sharded tests' business; the step it resumes from is checked above

    again = python_m(["train", *args, "train.resume=auto"], timeout=180)  # no injection now
    assert again.returncode == 0, again.stderr
    summary = read_summary(run_dir)
    assert summary["start_step"] == 4 and summary["completed"] and summary["stopped_by"] is None


def test_a_diverging_run_exits_3_and_never_checkpoints_nan(tmp_path):
    run_dir = tmp_path / "run"
    done = python_m(["train", "--recipe", "mlp", "--run-dir", str(run_dir), "optim.lr=1e30",
                     *tiny("mlp", "train.ckpt_every=1", "train.keep_ckpts=2", steps=30)])
    assert done.returncode == 3, done.stderr
    assert sum(l.startswith("gradwire: error: step ") for l in done.stderr.splitlines()) == 1
    summary = read_summary(run_dir)
    assert summary["completed"] is False and summary["stopped_by"] == "nonfinite" and summary["steps"] < 30
    assert "NaN" not in (run_dir / "summary.json").read_text()  # strict JSON
    found = checkpoint.list_checkpoints(run_dir)
    assert found
    for path in found:
        assert first_nonfinite(torch.load(path, weights_only=True)) is None, path
