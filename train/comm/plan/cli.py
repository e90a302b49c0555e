"""What does this training job need? `python -m train.comm.plan`

From a run (`runs/<run>/summary.json --world 64 --link 100gbit`): its measured timelines (DDP
buckets, or FSDP/HSDP ops and shard units) are replayed on another world size, topology and link.
From a description (`--model llama3-70b --gpu h100 --nodes 128 --gpus-per-node 8 --strategy
ddp,fsdp,hsdp`): per strategy, memory per GPU, bytes per GPU per step on NVLink and on the NICs,
comm and exposed comm per NIC rate, the smallest NIC rate that keeps exposed comm under
--target-exposed of the step, time to train, storage bandwidth.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from train.comm.plan import inputs
from train.comm.plan.cluster import STRATEGIES
from train.comm.plan.costmodel import Link
from train.comm.plan.network import ALGORITHMS, GPUS
from train.comm.plan.replay import STANDARD_RATES_GBIT, predict, required_rate
from train.comm.plan.shapes import SHAPES
from train.errors import UsageError, choice_error

REPLAY_ASSUMPTIONS = [
    "collectives are rings: each rank's link carries busbw_factor x the sent bytes, in (n-1) or 2(n-1) latency hops",
    "the bottleneck is each rank's NIC (full bisection behind it, no in-network reduction); with "
    "--gpus-per-node, ranks of a node talk over the intra-node link first",
    "DDP buckets are reduced in index order, one at a time on one channel; FSDP/HSDP collectives in issue order",
    "compute time is what was measured, less the run's own waits; only communication changes",
    "bytes move at the smaller of link rate x efficiency (per op, if calibrated) and the hosts' own ceiling",
]


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other bad input
        raise UsageError(message)


def parse_args(argv):
    p = Parser(prog="python -m train.comm.plan", description=__doc__.splitlines()[0])
    a = p.add_argument
    a("summary", nargs="?", help="summary.json of a run with comm.timelines")
    a("--world", type=int, help="target world size (default: the run's, or nodes x gpus-per-node)")
    a("--nodes", type=int, help="nodes (default 1, or world / gpus-per-node)")
    a("--gpus-per-node", type=int, help="GPUs per node, on the intra-node link (default 8; a run: flat, 1)")
    a("--link", help="alias of --nic for one rate")
    a("--nic", help="NIC rate(s) per GPU, comma-separated, with units (default: 25,50,100,200,400,800gbit)")
    a("--intra", help="intra-node rate per GPU, one direction (default: the GPU's NVLink)")
    a("--gpu", default="h100", help=f"GPU preset: {', '.join(GPUS)}; or custom (with --accel-tflops, "
      "--gpu-memory-gb, --intra)")
    a("--accel-tflops", type=float, help="peak dense TFLOP/s (default: the preset's; H100 SXM bf16: 989)")
    a("--gpu-memory-gb", type=float, help="GPU memory, GB (default: the preset's)")
    a("--mfu", type=float, default=0.4, help="model FLOPs / peak while computing (default 0.4)")
    a("--efficiency", type=float, help="share of the NIC rate a collective achieves (default 0.9; a run: 1.0)")
    a("--intra-efficiency", type=float, help="share of the intra-node rate a collective achieves (default 0.8)")
    a("--hop-latency-us", type=float, help="latency per inter-node ring step (default 5 us)")
    a("--intra-latency-us", type=float, help="latency per intra-node ring step (default 2 us)")
    a("--oversubscription", type=float, default=1.0, help="fabric oversubscription, e.g. 2 for 2:1 (default 1)")
    a("--algorithm", default="auto", choices=ALGORITHMS, help="all_reduce across nodes: NCCL ring, tree, or the faster")
    a("--host-gbit", type=float, help="most the hosts can push through any link, Gbit/s")
    a("--calibration", action="append", default=[], help="sweep JSON (repeatable): per-op efficiency, hop latency, "
      "host ceiling")
    a("--target-exposed", type=float, default=0.05, help="exposed comm budget as a fraction of the step")
    a("--model", help=f"a shape ({', '.join(SHAPES)}) or this project's model (with --flavor)")
    a("--flavor", default="debug")
    a("--params", type=float, help="describe by parameter count, e.g. 7e9 (32 equal layers assumed)")
    for name in ("layers", "hidden", "heads", "kv-heads", "ffn", "vocab"):
        a(f"--{name}", type=int, help="describe a decoder by its shape")
    a("--seq-len", type=int, help="tokens per sample (default: the shape's)")
    a("--dtype", default="bf16", choices=sorted(inputs.BYTES), help="parameters and gradients on the wire")
    a("--reduce-dtype", choices=sorted(inputs.BYTES), help="gradient reductions (default: --dtype)")
    a("--hook", default="allreduce", choices=("allreduce", "fp16", "bf16"), help="DDP's compression hook: fp16/bf16 reduce in 2 bytes, as --reduce-dtype bf16 would "
      "(for every strategy)")
    a("--bucket-mb", type=float, default=25.0)
    a("--compute-ms", type=float, help="forward+backward time per step per GPU (instead of FLOPs / throughput)")
    a("--items-per-step", type=float, help="tokens (or samples) per GPU per step (default: one sequence)")
    a("--tokens-per-step", type=float, help="tokens per step over all GPUs")
    a("--strategy", default="ddp,fsdp,hsdp", help=f"comma-separated: {', '.join(STRATEGIES)}")
    a("--shard-size", type=int, help="hsdp: GPUs per shard group (default: gpus-per-node, more nodes if it must)")
    a("--activation-checkpointing", default="auto", choices=("auto", "on", "off"))
    a("--train-tokens", type=float, help="token budget: days to train it")
    a("--deadline-days", type=float, help="with --train-tokens: GPUs needed to finish in time")
    a("--checkpoint-write-s", type=float, default=120.0, help="time budget to write one checkpoint")
    a("--bytes-per-token", type=float, help="stored bytes per token (default: 2, or 4 for vocabularies > 65536)")
    a("--json", action="store_true", help="print one JSON object instead of the tables")
    a("--debug", action="store_true")
    args = p.parse_args(argv)
    inputs.check_numbers(args)
    if args.link and args.nic:
        raise UsageError("give --nic or --link, not both")
    if args.items_per_step and args.tokens_per_step:
        raise UsageError("give --items-per-step (per GPU) or --tokens-per-step (all GPUs), not both")
    if args.deadline_days and not args.train_tokens:
        raise UsageError("--deadline-days needs --train-tokens")
    args.strategies = [s.strip() for s in args.strategy.split(",")]
    for s in args.strategies:
        if s not in STRATEGIES:
            raise choice_error("--strategy", s, STRATEGIES)
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
        raise UsageError(f"summary {path!r} has no comm.timelines: run with world size > 1 and a comm.hook "
                         f"other than none")
    par = summary.get("parallel") or {}
    return timelines, {"source": "run", "summary": path, "measured_world": summary.get("world_size"),
                       "strategy": par.get("strategy", timelines[0].get("strategy", "ddp")),
                       "measured_shard_size": par.get("shard_size"),
                       "model": summary.get("model", {}).get("name"), "hook": summary["comm"].get("hook")}


def replay_run(args) -> dict:
    timelines, info = from_run(args.summary)
    world = args.world or (args.nodes * args.gpus_per_node if args.nodes and args.gpus_per_node else None) \
        or info["measured_world"] or 8
    if info["strategy"] == "hsdp":
        shard = args.shard_size or info["measured_shard_size"] or world
        if world % shard:
            raise UsageError(f"--shard-size {shard} does not divide the world size {world}")
    else:
        shard = None
    if args.gpus_per_node:  # a topology: the node tier on the intra-node link, NICs beyond it
        if world % args.gpus_per_node:
            raise UsageError(f"--world {world} is not a multiple of --gpus-per-node {args.gpus_per_node}")
        g = args.gpus_per_node
        if shard and g % shard and shard % g:
            raise UsageError(f"--shard-size {shard} must divide --gpus-per-node {g} or be a multiple of it")
        args.world, args.nodes = world, None
        net = inputs.build_cluster(args).topology
        link = net.inter
    else:
        net = link = Link(1e9)  # the rate is replaced per row; efficiency, latency and host ceiling carry over
        if args.calibration:
            cal = inputs.load_calibration(args.calibration)
            link.ops, link.hop_latency_s = cal["ops"], cal["hop_latency_s"]
            link.efficiency = cal.get("efficiency", link.efficiency)
            link.host_bit_s = cal.get("host_bit_s", link.host_bit_s)
        link.efficiency = args.efficiency or link.efficiency
        if args.hop_latency_us is not None:
            link.hop_latency_s = args.hop_latency_us * 1e-6
        if args.host_gbit is not None:
            link.host_bit_s = args.host_gbit * 1e9
    rates = inputs.parse_rates(args.link or args.nic, "--link" if args.link else "--nic") or \
        [g * 1e9 for g in STANDARD_RATES_GBIT]
    rows = [{"link_gbit_s": r / 1e9, **predict(timelines, world, net.at_rate(r), shard)} for r in rates]
    need = required_rate(timelines, world, net, args.target_exposed, shard_size=shard)
    info.update({"world": world, "shard_size": shard, "gpus_per_node": args.gpus_per_node,
                 "intra_gbit_s": net.intra.rate_bit_s / 1e9 if args.gpus_per_node else None,
                 "efficiency": link.efficiency, "hop_latency_us": link.hop_latency_s * 1e6,
                 "host_gbit_s": link.host_bit_s / 1e9 if link.host_bit_s != float("inf") else None,
                 "timelines": len(timelines)})
    return {"inputs": info, "assumptions": REPLAY_ASSUMPTIONS, "rates": rows,
            "required": {"target_exposed": args.target_exposed, "link_gbit_s": need / 1e9 if need else None}}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = None
    try:
        args = parse_args(argv)
        if args.summary:
            result = replay_run(args)
        else:
            from train.comm.plan.describe import plan_cluster
            result = plan_cluster(args)
    except UsageError as e:
        if args is not None and args.debug:
            raise
        print(f"gradwire: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        from train.comm.plan import report
        (report.print_replay if args.summary else report.print_cluster)(result)
    return 0
