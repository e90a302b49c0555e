"""The end-of-run console text: the comm table, a line under any figure that needs one, and
the two commands to run next."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess

OPS = ("all_reduce", "all_gather", "reduce_scatter")
HOST_BOUND_SHARE = 0.5  # busbw under half the link's rate: the link is not what limits the run


def fmt_bytes(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1000
    return str(n)


def _fmt(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def link_rate_gbit_s(interfaces: list[str]) -> float | None:
    """The slowest rated rate of the interfaces: the NIC's speed, or a tc shaper's rate below it.
    None when nothing says (loopback, virtual interfaces without a shaper)."""
    import psutil
    stats = psutil.net_if_stats()
    rates = []
    for name in interfaces:
        speed = stats[name].speed / 1e3 if name in stats and stats[name].speed > 0 else None
        shaped = _tc_rate_gbit_s(name)
        known = [r for r in (speed, shaped) if r]
        if known:
            rates.append(min(known))
    return min(rates) if rates else None


def _tc_rate_gbit_s(name: str) -> float | None:
    """A tbf/htb rate on the interface (the testbed shapes veths that report 10 Gbit/s)."""
    if not shutil.which("tc") or name == "lo":
        return None
    try:
        out = subprocess.run(["tc", "qdisc", "show", "dev", name], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    scale = {"": 1e-9, "K": 1e-6, "M": 1e-3, "G": 1.0}
    rates = [float(v) * scale[u] for v, u in re.findall(r"rate (\d+(?:\.\d+)?)([KMG]?)bit", out)]
    return min(rates) if rates else None


def notes(summary: dict) -> dict:
    """Explanations keyed by the row they belong under; each one short line."""
    c, n = summary.get("comm", {}), summary.get("net", {})
    out = {}
    if summary.get("world_size") == 1:
        out["comm"] = "one process has no peer to talk to: run under torchrun --nproc-per-node=2 to measure"
    if not c.get("measured"):
        return out
    if c.get("buckets_per_step") == 1:
        cap = summary.get("config", {}).get("dist", {}).get("bucket_cap_mb", 25)
        grad_mib = (c.get("grad_bytes_per_step") or 0) / 2**20
        out["overlap"] = (f"one bucket ({grad_mib:.2g} MiB of grads <= dist.bucket_cap_mb={cap:g}) starts after "
                          f"backward: nothing can overlap; try dist.bucket_cap_mb={max(grad_mib / 8, 0.01):.2g}")
    strategy = summary.get("parallel", {}).get("strategy", "ddp")
    if strategy != "ddp" and summary.get("backend") == "gloo":
        out["overlap"] = ("on gloo FSDP issues every gather and scatter synchronously on the training thread: "
                          "nothing can overlap (NCCL runs them on their own streams)")
    iface, local = n.get("iface", ""), n.get("ranks_on_link") or 1
    if iface == "lo":
        out["wire"] = f"lo counts all {local} local ranks, both ends of each connection: expected = ring bytes x {local}"
    elif local > 1:
        out["wire"] = (f"{iface} counts all {local} ranks of this machine: expected = the ring sends that leave it "
                       f"(one per ring spanning the nodes, one per local rank for HSDP's replicas)")
    op_busbw = [f.get("busbw_gbit_s_median") for f in c.get("ops", {}).values() if f.get("busbw_gbit_s_median")]
    rate = n.get("link_gbit_s")
    busbw = c.get("busbw_gbit_s_median") if "ops" not in c or not op_busbw else max(op_busbw)  # the fastest op
    if iface == "lo":
        out["busbw"] = "loopback is no link: this is the hosts' ceiling (CPU copies, gloo), not a network figure"
    elif rate and busbw is not None and busbw < HOST_BOUND_SHARE * rate:
        out["busbw"] = (f"{100 * busbw / rate:.0f}% of {iface}'s {rate:g} Gbit/s: the hosts (or small messages) "
                        f"limit it, not the link")
    return out


def summary_table(summary: dict) -> str:
    """A comms summary in the spirit of DeepSpeed's, with ring busbw and measured overlap."""
    c, n, why = summary.get("comm", {}), summary.get("net", {}), notes(summary)
    if not c.get("measured"):
        lines = [f"comm: not measured ({c.get('why', 'instrumentation off')})"]
        return "\n".join(lines + ([f"  ^ {why['comm']}"] if "comm" in why else []))
    par = summary.get("parallel", {})
    strategy = par.get("strategy", "ddp")
    what = f"hook {c.get('hook', '-')}" if strategy == "ddp" else strategy
    if strategy != "ddp" and par.get("shard_size") and (par.get("replicate_size") or 1) > 1:
        what += f", shard {par['shard_size']} x replicate {par['replicate_size']}"
    head = f"Communication per step ({what}, {summary['backend']}, world {summary['world_size']}, median over steady steps)"
    factor = c.get("busbw_factor")
    rows = [
        ("grad bytes", "grad_bytes_per_step", fmt_bytes), ("sent bytes", "sent_bytes_per_step", fmt_bytes),
        ("buckets", "buckets_per_step", lambda v: _fmt(v, ".0f")),
        ("comm time", "time_ms_median", lambda v: _fmt(v, ".2f", " ms")),
        ("exposed comm", "exposed_ms_median", lambda v: _fmt(v, ".2f", " ms")),
        ("  in forward", "exposed_forward_ms_median", lambda v: _fmt(v, ".2f", " ms")),
        ("  in backward", "exposed_backward_ms_median", lambda v: _fmt(v, ".2f", " ms")),
        ("overlap", "overlap_pct", lambda v: _fmt(v, ".1f", " %")),
        ("algbw", "algbw_gbit_s_median", lambda v: _fmt(v, ".3f", " Gbit/s")),
        ("busbw", "busbw_gbit_s_median",
         lambda v: _fmt(v, ".3f", " Gbit/s") + (f" (x{factor:.2f})" if factor is not None else "")),
    ]
    ddp_only = ("buckets_per_step", "algbw_gbit_s_median", "busbw_gbit_s_median")  # sharded runs: per op below
    table = [(label, show(c[key]), key.split("_")[0]) for label, key, show in rows
             if key in c and (strategy == "ddp" or key not in ddp_only)]
    at = next((i for i, row in enumerate(table) if row[0] in ("algbw", "busbw")), len(table))
    table.insert(at, ("step time", _fmt(summary.get("time", {}).get("step_ms_median"), ".2f", " ms"), "step"))
    ops = list(c.get("ops", {}).items())
    for i, (op, f) in enumerate(ops):
        last = i == len(ops) - 1 and strategy != "ddp"  # a sharded run's busbw note goes under its ops
        table.append((op, f"{_fmt(f.get('calls_per_step'), '.0f')} calls, {fmt_bytes(f.get('sent_bytes_per_step'))}, "
                          f"{_fmt(f.get('time_ms_median'), '.2f', ' ms')}, "
                          f"busbw {_fmt(f.get('busbw_gbit_s_median'), '.3f', ' Gbit/s')}", "busbw" if last else op))
    if n:
        table.append((f"wire tx ({n.get('iface')})", fmt_bytes(n.get("tx_bytes_per_step")), "tx"))
        table.append(("wire / ring expectation", _fmt(n.get("wire_ratio"), ".3f"), "wire"))
    width = max(len(label) for label, _, _ in table)
    lines = [head]
    for label, value, key in table:
        lines.append(f"  {label:<{width}}  {value}")
        if key in why:
            lines.append(f"  {'':<{width}}  ^ {why[key]}")
    return "\n".join(lines)


def next_steps(run_dir, summary: dict) -> str:
    """The two commands a user runs next, with this run's paths."""
    run = shlex.quote(str(run_dir))
    lines = ["next:", f"  tensorboard --logdir {run}    # Custom Scalars tab: the Network dashboard"]
    if summary.get("comm", {}).get("measured"):
        lines.append(f"  python -m train.comm.plan {shlex.quote(str(run_dir) + '/summary.json')} --world 64"
                     f"    # the network this run needs at 64 GPUs")
    else:
        lines.append(f"  torchrun --standalone --nproc-per-node=2 -m train --config {shlex.quote(str(run_dir) + '/config.toml')}"
                     f"    # measure the network first: the planner needs a run with world size > 1")
    return "\n".join(lines)
