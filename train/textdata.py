"""Byte-level text: any file or folder, or by default the Python standard library's own sources.

Every machine with Python has the standard library, so the LSTM and the transformer learn
real text with no download. Files are read in sorted order, so every rank (and every rerun
on the same Python) sees the same bytes. A file or folder of the user's that cannot be read
is an error, not a skip: a skip could give ranks different corpora (a file readable on one
node and not on another), hence different batch plans and collectives that never match. The
read happens in the build step, before any process group, so each rank fails with one line.
"""
from __future__ import annotations

import os
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

    def unreadable(err: OSError):
        raise ConfigError(f"data.root={root!r}: folder {err.filename!r} cannot be read ({err.strerror})")
    found = []
    for folder, _, names in os.walk(path, onerror=unreadable):
        found += [p for p in (Path(folder) / n for n in names) if p.is_file()]
    return sorted(found)


def load_text(root: str, max_bytes: int) -> torch.Tensor:
    """The corpus as a uint8 tensor of at most max_bytes bytes."""
    chunks, total = [], 0
    for path in _files(root):
        try:
            blob = path.read_bytes()
        except OSError as e:
            if not root:
                continue  # the standard library is ours to pick from, not the user's corpus
            where = "" if path == Path(root) else f": file '{path}'"
            raise ConfigError(f"data.root={root!r}{where} cannot be read ({e.strerror})") from None
        if b"\0" in blob[:4096]:
            continue  # binary files are not text
        chunks.append(blob[:max_bytes - total])
        total += len(chunks[-1])
        if total >= max_bytes:
            break
    if total == 0:
        raise ConfigError(f"data.root={root or '<stdlib>'!r} holds no readable text")
    return torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8)
