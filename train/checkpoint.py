"""Checkpoints: atomic, checksummed, loaded with weights_only=True, newest good one wins.

A checkpoint is written to a temporary file, fsynced, renamed into place, and only then
gets its `.sha256` sidecar. A file without a matching sidecar is therefore either a write cut
short or a corrupt copy: it is reported in one line and the previous good one is used.
Non-finite state is never written (`save` refuses it) and never resumed from (`load_newest`
skips it), and pruning counts only verified checkpoints, so the newest good one survives.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

import torch

from train.errors import UsageError
from train.guard import first_nonfinite

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


class NonFiniteState(ValueError):
    """A save refused: the state holds NaN or inf."""


_verified: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) whose checksum this process checked


def _is_good(path: Path) -> bool:
    """Checksum verified, once per file and process (a file this process wrote is known good)."""
    try:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in _verified:
            sidecar = path.with_suffix(".sha256")
            if not sidecar.exists() or sidecar.read_text().strip() != _sha256(path):
                return False
            _verified.add(key)
        return True
    except OSError:
        return False


def save(run_dir: Path, step: int, state: dict, keep: int) -> Path:
    """Write step_XXXXXXXX.pt atomically, then its checksum; prune behind the newest `keep` good ones.

    Refuses (NonFiniteState, nothing written, nothing pruned) a state holding NaN or inf."""
    bad = first_nonfinite(state)
    if bad is not None:
        raise NonFiniteState(f"checkpoint at step {step} refused: {bad} is not finite")
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:08d}.pt"
    _write_atomically(path, lambda f: torch.save(state, f))
    digest = _sha256(path)
    _write_atomically(path.with_suffix(".sha256"), lambda f: f.write(digest.encode()))
    st = path.stat()
    _verified.add((str(path), st.st_size, st.st_mtime_ns))
    prune(run_dir, keep)
    return path


def prune(run_dir: Path, keep: int) -> None:
    """Delete checkpoints older than the newest `keep` good ones. A bad file (no or wrong checksum)
    never counts toward `keep`, so it can never push the last good checkpoint out."""
    good = 0
    for path in list_checkpoints(run_dir):  # newest first
        if good >= keep:
            path.unlink(missing_ok=True)
            path.with_suffix(".sha256").unlink(missing_ok=True)
        elif _is_good(path):
            good += 1


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
    """The newest checkpoint that verifies, loads and holds only finite state; bad ones are
    reported and skipped (a run that diverged resumes from the last good one)."""
    for path in list_checkpoints(run_dir):
        try:
            state = load_file(path)
            bad = first_nonfinite({k: v for k, v in state.items() if k in ("model", "optimizer")})
            if bad is not None:
                raise ValueError(f"{bad} is not finite (written before the divergence guard?)")
            return path, state
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
