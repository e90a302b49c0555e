"""Synthetic step timelines for models we cannot run, in the format a gradwire run records
(summary.json comm.timelines), so that replay.py treats a description and a measurement alike.

Compute per unit comes from FLOPs at an assumed throughput; nothing waits on the network yet
(exposed 0): the replay adds the waits of the target network.
"""
from __future__ import annotations

import math


def bucket_timeline(grad_bytes: float, bucket_bytes: float, forward_ms: float, backward_ms: float,
                    optimizer_ms: float = 0.0) -> dict:
    """DDP: buckets of `bucket_bytes` become ready uniformly through backward (reverse layer order,
    equal cost per byte), index 0 first. Origin: the start of backward."""
    n = max(1, math.ceil(grad_bytes / bucket_bytes))
    buckets, left = [], grad_bytes
    for i in range(n):
        size = min(bucket_bytes, left)
        left -= size
        buckets.append({"index": i, "grad_bytes": size, "sent_bytes": size,
                        "ready_ms": backward_ms * (grad_bytes - left) / grad_bytes})
    return {"step": 0, "strategy": "ddp", "step_ms": forward_ms + backward_ms + optimizer_ms,
            "forward_ms": forward_ms, "backward_ms": backward_ms, "optimizer_ms": optimizer_ms,
            "compute_end_ms": backward_ms, "exposed_ms": 0.0, "buckets": buckets}


def sharded_timeline(strategy: str, unit_bytes: list[float], unit_forward_ms: list[float], shard_size: int,
                     replicate_size: int, reduce_ratio: float = 1.0, reshard_after_forward: bool = True,
                     recompute: bool = False, root_held: bool = False, optimizer_ms: float = 0.0) -> dict:
    """FSDP/HSDP: units in forward order. unit_bytes: parameter bytes on the wire per unit;
    reduce_ratio: gradient bytes / parameter bytes (fp32 reductions of bf16 parameters: 2).
    root_held: the last unit is the root (a tied embedding and head): gathered first, kept to the
    end of backward, its compute the head's (after the other units in forward, before them in
    backward). Backward costs 2x forward, 3x when checkpointed activations are recomputed.
    Origin: forward's start."""
    n = len(unit_bytes)
    root = n - 1 if root_held else None
    events = list(range(n - 1 if root_held else n))
    units, ops, t = {}, [], 0.0
    for u in events:
        units[u] = {"unit": u, "forward_start_ms": t, "forward_end_ms": t + unit_forward_ms[u]}
        t += unit_forward_ms[u]
    forward_end = t + (unit_forward_ms[root] if root_held else 0.0)
    t = forward_end + (2 * unit_forward_ms[root] if root_held else 0.0)
    for u in reversed(events):
        ms = unit_forward_ms[u] * (3 if recompute else 2)
        units[u].update(backward_start_ms=t, backward_end_ms=t + ms)
        t += ms
    compute_end = t
    if root_held:
        units[root] = {"unit": root, "forward_start_ms": 0.0, "forward_end_ms": forward_end,
                       "backward_start_ms": forward_end, "backward_end_ms": compute_end}

    def op(kind, group, unit, phase, nbytes, launch):
        ops.append({"op": kind, "group": group, "group_size": shard_size if group == "shard" else replicate_size,
                    "unit": unit, "phase": phase, "sent_bytes": nbytes, "launch_ms": launch, "done_ms": launch})

    if root_held:
        op("all_gather", "shard", root, "forward", unit_bytes[root], 0.0)
    for k, u in enumerate(events):  # prefetch: a unit's gather is issued as the one before it starts
        op("all_gather", "shard", u, "forward", unit_bytes[u], units[events[k - 1]]["forward_start_ms"] if k else 0.0)
    if reshard_after_forward:
        for k, u in enumerate(reversed(events)):
            launch = units[events[-k]]["backward_start_ms"] if k else forward_end
            op("all_gather", "shard", u, "backward", unit_bytes[u], launch)
    for u in list(reversed(events)) + ([root] if root_held else []):
        end = units[u]["backward_end_ms"]
        grads = unit_bytes[u] * reduce_ratio
        if shard_size > 1:
            op("reduce_scatter", "shard", u, "backward", grads, end)
        if replicate_size > 1:
            op("all_reduce", "replicate", u, "backward", grads / shard_size, end)
    if shard_size == 1:  # nothing is sharded: no gathers (a replicate-only mesh is DDP by units)
        ops = [o for o in ops if o["op"] != "all_gather"]
    return {"step": 0, "strategy": strategy, "world_size": shard_size * replicate_size,
            "step_ms": compute_end + optimizer_ms, "forward_ms": forward_end, "backward_ms": compute_end - forward_end,
            "optimizer_ms": optimizer_ms, "compute_end_ms": compute_end, "exposed_ms": 0.0,
            "exposed_forward_ms": 0.0, "exposed_backward_ms": 0.0, "ops": ops,
            "units": [units[u] for u in sorted(units)]}


# Optimizer state per parameter tensor: (tensors of the parameter's local shape, bytes of scalars).
# torch keeps a float32 `step` tensor per parameter for Adam, AdamW and RMSprop; SGD has none.
def _optimizer_states(name: str, momentum: float) -> tuple[int, int]:
    if name in ("adam", "adamw"):
        return 2, 4                       # exp_avg, exp_avg_sq
    if name == "rmsprop":
        return 1 + (momentum > 0), 4      # square_avg (+ momentum_buffer)
    return (1 if momentum > 0 else 0), 0  # sgd: momentum_buffer


def held_bytes(shapes: list[tuple[int, ...]], shard: int, elem_bytes: int = 4, optimizer: str = "adamw",
               momentum: float = 0.9) -> dict:
    """Bytes of parameters, gradients and optimizer state one rank holds, exactly, for parameter
    `shapes` sharded over `shard` ranks as FSDP2 shards them: dim 0 split in chunks of
    ceil(dim0 / shard) rows, every rank's padded to that size (rank 0 always holds a full chunk;
    shard=1: unsharded, DDP). Gradients take their parameters' local shapes."""
    numel = 0
    for s in shapes:
        rows = math.ceil(s[0] / shard) if s else 1
        numel += rows * math.prod(s[1:]) if s else 1
    tensors, scalars = _optimizer_states(optimizer, momentum)
    return {"param_bytes": numel * elem_bytes, "grad_bytes": numel * elem_bytes,
            "optim_bytes": tensors * numel * elem_bytes + scalars * len(shapes)}
