"""Timestamps for bucket events: the host clock on CPU, CUDA events on GPU.

On NCCL a collective's future completes on the host long before (or after) the GPU finishes
it, and synchronising the host inside backward would destroy the overlap we measure. So on
CUDA every mark is an event recorded on the current stream, read only after the step's
final synchronize. In a future callback the current stream already waits for the
collective, so an event recorded there marks the collective's completion on the GPU.
"""
from __future__ import annotations

import time

import torch


class HostClock:
    def mark(self):
        return time.perf_counter()

    def ms_between(self, start, end) -> float:
        return (end - start) * 1e3


class CudaClock:
    def mark(self):
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def ms_between(self, start, end) -> float:
        return start.elapsed_time(end)  # callers read marks only after torch.cuda.synchronize()


def clock_for(device: torch.device):
    return CudaClock() if device.type == "cuda" else HostClock()
