"""nccl-tests for any backend: `torchrun --standalone --nproc-per-node=2 -m train.comm.sweep`.

Per op and size: time (mean over iterations, the slowest rank's), algbw and busbw in GB/s
(as nccl-tests prints) and Gbit/s, and the count of wrong elements from an exact check. Then
the alpha-beta fit per op and its error per size. Exit code 1 if any element was wrong.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from train.comm.busbw import busbw_factor, gbit_per_s, gbyte_per_s
from train.comm.sweep.collectives import OPS, Collective
from train.comm.plan.costmodel import fit_alpha_beta, format_rate, parse_rate
from train.distributed import DistConfig, setup, teardown
from train.errors import UsageError, check_choice

MAX_BYTES = 1 << 40  # beyond any device's memory: a typo, not a message size
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def parse_size(text: str, flag: str = "size") -> int:
    """'64M' -> 67108864 (binary multiples, as nccl-tests' -b/-e)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = str(text).strip().upper().removesuffix("B")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units and t[-1] != "" else (t, "")
    try:
        value = float(num) * units[unit]
    except ValueError:
        value = math.nan
    if not math.isfinite(value):  # "inf" and "nan" parse as floats: refuse them here, not in int()
        raise UsageError(f"{flag} {text!r} is not understood (use bytes with K, M or G, e.g. 1K, 64M)")
    if not 1 <= value <= MAX_BYTES:
        raise UsageError(f"{flag} {text!r} is out of range (must be 1 byte to 1024G)")
    return int(value)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m train.comm.sweep", description=__doc__.splitlines()[0])
    p.add_argument("--ops", default="all_reduce", help=f"comma-separated: {', '.join(OPS)}")
    p.add_argument("--min-bytes", default="1K")
    p.add_argument("--max-bytes", default="64M")
    p.add_argument("--factor", type=float, default=2.0)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--backend", default="auto", choices=("auto", "gloo", "nccl"))
    p.add_argument("--fit-min-bytes", default="0", help="fit alpha-beta only on sizes from here up "
                   "(a shaper's burst bucket passes small messages at line speed)")
    p.add_argument("--link", help="nominal rate of the link under test (e.g. 100mbit): recorded for calibration")
    p.add_argument("--json", help="write results and fits here")
    p.add_argument("--tb-dir", help="write TensorBoard scalars here")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    args.op_list = [o.strip() for o in args.ops.split(",") if o.strip()]
    for op in args.op_list:
        check_choice("--ops", op, OPS)
    args.min_b, args.max_b = parse_size(args.min_bytes, "--min-bytes"), parse_size(args.max_bytes, "--max-bytes")
    args.fit_min_b = parse_size(args.fit_min_bytes, "--fit-min-bytes") if args.fit_min_bytes != "0" else 0
    if args.min_b > args.max_b:
        raise UsageError(f"--min-bytes {args.min_bytes} is larger than --max-bytes {args.max_bytes}")
    if not (math.isfinite(args.factor) and args.factor > 1):
        raise UsageError(f"--factor {args.factor} must be a finite number > 1")
    if args.iters < 1:
        raise UsageError(f"--iters {args.iters} must be >= 1")
    if args.warmup < 0:
        raise UsageError(f"--warmup {args.warmup} must be >= 0")
    args.link_bit_s = parse_rate(args.link) if args.link else None
    if args.link_bit_s is not None and not math.isfinite(args.link_bit_s):
        raise UsageError(f"--link {args.link!r} is not a finite rate")
    return args


def sizes(args) -> list[int]:
    out, s = [], args.min_b
    while s <= args.max_b:
        out.append(s)
        s = max(s + 1, int(s * args.factor))  # a factor near 1 must still move on
    return out


def time_op(coll: Collective, warmup: int, iters: int, device) -> float:
    """Seconds per iteration on this rank, after a barrier so ranks start together."""
    for _ in range(warmup):
        coll.run()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(iters):
        coll.run()
    sync()
    return (time.perf_counter() - t0) / iters


def measure(args, ctx) -> list[dict]:
    dtype = DTYPES[args.dtype]
    elem = torch.tensor([], dtype=dtype).element_size()
    rows = []
    for op in args.op_list:
        for size in sizes(args):
            count = max(ctx.world_size, size // elem // ctx.world_size * ctx.world_size)
            coll = Collective(op, count, ctx.rank, ctx.world_size, ctx.device, dtype)
            seconds = time_op(coll, args.warmup, args.iters, ctx.device)
            wrong = coll.check()
            stats = torch.tensor([seconds, float(wrong)], dtype=torch.float64, device=ctx.device)
            dist.all_reduce(stats[:1], op=dist.ReduceOp.MAX)  # the slowest rank sets the time
            dist.all_reduce(stats[1:], op=dist.ReduceOp.SUM)
            seconds, wrong = stats[0].item(), int(stats[1].item())
            nbytes = count * elem  # nccl-tests' size: the whole array (gathered output, scattered input)
            factor = busbw_factor(op, ctx.world_size)
            rows.append({"op": op, "bytes": nbytes, "count": count, "time_us": seconds * 1e6,
                         "algbw_gbyte_s": gbyte_per_s(nbytes, seconds), "busbw_gbyte_s": gbyte_per_s(nbytes, seconds) * factor,
                         "algbw_gbit_s": gbit_per_s(nbytes, seconds), "busbw_gbit_s": gbit_per_s(nbytes, seconds) * factor,
                         "wrong": wrong})
    return rows


def fits(rows: list[dict], world: int, min_bytes: int = 0) -> dict:
    out = {}
    for op in dict.fromkeys(r["op"] for r in rows):
        mine = [r for r in rows if r["op"] == op and r["bytes"] >= min_bytes]
        if len(mine) < 2:
            continue
        ab = fit_alpha_beta([r["bytes"] for r in mine], [r["time_us"] * 1e-6 for r in mine])
        factor = busbw_factor(op, world)
        errors = [{"bytes": r["bytes"], "measured_us": r["time_us"], "predicted_us": ab.predict(r["bytes"]) * 1e6,
                   "error_pct": 100 * (ab.predict(r["bytes"]) * 1e6 - r["time_us"]) / r["time_us"]} for r in mine]
        out[op] = {"alpha_us": ab.alpha_s * 1e6, "beta_us_per_byte": ab.beta_s_per_byte * 1e6,
                   "busbw_gbit_s_fit": factor * 8 / ab.beta_s_per_byte / 1e9 if ab.beta_s_per_byte > 0 else None,
                   "errors": errors}
    return out


def print_table(rows: list[dict], fitted: dict, header: str) -> None:
    print(header)
    print(f"{'op':>14} {'size(B)':>12} {'count':>10} {'time(us)':>11} {'algbw(GB/s)':>12} {'busbw(GB/s)':>12}"
          f" {'busbw(Gbit/s)':>14} {'#wrong':>7}")
    for r in rows:
        print(f"{r['op']:>14} {r['bytes']:>12} {r['count']:>10} {r['time_us']:>11.1f} {r['algbw_gbyte_s']:>12.4f}"
              f" {r['busbw_gbyte_s']:>12.4f} {r['busbw_gbit_s']:>14.4f} {r['wrong']:>7}")
    for op, f in fitted.items():
        rate = format_rate(f["busbw_gbit_s_fit"] * 1e9) if f["busbw_gbit_s_fit"] else "-"
        print(f"\nalpha-beta fit, {op}: alpha {f['alpha_us']:.1f} us, bus rate {rate}")
        for e in f["errors"]:
            print(f"  {e['bytes']:>12} B  measured {e['measured_us']:>11.1f} us  fit {e['predicted_us']:>11.1f} us"
                  f"  error {e['error_pct']:+6.1f} %")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        ctx = setup(DistConfig(backend=args.backend))
    except UsageError as e:
        print(f"gradwire: error: {e}", file=sys.stderr)
        return 2
    if not dist.is_initialized():  # python -m train.comm.sweep: a world of one, still measurable
        import tempfile
        dist.init_process_group(ctx.backend, init_method=f"file://{tempfile.mktemp()}", rank=0, world_size=1)
    rows = measure(args, ctx)
    fitted = fits(rows, ctx.world_size, args.fit_min_b)
    if ctx.is_main:
        print_table(rows, fitted, f"# gradwire sweep: {ctx.backend}, world {ctx.world_size}, {args.dtype}, "
                                  f"{args.iters} iters after {args.warmup} warm-up")
        payload = {"world_size": ctx.world_size, "backend": ctx.backend, "dtype": args.dtype,
                   "link_bit_s": args.link_bit_s, "results": rows, "fits": fitted}
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        if args.tb_dir:
            write_tensorboard(rows, args.tb_dir)
    wrong = sum(r["wrong"] for r in rows)
    teardown()
    return 1 if wrong else 0


def write_tensorboard(rows: list[dict], folder: str) -> None:
    from torch.utils.tensorboard import SummaryWriter
    with SummaryWriter(folder) as w:
        for r in rows:  # x axis: message size in bytes
            for key in ("busbw_gbit_s", "algbw_gbit_s", "time_us"):
                w.add_scalar(f"sweep/{r['op']}_{key}", r[key], r["bytes"])
