"""Metric sinks (rank 0 only), the console progress line and summary.json.

Metrics are reduced across ranks only at log steps; a sink just writes what it is given.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path


class NullSink:
    """What every rank but 0 gets: the loop calls the same methods and nothing is written."""

    def scalars(self, step: int, values: dict) -> None: ...
    def histogram(self, tag: str, values, step: int) -> None: ...
    def text(self, tag: str, body: str, step: int = 0) -> None: ...
    def custom_layout(self, layout) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class TensorBoardSink(NullSink):
    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter  # slow import: only on rank 0
        self.writer = SummaryWriter(log_dir=str(log_dir), flush_secs=10)

    def scalars(self, step: int, values: dict) -> None:
        for tag, value in values.items():
            if value is not None:
                self.writer.add_scalar(tag, value, step)

    def histogram(self, tag: str, values, step: int) -> None:
        self.writer.add_histogram(tag, values, step)

    def text(self, tag: str, body: str, step: int = 0) -> None:
        self.writer.add_text(tag, body, step)

    def custom_layout(self, layout) -> None:
        self.writer.add_custom_scalars(layout)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def format_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """The rank-0 console lines: step, loss, throughput, step time, ETA; and each eval pass."""

    def __init__(self, total_steps: int, unit: str, enabled: bool):
        self.total, self.unit, self.enabled = total_steps, unit, enabled
        self.started = time.perf_counter()

    def line(self, step: int, loss: float, items_per_s: float, step_ms: float) -> None:
        if not self.enabled:
            return
        eta = (self.total - step - 1) * step_ms / 1000
        print(f"step {step + 1:>6}/{self.total} | loss {loss:.4f} | {items_per_s:,.0f} {self.unit}/s"
              f" | {step_ms:.1f} ms/step | eta {format_eta(eta)}", flush=True)

    def eval_line(self, step: int, eval_loss: float, train_loss: float | None = None) -> None:
        """Held-out loss beside the latest train loss: a train loss far below it is memorising."""
        if not self.enabled:
            return
        train = f" | train loss {train_loss:.4f} (last log)" if train_loss is not None else ""
        print(f"step {step + 1:>6}/{self.total} | eval loss {eval_loss:.4f}{train}", flush=True)


def write_json_atomically(path: Path, payload: dict) -> None:
    """summary.json is read by the planner and by tests: never leave half a file behind."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
