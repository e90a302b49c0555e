"""Where a harness step's time goes, against a textbook loop: two variants, interleaved.

    python scripts/bench_harness_parts.py --recipe mlp --steps 650

The harness (DDP's built-in all-reduce, comm.hook=none) and the textbook loop of
bench_overhead.py alternate step by step in one torchrun group of 2 gloo ranks. Rank 0 prints
the median of each part of the harness's step (Trainer.run_step, the step's figures, the log
step when one falls due) and of each variant's whole step.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_overhead import build, relaunch  # noqa: E402


def timed(parts: dict, name: str, f):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        out = f(*args, **kwargs)
        parts[name].append((time.perf_counter() - t0) * 1e3)
        return out
    return wrapper


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="mlp")
    p.add_argument("--steps", type=int, default=650)
    p.add_argument("--warmup", type=int, default=50)
    args = p.parse_args(argv)
    if "RANK" not in os.environ:
        return relaunch(argv, 2, __file__)
    import torch
    import torch.distributed as dist

    from train.metrics import Progress
    torch.set_num_threads(1)
    total = args.warmup + args.steps
    overrides = [f"train.steps={total}", "train.eval_every=0", "train.ckpt_every=0"]
    parts = {"run_step": [], "figures": [], "log step": [], "harness step": [], "textbook step": []}
    with tempfile.TemporaryDirectory() as tmp:
        harness = build(args.recipe, overrides, ["comm.hook=none"], Path(tmp))
        textbook = build(args.recipe, overrides, None, Path(tmp))
        harness.run_step = timed(parts, "run_step", harness.run_step)
        harness.comm.end_step = timed(parts, "figures", harness.comm.end_step)
        harness._log = timed(parts, "log step", harness._log)
        quiet = Progress(total, "items", False)
        for step in range(total):
            for name, variant in (("harness step", harness), ("textbook step", textbook)):
                dist.barrier()
                t0 = time.perf_counter()
                variant.train_one(step, quiet)
                if step >= args.warmup:
                    parts[name].append((time.perf_counter() - t0) * 1e3)
        harness.sink.close()
        harness.close()
    if dist.get_rank() == 0:
        print(f"# bench_harness_parts: {args.recipe}, {args.steps} steps per variant, 2 gloo ranks")
        for name, values in parts.items():
            values = values[args.warmup:] if name in ("run_step", "figures") else values
            print(f"{name:>14}: median {statistics.median(values):.3f} ms, mean {statistics.fmean(values):.3f} ms "
                  f"({len(values)} calls)")
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
