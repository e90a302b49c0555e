"""Bus-bandwidth factors, the one place they are computed (nccl-tests' definitions).

busbw = algbw x factor, where algbw = bytes / time and, for the gathers and scatters, the
size counts the whole array. The factor turns algbw into what each rank's link carried for a
ring algorithm, so it can be compared with the link's rate whatever the world size.
"""
from __future__ import annotations

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "reduce")


def busbw_factor(op: str, world_size: int) -> float:
    if op not in COLLECTIVES:
        raise ValueError(f"op={op!r} is not allowed (choose from {', '.join(COLLECTIVES)})")
    if world_size < 1:
        raise ValueError(f"world_size={world_size} is out of range (must be >= 1)")
    n = world_size
    if op == "all_reduce":
        return 2 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        return (n - 1) / n
    return 1.0


def gbit_per_s(num_bytes: float, seconds: float) -> float:
    """Decimal Gbit/s (1e9 bit/s): the unit network gear is sold in."""
    return num_bytes * 8 / seconds / 1e9 if seconds > 0 else 0.0


def gbyte_per_s(num_bytes: float, seconds: float) -> float:
    """Decimal GB/s, as nccl-tests prints."""
    return num_bytes / seconds / 1e9 if seconds > 0 else 0.0
