"""report.png: the run on one page, readable in five seconds at 10 steps or at 10^6.

Everything is drawn from a StepHistory's bins (at most 64 of them), so the picture and its
render time do not depend on the step count: step time as stacked bars of each bin's mean
parts, every other figure as the bins' median line inside a min-max band.
"""
from __future__ import annotations

from pathlib import Path

from train.comm.busbw import busbw_factor
from train.comm.measure.history import StepHistory
from train.comm.measure.table import notes

PARTS = (("data", "time/data_ms", "#9e9e9e"), ("forward", "time/forward_ms", "#4c72b0"),
         ("backward", "time/backward_ms", "#55a868"),
         ("exposed comm", "time/exposed_comm_ms", "#c44e52"),
         ("exposed comm, forward", "time/exposed_forward_ms", "#dd8452"),
         ("exposed comm, backward", "time/exposed_backward_ms", "#c44e52"),
         ("optimizer", "time/optimizer_ms", "#8172b3"))
LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 8, "frameon": False}
BANDS = "(line: median; bands: middle half of the steps, and min..max)"
OP_COLOURS = {"all_reduce": "#4c72b0", "all_gather": "#55a868", "reduce_scatter": "#dd8452"}


def _as_history(steps) -> StepHistory:
    if isinstance(steps, StepHistory):
        return steps
    history = StepHistory()
    for fig in steps:
        history.append(fig)
    return history


def _edges(s: dict, *keys: str) -> tuple:
    """Bin edges and each series repeated at the end, for step lines that span whole bins."""
    x = s["step"] + [s["step"][-1] + s["width"][-1]]
    return (x, *(s[k] + s[k][-1:] for k in keys))


def band(ax, history: StepHistory, tag: str, label: str, colour: str, style: str = "-") -> bool:
    """The bins' median as a line inside two bands: the middle half of the steps, and min..max.
    False when the tag is absent."""
    s = history.series(tag)
    if not s["step"]:
        return False
    x, lo, hi, q1, q3, med = _edges(s, "min", "max", "q1", "q3", "median")
    ax.fill_between(x, lo, hi, color=colour, alpha=0.12, linewidth=0, step="post")
    ax.fill_between(x, q1, q3, color=colour, alpha=0.3, linewidth=0, step="post")
    ax.plot(x, med, style, color=colour, label=label, drawstyle="steps-post", linewidth=1.6)
    ax._gradwire_range = [max(getattr(ax, "_gradwire_range", [0, 0])[0], max(q3)),
                          max(getattr(ax, "_gradwire_range", [0, 0])[1], max(hi))]
    return True


def fit_y(ax, unit: str) -> None:
    """From zero to a little above the middle halves: a rare stall's max must not flatten the
    medians (its band is cut, and the peak is written on the chart)."""
    middle, peak = getattr(ax, "_gradwire_range", [0, 0])
    top = 1.8 * middle
    if middle > 0 and peak > top:
        ax.set_ylim(0, top)
        ax.annotate(f"max {peak:.3g} {unit} off the scale", (0.01, 0.97), xycoords="axes fraction", fontsize=7,
                    va="top")
    else:
        ax.set_ylim(bottom=0)


def title_of(summary: dict, steps: int) -> str:
    m, par, n = summary.get("model", {}), summary.get("parallel", {}), summary.get("net", {})
    model = "/".join(str(v) for v in (m.get("name"), m.get("flavor")) if v) or "model"
    link = n.get("iface")
    if link == "lo":
        link = "lo (loopback, one machine)"
    elif link and n.get("link_gbit_s"):
        link = f"{link} at {n['link_gbit_s']:g} Gbit/s"
    parts = [model, par.get("strategy", "ddp"), f"world {summary.get('world_size', '?')}",
             summary.get("backend"), f"link {link}" if link else None,
             f"hook {summary['comm']['hook']}" if summary.get("comm", {}).get("hook") and par.get("strategy", "ddp") == "ddp"
             else None, f"{steps:,} steps"]
    return "  |  ".join(str(p) for p in parts if p)


def _step_panel(ax, history: StepHistory) -> None:
    base, width = None, None
    for label, tag, colour in PARTS:
        if tag == "time/exposed_comm_ms" and history.has("time/exposed_forward_ms"):
            continue  # sharded runs split it into forward and backward
        s = history.series(tag)
        if not s["step"]:
            continue
        if base is None:
            base, width, starts = [0.0] * len(s["step"]), s["width"], s["step"]
        if len(s["mean"]) != len(base):  # a figure missing from some bins: draw it where it exists
            continue
        ax.bar(starts, s["mean"], width=width, bottom=base, align="edge", color=colour, label=label, linewidth=0)
        base = [b + v for b, v in zip(base, s["mean"])]
    top = max(base) if base else 1.0
    total = history.series("time/step_ms")
    if total["step"]:
        x, lo, hi, med = _edges(total, "min", "max", "median")
        ax.fill_between(x, lo, hi, color="black", alpha=0.08, step="post", linewidth=0, label="step time, min..max")
        ax.plot(x, med, color="black", linewidth=1.0, drawstyle="steps-post", label="step time, median")
        top = max(top, max(total["median"]))
        peak = max(range(len(total["max"])), key=lambda i: total["max"][i])
        if total["max"][peak] > 1.25 * top:  # one slow step must not squash the whole chart
            ax.annotate(f"max {total['max'][peak]:.1f} ms (step {total['step'][peak]}..)", (x[peak], 1.2 * top),
                        fontsize=7, ha="left", va="top")
    ax.set_ylim(0, 1.25 * top)
    ax.set_ylabel("ms per step")
    w = history.width
    ax.set_title(f"Step time: mean parts {'per step' if w == 1 else f'per {w:,} steps'}", fontsize=10, loc="left")
    ax.legend(**LEGEND)


def write_png(history, path: Path, summary: dict | None = None) -> Path | None:
    """Step breakdown, bandwidth and comm time (per op for sharded runs) over the whole run."""
    history = _as_history(history)
    if not len(history):
        return None
    import matplotlib.pyplot as plt
    fig = figure(history, summary or {})
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def figure(history, summary: dict):
    """The report as a matplotlib Figure (tests read its axes; write_png saves it)."""
    history = _as_history(history)
    import matplotlib
    matplotlib.use("Agg")  # no display on training nodes
    import matplotlib.pyplot as plt

    ops = [op for op in OP_COLOURS if history.has(f"comm/{op}/busbw_gbit_s")]
    per_op = bool(ops) and ops != ["all_reduce"]  # DDP's all-reduce is already the whole-run panels
    whole = history.has("comm/busbw_gbit_s")
    panels = 1 + (2 if whole else 0) + (2 if per_op else 0) + (1 if not whole and not per_op
                                                             and history.has("time/exposed_comm_ms") else 0)
    why = list(notes(summary).values())
    fig, axes = plt.subplots(panels, 1, figsize=(12, 2.6 * panels + 0.9 + 0.22 * len(why)), sharex=True, squeeze=False)
    axes = list(axes[:, 0])
    _step_panel(axes.pop(0), history)
    if whole:
        ax = axes.pop(0)
        world = summary.get("world_size") or 0
        factor = summary.get("comm", {}).get("busbw_factor") or (busbw_factor("all_reduce", world) if world else None)
        if factor is not None and abs(factor - 1) < 1e-9:
            band(ax, history, "comm/busbw_gbit_s", f"busbw = algbw (factor 1 at world {world})", "#4c72b0")
        else:
            band(ax, history, "comm/busbw_gbit_s", f"busbw (algbw x {factor:.2f})" if factor else "busbw", "#4c72b0")
            band(ax, history, "comm/algbw_gbit_s", "algbw", "#8c8c8c", "--")
        ax.set_ylabel("Gbit/s")
        ax.set_title(f"Bandwidth {BANDS}", fontsize=10, loc="left")
        fit_y(ax, "Gbit/s")
        ax.legend(**LEGEND)
    if whole or (not per_op and history.has("time/exposed_comm_ms")):
        ax = axes.pop(0)
        overlap = summary.get("comm", {}).get("overlap_pct")
        exposed = history.series("time/exposed_comm_ms")
        if exposed["step"]:  # an area under the comm line: when the two are equal, both still show
            x, med = _edges(exposed, "median")
            ax.fill_between(x, 0, med, step="post", color="#c44e52", alpha=0.55, linewidth=0,
                            label="exposed comm, median" + (f" (overlap {overlap:.0f}%)" if overlap is not None else ""))
        band(ax, history, "comm/time_ms", "comm time", "#4c72b0")
        ax.set_ylabel("ms per step")
        ax.set_title(f"Comm time and the part not hidden behind compute {BANDS}", fontsize=10, loc="left")
        fit_y(ax, "ms")
        ax.legend(**LEGEND)
    if per_op:
        bw, tm = axes.pop(0), axes.pop(0)
        for op in ops:
            band(bw, history, f"comm/{op}/busbw_gbit_s", op, OP_COLOURS[op])
            band(tm, history, f"comm/{op}/time_ms", op, OP_COLOURS[op])
        for ax, unit, what in ((bw, "Gbit/s", "busbw per op"), (tm, "ms per step", "comm time per op")):
            ax.set_ylabel(unit)
            ax.set_title(f"{what} {BANDS}", fontsize=10, loc="left")
            fit_y(ax, unit.split()[0])
            ax.legend(**LEGEND)
    from matplotlib.ticker import FuncFormatter
    fig.axes[-1].set_xlabel("step")
    fig.axes[-1].xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))  # 1,000,000, not 1e6
    fig.suptitle(title_of(summary, len(history)), fontsize=11)
    for i, line in enumerate(why):
        fig.text(0.01, 0.005 + 0.22 * (len(why) - 1 - i) / fig.get_figheight(), f"note: {line}", fontsize=7)
    fig.tight_layout(rect=(0, 0.22 * len(why) / fig.get_figheight() + 0.005, 1, 1))
    return fig
