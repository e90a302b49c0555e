"""Wraps the chosen DDP comm hook and records, per bucket, what it carried and when.

Per bucket: index, element count, dtype, grad bytes, the moment DDP handed it to the hook
(the bucket is ready and its collective is launched at once), and the moment its future
completed. Sent bytes come from the collective counter (see hooks.py). DDP rebuilds its
buckets after the first step, so figures are totals per step, not per bucket index.
"""
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from train.comm.measure.hooks import CollectiveCounter


@dataclass
class BucketRecord:
    index: int
    numel: int
    dtype: str
    grad_bytes: int
    ready: object  # clock mark
    done: object = None


class BucketRecorder:
    def __init__(self, hook_state, hook, clock):
        self.inner_state, self.inner_hook, self.clock = hook_state, hook, clock
        self.counter = CollectiveCounter()
        self.buckets: list[BucketRecord] = []
        self.origin = None

    def begin_backward(self) -> None:
        """Start of the final micro-step's backward: the reference point of the step's timeline."""
        self.buckets = []
        self.counter.reset()
        self.counter.active = True
        self.origin = self.clock.mark()

    def stop(self) -> None:
        self.counter.active = False

    # No postponed annotations in this module: DDP checks this return annotation at registration.
    def hook(self, state, bucket) -> torch.futures.Future[torch.Tensor]:
        """DDP calls this as each bucket becomes ready; it must return the reduced buffer's future."""
        buffer = bucket.buffer()
        record = BucketRecord(bucket.index(), buffer.numel(), str(buffer.dtype).replace("torch.", ""),
                              buffer.numel() * buffer.element_size(), self.clock.mark())
        self.buckets.append(record)
        if self.inner_hook is default_hooks.allreduce_hook:
            # The default hook's own work with the completion mark folded into its one callback:
            # a second Python callback per bucket is most of what recording costs a small step.
            buffer.div_(dist.get_world_size())

            def reduced(f):
                record.done = self.clock.mark()
                return f.value()[0]

            return dist.all_reduce(buffer, async_op=True).get_future().then(reduced)
        fut = self.inner_hook(self.inner_state, bucket)

        def completed(f):
            record.done = self.clock.mark()
            return f.value()

        return fut.then(completed)

    def figures(self) -> dict:
        """The step's totals in ms since backward began, without building per-bucket rows."""
        ms = lambda mark: self.clock.ms_between(self.origin, mark)  # noqa: E731
        if not self.buckets:
            return {"compute_end_ms": 0.0, "last_done_ms": 0.0, "first_launch_ms": 0.0, "grad_bytes": 0,
                    "buckets": 0, "sent_bytes": self.counter.bytes, "collectives": self.counter.calls}
        ready = [ms(b.ready) for b in self.buckets]
        done = [ms(b.done) if b.done is not None else r for b, r in zip(self.buckets, ready)]
        return {"compute_end_ms": max(ready), "last_done_ms": max(done), "first_launch_ms": min(ready),
                "grad_bytes": sum(b.grad_bytes for b in self.buckets), "buckets": len(self.buckets),
                "sent_bytes": self.counter.bytes, "collectives": self.counter.calls}

    def timeline(self) -> dict:
        """The step's buckets in ms since backward began; call after the step finished."""
        ms = lambda mark: self.clock.ms_between(self.origin, mark)  # noqa: E731
        grad_total = sum(b.grad_bytes for b in self.buckets) or 1
        sent_total = self.counter.bytes
        rows = []
        for b in self.buckets:
            # Bytes are counted per collective; split over buckets by grad bytes (exact for the
            # cast hooks, proportional for PowerSGD whose later collectives run in callbacks).
            sent = round(sent_total * b.grad_bytes / grad_total)
            ready = ms(b.ready)
            rows.append({"index": b.index, "numel": b.numel, "dtype": b.dtype, "grad_bytes": b.grad_bytes,
                         "sent_bytes": sent, "ready_ms": ready, "launch_ms": ready,
                         "done_ms": ms(b.done) if b.done is not None else ready})
        return {"buckets": rows, "sent_bytes": sent_total, "collectives": self.counter.calls}
