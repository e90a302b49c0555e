"""Instrumentation overhead: the same recipe instrumented and with comm.hook=none, interleaved.

    python scripts/bench_overhead.py --recipe transformer --reps 5 --steps 60

Each repetition runs three variants back to back under torchrun (2 gloo processes): the
instrumented hook, the same hook unmeasured (comm.record=false) and plain DDP
(comm.hook=none); it reads each run's median step time from summary.json and prints the
per-repetition ratios and their medians (goal: instrumented / plain DDP <= 1.01).
Alternating the order each repetition cancels the machine's slow drifts.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


VARIANTS = {  # name -> overrides
    "instrumented": [],
    "bare-hook": ["comm.record=false"],  # the same Python hook, unmeasured: prices the recorder alone
    "plain-ddp": ["comm.hook=none"],     # DDP's built-in C++ all-reduce
}


def run_once(recipe: str, variant: str, hook: str, steps: int, nproc: int, extra: list[str], folder: Path) -> float:
    run_dir = folder / f"{variant}-{len(list(folder.iterdir()))}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "train", "--recipe", recipe, "--run-dir", str(run_dir), f"comm.hook={hook}", *VARIANTS[variant],
           f"train.steps={steps}", "train.log_every=20", "train.eval_every=0", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // nproc))}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"run failed ({variant}):\n{done.stderr[-2000:]}")
    return json.loads((run_dir / "summary.json").read_text())["time"]["step_ms_median"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="transformer")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--hook", default="allreduce", help="instrumented variant's hook")
    p.add_argument("overrides", nargs="*", help="extra dotted overrides for both variants")
    args = p.parse_args()
    ratios: dict[str, list[float]] = {"plain-ddp": [], "bare-hook": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for rep in range(args.reps):
            order = list(VARIANTS) if rep % 2 == 0 else list(reversed(VARIANTS))  # alternate who goes first
            ms = {v: run_once(args.recipe, v, args.hook, args.steps, args.nproc, args.overrides, folder) for v in order}
            for base in ratios:
                ratios[base].append(ms["instrumented"] / ms[base])
            print(f"rep {rep + 1}: " + ", ".join(f"{v} {ms[v]:.2f} ms" for v in VARIANTS) +
                  f" | instrumented/plain-ddp {ratios['plain-ddp'][-1]:.4f}, "
                  f"instrumented/bare-hook {ratios['bare-hook'][-1]:.4f}", flush=True)
    for base, values in ratios.items():
        print(f"median step-time ratio instrumented / {base} over {args.reps} reps: {statistics.median(values):.4f} "
              f"(min {min(values):.4f}, max {max(values):.4f})")

if __name__ == "__main__":
    main()
