"""Build a real Trainer from a recipe plus overrides (whatever world the caller is in)."""
from __future__ import annotations

import tempfile
from pathlib import Path

from train.build import prepare
from train.config import load_config
from train.distributed import setup
from train.loop import Trainer


def make_trainer(recipe: str, overrides: list[str], run_dir: Path | None = None) -> Trainer:
    cfg = load_config(recipe, None, overrides)
    prepared = prepare(cfg, None)
    ctx = setup(cfg.dist)
    run_dir = run_dir or Path(tempfile.mkdtemp(prefix="gradwire-test-"))
    return Trainer(cfg, ctx, prepared.model, prepared.data, run_dir)


def load_step_params(recipe: str, overrides: list[str], steps_to_run: int = 1) -> dict:
    """Parameters after `steps_to_run` optimizer steps of the real loop."""
    trainer = make_trainer(recipe, overrides)
    for step in range(steps_to_run):
        trainer.run_step(step)
    params = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.close()
    return params
