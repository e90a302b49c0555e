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

SNIFF = 4096  # bytes looked at to tell a binary file (it holds a NUL) from text


def _files(root: str) -> list[Path]:
    if not root:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        return sorted(p for p in stdlib.glob("*.py") if p.is_file())
    path = Path(root)
    if not path.exists():
        raise ConfigError(f"data.root={root!r} does not exist")
    if path.is_file():
        return [path]
    # Hidden files and folders (.git, .DS_Store) are tooling, not corpus.
    return sorted(p for p in path.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))


def load_text(root: str, max_bytes: int) -> torch.Tensor:
    """The corpus as a uint8 tensor of at most max_bytes bytes."""
    chunks, total = [], 0
    for path in _files(root):
        try:
            with path.open("rb") as f:
                blob = f.read(max_bytes - total)
        except OSError as e:
            # Fail rather than skip: a file one rank can read and another cannot would give
            # the ranks different corpora, and so different items under the same index.
            raise ConfigError(f"data.root={root!r}: cannot read '{path}' ({e.strerror or e})") from None
        if b"\0" in blob[:SNIFF]:
            continue  # binary files are not text
        chunks.append(blob)
        total += len(blob)
        if total >= max_bytes:
            break
    if total == 0:
        raise ConfigError(f"data.root={root or '<stdlib>'!r} holds no readable text")
    return torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8)
