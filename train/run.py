"""One run's lifecycle once the input is known to be good: group, folder, trainer, outputs."""
from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import torch.distributed as dist

from train.build import Prepared, clear_old_run, fresh_run_dir
from train.comm.measure.report import link_rate_gbit_s, network_layout, next_steps, summary_table, write_png
from train.config import to_toml
from train.distributed import DistContext, seed_everything, setup, teardown
from train.guard import DIVERGED_EXIT
from train.loop import Trainer
from train.metrics import NullSink, TensorBoardSink, write_json_atomically
from train.perf import peak_tflops
from train.signals import StopRequest


def agree_on_run_dir(prepared: Prepared, ctx: DistContext) -> Path:
    """Rank 0 names a fresh folder; every rank must write checkpoints and read them from the same one."""
    if prepared.run_dir is not None:
        return prepared.run_dir
    name = [str(fresh_run_dir(prepared.cfg)) if ctx.is_main else None]
    if ctx.distributed:
        dist.broadcast_object_list(name, src=0)
    return Path(name[0])


def open_run_dir(prepared: Prepared, run_dir: Path) -> None:
    """Rank 0 only. Files get the user's umask: nothing here is made world-writable."""
    fresh = prepared.cfg.train.overwrite and prepared.resume is None
    run_dir.mkdir(parents=True, exist_ok=True)
    if fresh:
        clear_old_run(run_dir)
    (run_dir / "config.toml").write_text(to_toml(prepared.cfg))


def run(prepared: Prepared, debug: bool = False) -> int:
    cfg = prepared.cfg
    stop = StopRequest().install()
    ctx = setup(cfg.dist)
    seed_everything(cfg.train.seed, ctx.rank)
    run_dir = agree_on_run_dir(prepared, ctx)
    sink = NullSink()
    if ctx.is_main:
        open_run_dir(prepared, run_dir)
        sink = TensorBoardSink(run_dir)
    trainer = None
    try:
        trainer = Trainer(cfg, ctx, prepared.model, prepared.data, run_dir, sink, prepared.resume, stop)
        trainer.comm.steps.first_step = trainer.start_step  # report.png numbers a resumed run's steps as it does
        sink.custom_layout(network_layout(  # only charts this run will fill
            getattr(cfg.dist, "strategy", "ddp"), ctx.world_size, measured=trainer.comm.enabled,
            unit=prepared.model.unit, eval_loss=cfg.train.eval_every > 0,
            mfu=peak_tflops(ctx.device, cfg.train.peak_tflops) is not None))
        summary = trainer.run()
        if ctx.is_main:
            summary["run_dir"] = str(run_dir)
            summary["stopped_by_signal"] = stop.signum
            if summary.get("net", {}).get("iface"):
                summary["net"]["link_gbit_s"] = link_rate_gbit_s(summary["net"]["iface"].split(","))
            write_json_atomically(run_dir / "summary.json", summary)
            write_png(trainer.comm.steps, run_dir / "report.png", summary)
            print(summary_table(summary), flush=True)
            print(f"run folder: {run_dir}", flush=True)
            print(next_steps(run_dir, summary), flush=True)
    except Exception as e:  # a dead peer, a timed-out collective: say which, flush, exit non-zero
        sink.close()
        if debug:
            traceback.print_exc()
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        where = f" during {trainer.phase}" if trainer is not None else ""
        print(f"gradwire: error: rank {ctx.rank}{where} (dist.timeout_s={cfg.dist.timeout_s:g}): "
              f"{type(e).__name__}: {first[:500]}", file=sys.stderr, flush=True)
        sys.stderr.flush()
        sys.stdout.flush()
        # No teardown: a barrier with a dead peer would hang for another timeout. Leave at once.
        os._exit(1)
    sink.close()
    trainer.close()
    del trainer
    teardown()
    # A diverged run stopped on every rank at the same step: a clean teardown, but not a success.
    return DIVERGED_EXIT if summary["stopped_by"] == "nonfinite" else stop.exit_code
