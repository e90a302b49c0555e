"""What the loop calls: per-step figures, log-step scalars, the run's comm summary.

Vocabulary (DESIGN.md): grad bytes, sent bytes, comm time (first launch to last completion),
exposed comm (end of backward compute to last completion), overlap = 1 - exposed / comm,
algbw = sent bytes / comm time, busbw = algbw x the all-reduce factor, wire bytes.
"""
from __future__ import annotations

import os
import statistics
import time

from train.comm.busbw import busbw_factor, gbit_per_s
from train.comm.measure.clock import clock_for
from train.comm.config import CommConfig
from train.comm.measure.history import StepHistory
from train.comm.measure.hooks import build_hook
from train.comm.measure.recorder import BucketRecorder
from train.comm.measure.wire import WireCounter, choose_interfaces
from train.distributed import gather_objects

WARMUP_STEPS = 2  # step 0 allocates and DDP rebuilds its buckets after it: keep both out of medians
STEP_TAGS = ("time/step_ms", "time/data_ms", "time/forward_ms", "time/backward_ms", "time/optimizer_ms")
COMM_TAGS = ("time/exposed_comm_ms", "comm/grad_bytes", "comm/sent_bytes", "comm/buckets", "comm/time_ms",
             "comm/algbw_gbit_s", "comm/busbw_gbit_s", "comm/overlap_pct",
             "net/tx_bytes", "net/rx_bytes", "net/wire_ratio")


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Instrumentation:
    def __init__(self, cfg: CommConfig, ctx, model):
        self.cfg, self.ctx = cfg, ctx
        self.enabled = ctx.distributed and cfg.hook != "none" and cfg.record
        self.factor = busbw_factor("all_reduce", ctx.world_size)
        self.recorder = self.wire = self.ddp = None
        self.steps = StepHistory(warmup=WARMUP_STEPS)  # every step's figures in constant memory (history.py)
        self.timelines: list[dict] = []
        self.logged_ddp = False

    def attach(self, ddp) -> None:
        if not self.enabled:
            if self.cfg.hook != "none" and not self.cfg.record:
                ddp.register_comm_hook(*build_hook(self.cfg))  # the same hook, unmeasured
            return
        state, hook = build_hook(self.cfg)
        self.recorder = BucketRecorder(state, hook, clock_for(self.ctx.device))
        ddp.register_comm_hook(None, self.recorder.hook)
        self.recorder.counter.install()
        self.ddp = ddp
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        self.wire = WireCounter(choose_interfaces(self.cfg.nic, self.ctx.world_size, local),
                                self.ctx.world_size, ranks_on_link=local)

    def detach(self) -> None:
        if self.recorder is not None:
            self.recorder.counter.uninstall()
        self.ddp = None

    def begin_backward(self) -> None:
        if self.recorder is not None:
            self.wall_origin = time.time()  # aligns ranks' timelines at the end of the run
            self.recorder.begin_backward()

    def end_step(self, step: int, wall: dict) -> dict:
        """The step's figures, keyed by their TensorBoard tags (plus `items` and `compute_ms`)."""
        fig = {"time/step_ms": wall["step_ms"], "time/data_ms": wall["data_ms"],
               "time/forward_ms": wall["forward_ms"], "time/optimizer_ms": wall["optimizer_ms"],
               "items": wall["items"]}
        if self.recorder is None:
            fig["time/backward_ms"] = wall["backward_wall_ms"]
            fig["compute_ms"] = wall["data_ms"] + wall["forward_ms"] + wall["backward_wall_ms"]
            self.steps.append(fig)
            return fig
        self.recorder.stop()
        tl = self.recorder.timeline()
        buckets = tl["buckets"]
        compute_end = max((b["ready_ms"] for b in buckets), default=0.0)  # the last gradient was produced
        last_done = max((b["done_ms"] for b in buckets), default=0.0)
        first_launch = min((b["launch_ms"] for b in buckets), default=0.0)
        exposed = max(0.0, last_done - compute_end)
        comm_ms = last_done - first_launch
        backward = max(0.0, wall["backward_wall_ms"] - exposed)
        algbw = gbit_per_s(tl["sent_bytes"], comm_ms / 1e3)
        fig.update({
            "time/backward_ms": backward, "time/exposed_comm_ms": exposed,
            "comm/grad_bytes": sum(b["grad_bytes"] for b in buckets), "comm/sent_bytes": tl["sent_bytes"],
            "comm/buckets": len(buckets), "comm/time_ms": comm_ms,
            "comm/algbw_gbit_s": algbw, "comm/busbw_gbit_s": algbw * self.factor,
            "comm/overlap_pct": 100 * (1 - exposed / comm_ms) if comm_ms > 0 else 100.0,
            "compute_ms": wall["data_ms"] + wall["forward_ms"] + backward})
        fig.update(self.wire.step(tl["sent_bytes"]))
        self.steps.append(fig)
        self.timelines.append({
            "step": step, "step_ms": wall["step_ms"], "data_ms": wall["data_ms"], "forward_ms": wall["forward_ms"],
            "backward_ms": backward, "optimizer_ms": wall["optimizer_ms"], "compute_end_ms": compute_end,
            "exposed_ms": exposed, "comm_ms": comm_ms, "collectives": tl["collectives"], "buckets": buckets,
            "wall_origin_s": self.wall_origin})
        return fig

    def window_scalars(self, window: list[dict]) -> dict:
        """Medians over the steps since the last log (medians keep exposed <= comm <= step)."""
        tags = STEP_TAGS + (COMM_TAGS if self.recorder is not None else ())
        return {tag: _median(f.get(tag) for f in window) for tag in tags}

    def rank_vector(self, window: list[dict]) -> list[float]:
        """This rank's [step_ms, comm_ms, exposed_ms, compute_ms] for the log step's one gather."""
        return [_median(f.get(t, 0.0) for f in window) or 0.0
                for t in ("time/step_ms", "comm/time_ms", "time/exposed_comm_ms", "compute_ms")]

    def log_extras(self, sink, step: int) -> None:
        """Bucket-size histogram at log steps; DDP's own logging data once its buckets are final."""
        if not self.timelines:
            return
        sizes = [b["grad_bytes"] for b in self.timelines[-1]["buckets"]]
        if sizes:
            import torch
            sink.histogram("comm/bucket_bytes", torch.tensor(sizes, dtype=torch.float64), step)
        if not self.logged_ddp and step >= 1 and self.ddp is not None:
            sink.text("comm/ddp", ddp_text(self.ddp, self.cfg.hook, self.ctx.backend), step)
            self.logged_ddp = True

    def steady(self) -> list[dict]:
        return self.steps.steady()

    def summary(self) -> dict:
        if self.recorder is None:
            why = ("comm.hook=none" if self.cfg.hook == "none" else "comm.record=false" if not self.cfg.record
                   else "world size 1: nothing to communicate")
            return {"comm": {"hook": self.cfg.hook, "measured": False, "why": why}}
        s = self.steady()
        med = lambda tag: _median(f.get(tag) for f in s)  # noqa: E731
        comm_ms, exposed_ms = med("comm/time_ms"), med("time/exposed_comm_ms")
        steady_tl = self.timelines[WARMUP_STEPS:] or self.timelines
        k = self.cfg.timeline_steps
        sample = [steady_tl[i * len(steady_tl) // k] for i in range(min(k, len(steady_tl)))] if k else []
        add_peer_readiness(sample)
        sent = med("comm/sent_bytes")
        return {
            "comm": {"hook": self.cfg.hook, "measured": True, "grad_bytes_per_step": med("comm/grad_bytes"),
                     "sent_bytes_per_step": sent, "buckets_per_step": med("comm/buckets"),
                     "time_ms_median": comm_ms, "exposed_ms_median": exposed_ms,
                     "overlap_pct": 100 * (1 - exposed_ms / comm_ms) if comm_ms else 100.0,
                     "algbw_gbit_s_median": med("comm/algbw_gbit_s"), "busbw_gbit_s_median": med("comm/busbw_gbit_s"),
                     "busbw_factor": self.factor, "timelines": sample},
            "net": {"iface": ",".join(self.wire.interfaces), "ranks_on_link": self.wire.ranks_on_link,
                    "tx_bytes_per_step": med("net/tx_bytes"), "rx_bytes_per_step": med("net/rx_bytes"),
                    "expected_tx_bytes_per_step": self.factor * (sent or 0) * self.wire.ranks_on_link,
                    "wire_ratio": med("net/wire_ratio")}}


def add_peer_readiness(sample: list[dict]) -> None:
    """Give each sampled bucket `ready_max_ms`: when the last rank had it ready, on this rank's
    time axis. A bucket's all-reduce cannot finish before every rank launched it, so the planner
    replays from this. Ranks are aligned by wall clock: exact on one machine (and the testbed),
    as good as NTP/PTP across machines. One gather, once, at the end of the run."""
    mine = [(t["step"], t["wall_origin_s"], {b["index"]: b["ready_ms"] for b in t["buckets"]}) for t in sample]
    everyone = gather_objects(mine)
    for k, tl in enumerate(sample):
        for b in tl["buckets"]:
            ready = [(origin - tl["wall_origin_s"]) * 1e3 + marks[b["index"]]
                     for rank_sample in everyone if k < len(rank_sample)
                     for step, origin, marks in [rank_sample[k]] if step == tl["step"] and b["index"] in marks]
            b["ready_max_ms"] = max([b["ready_ms"], *ready])


def ddp_text(ddp, hook: str, backend: str) -> str:
    """DDP's own logging data (bucket sizes, cap, ...) as a markdown table for TensorBoard's text tab."""
    data = dict(ddp._get_ddp_logging_data())  # private but stable since 1.9; the only source of bucket caps
    data.update({"gradwire_hook": hook, "gradwire_backend": backend})
    rows = [f"| {k} | {str(v)[:300]} |" for k, v in sorted(data.items())]
    return "| key | value |\n|---|---|\n" + "\n".join(rows)
