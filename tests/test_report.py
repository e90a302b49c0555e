"""What a user reads: the step history behind it, report.png, the dashboard layout, the console
table's explanations and the next commands. End-to-end runs are in test_report_e2e.py."""
from __future__ import annotations

import random
import re
import statistics

import pytest

from train.comm.measure import table
from train.comm.measure.history import StepHistory
from train.comm.measure.instrument import COMM_TAGS, STEP_TAGS
from train.comm.measure.layout import chart_tags, network_layout
from train.comm.measure.png import figure, write_png
from train.comm.measure.table import link_rate_gbit_s, next_steps, notes, summary_table
from train.metrics import Progress


# -- history ---------------------------------------------------------------------------------
def test_history_bins_cover_every_step_in_bounded_memory():
    h = StepHistory(bins=16, sample=4, reservoir=50, warmup=2)
    for i in range(10_000):
        h.append({"x": float(i), "gone": None, "flag": True, "name": "a"})
    assert len(h) == 10_000 and 8 <= len(h.bins) <= 16 and len(h.reservoir) == 50
    assert h.tags() == {"x"}  # None, bools and strings are not figures
    s = h.series("x")
    assert sum(s["width"]) == 10_000 and s["step"][0] == 0
    assert all(a + w == b for a, w, b in zip(s["step"], s["width"], s["step"][1:]))  # contiguous
    for start, width, lo, hi, mean in zip(s["step"], s["width"], s["min"], s["max"], s["mean"]):
        assert (lo, hi) == (start, start + width - 1) and mean == pytest.approx(start + (width - 1) / 2)
    assert all(len(st.sample) <= 4 for b in h.bins for st in b.stats.values())


def test_history_of_a_short_run_is_exact():
    values = [9.0, 8.0, 1.0, 5.0, 3.0, 4.0, 2.0, 7.0, 6.0, 10.0]
    h = StepHistory(warmup=2, first_step=100)
    for v in values:
        h.append({"t": v})
    s = h.series("t")
    assert s["step"] == list(range(100, 110)) and s["median"] == values == s["min"] == s["max"]
    assert h.median("t") == statistics.median(values[2:])  # the warmup steps stay out
    short = StepHistory(warmup=2)
    short.append({"t": 3.0})
    assert short.median("t") == 3.0  # a run shorter than the warmup falls back to it


def test_history_medians_of_a_long_run_are_close():
    rng = random.Random(1)
    h = StepHistory(bins=8, reservoir=512, warmup=0)
    for _ in range(40_000):
        h.append({"t": rng.lognormvariate(0, 1)})
    assert h.median("t") == pytest.approx(1.0, rel=0.15)  # the lognormal's median is e^0
    assert all(m == pytest.approx(1.0, rel=0.6) for m in h.series("t")["median"])  # 8-value samples: rough


# -- report.png ------------------------------------------------------------------------------
def step(i: int, world_ops=None) -> dict:
    rng = random.Random(i)
    comm = 2.0 + rng.random()
    fig = {"time/step_ms": 6 + rng.random(), "time/data_ms": 0.1, "time/forward_ms": 1.0, "time/backward_ms": 2.0,
           "time/exposed_comm_ms": 1.0, "time/optimizer_ms": 0.5, "comm/time_ms": comm,
           "comm/busbw_gbit_s": 3.0 / comm, "comm/algbw_gbit_s": 2.0 / comm}
    for op in world_ops or ():
        fig.update({f"comm/{op}/busbw_gbit_s": 1.0 + rng.random(), f"comm/{op}/time_ms": 1.0})
    return fig


def legend_labels(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def summary_of(world: int, strategy: str = "ddp", **comm) -> dict:
    return {"world_size": world, "backend": "gloo", "model": {"name": "mlp", "flavor": "small"},
            "parallel": {"strategy": strategy}, "net": {"iface": "lo", "ranks_on_link": world},
            "comm": {"hook": "allreduce", "measured": True, "busbw_factor": 2 * (world - 1) / world, **comm}}


def test_png_draws_busbw_once_when_the_factor_is_one():
    fig = figure([step(i) for i in range(10)], summary_of(2))
    bandwidth = next(ax for ax in fig.axes if ax.get_title(loc="left").startswith("Bandwidth"))
    assert legend_labels(bandwidth) == ["busbw = algbw (factor 1 at world 2)"]
    assert "mlp/small" in fig._suptitle.get_text() and "ddp" in fig._suptitle.get_text()
    assert "world 2" in fig._suptitle.get_text() and "link lo" in fig._suptitle.get_text()
    fig4 = figure([step(i) for i in range(10)], summary_of(4))
    bandwidth = next(ax for ax in fig4.axes if ax.get_title(loc="left").startswith("Bandwidth"))
    assert legend_labels(bandwidth) == ["busbw (algbw x 1.50)", "algbw"]


@pytest.mark.parametrize("steps", [10, 5000])
def test_png_bars_do_not_grow_with_the_step_count(steps, tmp_path):
    h = StepHistory()
    for i in range(steps):
        h.append(step(i))
    fig = figure(h, summary_of(2))
    top = fig.axes[0]
    assert len(top.patches) == 5 * min(steps, len(h.bins))  # 5 parts, one bar per bin
    assert len(h.bins) <= 64
    assert write_png(h, tmp_path / "r.png", summary_of(2)).stat().st_size > 10_000


def test_png_has_per_op_panels_for_sharded_runs():
    fig = figure([step(i, ("all_gather", "reduce_scatter")) for i in range(20)], summary_of(4, "fsdp"))
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    per_op = [ax for ax in fig.axes if "per op" in ax.get_title(loc="left")]
    assert len(per_op) == 2, titles
    assert legend_labels(per_op[0]) == ["all_gather", "reduce_scatter"]
    assert "fsdp" in fig._suptitle.get_text() and "hook" not in fig._suptitle.get_text()
    # DDP's all_reduce per-op tags repeat the whole-run panels: no per-op panels for them.
    ddp = figure([step(i, ("all_reduce",)) for i in range(20)], summary_of(2))
    assert not any("per op" in ax.get_title(loc="left") for ax in ddp.axes)


# -- dashboard layout ------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "hsdp"])
def test_every_chart_draws_one_tag_with_its_unit(strategy):
    layout = network_layout(strategy, 4, eval_loss=True, mfu=True)
    for category, charts in layout.items():
        for title, (kind, tags) in charts.items():
            if kind == "Multiline":
                assert len(tags) == 1, title  # TensorBoard colours by run: two tags would look alike
                tag = chart_tags({"": {title: [kind, tags]}})[title][0]
                assert re.match(tags[0], tag) and not re.match(tags[0], tag + "_other"), title
            else:
                assert kind == "Margin" and len(tags) == 3
            if category != "Training":
                assert re.search(r"\(.+\)", title), f"{title!r} has no unit"


def test_layout_covers_each_strategys_tags():
    def tags_of(layout):
        return {t for ts in chart_tags(layout).values() for t in ts}
    ddp = tags_of(network_layout("ddp", 4))
    assert set(STEP_TAGS + COMM_TAGS) <= ddp and "comm/all_reduce/busbw_gbit_s" in ddp
    assert "comm/algbw_gbit_s" not in tags_of(network_layout("ddp", 2))  # equal to busbw at world 2
    fsdp = tags_of(network_layout("fsdp", 4))
    for op in ("all_gather", "reduce_scatter"):
        assert {f"comm/{op}/{q}" for q in ("calls", "sent_bytes", "time_ms", "busbw_gbit_s")} <= fsdp
    assert {"time/exposed_forward_ms", "time/exposed_backward_ms", "time/exposed_comm_ms"} <= fsdp
    assert "comm/busbw_gbit_s" not in fsdp and "comm/all_reduce/calls" not in fsdp
    assert "comm/all_reduce/calls" in tags_of(network_layout("hsdp", 4))
    alone = tags_of(network_layout("ddp", 1, measured=False, unit="tokens", eval_loss=False))
    assert not any(t.startswith(("comm/", "net/", "ranks/", "time/exposed")) for t in alone)
    assert {"time/step_ms", "throughput/tokens_per_s"} <= alone
    assert not {"eval/loss", "throughput/samples_per_s", "perf/mfu_pct"} & alone


# -- explanations and next commands ----------------------------------------------------------
def measured(**overrides) -> dict:
    s = {"world_size": 2, "backend": "gloo", "time": {"step_ms_median": 6.0},
         "config": {"dist": {"bucket_cap_mb": 25.0}},
         "comm": {"hook": "allreduce", "measured": True, "grad_bytes_per_step": 940_600, "sent_bytes_per_step": 940_600,
                  "buckets_per_step": 4, "time_ms_median": 2.0, "exposed_ms_median": 1.0, "overlap_pct": 50.0,
                  "algbw_gbit_s_median": 3.0, "busbw_gbit_s_median": 3.0, "busbw_factor": 1.0},
         "net": {"iface": "eth0", "ranks_on_link": 1, "tx_bytes_per_step": 1e6, "wire_ratio": 1.01, "link_gbit_s": None}}
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        s[section][field] = value
    return s


def test_one_bucket_explains_zero_overlap_and_suggests_a_cap():
    assert "overlap" not in notes(measured())
    one = measured(comm__buckets_per_step=1, comm__overlap_pct=0.0)
    lines = summary_table(one).splitlines()
    row = next(i for i, ln in enumerate(lines) if ln.strip().startswith("overlap"))
    assert "one bucket" in lines[row + 1]  # right under the figure it explains
    assert "dist.bucket_cap_mb=25" in lines[row + 1] and "dist.bucket_cap_mb=0.11" in lines[row + 1]  # 0.9 MiB / 8


def test_sharded_gloo_run_explains_zero_overlap():
    s = measured()
    s["parallel"] = {"strategy": "fsdp", "shard_size": 2, "replicate_size": 1}
    assert "synchronously on the training thread" in notes(s)["overlap"]
    s["backend"] = "nccl"
    assert "overlap" not in notes(s)


def test_world_size_one_says_there_is_nothing_to_communicate():
    alone = {"world_size": 1, "comm": {"measured": False, "why": "world size 1: nothing to communicate"}}
    text = summary_table(alone)
    assert "no peer" in text and "torchrun --nproc-per-node=2" in text
    off = {"world_size": 2, "comm": {"measured": False, "why": "comm.hook=none"}}
    assert "no peer" not in summary_table(off)


def test_wire_counters_of_several_local_ranks_are_explained():
    assert "wire" not in notes(measured())
    lo = notes(measured(net__iface="lo", net__ranks_on_link=2))
    assert "lo counts all 2 local ranks" in lo["wire"] and "x 2" in lo["wire"]
    assert "eth0 counts all 4 ranks" in notes(measured(net__ranks_on_link=4))["wire"]


def test_host_bound_busbw_is_explained():
    assert "busbw" not in notes(measured(net__link_gbit_s=0.1, comm__busbw_gbit_s_median=0.094))  # link-bound
    slow = notes(measured(net__link_gbit_s=10.0, comm__busbw_gbit_s_median=1.0))
    assert "10% of eth0's 10 Gbit/s" in slow["busbw"] and "hosts" in slow["busbw"]
    assert "busbw" not in notes(measured(comm__busbw_gbit_s_median=1.0))  # rate unknown: no claim
    assert "hosts' ceiling" in notes(measured(net__iface="lo"))["busbw"]


def test_link_rate_takes_a_shaper_below_the_nic(monkeypatch):
    class Stat:
        speed = 10_000  # Mbit/s: what a veth reports
    monkeypatch.setattr("psutil.net_if_stats", lambda: {"veth0": Stat(), "lo": Stat()})
    monkeypatch.setattr(table.shutil, "which", lambda name: "/sbin/tc")
    monkeypatch.setattr(table.subprocess, "run", lambda *a, **k: type("R", (), {
        "stdout": "qdisc tbf 1: root refcnt 2 rate 100Mbit burst 32Kb lat 50ms\n"})())
    assert link_rate_gbit_s(["veth0"]) == pytest.approx(0.1)
    monkeypatch.setattr(table.shutil, "which", lambda name: None)
    assert link_rate_gbit_s(["veth0"]) == pytest.approx(10.0)
    assert link_rate_gbit_s(["missing"]) is None


def test_sharded_table_lists_each_op():
    s = measured()
    s["parallel"] = {"strategy": "hsdp", "shard_size": 2, "replicate_size": 2}
    s["comm"] = {"hook": "allreduce", "measured": True, "exposed_ms_median": 3.0, "busbw_gbit_s_median": 9.9, "exposed_forward_ms_median": 1.0,
                 "exposed_backward_ms_median": 2.0,
                 "ops": {"all_gather": {"calls_per_step": 6, "sent_bytes_per_step": 2e6, "time_ms_median": 4.0,
                                        "busbw_gbit_s_median": 2.5},
                         "reduce_scatter": {"calls_per_step": 3, "sent_bytes_per_step": 1e6, "time_ms_median": 2.0,
                                            "busbw_gbit_s_median": 1.5}}}
    text = summary_table(s)
    assert "(hsdp, shard 2 x replicate 2, gloo, world 2, median over steady steps)" in text
    assert re.search(r"all_gather\s+6 calls, 2.0 MB, 4.00 ms, busbw 2.500 Gbit/s", text)
    assert re.search(r"in forward\s+1.00 ms", text) and "reduce_scatter" in text
    assert "buckets" not in text and "9.9" not in text  # no DDP rows for a sharded run: busbw is per op
    s["net"].update(link_gbit_s=10.0)
    lines = summary_table(s).splitlines()
    row = next(i for i, ln in enumerate(lines) if ln.strip().startswith("reduce_scatter"))
    assert "25% of eth0's 10 Gbit/s" in lines[row + 1]  # the fastest op's busbw, under the ops
    s["parallel"] = {"strategy": "fsdp", "shard_size": 2, "replicate_size": 1}
    assert "(fsdp, gloo, world 2, median" in summary_table(s)


def test_next_steps_name_this_runs_paths():
    text = next_steps("runs/my run", measured())
    assert "tensorboard --logdir 'runs/my run'" in text
    assert "python -m train.comm.plan 'runs/my run/summary.json' --world 64" in text
    alone = next_steps("runs/a", {"comm": {"measured": False}})
    assert "tensorboard --logdir runs/a" in alone and "--config runs/a/config.toml" in alone


def test_eval_lines_reach_the_console(capsys):
    p = Progress(200, "samples", enabled=True)
    p.eval_line(49, 1.4731, 1.4120)
    Progress(200, "samples", enabled=False).eval_line(49, 9.9)
    out = capsys.readouterr().out
    assert out == "step     50/200 | eval loss 1.4731 | train loss 1.4120 (last log)\n"
