"""Check the planner against the testbed: predicted vs measured, on real shaped links.

    sudo python scripts/validate_plan.py --base-rate 100mbit --rates 50mbit,100mbit,200mbit,400mbit

1. Collectives: a sweep at the base rate calibrates the cost model (hop latency, link
   efficiency); all_reduce times at every other rate are predicted and measured (sizes >= 1 MB).
2. Training: each recipe runs once at the base rate; its bucket timelines are replayed at every
   rate and compared with runs measured at those rates (comm time, exposed comm and step time,
   medians per step; the error medians leave out the base rate, whose run calibrated the replay:
   the time a bucket takes in training beyond the sweep's cost, `bucket_overhead_ms`). Each row
   also gives what the error is made of, measured on the sampled steps: compute (step less exposed
   comm) and the peers' lateness (the last rank's readiness after this rank's end of backward),
   the base run's and the target's.
3. Requirement: the planner's smallest rate for exposed <= 10% of the step is set on the link,
   and the exposed fraction that results is measured.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from train.comm.plan.costmodel import Link, load_calibration, parse_rate  # noqa: E402
from train.comm.plan.replay import bucket_overhead_ms, predict, required_rate  # noqa: E402

RECIPES = {
    "mlp": ["model.flavor=small", "dist.bucket_cap_mb=0.25"],
    "lstm": ["model.flavor=debug", "data.max_bytes=300000", "train.batch_size=16", "dist.bucket_cap_mb=0.05"],
    "transformer": ["model.flavor=debug", "data.max_bytes=300000", "data.seq_len=64", "train.batch_size=16",
                    "dist.bucket_cap_mb=0.1"],
}


def testbed(rate: str, folder: Path, program: list[str]) -> None:
    cmd = [sys.executable, "-m", "launch.testbed", "--nodes", "2", "--rate", rate, "--run-dir", str(folder),
           "--timeout", "600", "--", *program]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"testbed run failed at {rate}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def sweep(rate: str, folder: Path) -> dict:
    out = folder / f"sweep-{rate}.json"
    if out.exists():  # a --folder of an earlier run keeps its sweeps
        return json.loads(out.read_text())
    testbed(rate, folder / f"sweep-{rate}", ["-m", "train.comm.sweep", "--min-bytes", "256K", "--max-bytes", "8M",
                                             "--factor", "2", "--iters", "3", "--warmup", "1", "--link", rate,
                                             "--fit-min-bytes", "256K", "--json", str(out)])
    return json.loads(out.read_text())


def train(recipe: str, rate: str, folder: Path, steps: int, tag: str = "") -> dict:
    run = folder / f"{recipe}-{rate}{tag}"
    if not (run / "run" / "summary.json").exists():  # a --folder of an earlier run keeps its runs
        testbed(rate, run, ["-m", "train", "--recipe", recipe, "--run-dir", str(run / "run"), f"train.steps={steps}",
                            "train.log_every=10", "train.eval_every=0", "comm.timeline_steps=16", *RECIPES[recipe]])
        (run / "load.txt").write_text(load())  # the machine's load as the run ended
    summary = json.loads((run / "run" / "summary.json").read_text())
    summary["load"] = (run / "load.txt").read_text() if (run / "load.txt").exists() else "?"
    return summary


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def last_ready(summary: dict) -> tuple[float, float]:
    """Medians over the sampled steps of the exposed comm of the rank that was ready last (it waits
    for nobody: last completion less the last rank's end of backward) and of the step without
    this rank's wait for its peer (its compute plus that exposed comm)."""
    exposed, steps = [], []
    for t in summary["comm"]["timelines"]:
        if not t["buckets"]:
            continue
        ready = max(max(b.get("ready_max_ms", b["ready_ms"]) for b in t["buckets"]), t["compute_end_ms"])
        e = max(0.0, max(b["done_ms"] for b in t["buckets"]) - ready)
        exposed.append(e)
        steps.append(t["step_ms"] - t["exposed_ms"] + e)
    return statistics.median(exposed), statistics.median(steps)


def parts(summary: dict) -> tuple[float, float]:
    """Medians over the sampled steps: compute (step less exposed comm), and how late the last rank
    had its last bucket ready after this rank's end of backward (what exposed comm waits for peers)."""
    tls = summary["comm"]["timelines"]
    compute = statistics.median(t["step_ms"] - t["exposed_ms"] for t in tls)
    late = statistics.median(max(0.0, max(b.get("ready_max_ms", b["ready_ms"]) for b in t["buckets"])
                                 - t["compute_end_ms"]) for t in tls if t["buckets"])
    return compute, late


def pct(pred: float, meas: float) -> float:
    return 100 * (pred - meas) / meas if meas else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-rate", default="100mbit")
    p.add_argument("--host-rate", default="10gbit", help="a rate the host cannot fill, to measure its ceiling "
                   "('' to skip: links far below the host's ceiling)")
    p.add_argument("--rates", default="50mbit,100mbit,200mbit,400mbit")
    p.add_argument("--recipes", default="mlp,lstm,transformer")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--noise-floor", action="store_true",
                   help="also run the base rate a second time and predict it from the first (rows 'again')")
    p.add_argument("--folder", help="work folder (default: a new temporary one); its sweeps and runs are reused")
    p.add_argument("--warm-run", action="store_true", help="run each recipe once at the base rate and discard it "
                   "before the base run")
    p.add_argument("--skip-requirement", action="store_true", help="leave out part 3")
    p.add_argument("--skip-collectives", action="store_true", help="part 1 at the base rate only (no sweeps elsewhere)")
    args = p.parse_args()
    rates = args.rates.split(",")
    folder = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="gradwire-validate-"))
    folder.mkdir(parents=True, exist_ok=True)
    report: dict = {"base_rate": args.base_rate, "rates": rates, "collectives": [], "training": [], "requirement": []}
    print(f"load average at start: {load()}")

    base = sweep(args.base_rate, folder)
    sweeps = [folder / f"sweep-{args.base_rate}.json"]
    if args.host_rate:  # a link far faster than the host can fill: measures the host's ceiling
        sweep(args.host_rate, folder)
        sweeps.append(folder / f"sweep-{args.host_rate}.json")
    cal = load_calibration(sweeps)
    link = Link(parse_rate(args.base_rate), cal.get("efficiency", 1.0), cal["hop_latency_s"],
                cal.get("host_bit_s", float("inf")), ops=cal["ops"])  # each op from its own fit
    print(f"calibration: efficiency {link.efficiency:.3f} (at {args.base_rate}), hop latency "
          f"{link.hop_latency_s * 1e6:.0f} us, host ceiling {link.host_bit_s / 1e9:.2f} Gbit/s (at {args.host_rate})")
    print("\n1. all_reduce time, predicted from the base-rate fit vs measured (sizes >= 1 MB)")
    print(f"{'rate':>9} {'bytes':>9} {'pred ms':>9} {'meas ms':>9} {'error %':>8}")
    for rate in ([args.base_rate] if args.skip_collectives else rates):
        measured = base if rate == args.base_rate else sweep(rate, folder)
        at = link.at_rate(parse_rate(rate))
        for r in measured["results"]:
            if r["op"] == "all_reduce" and r["bytes"] >= 1 << 20:
                pred = at.collective_time("all_reduce", r["bytes"], measured["world_size"]) * 1e3
                row = {"rate": rate, "bytes": r["bytes"], "pred_ms": pred, "meas_ms": r["time_us"] / 1e3,
                       "error_pct": pct(pred, r["time_us"] / 1e3)}
                report["collectives"].append(row)
                print(f"{rate:>9} {r['bytes']:>9} {pred:>9.2f} {row['meas_ms']:>9.2f} {row['error_pct']:>+8.1f}")
    coll_err = statistics.median(abs(r["error_pct"]) for r in report["collectives"])
    print(f"median |error|: {coll_err:.1f} %")

    print(f"\n2. training steps, replayed from the {args.base_rate} run vs measured (medians per step); "
          f"compute and peers' lateness (ms) measured at the base rate -> at the target rate")
    print(f"{'recipe':>12} {'rate':>8} {'comm pred':>9} {'meas':>8} {'err %':>6} {'exp pred':>8} {'meas':>8} "
          f"{'err %':>6} {'step pred':>9} {'meas':>8} {'err %':>6} {'compute':>15} {'peers late':>13} {'load':>15}")
    for recipe in args.recipes.split(","):
        if args.warm_run:  # a run thrown away first: the first run after a sweep computed slower in every set
            train(recipe, args.base_rate, folder, args.steps, "-warm")
        measured_base = train(recipe, args.base_rate, folder, args.steps)
        timelines = measured_base["comm"]["timelines"]
        base_link = link.at_rate(parse_rate(args.base_rate))
        overhead = bucket_overhead_ms(timelines, 2, base_link)
        base_parts = parts(measured_base)
        print(f"{recipe:>12}: each bucket's all-reduce takes {overhead:.2f} ms beyond the sweep's cost "
              f"at {args.base_rate} (median)")
        for label in rates + (["again"] if args.noise_floor else []):
            # "again": the base rate in a second run, predicted from the first: this machine's noise
            rate = args.base_rate if label == "again" else label
            meas = measured_base if label == args.base_rate else \
                train(recipe, rate, folder, args.steps, "-again" if label == "again" else "")
            pred = predict(timelines, 2, link.at_rate(parse_rate(rate)), overhead_ms=overhead)
            c, mp = meas["comm"], parts(meas)
            row = {"recipe": recipe, "rate": label, "base": label in (args.base_rate, "again"), "overhead_ms": overhead,
                   "comm_pred_ms": pred["comm_ms"], "comm_meas_ms": c["time_ms_median"],
                   "exposed_pred_ms": pred["exposed_ms"], "exposed_meas_ms": c["exposed_ms_median"],
                   "step_pred_ms": pred["step_ms"], "step_meas_ms": meas["time"]["step_ms_median"],
                   "compute_base_ms": base_parts[0], "compute_meas_ms": mp[0],
                   "late_base_ms": base_parts[1], "late_meas_ms": mp[1], "load": meas["load"]}
            row["exposed_last_pred_ms"], row["step_last_pred_ms"] = pred["exposed_last_ready_ms"], pred["step_last_ready_ms"]
            row["exposed_last_meas_ms"], row["step_last_meas_ms"] = last_ready(meas)
            for k in ("comm", "exposed", "step", "exposed_last", "step_last"):
                row[f"{k}_err_pct"] = pct(row[f"{k}_pred_ms"], row[f"{k}_meas_ms"])
            report["training"].append(row)
            print(f"{recipe:>12} {label:>8} {row['comm_pred_ms']:>9.2f} {row['comm_meas_ms']:>8.2f} "
                  f"{row['comm_err_pct']:>+6.1f} {row['exposed_pred_ms']:>8.2f} {row['exposed_meas_ms']:>8.2f} "
                  f"{row['exposed_err_pct']:>+6.1f} {row['step_pred_ms']:>9.2f} {row['step_meas_ms']:>8.2f} "
                  f"{row['step_err_pct']:>+6.1f} {base_parts[0]:>7.1f}->{mp[0]:<7.1f} "
                  f"{base_parts[1]:>6.1f}->{mp[1]:<6.1f} {row['load']:>15}")
        if args.skip_requirement:
            continue
        need = required_rate(timelines, 2, link, 0.10)
        if need is None:
            report["requirement"].append({"recipe": recipe, "rate": None, "exposed_pct_measured": None})
        else:
            rate = f"{need / 1e6:.0f}mbit"
            meas = train(recipe, rate, folder, args.steps)
            frac = 100 * meas["comm"]["exposed_ms_median"] / meas["time"]["step_ms_median"]
            report["requirement"].append({"recipe": recipe, "rate": rate, "exposed_pct_measured": frac})
    validated = [r for r in report["training"] if not r["base"]]  # the base run calibrated the replay
    print("\n2b. the same runs seen from the rank that was ready last (no wait for a peer): its exposed comm, "
          "and the step less this rank's wait for its peer (ms)")
    print(f"{'recipe':>12} {'rate':>8} {'exp pred':>8} {'meas':>8} {'err %':>6} {'step pred':>9} {'meas':>8} {'err %':>6}")
    for r in report["training"]:
        print(f"{r['recipe']:>12} {r['rate']:>8} {r['exposed_last_pred_ms']:>8.2f} {r['exposed_last_meas_ms']:>8.2f} "
              f"{r['exposed_last_err_pct']:>+6.1f} {r['step_last_pred_ms']:>9.2f} {r['step_last_meas_ms']:>8.2f} "
              f"{r['step_last_err_pct']:>+6.1f}")
    errs = {k: statistics.median(abs(r[f"{k}_err_pct"]) for r in validated)
            for k in ("comm", "exposed", "step", "exposed_last", "step_last")}
    again = [r for r in report["training"] if r["rate"] == "again"]
    for k, v in errs.items():
        floor = f" (noise floor, the base rate again: {statistics.median(abs(r[f'{k}_err_pct']) for r in again):.1f} %)" \
            if again else ""
        print(f"median |error| of {k} over {len(validated)} runs at rates other than {args.base_rate}: {v:.1f} %{floor}")
    exp_err = errs["exposed"]
    print("\n3. link set to the planner's smallest rate for exposed <= 10% of the step")
    for r in report["requirement"]:
        if r["rate"] is None:
            print(f"{r['recipe']:>12}: no link rate is enough (host- or latency-bound), as predicted")
        else:
            print(f"{r['recipe']:>12} {r['rate']:>10}: measured exposed {r['exposed_pct_measured']:.1f} % of the step")
    report["summary"] = {"collective_median_abs_error_pct": coll_err, "exposed_median_abs_error_pct": exp_err,
                         "comm_median_abs_error_pct": errs["comm"], "step_median_abs_error_pct": errs["step"],
                         "exposed_last_ready_median_abs_error_pct": errs["exposed_last"],
                         "step_last_ready_median_abs_error_pct": errs["step_last"]}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
