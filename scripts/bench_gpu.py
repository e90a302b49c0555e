"""GPU benchmark: the ~124M transformer (gpt2-small flavor), bf16, compiled, on one GPU.

    python scripts/bench_gpu.py --steps 60 --batch 16 --seq-len 1024

Runs the real harness (`python -m train`, world size 1) eager and compiled, and prints
tokens/s, MFU (model FLOPs per token x tokens/s / the device's bf16 peak, train/perf.py),
step time and peak memory, with the device name and torch version. Then the collective sweep
on the one GPU (world size 1: the all-reduce is local, so only the launch overhead is
meaningful) and the instrumentation overhead ratio (scripts/bench_overhead.py) if asked.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def train(run_dir: Path, args, compile_: bool) -> dict:
    cmd = [sys.executable, "-m", "train", "--recipe", "transformer", "--run-dir", str(run_dir),
           "model.flavor=gpt2-small", f"data.seq_len={args.seq_len}", "data.max_bytes=20000000",
           f"train.batch_size={args.batch}", f"train.steps={args.steps}", "train.precision=bf16",
           f"train.compile={'true' if compile_ else 'false'}", "train.log_every=10", "train.eval_every=0",
           "optim.name=adamw", "optim.warmup_steps=10"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"training failed:\n{done.stderr[-3000:]}")
    return json.loads((run_dir / "summary.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--no-eager", action="store_true", help="skip the eager run")
    args = p.parse_args()
    import torch
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA GPU")
    print(f"device {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        for compile_ in ([True] if args.no_eager else [False, True]):
            s = train(Path(tmp) / f"compile-{compile_}", args, compile_)
            print(f"{'compiled' if compile_ else 'eager':>8}: {s['throughput']['tokens_per_s']:,.0f} tokens/s, "
                  f"MFU {s['mfu_pct'] or float('nan'):.1f} %, step {s['time']['step_ms_median']:.1f} ms, "
                  f"peak allocated {s['memory'].get('peak_allocated_gib', float('nan')):.1f} GiB")
        sweep = subprocess.run([sys.executable, "-m", "train.comm.sweep", "--min-bytes", "1M", "--max-bytes", "256M",
                                "--factor", "4"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                               capture_output=True, text=True)
        print(sweep.stdout)


if __name__ == "__main__":
    main()
