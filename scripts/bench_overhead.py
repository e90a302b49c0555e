"""Instrumentation overhead: the same recipe instrumented and with comm.hook=none, interleaved.

    python scripts/bench_overhead.py --recipe transformer --reps 5 --steps 60

Each repetition runs both variants back to back under torchrun (2 gloo processes), reads each
run's median step time from summary.json, and the script prints the per-pair ratios and the
median ratio (goal: <= 1.01). Interleaving pairs cancels the machine's slow drifts.
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


def run_once(recipe: str, hook: str, steps: int, nproc: int, extra: list[str], folder: Path) -> float:
    run_dir = folder / f"{hook}-{len(list(folder.iterdir()))}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "train", "--recipe", recipe, "--run-dir", str(run_dir), f"comm.hook={hook}",
           f"train.steps={steps}", "train.log_every=20", "train.eval_every=0", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // nproc))}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"run failed ({hook}):\n{done.stderr[-2000:]}")
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
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for rep in range(args.reps):
            order = [args.hook, "none"] if rep % 2 == 0 else ["none", args.hook]  # alternate who goes first
            ms = {hook: run_once(args.recipe, hook, args.steps, args.nproc, args.overrides, folder) for hook in order}
            ratios.append(ms[args.hook] / ms["none"])
            print(f"rep {rep + 1}: instrumented {ms[args.hook]:.2f} ms, plain DDP {ms['none']:.2f} ms, "
                  f"ratio {ratios[-1]:.4f}", flush=True)
    print(f"median step-time ratio (instrumented / comm.hook=none) over {args.reps} reps: "
          f"{statistics.median(ratios):.4f}")


if __name__ == "__main__":
    main()
