"""Check the planner against the testbed: predicted vs measured, on real shaped links.

    sudo python scripts/validate_plan.py --base-rate 100mbit --rates 50mbit,100mbit,200mbit,400mbit

1. Collectives: a sweep at the base rate calibrates the cost model (hop latency, link
   efficiency); all_reduce times at every other rate are predicted and measured (sizes >= 1 MB).
2. Training: each recipe runs once at the base rate; its bucket timelines are replayed at every
   rate and compared with runs measured at those rates (comm time and exposed comm per step).
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
from train.comm.plan.replay import predict, required_rate  # noqa: E402

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
    testbed(rate, folder / f"sweep-{rate}", ["-m", "train.comm.sweep", "--min-bytes", "256K", "--max-bytes", "8M",
                                             "--factor", "2", "--iters", "3", "--warmup", "1", "--link", rate,
                                             "--fit-min-bytes", "256K", "--json", str(out)])
    return json.loads(out.read_text())


def train(recipe: str, rate: str, folder: Path, steps: int) -> dict:
    run = folder / f"{recipe}-{rate}"
    testbed(rate, run, ["-m", "train", "--recipe", recipe, "--run-dir", str(run / "run"), f"train.steps={steps}",
                        "train.log_every=10", "train.eval_every=0", "comm.timeline_steps=16", *RECIPES[recipe]])
    return json.loads((run / "run" / "summary.json").read_text())


def pct(pred: float, meas: float) -> float:
    return 100 * (pred - meas) / meas if meas else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-rate", default="100mbit")
    p.add_argument("--host-rate", default="10gbit", help="a rate the host cannot fill, to measure its ceiling")
    p.add_argument("--rates", default="50mbit,100mbit,200mbit,400mbit")
    p.add_argument("--recipes", default="mlp,lstm,transformer")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--json", help="write every figure here")
    args = p.parse_args()
    rates = args.rates.split(",")
    folder = Path(tempfile.mkdtemp(prefix="gradwire-validate-"))
    report: dict = {"base_rate": args.base_rate, "rates": rates, "collectives": [], "training": [], "requirement": []}

    base = sweep(args.base_rate, folder)
    sweep(args.host_rate, folder)  # a link far faster than the host can fill: measures the host's ceiling
    cal = load_calibration([folder / f"sweep-{args.base_rate}.json", folder / f"sweep-{args.host_rate}.json"])
    link = Link(parse_rate(args.base_rate), cal.get("efficiency", 1.0), cal["hop_latency_s"],
                cal.get("host_bit_s", float("inf")), ops=cal["ops"])  # each op from its own fit
    print(f"calibration: efficiency {link.efficiency:.3f} (at {args.base_rate}), hop latency "
          f"{link.hop_latency_s * 1e6:.0f} us, host ceiling {link.host_bit_s / 1e9:.2f} Gbit/s (at {args.host_rate})")
    print("\n1. all_reduce time, predicted from the base-rate fit vs measured (sizes >= 1 MB)")
    print(f"{'rate':>9} {'bytes':>9} {'pred ms':>9} {'meas ms':>9} {'error %':>8}")
    for rate in rates:
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

    print(f"\n2. training steps, replayed from the {args.base_rate} run vs measured (medians per step)")
    print(f"{'recipe':>12} {'rate':>9} {'comm pred':>10} {'comm meas':>10} {'err %':>7} {'exp pred':>9} "
          f"{'exp meas':>9} {'err %':>7}")
    for recipe in args.recipes.split(","):
        measured_base = train(recipe, args.base_rate, folder, args.steps)
        timelines = measured_base["comm"]["timelines"]
        for rate in rates:
            meas = measured_base if rate == args.base_rate else train(recipe, rate, folder, args.steps)
            pred = predict(timelines, 2, link.at_rate(parse_rate(rate)))
            c = meas["comm"]
            row = {"recipe": recipe, "rate": rate, "comm_pred_ms": pred["comm_ms"], "comm_meas_ms": c["time_ms_median"],
                   "exposed_pred_ms": pred["exposed_ms"], "exposed_meas_ms": c["exposed_ms_median"],
                   "comm_err_pct": pct(pred["comm_ms"], c["time_ms_median"]),
                   "exposed_err_pct": pct(pred["exposed_ms"], c["exposed_ms_median"])}
            report["training"].append(row)
            print(f"{recipe:>12} {rate:>9} {row['comm_pred_ms']:>10.2f} {row['comm_meas_ms']:>10.2f} "
                  f"{row['comm_err_pct']:>+7.1f} {row['exposed_pred_ms']:>9.2f} {row['exposed_meas_ms']:>9.2f} "
                  f"{row['exposed_err_pct']:>+7.1f}")
        need = required_rate(timelines, 2, link, 0.10)
        if need is None:
            report["requirement"].append({"recipe": recipe, "rate": None, "exposed_pct_measured": None})
        else:
            rate = f"{need / 1e6:.0f}mbit"
            meas = train(recipe, rate, folder, args.steps)
            frac = 100 * meas["comm"]["exposed_ms_median"] / meas["time"]["step_ms_median"]
            report["requirement"].append({"recipe": recipe, "rate": rate, "exposed_pct_measured": frac})
    exp_err = statistics.median(abs(r["exposed_err_pct"]) for r in report["training"])
    print(f"median |error| of exposed comm: {exp_err:.1f} %")
    print("\n3. link set to the planner's smallest rate for exposed <= 10% of the step")
    for r in report["requirement"]:
        if r["rate"] is None:
            print(f"{r['recipe']:>12}: no link rate is enough (host- or latency-bound), as predicted")
        else:
            print(f"{r['recipe']:>12} {r['rate']:>10}: measured exposed {r['exposed_pct_measured']:.1f} % of the step")
    report["summary"] = {"collective_median_abs_error_pct": coll_err, "exposed_median_abs_error_pct": exp_err}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
