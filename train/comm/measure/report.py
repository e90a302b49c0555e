"""The run's network story for people: a TensorBoard dashboard, a console table, a PNG."""
from __future__ import annotations

from pathlib import Path


def network_layout() -> dict:
    """Custom-scalars layout: TensorBoard's "Custom Scalars" tab opens on a Network dashboard."""
    multi = lambda *tags: ["Multiline", list(tags)]  # noqa: E731
    return {
        "Network": {
            "Bandwidth (Gbit/s)": multi("comm/busbw_gbit_s", "comm/algbw_gbit_s"),
            "Comm vs compute (ms)": multi("comm/time_ms", "time/forward_ms", "time/backward_ms",
                                          "time/exposed_comm_ms", "time/optimizer_ms", "time/step_ms"),
            "Exposed comm": multi("time/exposed_comm_ms", "comm/overlap_pct"),
            "Wire bytes": multi("net/tx_bytes", "net/rx_bytes", "comm/sent_bytes", "comm/grad_bytes"),
            "Wire ratio to ring expectation": multi("net/wire_ratio"),
            "Ranks (ms)": multi("ranks/step_ms_max", "ranks/step_ms_min", "ranks/peer_wait_ms", "ranks/transfer_ms"),
        },
        "Training": {
            "Loss": multi("train/loss", "eval/loss"),
            "Throughput": multi("throughput/samples_per_s", "throughput/tokens_per_s"),
        },
    }


def _fmt_bytes(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1000
    return str(n)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def summary_table(summary: dict) -> str:
    """A comms summary in the spirit of DeepSpeed's, with ring busbw and measured overlap."""
    c, n = summary.get("comm", {}), summary.get("net", {})
    if not c.get("measured"):
        return f"comm: not measured ({c.get('why', 'instrumentation off')})"
    strategy = summary.get("parallel", {}).get("strategy", "ddp")
    what = f"hook {c['hook']}" if strategy == "ddp" else strategy
    head = f"Communication per step ({what}, {summary['backend']}, world {summary['world_size']}, median over steady steps)"
    rows = [("grad bytes", _fmt_bytes(c["grad_bytes_per_step"])), ("sent bytes", _fmt_bytes(c["sent_bytes_per_step"]))]
    if strategy == "ddp":
        rows.append(("buckets", _fmt(c.get("buckets_per_step"), ".0f")))
    rows += [("comm time", _fmt(c["time_ms_median"], ".2f") + " ms"),
             ("exposed comm", _fmt(c["exposed_ms_median"], ".2f") + " ms"),
             ("overlap", _fmt(c["overlap_pct"], ".1f") + " %"),
             ("step time", _fmt(summary["time"]["step_ms_median"], ".2f") + " ms")]
    if strategy == "ddp":
        rows += [("algbw", _fmt(c.get("algbw_gbit_s_median"), ".3f") + " Gbit/s"),
                 ("busbw", _fmt(c.get("busbw_gbit_s_median"), ".3f") + f" Gbit/s (x{c.get('busbw_factor', 1):.2f})")]
    else:
        for op, f in c.get("ops", {}).items():
            rows.append((f"{op}", f"{_fmt(f['calls_per_step'], '.0f')} calls, {_fmt_bytes(f['sent_bytes_per_step'])}, "
                                  f"{_fmt(f['time_ms_median'], '.2f')} ms, busbw {_fmt(f['busbw_gbit_s_median'], '.3f')} Gbit/s"))
    rows += [(f"wire tx ({n.get('iface')})", _fmt_bytes(n.get("tx_bytes_per_step"))),
             ("wire / ring expectation", _fmt(n.get("wire_ratio"), ".3f"))]
    width = max(len(k) for k, _ in rows)
    return "\n".join([head] + [f"  {k:<{width}}  {v}" for k, v in rows])


def write_png(steps: list[dict], path: Path) -> Path | None:
    """Step breakdown (stacked) and bandwidth over the run, next to summary.json."""
    if not steps:
        return None
    import matplotlib
    matplotlib.use("Agg")  # no display on training nodes
    import matplotlib.pyplot as plt

    x = list(range(len(steps)))
    parts = [("data", "time/data_ms"), ("forward", "time/forward_ms"), ("backward", "time/backward_ms"),
             ("exposed comm", "time/exposed_comm_ms"), ("optimizer", "time/optimizer_ms")]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    base = [0.0] * len(steps)
    for label, tag in parts:
        values = [s.get(tag) or 0.0 for s in steps]
        top.bar(x, values, bottom=base, width=1.0, label=label)
        base = [b + v for b, v in zip(base, values)]
    top.set_ylabel("ms per step")
    top.set_title("Step breakdown")
    top.legend(loc="upper right", fontsize=8)
    busbw = [s.get("comm/busbw_gbit_s") for s in steps]
    if any(v is not None for v in busbw):
        bottom.plot(x, [v or 0.0 for v in busbw], label="busbw")
        bottom.plot(x, [s.get("comm/algbw_gbit_s") or 0.0 for s in steps], label="algbw", alpha=0.6)
        bottom.legend(loc="upper right", fontsize=8)
    bottom.set_ylabel("Gbit/s")
    bottom.set_xlabel("step")
    bottom.set_title("Bandwidth")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
