"""Checkpoints: atomic, checksummed, loaded with weights_only=True, newest good one wins.

A checkpoint is written to a temporary file, fsynced, renamed into place, and only then
gets its `.sha256` sidecar. A file without a matching sidecar is therefore either a write cut
short or a corrupt copy: it is reported in one line and the previous good one is used.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

import torch

from train.errors import UsageError

PATTERN = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomically(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save(run_dir: Path, step: int, state: dict, keep: int) -> Path:
    """Write step_XXXXXXXX.pt atomically, then its checksum; prune to the newest `keep`."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:08d}.pt"
    _write_atomically(path, lambda f: torch.save(state, f))
    _write_atomically(path.with_suffix(".sha256"), lambda f: f.write(_sha256(path).encode()))
    for old in list_checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)
        old.with_suffix(".sha256").unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files of a run, newest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if PATTERN.match(p.name)]
    return sorted(found, key=lambda p: p.name, reverse=True)


def load_file(path: Path) -> dict:
    """Load one checkpoint, refusing anything but tensors and plain containers (no code runs)."""
    sidecar = Path(path).with_suffix(".sha256")
    if not sidecar.exists():
        raise ValueError("no checksum (its write never finished)")
    if sidecar.read_text().strip() != _sha256(Path(path)):
        raise ValueError("checksum mismatch (truncated or corrupt)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for crafted files, RuntimeError for broken zips
        raise ValueError(f"cannot be loaded safely ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def load_newest(run_dir: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint that verifies and loads; bad ones are reported and skipped."""
    for path in list_checkpoints(run_dir):
        try:
            return path, load_file(path)
        except ValueError as e:
            print(f"gradwire: warning: skipping checkpoint {path}: {e}", file=sys.stderr)
    return None


def load_explicit(path: str) -> tuple[Path, dict]:
    """train.resume=<path>: the user named the file, so a bad one is an error, not a skip."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"train.resume={path!r} does not exist")
    try:
        return p, load_file(p)
    except ValueError as e:
        raise UsageError(f"train.resume={path!r} {e}") from None
