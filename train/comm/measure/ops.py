"""Records sharded data parallel's collectives op by op: FSDP's all-gathers and reduce-scatters
through FSDP2's own extension points, HSDP's replicate all-reduce through a thin wrapper.

Per call: the op, its group, the FSDP unit, the step phase, sent bytes in nccl-tests' size
convention (the whole gathered / scattered array) and launch/completion marks. The recording
comm objects call FSDP's default collective with the same arguments, so the schedule is FSDP's
own. On gloo the calls block the training thread (FSDP issues them synchronously on CPU): the
completion mark is taken when the call returns; an async call completes in its future's
callback. On CUDA the marks are events on the collective's stream, read after the step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist
from torch.distributed.fsdp._fully_shard._fsdp_collectives import DefaultAllGather, DefaultReduceScatter

OPS = ("all_gather", "reduce_scatter", "all_reduce")


@dataclass
class OpRecord:
    op: str
    group: str
    group_size: int
    unit: int
    phase: str
    sent_bytes: int
    launch: object
    done: object = None


class OpRecorder:
    def __init__(self, clock, units: list, record_all_reduce: bool = False):
        self.clock, self.units = clock, units
        self.record_all_reduce = record_all_reduce
        self.records: list[OpRecord] = []
        self.windows: dict[int, list] = {}
        self.active = False
        self.phase = "forward"
        self.origin = None
        self.last_unit = -1  # the unit whose reduce-scatter ran last: HSDP's all-reduce follows it
        self._original_all_reduce = None
        self._handles = []

    # -- wiring ----------------------------------------------------------------------------
    def install(self) -> None:
        for i, unit in enumerate(self.units):
            unit.set_custom_all_gather(_RecordingAllGather(self, i))
            unit.set_custom_reduce_scatter(_RecordingReduceScatter(self, i))
            if i < len(self.units) - 1:  # leaf units: their forward windows are compute
                self._handles.append(unit.register_forward_pre_hook(self._forward_mark(i, 0)))
                self._handles.append(unit.register_forward_hook(self._forward_mark(i, 1)))
        if self.record_all_reduce and self._original_all_reduce is None:
            # HSDP's replicate all-reduce is a plain dist.all_reduce inside FSDP's post-backward;
            # recording stops when backward returns, so no other all-reduce is counted.
            original = self._original_all_reduce = dist.all_reduce

            def recording_all_reduce(tensor, *args, **kwargs):
                if not self.active:
                    return original(tensor, *args, **kwargs)
                group = kwargs.get("group", args[1] if len(args) > 1 else None)
                return self.call("all_reduce", self.last_unit, tensor.numel() * tensor.element_size(),
                                 lambda: original(tensor, *args, **kwargs), "replicate", dist.get_world_size(group))

            dist.all_reduce = recording_all_reduce

    def uninstall(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._original_all_reduce is not None:
            dist.all_reduce = self._original_all_reduce
            self._original_all_reduce = None

    def _forward_mark(self, unit: int, edge: int):
        def hook(*_):
            if self.active:
                self.windows.setdefault(unit, [None, None])[edge] = self.clock.mark()
        return hook

    # -- one step ----------------------------------------------------------------------------
    def begin_step(self) -> None:
        self.records, self.windows = [], {}
        self.phase, self.active = "forward", True
        self.origin = self.clock.mark()

    def begin_backward(self) -> None:
        self.phase = "backward"

    def stop(self) -> None:
        self.active = False

    def call(self, op: str, unit: int, sent_bytes: int, launch, group: str, group_size: int):
        record = OpRecord(op, group, group_size, unit, self.phase, sent_bytes, self.clock.mark())
        self.records.append(record)
        work = launch()
        if work is None:  # synchronous: done when the call returns (on CUDA: an event after it on its stream)
            record.done = self.clock.mark()
        else:
            def completed(fut):
                record.done = self.clock.mark()
                return fut.value()
            work.get_future().then(completed)
        return work

    def timeline(self) -> dict:
        """The step's ops and leaf-unit forward windows, in ms since the step began."""
        ms = lambda mark: self.clock.ms_between(self.origin, mark)  # noqa: E731
        ops = [{"op": r.op, "group": r.group, "group_size": r.group_size, "unit": r.unit, "phase": r.phase,
                "sent_bytes": r.sent_bytes, "launch_ms": ms(r.launch),
                "done_ms": ms(r.done) if r.done is not None else ms(r.launch)} for r in self.records]
        units = [{"unit": u, "forward_start_ms": ms(w[0]), "forward_end_ms": ms(w[1])}
                 for u, w in sorted(self.windows.items()) if w[0] is not None and w[1] is not None]
        return {"ops": ops, "units": units}


class _RecordingAllGather(DefaultAllGather):
    def __init__(self, recorder: OpRecorder, unit: int):
        self.recorder, self.unit = recorder, unit

    def __call__(self, output_tensor, input_tensor, group, async_op: bool = False):
        launch = lambda: super(_RecordingAllGather, self).__call__(output_tensor, input_tensor, group, async_op)  # noqa: E731
        if not self.recorder.active:
            return launch()
        return self.recorder.call("all_gather", self.unit, output_tensor.numel() * output_tensor.element_size(),
                                  launch, "shard", dist.get_world_size(group))


class _RecordingReduceScatter(DefaultReduceScatter):
    def __init__(self, recorder: OpRecorder, unit: int):
        self.recorder, self.unit = recorder, unit

    def __call__(self, output_tensor, input_tensor, group, op, async_op: bool = False):
        launch = lambda: super(_RecordingReduceScatter, self).__call__(output_tensor, input_tensor, group, op, async_op)  # noqa: E731
        if not self.recorder.active:
            return launch()
        self.recorder.last_unit = self.unit
        return self.recorder.call("reduce_scatter", self.unit, input_tensor.numel() * input_tensor.element_size(),
                                  launch, "shard", dist.get_world_size(group))
