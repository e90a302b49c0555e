"""The planner's inputs: every number checked up front, then the job (model, tokens, precision)
and the cluster (GPUs, nodes, network) built from the command line."""
from __future__ import annotations

import math

from train.comm.plan.cluster import Cluster, Job
from train.comm.plan.costmodel import Link, load_calibration, parse_rate
from train.comm.plan.network import GPU, GPUS, Topology
from train.comm.plan.shapes import SHAPES, Shape
from train.errors import UsageError, nearest

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# flag -> (lowest, highest, lowest excluded, must be an integer); None: unbounded
NUMBERS = {
    "world": (1, None, False, True), "nodes": (1, None, False, True), "gpus_per_node": (1, None, False, True),
    "shard_size": (1, None, False, True), "layers": (1, None, False, True), "hidden": (1, None, False, True),
    "heads": (1, None, False, True), "kv_heads": (1, None, False, True), "ffn": (1, None, False, True),
    "vocab": (1, None, False, True), "seq_len": (1, None, False, True),
    "params": (0, None, True, False), "bucket_mb": (0, None, True, False), "compute_ms": (0, None, True, False),
    "items_per_step": (0, None, True, False), "tokens_per_step": (0, None, True, False),
    "accel_tflops": (0, None, True, False), "gpu_memory_gb": (0, None, True, False),
    "mfu": (0, 1, True, False), "efficiency": (0, 1, True, False), "intra_efficiency": (0, 1, True, False),
    "target_exposed": (0, 1, True, False), "hop_latency_us": (0, None, False, False),
    "intra_latency_us": (0, None, False, False), "host_gbit": (0, None, True, False),
    "oversubscription": (1, None, False, False), "train_tokens": (0, None, True, False),
    "deadline_days": (0, None, True, False), "checkpoint_write_s": (0, None, True, False),
    "bytes_per_token": (0, None, True, False),
}


def check_numbers(args) -> None:
    """Finite and in range, or one line naming the flag; nan and inf are refused everywhere."""
    for name, (lo, hi, lo_open, integer) in NUMBERS.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if not math.isfinite(value):
            raise UsageError(f"{flag} {value} is not a finite number")
        low = value <= lo if lo_open else value < lo
        if low or (hi is not None and value > hi) or (integer and value != int(value)):
            rule = ("> " if lo_open else ">= ") + f"{lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
            kind = "an integer " if integer else ""
            raise UsageError(f"{flag} {value:g} is out of range (must be {kind}{rule})")
    if args.target_exposed == 1:
        raise UsageError("--target-exposed 1 is out of range (must be > 0 and < 1)")


def parse_rates(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    return [parse_rate(t, f"{flag}: link rate", require_unit=True) for t in text.split(",")]


def shape_of(args) -> Shape | None:
    if args.model in SHAPES:
        base = SHAPES[args.model]
        return base if not args.seq_len else Shape(**{**base.__dict__, "seq_len": args.seq_len})
    if args.layers:
        missing = [f for f in ("hidden", "heads", "vocab") if not getattr(args, f)]
        if missing:
            raise UsageError(f"--layers {args.layers} needs --{', --'.join(missing)} too (and optionally --kv-heads, "
                             f"--ffn, --seq-len)")
        if args.hidden % args.heads or (args.kv_heads and args.heads % args.kv_heads):
            raise UsageError(f"--hidden {args.hidden} must divide by --heads {args.heads}, and --heads by --kv-heads")
        return Shape("custom", args.layers, args.hidden, args.heads, args.vocab, args.seq_len or 2048,
                     kv_heads=args.kv_heads or 0, ffn=args.ffn or 0, gated=bool(args.ffn))
    return None


def from_flavor(args) -> tuple[list[int], float, float | None, dict | None]:
    """This project's models (`--model transformer --flavor gpt2-small`), built on the meta device:
    units are its blocks (if it has any) and the rest as the root."""
    import torch
    from models import build_model
    from models.registry import available_models, model_class
    try:
        flavor_cfg = model_class(args.model).FLAVORS.get(args.flavor)
    except ValueError:
        names = sorted(available_models() + list(SHAPES))
        hint = nearest(args.model, names)
        raise UsageError(f"--model {args.model!r} is not known (choose from {', '.join(names)}"
                         f"{f'; did you mean {hint!r}?' if hint else ''})") from None
    seq_len = args.seq_len or min(1024, getattr(flavor_cfg, "block_size", 1024))
    spec = {"vocab_size": 256, "seq_len": seq_len} if args.model != "mlp" else \
        {"input_shape": (1, 28, 28), "num_classes": 10}
    try:
        with torch.device("meta"):
            model = build_model(args.model, args.flavor, spec)
    except ValueError as e:
        raise UsageError(str(e)) from None
    blocks = [sum(p.numel() for p in b.parameters()) for b in getattr(model, "blocks", [])]
    units = blocks + [model.num_params() - sum(blocks)]  # the blocks, then the root: the rest
    acts = None
    if flavor_cfg is not None and hasattr(flavor_cfg, "d_model"):
        acts = Shape("flavor", flavor_cfg.n_layer, flavor_cfg.d_model, flavor_cfg.n_head, model.vocab, seq_len,
                     gpt2=True).activation_bytes_per_token(BYTES[args.dtype])
    return units, model.flops_per_item(), seq_len if model.unit == "tokens" else None, acts


def build_job(args, world: int) -> Job:
    b = BYTES[args.dtype]
    shape = shape_of(args)
    if shape:
        seq = shape.seq_len
        units, unit_f, held = shape.units(seq)
        model_f, acts, name = shape.flops_per_token(seq), shape.activation_bytes_per_token(b), shape.name
    elif args.model:
        units, model_f, seq, acts = from_flavor(args)
        # forward FLOPs in proportion to parameters; the rest beside the blocks is a held root
        unit_f, held, name = [model_f / 3 * n / sum(units) for n in units], len(units) > 1, f"{args.model}/{args.flavor}"
    elif args.params:
        layers = 32  # an unknown shape: 32 equal layers, activations unknown
        units, unit_f, held = [args.params / layers] * layers, [2.0 * args.params / layers] * layers, False
        model_f, seq, acts, name = 6.0 * args.params, None, None, f"{args.params:.3g} params"
    else:
        raise UsageError("give a run's summary.json, or describe a model: --model NAME (a known shape such as "
                         "llama3-70b, or a flavor with --flavor), --layers/--hidden/--heads/--vocab, or --params N")
    if args.tokens_per_step:
        per_gpu = args.tokens_per_step / world
    else:
        per_gpu = args.items_per_step or seq or 8192
    if args.hook in ("fp16", "bf16"):  # a DDP compression hook: reductions in 2 bytes
        reduce_b = 2
    else:
        reduce_b = BYTES[args.reduce_dtype or args.dtype]
    return Job(name, [int(u) for u in units], unit_f, held, model_f, acts, per_gpu, b, reduce_b,
               bucket_bytes=args.bucket_mb * 2**20, unit="samples" if args.model and not shape and not seq else "tokens")


def build_cluster(args) -> Cluster:
    intra = parse_rates(args.intra, "--intra")
    if args.gpu == "custom":
        missing = [f for f, v in (("--accel-tflops", args.accel_tflops), ("--gpu-memory-gb", args.gpu_memory_gb),
                                  ("--intra", intra)) if not v]
        if missing:
            raise UsageError(f"--gpu custom needs {', '.join(missing)}")
        gpu = GPU("custom", args.accel_tflops, args.gpu_memory_gb * 1e9, intra[0])
    elif args.gpu not in GPUS:
        hint = nearest(args.gpu, GPUS)
        raise UsageError(f"--gpu {args.gpu!r} is not a known GPU (choose from {', '.join(GPUS)}"
                         f"{f'; did you mean {hint!r}?' if hint else ''}; or custom, with --accel-tflops, "
                         f"--gpu-memory-gb and --intra)")
    else:
        gpu = GPUS[args.gpu]
    if args.gpu_memory_gb:
        gpu = type(gpu)(gpu.name, gpu.tflops, args.gpu_memory_gb * 1e9, gpu.nvlink_bit_s)
    gpn = args.gpus_per_node or (args.world if args.world and args.world < 8 and not args.nodes else 8)
    if args.world and args.world % gpn:
        raise UsageError(f"--world {args.world} is not a multiple of --gpus-per-node {gpn}")
    nodes = args.nodes or (args.world // gpn if args.world else 1)
    if args.world and args.nodes and args.world != nodes * gpn:
        raise UsageError(f"--world {args.world} disagrees with --nodes {nodes} x --gpus-per-node {gpn}")
    inter = Link(100e9, args.efficiency or 0.9, (args.hop_latency_us if args.hop_latency_us is not None else 5.0) * 1e-6)
    if args.calibration:
        cal = load_calibration(args.calibration)
        inter.ops = cal["ops"]
        inter.efficiency = args.efficiency or cal.get("efficiency", inter.efficiency)
        inter.host_bit_s = cal.get("host_bit_s", inter.host_bit_s)
        inter.hop_latency_s = cal["hop_latency_s"] if args.hop_latency_us is None else inter.hop_latency_s
    if args.host_gbit:
        inter.host_bit_s = args.host_gbit * 1e9
    topo = Topology(gpn, Link(intra[0] if intra else gpu.nvlink_bit_s, args.intra_efficiency or 0.8,
                              (args.intra_latency_us if args.intra_latency_us is not None else 2.0) * 1e-6),
                    inter, args.oversubscription, args.algorithm)
    return Cluster(gpu, nodes, topo, args.accel_tflops or gpu.tflops, args.mfu)
