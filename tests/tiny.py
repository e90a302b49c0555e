"""Tiny configurations shared by the tests: debug flavors, small corpora, few steps."""
from __future__ import annotations

TINY = {
    "mlp": ["model.flavor=debug", "data.num_samples=512", "train.batch_size=32"],
    "lstm": ["model.flavor=debug", "data.max_bytes=200000", "data.seq_len=32", "train.batch_size=8"],
    "transformer": ["model.flavor=debug", "data.max_bytes=200000", "data.seq_len=32", "train.batch_size=8"],
}


def tiny(recipe: str, *extra: str, steps: int = 4) -> list[str]:
    return [*TINY[recipe], f"train.steps={steps}", "train.log_every=1", "train.eval_every=0", *extra]
