"""What the loop calls: per-step figures, log-step scalars, the run's comm summary.

Vocabulary (docs/ARCHITECTURE.md): grad bytes, sent bytes, comm time, exposed comm, overlap = 1 - exposed /
comm, algbw = sent bytes / comm time, busbw = algbw x the op's factor, wire bytes. DDP runs are
measured bucket by bucket (recorder.py: comm time = first launch to last completion, exposed =
end of backward compute to last completion); sharded runs op by op (ops.py, sharded.py).
"""
from __future__ import annotations

import os
import statistics
import time

from train.comm.busbw import busbw_factor, gbit_per_s
from train.comm.measure.clock import clock_for
from train.comm.config import CommConfig
from train.comm.measure.expect import LinkShare
from train.comm.measure.history import StepHistory
from train.comm.measure.hooks import build_hook
from train.comm.measure.ops import OpRecorder
from train.comm.measure.recorder import BucketRecorder
from train.comm.measure.sample import EvenSample
from train.comm.measure.sharded import OPS, sharded_step
from train.comm.measure.wire import WireCounter, choose_interfaces
from train.distributed import gather_objects

WARMUP_STEPS = 2  # step 0 allocates and DDP rebuilds its buckets after it: keep both out of medians
STEP_TAGS = ("time/step_ms", "time/data_ms", "time/forward_ms", "time/backward_ms", "time/optimizer_ms")
COMM_TAGS = ("time/exposed_comm_ms", "comm/grad_bytes", "comm/sent_bytes", "comm/buckets", "comm/time_ms",
             "comm/algbw_gbit_s", "comm/busbw_gbit_s", "comm/overlap_pct",
             "net/tx_bytes", "net/rx_bytes", "net/wire_ratio")
SHARDED_TAGS = ("time/exposed_forward_ms", "time/exposed_backward_ms")
OP_FIELDS = ("calls", "sent_bytes", "time_ms", "busbw_gbit_s")
OP_TAGS = tuple(f"comm/{op}/{f}" for op in OPS for f in OP_FIELDS)


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Instrumentation:
    def __init__(self, cfg: CommConfig, ctx, model):
        self.cfg, self.ctx = cfg, ctx
        self.enabled = ctx.distributed and cfg.hook != "none" and cfg.record
        self.factor = busbw_factor("all_reduce", ctx.world_size)
        self.recorder = self.ops = self.wire = self.ddp = None
        self.shard_size = ctx.world_size
        self.strategy = "ddp"
        self.grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        self.steps = StepHistory(warmup=WARMUP_STEPS)  # every step's figures in constant memory (history.py)
        self.timelines = EvenSample(cfg.timeline_steps, WARMUP_STEPS)
        self.wire_windows: list[dict] = []  # per-step wire figures of the last log windows (not the first)
        self.windows_read = 0
        self.logged_ddp = False

    @property
    def measuring(self) -> bool:
        return self.recorder is not None or self.ops is not None

    def attach(self, par) -> None:
        """Measure the wrapped model (train/parallel.py): DDP's buckets, or FSDP's ops."""
        self.strategy = par.layout()["strategy"]
        self.shard_size = par.shard_size
        if par.ddp is not None:
            self._attach_ddp(par.ddp)
        elif par.sharded and self.enabled:
            self.ops = OpRecorder(clock_for(self.ctx.device), par.units, record_all_reduce=par.replicate_size > 1)
            self.ops.install()
            self._attach_wire()

    def _attach_ddp(self, ddp) -> None:
        if not self.enabled:
            if self.cfg.hook != "none" and not self.cfg.record:
                ddp.register_comm_hook(*build_hook(self.cfg))  # the same hook, unmeasured
            return
        state, hook = build_hook(self.cfg)
        self.recorder = BucketRecorder(state, hook, clock_for(self.ctx.device))
        ddp.register_comm_hook(None, self.recorder.hook)
        self.recorder.counter.install()
        self.ddp = ddp
        self._attach_wire()

    def _attach_wire(self) -> None:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        interfaces = choose_interfaces(self.cfg.nic, self.ctx.world_size, local)
        self.wire = WireCounter(interfaces, ranks_on_link=local)
        self.share = LinkShare(self.ctx.rank, self.ctx.world_size, local, self.shard_size,
                               loopback=interfaces == ["lo"], backend=self.ctx.backend)

    def detach(self) -> None:
        if self.recorder is not None:
            self.recorder.counter.uninstall()
        if self.ops is not None:
            self.ops.uninstall()
        self.ddp = None

    def begin_step(self) -> None:
        """Start of the step's first forward: sharded runs communicate from here on."""
        if self.ops is not None:
            self.wall_origin = time.time()
            self.ops.begin_step()

    def begin_forward(self) -> None:
        if self.ops is not None:
            self.ops.phase = "forward"

    def begin_backward(self, last: bool = True) -> None:
        if self.ops is not None:
            self.ops.phase = "backward"
        elif self.recorder is not None and last:
            self.wall_origin = time.time()  # aligns ranks' timelines at the end of the run
            self.recorder.begin_backward()

    def end_backward(self) -> None:
        """The last backward returned: the optimizer's own collectives (a sharded gradient norm)
        are not the step's gradient traffic."""
        if self.ops is not None:
            self.ops.stop()

    def end_step(self, step: int, wall: dict) -> dict:
        """The step's figures, keyed by their TensorBoard tags (plus `items` and `compute_ms`)."""
        fig = {"time/step_ms": wall["step_ms"], "time/data_ms": wall["data_ms"],
               "time/forward_ms": wall["forward_ms"], "time/optimizer_ms": wall["optimizer_ms"],
               "items": wall["items"]}
        if self.ops is not None:
            return self._end_sharded_step(step, wall, fig)
        if self.recorder is None:
            fig["time/backward_ms"] = wall["backward_wall_ms"]
            fig["compute_ms"] = wall["data_ms"] + wall["forward_ms"] + wall["backward_wall_ms"]
            self.steps.append(fig)
            return fig
        self.recorder.stop()
        f = self.recorder.figures()
        exposed = max(0.0, f["last_done_ms"] - f["compute_end_ms"])  # after the last gradient was produced
        comm_ms = f["last_done_ms"] - f["first_launch_ms"]
        backward = max(0.0, wall["backward_wall_ms"] - exposed)
        algbw = gbit_per_s(f["sent_bytes"], comm_ms / 1e3)
        fig.update({
            "time/backward_ms": backward, "time/exposed_comm_ms": exposed,
            "comm/grad_bytes": f["grad_bytes"], "comm/sent_bytes": f["sent_bytes"],
            "comm/buckets": f["buckets"], "comm/time_ms": comm_ms,
            "comm/algbw_gbit_s": algbw, "comm/busbw_gbit_s": algbw * self.factor,
            "comm/overlap_pct": 100 * (1 - exposed / comm_ms) if comm_ms > 0 else 100.0,
            "compute_ms": wall["data_ms"] + wall["forward_ms"] + backward, "ring_bytes": self.share.bytes("all_reduce", "world", self.ctx.world_size, f["sent_bytes"]),
            "comm/all_reduce/calls": f["collectives"], "comm/all_reduce/sent_bytes": f["sent_bytes"],
            "comm/all_reduce/time_ms": comm_ms, "comm/all_reduce/busbw_gbit_s": algbw * self.factor})
        self.steps.append(fig)
        if self.timelines.wants(step):  # a full timeline only for the steps the sample keeps
            tl = self.recorder.timeline()
            self.timelines.add({
                "step": step, "strategy": self.strategy, "world_size": self.ctx.world_size,
                "step_ms": wall["step_ms"], "data_ms": wall["data_ms"], "forward_ms": wall["forward_ms"],
                "backward_ms": backward, "optimizer_ms": wall["optimizer_ms"], "compute_end_ms": f["compute_end_ms"],
                "exposed_ms": exposed, "comm_ms": comm_ms, "collectives": tl["collectives"], "buckets": tl["buckets"],
                "wall_origin_s": self.wall_origin})
        return fig

    def _end_sharded_step(self, step: int, wall: dict, fig: dict) -> dict:
        self.ops.stop()
        tl = self.ops.timeline()
        s = sharded_step(tl)
        exposed, comm_ms = s["exposed_ms"], s["comm_ms"]
        forward = max(0.0, wall["forward_ms"] - s["exposed_forward_ms"])
        backward = max(0.0, wall["backward_wall_ms"] - s["exposed_backward_ms"])
        sent = sum(o["sent_bytes"] for o in s["ops"].values())
        fig.update({
            "time/forward_ms": forward, "time/backward_ms": backward, "time/exposed_comm_ms": exposed,
            "time/exposed_forward_ms": s["exposed_forward_ms"], "time/exposed_backward_ms": s["exposed_backward_ms"],
            "comm/grad_bytes": self.grad_bytes, "comm/sent_bytes": sent, "comm/time_ms": comm_ms,
            "comm/overlap_pct": 100 * (1 - exposed / comm_ms) if comm_ms > 0 else 100.0,
            "compute_ms": wall["data_ms"] + forward + backward,
            "ring_bytes": sum(self.share.bytes(op, f["group"], f["group_size"], f["sent_bytes"])
                              for op, f in s["ops"].items())})
        for op, f in s["ops"].items():
            fig.update({f"comm/{op}/{k}": f[k] for k in OP_FIELDS})
        self.steps.append(fig)
        if not self.timelines.wants(step):
            return fig
        self.timelines.add({
            "step": step, "strategy": self.strategy, "world_size": self.ctx.world_size, "step_ms": wall["step_ms"],
            "data_ms": wall["data_ms"], "forward_ms": forward, "backward_ms": backward,
            "optimizer_ms": wall["optimizer_ms"], "compute_end_ms": wall["step_ms"] - wall["optimizer_ms"],
            "exposed_ms": exposed, "exposed_forward_ms": s["exposed_forward_ms"],
            "exposed_backward_ms": s["exposed_backward_ms"], "comm_ms": comm_ms,
            "wall_origin_s": self.wall_origin, **tl})
        return fig

    def window_scalars(self, window: list[dict]) -> dict:
        """Medians over the steps since the last log (medians keep exposed <= comm <= step)."""
        tags = STEP_TAGS
        if self.recorder is not None:
            tags += COMM_TAGS + OP_TAGS
        elif self.ops is not None:
            tags += COMM_TAGS + SHARDED_TAGS + OP_TAGS
        out = {tag: _median(f.get(tag) for f in window) for tag in tags if not tag.startswith("net/")}
        if self.wire is not None:
            wire = self.wire.window(len(window), _median(f.get("ring_bytes") for f in window) or 0.0)
            if self.windows_read:  # the first window holds start-up traffic
                self.wire_windows = [*self.wire_windows[-255:], wire]
            self.windows_read += 1
            out.update(wire)
        return {k: v for k, v in out.items() if v is not None or k in STEP_TAGS + COMM_TAGS}

    def rank_vector(self, window: list[dict]) -> list[float]:
        """This rank's [step_ms, comm_ms, exposed_ms, compute_ms] for the log step's one gather."""
        return [_median(f.get(t, 0.0) for f in window) or 0.0
                for t in ("time/step_ms", "comm/time_ms", "time/exposed_comm_ms", "compute_ms")]

    def log_extras(self, sink, step: int) -> None:
        """Bucket-size histogram at log steps; DDP's own logging data once its buckets are final."""
        last = self.timelines.last()
        if last is None:
            return
        sizes = [b["grad_bytes"] for b in last.get("buckets", [])]
        if sizes:
            import torch
            sink.histogram("comm/bucket_bytes", torch.tensor(sizes, dtype=torch.float64), step)
        if not self.logged_ddp and step >= 1 and self.ddp is not None:
            sink.text("comm/ddp", ddp_text(self.ddp, self.cfg.hook, self.ctx.backend), step)
            self.logged_ddp = True

    def steady(self) -> list[dict]:
        return self.steps.steady()

    def summary(self) -> dict:
        if not self.measuring:
            why = ("comm.hook=none" if self.cfg.hook == "none" else "comm.record=false" if not self.cfg.record
                   else "world size 1: nothing to communicate")
            return {"comm": {"hook": self.cfg.hook, "measured": False, "why": why}}
        s = self.steady()
        med = lambda tag: _median(f.get(tag) for f in s)  # noqa: E731
        comm_ms, exposed_ms = med("comm/time_ms"), med("time/exposed_comm_ms")
        sample = self.timelines.sample()
        if self.recorder is not None:
            add_peer_readiness(sample)
        sent = med("comm/sent_bytes")
        ops = {op: {"calls_per_step": med(f"comm/{op}/calls"), "sent_bytes_per_step": med(f"comm/{op}/sent_bytes"),
                    "time_ms_median": med(f"comm/{op}/time_ms"), "busbw_gbit_s_median": med(f"comm/{op}/busbw_gbit_s")}
               for op in OPS if med(f"comm/{op}/calls") is not None}
        comm = {"hook": self.cfg.hook if self.ops is None else "none (sharded)", "measured": True,
                "grad_bytes_per_step": med("comm/grad_bytes"), "sent_bytes_per_step": sent,
                "time_ms_median": comm_ms, "exposed_ms_median": exposed_ms,
                "overlap_pct": 100 * (1 - exposed_ms / comm_ms) if comm_ms else 100.0, "ops": ops}
        if self.recorder is not None:
            comm.update({"buckets_per_step": med("comm/buckets"), "algbw_gbit_s_median": med("comm/algbw_gbit_s"),
                         "busbw_gbit_s_median": med("comm/busbw_gbit_s"), "busbw_factor": self.factor})
        else:
            comm.update({"exposed_forward_ms_median": med("time/exposed_forward_ms"),
                         "exposed_backward_ms_median": med("time/exposed_backward_ms")})
        comm["timelines"] = sample
        windows = self.wire_windows or []
        wmed = lambda tag: _median(w.get(tag) for w in windows)  # noqa: E731
        return {
            "comm": comm,
            "net": {"iface": ",".join(self.wire.interfaces), "ranks_on_link": self.wire.ranks_on_link,
                    "tx_bytes_per_step": wmed("net/tx_bytes"), "rx_bytes_per_step": wmed("net/rx_bytes"),
                    "expected_tx_bytes_per_step": med("ring_bytes") or 0.0,
                    "wire_ratio": wmed("net/wire_ratio")}}


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
