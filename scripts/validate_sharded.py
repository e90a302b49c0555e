"""Check the planner's sharded step model against the testbed: FSDP and HSDP, predicted vs measured.

    sudo python scripts/validate_sharded.py --calibrate 100mbit --base-rate 100mbit --rates 50mbit,200mbit,400mbit

1. Calibration, at one world size (2 nodes x 1 rank; --calibrate-nproc 2: x 2): a sweep of
   all_reduce, all_gather and reduce_scatter on the shaped link at --calibrate (each op's
   efficiency), and one over loopback (2 ranks, no namespace: each op's host ceiling, the
   intra-node tier). Runs and sweeps already in --folder are reused: a second calibration
   costs one sweep.
2. Per recipe and strategy, on 2 nodes x 2 ranks (world 4: inside a node loopback, across the
   shaped link): one run at --base-rate is the source timeline; it is replayed (serially: on gloo
   FSDP's collectives block the training thread) at each of --rates, world 4, which no
   calibration used, and compared with runs measured there: per-op comm time, comm time, exposed
   comm, step time (medians over steps), and the per-rank parameter, gradient and optimizer bytes
   against the planner's memory model (exact). Each op's call also pays the time beyond the
   model that the base run's calls took (`call_overhead_ms`, per op and group); with --floor-rate
   each call also has a floor, its median time in a run at that rate (`call_floor_ms`: the hosts'
   own time per call, which no faster link removes). The replay knows the testbed's link: a flat gloo
   ring, one NIC per node (SharedNics), tbf's token bucket refilled in compute gaps.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from launch import netns  # noqa: E402
from models import build_model  # noqa: E402
from train.comm.plan.costmodel import Link, SharedNics, load_calibration, parse_rate  # noqa: E402
from train.comm.plan.replay import predict  # noqa: E402
from train.comm.plan.serial import call_floor_ms, call_overhead_ms, synchronous  # noqa: E402
from train.comm.plan.schedule import held_bytes  # noqa: E402

RECIPES = {  # small flavors: 4 ranks share the machine's 2 cores
    "mlp": ["model.flavor=small"],
    "transformer": ["model.flavor=debug", "data.max_bytes=300000", "data.seq_len=64", "train.batch_size=16"],
    "lstm": ["model.flavor=debug", "data.max_bytes=300000", "train.batch_size=16"],
}
OPS = ("all_gather", "reduce_scatter", "all_reduce")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{what} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def sweep_args(out: Path, link: str | None) -> list[str]:
    return ["-m", "train.comm.sweep", "--ops", ",".join(OPS), "--min-bytes", "32K", "--max-bytes", "4M",
            "--factor", "2", "--iters", "5", "--warmup", "2", "--fit-min-bytes", "256K", "--json", str(out),
            *(["--link", link] if link else [])]


def testbed_sweep(rate: str, folder: Path, nproc: int) -> Path:
    out = folder / (f"sweep-{rate}.json" if nproc == 1 else f"sweep-{rate}-x{nproc}.json")
    if not out.exists():  # a --folder of an earlier run keeps its calibration
        run([sys.executable, "-m", "launch.testbed", "--nodes", "2", "--nproc-per-node", str(nproc), "--rate", rate,
             "--run-dir", str(folder / f"sw-{rate}-{nproc}"), "--timeout", "600", "--", *sweep_args(out, rate)],
            f"sweep at {rate}")
    return out


def calibrate(rate: str, folder: Path, nproc: int, host_rate: str | None) -> SharedNics:
    shaped, lo = testbed_sweep(rate, folder, nproc), folder / "sweep-loopback.json"
    # a link the ranks cannot fill: what the hosts' CPUs move at this many ranks per node
    host_sweep = [testbed_sweep(host_rate, folder, nproc)] if host_rate else []
    if not lo.exists():
        run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
             *sweep_args(lo, None)], "loopback sweep")
    # loopback alone says nothing about a link: its fits are the host's ceilings, per op
    cal, host = load_calibration([shaped, lo, *host_sweep]), load_calibration([lo])
    inter = Link(parse_rate(rate), cal.get("efficiency", 1.0), cal["hop_latency_s"], ops=cal["ops"])
    intra = Link(math.inf, 1.0, host["hop_latency_s"], ops=host["ops"])
    # both emulated nodes run on this machine's cores; each link is a tbf shaper with the testbed's bucket
    net = SharedNics(2, intra, inter, hosts_shared=2, burst_bytes=netns.burst_bytes(1.0), burst_s=0.002)
    for r in (1e6, 1e9, 1e11):
        assert net.at_rate(r).burst() == netns.burst_bytes(r), "the replay's bucket is not the testbed's"
    return net


def train(recipe: str, strategy: str, rate: str, folder: Path, steps: int, tag: str = "") -> dict:
    run_dir = folder / f"{recipe}-{strategy}-{rate}{tag}"
    if (run_dir / "run" / "summary.json").exists():  # a --folder of an earlier run keeps its runs
        summary = json.loads((run_dir / "run" / "summary.json").read_text())
        summary["load"] = (run_dir / "load.txt").read_text() if (run_dir / "load.txt").exists() else "?"
        return summary
    run([sys.executable, "-m", "launch.testbed", "--nodes", "2", "--nproc-per-node", "2", "--rate", rate,
         "--run-dir", str(run_dir), "--timeout", "600", "--", "-m", "train", "--recipe", recipe,
         "--run-dir", str(run_dir / "run"), f"dist.strategy={strategy}", f"train.steps={steps}",
         "train.log_every=5", "train.eval_every=0", f"comm.timeline_steps={steps}", *RECIPES[recipe]],
        f"{recipe} {strategy} at {rate}")
    (run_dir / "load.txt").write_text(load())  # the machine's load as the run ended
    summary = json.loads((run_dir / "run" / "summary.json").read_text())
    summary["load"] = load()
    return summary


def predicted_memory(summary: dict) -> dict:
    """The planner's per-rank bytes for the run's model, built on the meta device."""
    cfg, m = summary["config"], summary["model"]
    data = cfg["data"]
    spec = {"input_shape": (1, 28, 28), "num_classes": 10} if m["name"] == "mlp" else \
        {"vocab_size": 256, "seq_len": data["seq_len"]}
    with torch.device("meta"):
        model = build_model(m["name"], m["flavor"], spec)
    assert model.num_params() == m["params"], "the meta model is not the run's"
    shapes = [tuple(p.shape) for p in model.parameters() if p.requires_grad]
    return held_bytes(shapes, summary["parallel"]["shard_size"], 4, cfg["optim"]["name"], cfg["optim"]["momentum"])


def pct(pred: float, meas: float) -> float:
    return 100 * (pred - meas) / meas if meas else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calibrate", default="100mbit", help="shaped rate of the calibration sweep")
    p.add_argument("--calibrate-nproc", type=int, default=1, help="ranks per node in the calibration sweep: 1 "
                   "(world 2, a world size no validated run has) or 2 (world 4, the runs' own)")
    p.add_argument("--host-rate", help="also sweep at this rate, far above what the ranks can fill (e.g. 10gbit): "
                   "the hosts' ceiling per op at the calibration's ranks per node")
    p.add_argument("--base-rate", default="100mbit", help="rate of the run whose timelines are replayed")
    p.add_argument("--rates", default="50mbit,200mbit,400mbit", help="rates predicted and measured")
    p.add_argument("--recipes", default="mlp,transformer")
    p.add_argument("--strategies", default="fsdp,hsdp")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--floor-rate", help="also calibrate on a run at this rate (e.g. 400mbit): each call's time "
                   "there is its floor at every rate (list it in --rates no more: it is calibration)")
    p.add_argument("--noise-floor", action="store_true",
                   help="also run the base rate a second time and predict it from the first (rows 'again')")
    p.add_argument("--no-overhead", dest="overhead", action="store_false",
                   help="leave out the per-call overhead measured on the base run")
    p.add_argument("--folder", help="work folder (default: a new temporary one); its sweeps are reused")
    args = p.parse_args()
    folder = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="gradwire-validate-sharded-"))
    folder.mkdir(parents=True, exist_ok=True)
    report: dict = {"args": vars(args), "load_start": load(), "rows": [], "memory": []}
    net = calibrate(args.calibrate, folder, args.calibrate_nproc, args.host_rate)
    eff = {op: net.inter.ops.get(op, {}).get("efficiency") for op in OPS}
    ceiling = {op: round(net.inter.ops.get(op, {}).get("host_bit_s", math.inf) / 1e9, 3) for op in OPS}
    loopback = {op: round(v.get("host_bit_s", math.inf) / 1e9, 2) for op, v in net.intra.ops.items()}
    print(f"calibration (world {2 * args.calibrate_nproc}) at {args.calibrate}: efficiency per op {eff}, hop latency "
          f"{net.inter.hop_latency_s * 1e6:.0f} us, ceiling per op across nodes (Gbit/s) {ceiling}; "
          f"loopback ceilings per op (Gbit/s) {loopback}")
    print(f"load average at start: {report['load_start']}")
    head = f"{'recipe':>11} {'strategy':>8} {'rate':>8} {'figure':>16} {'pred ms':>9} {'meas ms':>9} {'err %':>7}"
    print("\nper-op comm time, comm time, exposed comm and step time: replayed from the "
          f"{args.base_rate} run vs measured (world 4, medians per step)\n{head}")
    for recipe in args.recipes.split(","):
        for strategy in args.strategies.split(","):
            base = train(recipe, strategy, args.base_rate, folder, args.steps)
            tls, world = base["comm"]["timelines"], base["world_size"]
            # what each call took beyond the model at the base rate: gloo's wake-ups on loaded cores
            overhead = call_overhead_ms(tls, world, net.at_rate(parse_rate(args.base_rate)))
            report["overhead"] = {**report.get("overhead", {}), f"{recipe} {strategy}":
                                  {f"{op} {g}": ms for (op, g), ms in overhead.items()}}
            print(f"{recipe:>11} {strategy:>8} per-call overhead at {args.base_rate} (ms): "
                  f"{ {f'{op} {g}': round(ms, 2) for (op, g), ms in overhead.items()} }")
            # --floor-rate: a run on a link the calls do not fill gives each call its hosts' floor
            floor = call_floor_ms(train(recipe, strategy, args.floor_rate, folder, args.steps)["comm"]["timelines"]) \
                if args.floor_rate else None
            for label in args.rates.split(",") + (["again"] if args.noise_floor else []):
                # "again": the base rate in a second run, predicted from the first: this machine's noise
                rate = args.base_rate if label == "again" else label
                meas = train(recipe, strategy, rate, folder, args.steps, "-again" if label == "again" else "")
                pred = predict(tls, world, net.at_rate(parse_rate(rate)), serial=synchronous(base),
                               overhead_ms=overhead if args.overhead else 0.0, floor_ms=floor)
                c = meas["comm"]
                figures = [(f"{op}", pred.get(f"{op}_ms", 0.0), c["ops"][op]["time_ms_median"])
                           for op in OPS if op in c["ops"]]
                figures += [("comm time", pred["comm_ms"], c["time_ms_median"]),
                            ("exposed comm", pred["exposed_ms"], c["exposed_ms_median"]),
                            ("step time", pred["step_ms"], meas["time"]["step_ms_median"])]
                for name, pr, me in figures:
                    row = {"recipe": recipe, "strategy": strategy, "rate": label, "figure": name,
                           "pred_ms": pr, "meas_ms": me, "error_pct": pct(pr, me), "load": meas["load"]}
                    report["rows"].append(row)
                    print(f"{recipe:>11} {strategy:>8} {label:>8} {name:>16} {pr:>9.2f} {me:>9.2f} "
                          f"{row['error_pct']:>+7.1f}")
                mem = predicted_memory(meas)
                report["memory"].append({"recipe": recipe, "strategy": strategy, "predicted": mem,
                                         "measured": meas["memory"], "equal": mem == meas["memory"]})
    print()
    summary = {}
    for group, names in (("per-op comm time", OPS), ("comm time", ("comm time",)),
                         ("exposed comm", ("exposed comm",)), ("step time", ("step time",))):
        errs = [abs(r["error_pct"]) for r in report["rows"] if r["figure"] in names and r["rate"] != "again"]
        again = [abs(r["error_pct"]) for r in report["rows"] if r["figure"] in names and r["rate"] == "again"]
        summary[group] = statistics.median(errs)
        summary[f"{group}, noise floor"] = statistics.median(again) if again else None
        print(f"median |error| of {group}: {summary[group]:.1f} % over {len(errs)} figures" +
              (f" (noise floor, the base rate again: {statistics.median(again):.1f} %)" if again else ""))
    for m in report["memory"]:
        print(f"memory {m['recipe']} {m['strategy']}: predicted {m['predicted']} measured {m['measured']} "
              f"{'equal' if m['equal'] else 'DIFFERENT'}")
    report["summary"], report["load_end"] = summary, load()
    print(f"load average at end: {report['load_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
