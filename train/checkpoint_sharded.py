"""Sharded checkpoints with torch.distributed.checkpoint (DCP): every rank writes its own shards.

A save goes to a hidden temporary folder; when every rank has written, rank 0 adds the small
train state (step, RNG streams, scheduler, scaler) and renames the folder into place, so a crash
during a save leaves the previous checkpoint as the newest. DCP reshards on load, so a run can
resume at another world size or under another strategy that loads through DCP.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from train.checkpoint import checkpoint_dir

PATTERN = re.compile(r"^step_(\d{8})\.dcp$")
TRAIN_STATE = "train_state.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete sharded checkpoints of a run, newest first (temporary folders never match)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if PATTERN.match(p.name) and (p / TRAIN_STATE).is_file()),
                  key=lambda p: p.name, reverse=True)


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def save(run_dir: Path, step: int, model, optimizer, train_state: dict, keep: int, is_main: bool) -> Path:
    """Collective: every rank calls it."""
    folder = checkpoint_dir(run_dir)
    final, tmp = folder / f"step_{step:08d}.dcp", folder / f".step_{step:08d}.dcp.tmp"
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp))
    _barrier()  # every rank's shards are on disk before the folder becomes visible
    if is_main:
        with open(tmp / TRAIN_STATE, "wb") as f:
            torch.save(train_state, f)
            f.flush()
            os.fsync(f.fileno())
        shutil.rmtree(final, ignore_errors=True)  # a rerun of the same step (resume after a crash)
        os.replace(tmp, final)
        for old in list_checkpoints(run_dir)[keep:]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def read_train_state(path: Path) -> dict:
    """The small rank-0 part; weights_only: nothing but tensors and plain containers loads."""
    try:
        return torch.load(Path(path) / TRAIN_STATE, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot be loaded safely ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def load_newest(run_dir: Path) -> tuple[Path, dict] | None:
    for path in list_checkpoints(run_dir):
        try:
            return path, read_train_state(path)
        except ValueError as e:
            print(f"gradwire: warning: skipping checkpoint {path}: {e}", file=sys.stderr)
    return None


def load_into(path: Path, model, optimizer) -> None:
    """Collective: load the shards this rank needs, whatever the world size that wrote them."""
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
