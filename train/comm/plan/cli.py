"""What link does this job need? `python -m train.comm.plan runs/<run>/summary.json --world 64 --link 100gbit`

From a run: its measured bucket timelines are replayed (replay.py) for the target world size
and link. From a description (`--model transformer --flavor gpt2-small`, or `--params 7e9`):
a synthetic timeline from FLOPs and an assumed accelerator. Either way: comm time, exposed
comm, step time and scaling efficiency per link, and the smallest rate that keeps exposed
comm under --target-exposed of the step.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from train.comm.plan.costmodel import Link, format_rate, load_calibration, parse_rate
from train.comm.plan.replay import STANDARD_RATES_GBIT, predict, required_rate, synthetic_timeline
from train.errors import UsageError

ASSUMPTIONS = [
    "ring all-reduce: each rank's link carries 2(n-1)/n x the sent bytes, in 2(n-1) latency hops",
    "the bottleneck is each rank's own link (full bisection behind it, no in-network reduction, no hierarchy)",
    "buckets are reduced in the order they become ready, one at a time on one channel",
    "compute time is what was measured (or derived from FLOPs); only communication changes",
    "bytes move at the smaller of link rate x efficiency and the hosts' own ceiling (if calibrated)",
]
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m train.comm.plan", description=__doc__.splitlines()[0])
    p.add_argument("summary", nargs="?", help="summary.json of a run with comm.timelines")
    p.add_argument("--world", type=int, help="target world size (default: the run's, or 8)")
    p.add_argument("--link", help="one link rate to evaluate (e.g. 100gbit); default: a table of standard rates")
    p.add_argument("--target-exposed", type=float, default=0.05, help="exposed comm budget as a fraction of the step")
    p.add_argument("--calibration", action="append", default=[],
                   help="sweep JSON (repeatable): link efficiency and hop latency, or the host's ceiling")
    p.add_argument("--host-gbit", type=float, help="most the hosts can push through any link, Gbit/s")
    p.add_argument("--efficiency", type=float, help="share of the line rate a collective achieves (default 1.0)")
    p.add_argument("--hop-latency-us", type=float, help="latency per ring hop (default 5 us)")
    p.add_argument("--model", help="describe instead of a run: model name (with --flavor)")
    p.add_argument("--flavor", default="debug")
    p.add_argument("--params", type=float, help="describe instead of a run: parameter count, e.g. 7e9")
    p.add_argument("--seq-len", type=int, help="tokens per sample for text models (default: 1024, or the flavor's "
                   "block_size if shorter)")
    p.add_argument("--dtype", default="fp32", choices=sorted(BYTES), help="gradient dtype")
    p.add_argument("--hook", default="allreduce", choices=("allreduce", "fp16", "bf16"))
    p.add_argument("--bucket-mb", type=float, default=25.0)
    p.add_argument("--compute-ms", type=float, help="forward+backward time per step per rank")
    p.add_argument("--items-per-step", type=float, default=8 * 1024, help="tokens or samples per rank per step")
    p.add_argument("--accel-tflops", type=float, default=989.0, help="accelerator peak (H100 SXM bf16: 989)")
    p.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilisation")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    if args.world is not None and args.world < 1:
        raise UsageError(f"--world {args.world} must be >= 1")
    if not 0 < args.target_exposed < 1:
        raise UsageError(f"--target-exposed {args.target_exposed} must be between 0 and 1")
    if not args.summary and not args.model and not args.params:
        raise UsageError("give a run's summary.json, or describe a model with --model NAME --flavor F or --params N")
    for name in ("bucket_mb", "accel_tflops", "mfu", "items_per_step"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")
    return args


def from_run(path: str) -> tuple[list[dict], dict]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"summary {path!r} does not exist")
    try:
        summary = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"summary {path!r} is not readable JSON ({e})") from None
    timelines = (summary.get("comm") or {}).get("timelines")
    if not timelines:
        raise UsageError(f"summary {path!r} has no comm.timelines: run with world size > 1 and a comm.hook other than none")
    return timelines, {"source": "run", "summary": path, "measured_world": summary.get("world_size"),
                       "model": summary.get("model", {}).get("name"), "hook": summary["comm"].get("hook")}


def from_description(args) -> tuple[list[dict], dict]:
    if args.model:
        import torch
        from models import build_model
        from models.registry import model_class
        try:
            flavor_cfg = model_class(args.model).FLAVORS.get(args.flavor)
        except ValueError as e:
            raise UsageError(str(e)) from None
        seq_len = args.seq_len or min(1024, getattr(flavor_cfg, "block_size", 1024))
        spec = {"vocab_size": 256, "seq_len": seq_len} if args.model != "mlp" else \
            {"input_shape": (1, 28, 28), "num_classes": 10}
        try:
            with torch.device("meta"):
                model = build_model(args.model, args.flavor, spec)
        except ValueError as e:
            raise UsageError(str(e)) from None
        params, flops_per_item = model.num_params(), model.flops_per_item()
    else:
        params, flops_per_item = args.params, 6.0 * args.params
    grad_bytes = params * BYTES[args.dtype]
    sent_fraction = (2 / BYTES[args.dtype]) if args.hook in ("fp16", "bf16") else 1.0
    compute_ms = args.compute_ms or flops_per_item * args.items_per_step / (args.accel_tflops * 1e12 * args.mfu) * 1e3
    tl = synthetic_timeline(grad_bytes, args.bucket_mb * 2**20, compute_ms / 3, compute_ms * 2 / 3)
    for b in tl["buckets"]:
        b["sent_bytes"] = b["grad_bytes"] * sent_fraction
    return [tl], {"source": "description", "model": args.model or "params", "flavor": args.flavor if args.model else None,
                  "params": params, "grad_bytes": grad_bytes, "compute_ms": compute_ms, "hook": args.hook}


def build_link(args) -> Link:
    link = Link(1e9)  # the rate is replaced per row; efficiency, latency and host ceiling carry over
    if args.calibration:
        cal = load_calibration(args.calibration)
        link.hop_latency_s = cal["hop_latency_s"]
        link.efficiency = cal.get("efficiency", link.efficiency)
        link.host_bit_s = cal.get("host_bit_s", link.host_bit_s)
    if args.efficiency is not None:
        link.efficiency = args.efficiency
    if args.hop_latency_us is not None:
        link.hop_latency_s = args.hop_latency_us * 1e-6
    if args.host_gbit is not None:
        link.host_bit_s = args.host_gbit * 1e9
    return link


def plan(args) -> dict:
    timelines, inputs = from_run(args.summary) if args.summary else from_description(args)
    world = args.world or inputs.get("measured_world") or 8
    base = build_link(args)
    rates = [parse_rate(args.link)] if args.link else [g * 1e9 for g in STANDARD_RATES_GBIT]
    rows = []
    for rate in rates:
        row = predict(timelines, world, base.at_rate(rate))
        rows.append({"link_gbit_s": rate / 1e9, **row})
    need = required_rate(timelines, world, base, args.target_exposed)
    inputs.update({"world": world, "efficiency": base.efficiency, "hop_latency_us": base.hop_latency_s * 1e6,
                   "host_gbit_s": base.host_bit_s / 1e9 if base.host_bit_s != float("inf") else None,
                   "timelines": len(timelines)})
    return {"inputs": inputs, "assumptions": ASSUMPTIONS, "rates": rows,
            "required": {"target_exposed": args.target_exposed, "link_gbit_s": need / 1e9 if need else None}}


def print_plan(result: dict) -> None:
    i = result["inputs"]
    host = f", host ceiling {i['host_gbit_s']:.2f} Gbit/s" if i.get("host_gbit_s") else ""
    print(f"# gradwire plan: {i.get('model')} at world {i['world']} ({i['source']}, hook {i.get('hook')}, "
          f"link efficiency {i['efficiency']:.2f}, {i['hop_latency_us']:.1f} us per hop{host})")
    print(f"{'link':>12} {'comm ms':>10} {'exposed ms':>11} {'step ms':>10} {'exposed %':>10} {'scaling eff':>12}")
    for r in result["rates"]:
        print(f"{format_rate(r['link_gbit_s'] * 1e9):>12} {r['comm_ms']:>10.2f} {r['exposed_ms']:>11.2f} "
              f"{r['step_ms']:>10.2f} {r['exposed_pct']:>10.1f} {r['scaling_efficiency']:>12.3f}")
    req = result["required"]
    need = format_rate(req["link_gbit_s"] * 1e9) if req["link_gbit_s"] else \
        "none (latency- or host-bound: no link rate is enough)"
    print(f"\nsmallest link for exposed comm <= {100 * req['target_exposed']:.0f}% of the step: {need}")
    print("assumptions: " + "; ".join(result["assumptions"]))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = None
    try:
        args = parse_args(argv)
        result = plan(args)
    except UsageError as e:
        if args is not None and args.debug:
            raise
        print(f"gradwire: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_plan(result)
    return 0
