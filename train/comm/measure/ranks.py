"""Across ranks, at log steps: slowest rank, spread, and waiting-for-a-peer vs moving-bytes.

Each rank contributes the window means of [step_ms, comm_ms, exposed_ms, compute_ms], where
compute_ms is step start to end of backward compute. Steps start together (each one begins
after the previous step's last collective), so a rank that finished its compute earlier than
the slowest one spends the difference waiting for that peer inside its exposed comm. The
slowest rank waits for nobody: its exposed comm is pure transfer.
"""
from __future__ import annotations

RANK_FIELDS = ("step_ms", "comm_ms", "exposed_ms", "compute_ms")


def rank_figures(rows: list[list[float]]) -> dict:
    if not rows or len(rows[0]) < len(RANK_FIELDS):
        return {}
    step = [r[0] for r in rows]
    compute = [r[3] for r in rows]
    slowest = max(range(len(rows)), key=lambda i: step[i])
    late = max(range(len(rows)), key=lambda i: compute[i])
    return {"ranks/step_ms_max": max(step), "ranks/step_ms_min": min(step), "ranks/slowest": slowest,
            "ranks/spread_pct": 100 * (max(step) - min(step)) / max(step) if max(step) else 0.0,
            "ranks/peer_wait_ms": max(compute) - min(compute),
            "ranks/transfer_ms": rows[late][2]}
