"""Byte-level text: any file or folder, or by default the Python standard library's own sources.

Every machine with Python has the standard library, so the LSTM and the transformer learn
real text with no download. Files are read in sorted order, so every rank (and every rerun
on the same Python) sees the same bytes.
"""
from __future__ import annotations

import sysconfig
from pathlib import Path

import torch

from train.errors import ConfigError


def _files(root: str) -> list[Path]:
    if not root:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        return sorted(p for p in stdlib.glob("*.py") if p.is_file())
    path = Path(root)
    if not path.exists():
        raise ConfigError(f"data.root={root!r} does not exist")
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file())


def load_text(root: str, max_bytes: int) -> torch.Tensor:
    """The corpus as a uint8 tensor of at most max_bytes bytes."""
    chunks, total = [], 0
    for path in _files(root):
        try:
            blob = path.read_bytes()
        except OSError as e:
            if root and Path(root).is_file():
                raise ConfigError(f"data.root={root!r} cannot be read ({e.strerror})") from None
            continue  # one unreadable file in a folder is skipped, not fatal
        if b"\0" in blob[:4096]:
            continue  # binary files are not text
        chunks.append(blob[:max_bytes - total])
        total += len(chunks[-1])
        if total >= max_bytes:
            break
    if total == 0:
        raise ConfigError(f"data.root={root or '<stdlib>'!r} holds no readable text")
    return torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8)
