"""TensorBoard's Custom Scalars tab: the run's dashboards, one quantity per chart.

TensorBoard colours a multi-line chart by run, not by tag: two tags of one run in one chart
are two lines of the same colour that nobody can tell apart. So every chart here holds one
tag (its regex is anchored at both ends), titled with the quantity and its unit, and several
runs in one log folder are then the coloured lines of a chart: the comparison the colours are
for. The one two-sided figure, step time across ranks, is a margin chart: a line and a band.
"""
from __future__ import annotations

import re

from train.comm.busbw import busbw_factor

OPS_BY_STRATEGY = {"ddp": ("all_reduce",), "fsdp": ("all_gather", "reduce_scatter"),
                   "hsdp": ("all_gather", "reduce_scatter", "all_reduce")}


def one(tag: str) -> list:
    """A chart of exactly this tag (custom scalars match regexes from the start only)."""
    return ["Multiline", [re.escape(tag) + "$"]]


def network_layout(strategy: str = "ddp", world_size: int = 2, measured: bool = True, unit: str = "samples",
                   eval_loss: bool = True, mfu: bool = False) -> dict:
    """Categories in the order they open: the network first, then time, ranks, training.

    Charts of figures this run will not write (comm when it is not measured, the other
    throughput unit, eval loss without eval, MFU without a known peak) are left out: an
    empty chart only raises the question why.
    """
    layout = _full_layout(strategy, world_size)
    absent = {"throughput/tokens_per_s" if unit == "samples" else "throughput/samples_per_s"}
    absent |= set() if eval_loss else {"eval/loss"}
    absent |= set() if mfu else {"perf/mfu_pct"}
    absent_prefixes = () if measured else ("comm/", "net/", "time/exposed")
    if world_size <= 1:
        absent_prefixes += ("ranks/",)
    out = {}
    for category, charts in layout.items():
        kept = {title: chart for title, chart in charts.items()
                if not any(t in absent or t.startswith(absent_prefixes) for t in chart_tags({"": {title: chart}})[title])}
        if kept:
            out[category] = kept
    return out


def _full_layout(strategy: str, world_size: int) -> dict:
    if strategy == "ddp":  # DDP's all-reduce as a whole (the per-op category repeats it as comm/all_reduce/)
        network = {
            "busbw (Gbit/s)": one("comm/busbw_gbit_s"),
            "comm time (ms per step)": one("comm/time_ms"),
            "exposed comm (ms per step)": one("time/exposed_comm_ms"),
            "overlap (% of comm time hidden behind backward)": one("comm/overlap_pct"),
            "sent bytes (bytes per step)": one("comm/sent_bytes"),
            "grad bytes (bytes per step)": one("comm/grad_bytes"),
            "buckets (per step)": one("comm/buckets"),
        }
        if abs(busbw_factor("all_reduce", max(world_size, 1)) - 1.0) > 1e-9:  # at factor 1 it is busbw again
            network["algbw (Gbit/s)"] = one("comm/algbw_gbit_s")
    else:
        network = {"exposed comm (ms per step)": one("time/exposed_comm_ms"),
                   "exposed comm in forward (ms per step)": one("time/exposed_forward_ms"),
                   "exposed comm in backward (ms per step)": one("time/exposed_backward_ms")}
    network.update({
        "wire tx bytes (bytes per step, every rank on the link)": one("net/tx_bytes"),
        "wire rx bytes (bytes per step, every rank on the link)": one("net/rx_bytes"),
        "wire bytes / ring expectation (ratio)": one("net/wire_ratio"),
    })
    per_op = {}
    for op in OPS_BY_STRATEGY.get(strategy, OPS_BY_STRATEGY["hsdp"]):
        per_op.update({
            f"{op} busbw (Gbit/s)": one(f"comm/{op}/busbw_gbit_s"),
            f"{op} comm time (ms per step)": one(f"comm/{op}/time_ms"),
            f"{op} sent bytes (bytes per step)": one(f"comm/{op}/sent_bytes"),
            f"{op} calls (per step)": one(f"comm/{op}/calls"),
        })
    time = ({"step time (ms)": one("time/step_ms")} if world_size <= 1 else
            {"step time across ranks (ms; band: fastest to slowest rank)":
             ["Margin", ["time/step_ms", "ranks/step_ms_min", "ranks/step_ms_max"]]})
    for part in ("data", "forward", "backward", "optimizer"):
        time[f"{part} (ms per step)"] = one(f"time/{part}_ms")
    ranks = {
        "waiting for a late peer (ms per step)": one("ranks/peer_wait_ms"),
        "moving bytes, slowest rank's exposed comm (ms per step)": one("ranks/transfer_ms"),
        "spread between ranks (% of the slowest step)": one("ranks/spread_pct"),
        "slowest rank (rank number)": one("ranks/slowest"),
    }
    training = {
        "train loss": one("train/loss"),
        "eval loss": one("eval/loss"),
        "throughput (samples/s)": one("throughput/samples_per_s"),
        "throughput (tokens/s)": one("throughput/tokens_per_s"),
        "learning rate": one("train/lr"),
        "grad norm (before clipping)": one("train/grad_norm"),
        "MFU (% of the device's peak)": one("perf/mfu_pct"),
    }
    return {"Network": network, "Collectives per op": per_op, "Step time": time,
            "Ranks": ranks, "Training": training}


def chart_tags(layout: dict) -> dict:
    """title -> the exact tags a chart draws (for tests and for trimming charts a run lacks)."""
    out = {}
    for charts in layout.values():
        for title, (kind, tags) in charts.items():
            out[title] = [t[:-1].replace("\\", "") for t in tags] if kind == "Multiline" else list(tags)
    return out
