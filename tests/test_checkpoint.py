"""Checkpoints: atomic and checksummed, bad files skipped, crafted pickles refused, exact resume."""
import os

import pytest
import torch

from runner import python_m, read_summary
from tiny import tiny
from train import checkpoint
from train.errors import UsageError


def test_save_prunes_and_newest_wins(tmp_path):
    for step in (1, 2, 3, 4):
        checkpoint.save(tmp_path, step, {"step": step, "w": torch.full((2,), float(step))}, keep=2)
    names = [p.name for p in checkpoint.list_checkpoints(tmp_path)]
    assert names == ["step_00000004.pt", "step_00000003.pt"]
    path, state = checkpoint.load_newest(tmp_path)
    assert state["step"] == 4 and path.name == "step_00000004.pt"


def test_truncated_newest_falls_back_to_previous(tmp_path, capsys):
    checkpoint.save(tmp_path, 1, {"step": 1}, keep=3)
    newest = checkpoint.save(tmp_path, 2, {"step": 2, "w": torch.zeros(1000)}, keep=3)
    newest.write_bytes(newest.read_bytes()[:100])  # a write cut short (or a disk that lost the tail)
    path, state = checkpoint.load_newest(tmp_path)
    assert state["step"] == 1
    assert "skipping checkpoint" in capsys.readouterr().err


def test_write_interrupted_before_checksum_is_not_used(tmp_path):
    checkpoint.save(tmp_path, 1, {"step": 1}, keep=3)
    # A process killed after the rename but before the checksum: the file has no sidecar.
    torch.save({"step": 2}, checkpoint.checkpoint_dir(tmp_path) / "step_00000002.pt")
    assert checkpoint.load_newest(tmp_path)[1]["step"] == 1


class Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_crafted_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = checkpoint.checkpoint_dir(tmp_path) / "step_00000009.pt"
    evil.parent.mkdir(parents=True)
    torch.save({"step": 9, "x": Payload()}, evil)  # torch.save pickles the payload
    evil.with_suffix(".sha256").write_text(checkpoint._sha256(evil))  # even with a valid checksum
    with pytest.raises(UsageError, match="cannot be loaded safely"):
        checkpoint.load_explicit(str(evil))
    assert checkpoint.load_newest(tmp_path) is None
    assert not (tmp_path / "PWNED").exists()
    torch.load(evil, weights_only=False)  # the payload is real: an unsafe load does run it
    assert (tmp_path / "PWNED").exists()


def final_params(run_dir):
    return torch.load(checkpoint.list_checkpoints(run_dir)[0], weights_only=True)["model"]


@pytest.mark.parametrize("recipe", ["mlp", "transformer"])
def test_stop_and_resume_is_bit_identical(tmp_path, recipe):
    # A constant schedule makes "3 steps of a 6-step run" and "a 3-step run" the same run;
    # the cosine case is covered by the kill-and-restart tests.
    base = tiny(recipe, "train.ckpt_every=3", "optim.decay=constant", "optim.warmup_steps=0", steps=6)
    whole = python_m(["train", "--recipe", recipe, "--run-dir", str(tmp_path / "whole"), *base])
    assert whole.returncode == 0, whole.stderr
    part = tmp_path / "part"
    first = python_m(["train", "--recipe", recipe, "--run-dir", str(part), *base, "train.steps=3"])
    assert first.returncode == 0, first.stderr
    second = python_m(["train", "--recipe", recipe, "--run-dir", str(part), *base, "train.resume=auto"])
    assert second.returncode == 0, second.stderr
    assert read_summary(part)["start_step"] == 3
    a, b = final_params(tmp_path / "whole"), final_params(part)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
