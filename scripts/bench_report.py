"""Long runs: memory of the step history, summary.json size and report.png render time against
the step count (issue 12). Each step count runs in a fresh process, so peak RSS is its own.

    python scripts/bench_report.py --steps 1000,10000,100000,1000000 --out /tmp/bench-report

Each process feeds N synthetic steps (the figure dicts a 2-rank DDP run produces, with a slow
step now and then, or a sharded run's with --sharded) into a StepHistory, then takes the
summary's medians from it and renders report.png. `--naive` also keeps every step's
dict in a list, as the instrumentation did before: the growth this design removes.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic_step(i: int, rng: random.Random, sharded: bool = False) -> dict:
    """One step's figures: slow drift, noise, a 5x stall every ~1000 steps."""
    stall = 5.0 if rng.random() < 1e-3 else 1.0
    fwd, bwd = 1.2 + 0.2 * math.sin(i / 5e4) + rng.gauss(0, 0.1), 2.4 + rng.gauss(0, 0.2)
    comm = max(0.1, 2.5 * stall + rng.gauss(0, 0.4))
    exposed = max(0.0, comm - 0.6 * bwd)
    fig = {"time/data_ms": 0.1 + abs(rng.gauss(0, 0.02)), "time/forward_ms": fwd, "time/backward_ms": bwd,
           "time/exposed_comm_ms": exposed, "time/optimizer_ms": 0.8 + rng.gauss(0, 0.05), "items": 64,
           "net/tx_bytes": 1.9e6 * (1 + rng.gauss(0, 0.01)), "net/rx_bytes": 1.9e6, "net/wire_ratio": 1.002}
    fig["time/step_ms"] = sum(fig[t] for t in ("time/data_ms", "time/forward_ms", "time/backward_ms",
                                               "time/exposed_comm_ms", "time/optimizer_ms"))
    if sharded:
        fig.update({"time/exposed_forward_ms": exposed * 0.4, "time/exposed_backward_ms": exposed * 0.6})
        for op, share, bytes_share in (("all_gather", 0.6, 0.65), ("reduce_scatter", 0.4, 0.35)):
            ms, factor = comm * share, 0.5
            fig.update({f"comm/{op}/calls": 4, f"comm/{op}/sent_bytes": 1.4e6 * bytes_share,
                        f"comm/{op}/time_ms": ms, f"comm/{op}/busbw_gbit_s": 8 * 1.4e6 * bytes_share / (ms / 1e3) / 1e9 * factor})
    else:
        algbw = 8 * 940_600 / (comm / 1e3) / 1e9
        fig.update({"comm/grad_bytes": 940_600, "comm/sent_bytes": 940_600, "comm/buckets": 4, "comm/time_ms": comm,
                    "comm/algbw_gbit_s": algbw, "comm/busbw_gbit_s": algbw,
                    "comm/overlap_pct": 100 * (1 - exposed / comm)})
    fig["compute_ms"] = fig["time/data_ms"] + fwd + bwd
    return fig


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def child(steps: int, out: Path, sharded: bool, naive: bool, reps: int) -> dict:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401  (imported before the baseline, as in a run)
    from train.comm.measure.history import StepHistory
    from train.comm.measure.png import write_png

    rng = random.Random(0)
    base = rss_mib()
    history, kept = StepHistory(warmup=2), []
    t0 = time.perf_counter()
    for i in range(steps):
        fig = synthetic_step(i, rng, sharded)
        history.append(fig)
        if naive:
            kept.append(fig)
    feed_s = time.perf_counter() - t0
    fed = rss_mib()
    summary = {"world_size": 2, "backend": "gloo", "model": {"name": "mlp", "flavor": "small"},
               "parallel": {"strategy": "fsdp" if sharded else "ddp"},
               "comm": {"hook": "allreduce", "measured": True, "busbw_factor": 1.0, "buckets_per_step": 4,
                        "medians": {tag: history.median(tag) for tag in sorted(history.tags())}},
               "net": {"iface": "lo", "ranks_on_link": 2}}
    renders, cpu = [], []
    for _ in range(reps):  # medians of several, and CPU time: the cores are shared, wall time is noisy
        t0, c0 = time.perf_counter(), time.process_time()
        write_png(history, out / f"report-{steps}{'-sharded' if sharded else ''}.png", summary)
        renders.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    render_s, render_cpu_s = statistics.median(renders), statistics.median(cpu)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"steps": steps, "rss_growth_feeding_mib": round(fed - base, 1), "peak_rss_mib": round(peak, 1),
            "feed_us_per_step": round(feed_s / steps * 1e6, 1), "render_s": round(render_s, 3), "render_cpu_s": round(render_cpu_s, 3),
            "summary_json_bytes": len(json.dumps(summary)), "bins": len(history.bins), "naive": naive}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", default="1000,10000,100000,1000000")
    p.add_argument("--out", default="/tmp/bench-report")
    p.add_argument("--sharded", action="store_true", help="a sharded run's figures (per-op panels)")
    p.add_argument("--naive", action="store_true", help="also keep every step's dict, as before")
    p.add_argument("--reps", type=int, default=5, help="renders per step count (the median is reported)")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.child:
        print(json.dumps(child(args.child, out, args.sharded, args.naive, args.reps)))
        return 0
    print(f"{'steps':>9} {'RSS growth MiB':>15} {'peak RSS MiB':>13} {'feed us/step':>13} {'render s':>9} {'render CPU s':>13} "
          f"{'summary B':>10} {'bins':>5}")
    for n in (int(float(s)) for s in args.steps.split(",")):
        cmd = [sys.executable, __file__, "--child", str(n), "--out", str(out), "--reps", str(args.reps)]
        cmd += ["--sharded"] * args.sharded + ["--naive"] * args.naive
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        print(f"{r['steps']:>9,} {r['rss_growth_feeding_mib']:>15.1f} {r['peak_rss_mib']:>13.1f} "
              f"{r['feed_us_per_step']:>13.1f} {r['render_s']:>9.3f} {r['render_cpu_s']:>13.3f} {r['summary_json_bytes']:>10,} {r['bins']:>5}",
              flush=True)
    print(f"report.png files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
