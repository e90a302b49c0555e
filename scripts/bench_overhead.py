"""What measuring costs, step by step: recorded vs the same strategy unrecorded vs a textbook loop.

    python scripts/bench_overhead.py --recipe mlp --steps 400
    python scripts/bench_overhead.py --recipe transformer --steps 120
    python scripts/bench_overhead.py --recipe mlp --steps 400 dist.strategy=fsdp

It re-launches itself under torchrun (2 gloo processes) and builds, in one process group,
trainers on the same model, data and batch: the harness recording (comm.record=true), the
harness with the same hook or strategy unrecorded (comm.record=false), for DDP the harness
with DDP's built-in all-reduce (comm.hook=none), and a textbook loop (DDP or fully_shard,
forward, backward, clip, optimizer, scheduler: nothing else). Their steps are interleaved
(A B C D, then B C D A, ...) so drifts of this shared 2-core machine hit all of them alike; every harness step is the loop's whole step (Trainer.train_one: the step, its figures,
the log step every train.log_every with its gather and TensorBoard writes). Rank 0 times each
step with a host clock and prints medians, their ratios, and the ratios in 5 blocks of the
run (their spread says how well the figure is resolved).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def relaunch(argv: list[str], nproc: int, script: str = __file__) -> int:
    """Run `script` with `argv` again under torchrun (nproc gloo ranks, one thread each)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", script, *argv]
    return subprocess.run(cmd, env=env, cwd=REPO).returncode


class Textbook:
    """The loop a tutorial writes: wrap, forward, backward, clip, step. Same model, data, batch."""

    def __init__(self, cfg, prepared, ctx):
        import torch
        from torch.nn.parallel import DistributedDataParallel as DDP

        from train.data import ShardedBatches
        from train.optim import build_optimizer, build_scheduler
        self.torch, self.cfg, self.data = torch, cfg, prepared.data
        model = prepared.model
        if cfg.dist.strategy == "ddp":
            self.module = DDP(model)
        else:
            from torch.distributed.fsdp import fully_shard
            for unit in model.shard_units():
                fully_shard(unit)
            self.module = fully_shard(model)
        self.model = model
        self.optimizer = build_optimizer(cfg.optim, model.parameters())
        self.scheduler = build_scheduler(cfg.optim, self.optimizer, cfg.train.steps)
        t = cfg.train
        self.batches = ShardedBatches(len(self.data.train), t.batch_size, ctx.rank, ctx.world_size, 1, t.seed)

    def train_one(self, step: int, _progress) -> None:
        inputs, targets = self.data.train.get(self.batches.indices(step, 0))
        loss = self.module(inputs, targets)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip or float("inf"))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()


VARIANTS = {  # name -> comm overrides of a harness Trainer, or None for the textbook loop
    "recorded": ["comm.record=true"],
    "unrecorded": ["comm.record=false"],   # the same hook (DDP) or strategy (FSDP), unmeasured
    "no-hook": ["comm.hook=none"],         # DDP's built-in C++ all-reduce inside the harness
    "textbook": None,
}


def build(recipe: str, overrides: list[str], extra: list[str] | None, folder: Path):
    """A harness Trainer with `extra` overrides, or the textbook loop (extra None)."""
    from train.build import prepare
    from train.config import load_config
    from train.distributed import setup
    from train.loop import Trainer
    from train.metrics import NullSink, TensorBoardSink
    cfg = load_config(recipe, None, [*overrides, *(extra or [])])
    prepared = prepare(cfg, None)
    ctx = setup(cfg.dist)
    if extra is None:
        return Textbook(cfg, prepared, ctx)
    run_dir = folder / "-".join(extra).replace("=", "_")
    sink = TensorBoardSink(run_dir) if ctx.is_main else NullSink()  # the harness writes its events, as in a run
    return Trainer(cfg, ctx, prepared.model, prepared.data, run_dir, sink)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="mlp")
    p.add_argument("--steps", type=int, default=400, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps per variant first")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("overrides", nargs="*", help="dotted overrides for all variants, e.g. dist.strategy=fsdp")
    args = p.parse_args(argv)
    if "RANK" not in os.environ:
        return relaunch(argv, args.nproc)
    import torch
    import torch.distributed as dist

    from train.metrics import Progress
    torch.set_num_threads(1)
    total = args.warmup + args.steps
    overrides = [*args.overrides, f"train.steps={total}", "train.eval_every=0", "train.ckpt_every=0"]
    sharded = any(o.startswith("dist.strategy=") and not o.endswith("=ddp") for o in args.overrides)
    names = tuple(n for n in VARIANTS if not (sharded and n == "no-hook"))  # FSDP has no DDP hook
    with tempfile.TemporaryDirectory() as tmp:
        variants = {n: build(args.recipe, overrides, VARIANTS[n], Path(tmp)) for n in names}
        quiet = Progress(total, "items", False)
        times: dict[str, list[float]] = {n: [] for n in names}
        for step in range(total):
            for k in range(len(names)):
                name = names[(step + k) % len(names)]  # rotate who goes first
                dist.barrier()  # every variant starts its step with both ranks ready
                t0 = time.perf_counter()
                variants[name].train_one(step, quiet)
                if step >= args.warmup:
                    times[name].append((time.perf_counter() - t0) * 1e3)
        for v in variants.values():
            if hasattr(v, "close"):
                v.sink.close()
                v.close()
    if dist.get_rank() == 0:
        report(args, times)
    dist.barrier()
    dist.destroy_process_group()
    return 0


def report(args, times: dict[str, list[float]]) -> None:
    med = {n: statistics.median(v) for n, v in times.items()}
    print(f"# bench_overhead: {args.recipe} {' '.join(args.overrides)}, {args.steps} interleaved steps per variant, "
          f"{args.nproc} gloo ranks")
    for n, m in med.items():
        print(f"{n:>11}: median {m:.3f} ms/step")
    blocks = 5
    pairs = [("recorded", "unrecorded"), ("recorded", "textbook"), ("unrecorded", "no-hook"), ("no-hook", "textbook")]
    for a, b in (pair for pair in pairs if pair[0] in times and pair[1] in times):
        size = len(times[a]) // blocks
        per_block = [statistics.median(times[a][i * size:(i + 1) * size]) / statistics.median(times[b][i * size:(i + 1) * size])
                     for i in range(blocks)]
        print(f"{a} / {b}: {med[a] / med[b]:.4f} (5 blocks: {', '.join(f'{r:.4f}' for r in per_block)})")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
