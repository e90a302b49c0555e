"""The training loop: micro-steps with no_sync, optimizer, timing, log steps, eval, checkpoints.

The loop never asks which model it runs: the model computes its own loss from a batch and
reports its throughput unit; everything about the network is the comm instrumentation's.
"""
from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from train import checkpoint
from train.comm.measure.instrument import Instrumentation
from train.comm.measure.ranks import rank_figures
from train.config import RunConfig, to_dict
from train.data import Datasets, ShardedBatches
from train.distributed import DistContext, gather_floats, gather_objects
from train.metrics import NullSink, Progress
from train.optim import build_optimizer, build_scheduler
from train.parallel import wrap
from train.perf import device_name, memory_figures, mfu_pct, peak_tflops
from train.signals import StopRequest

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def now() -> float:
    return time.perf_counter()


@dataclass
class History:
    """What the summary needs from the whole run (rank-local unless said)."""
    step_ms: list = field(default_factory=list)
    first_loss: float | None = None  # mean over ranks
    final_loss: float | None = None  # mean over ranks
    eval_loss: float | None = None
    steps_done: int = 0


class Trainer:
    def __init__(self, cfg: RunConfig, ctx: DistContext, model, data: Datasets, run_dir: Path,
                 sink=None, resume: dict | None = None, stop: StopRequest | None = None):
        self.cfg, self.ctx, self.data, self.run_dir = cfg, ctx, data, run_dir
        self.sink = sink or NullSink()
        self.stop = stop or StopRequest()
        self.model = model.to(ctx.device)
        self.start_step = 0
        if resume is not None:  # before wrapping: DDP broadcasts rank 0's parameters at construction
            self.model.load_state_dict(resume["model"])
            self.start_step = int(resume["step"])
        self.par = wrap(self.model, cfg.dist, ctx)
        self.comm = Instrumentation(cfg.comm, ctx, self.model)
        if self.par.ddp is not None:
            self.comm.attach(self.par.ddp)
        self.forward = torch.compile(self.par.module) if cfg.train.compile else self.par.module
        self.optimizer = build_optimizer(cfg.optim, self.model.parameters(), fused=ctx.device.type == "cuda")
        self.scheduler = build_scheduler(cfg.optim, self.optimizer, cfg.train.steps)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.train.precision == "fp16")
        if resume is not None:
            self.optimizer.load_state_dict(resume["optimizer"])
            self.scheduler.load_state_dict(resume["scheduler"])
            self.scaler.load_state_dict(resume["scaler"])
            if resume.get("world_size") == ctx.world_size:
                torch.set_rng_state(resume["rng"][ctx.rank])
        t = cfg.train
        self.batches = ShardedBatches(len(data.train), t.batch_size, ctx.rank, ctx.world_size, t.grad_accum, t.seed)
        self.history = History()
        self.phase = "setup"  # what the rank was doing, for the one-line error when a peer is lost

    # -- one optimizer step ------------------------------------------------------------------
    def _autocast(self):
        dtype = PRECISIONS[self.cfg.train.precision]
        return torch.autocast(self.ctx.device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def run_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        accum = self.cfg.train.grad_accum
        wall = {"data_ms": 0.0, "forward_ms": 0.0, "backward_wall_ms": 0.0}
        loss_sum = torch.zeros((), device=self.ctx.device)
        items = 0
        t_step = now()
        for micro in range(accum):
            last = micro == accum - 1
            t0 = now()
            inputs, targets = self.data.train.get(self.batches.indices(step, micro))
            inputs, targets = inputs.to(self.ctx.device, non_blocking=True), targets.to(self.ctx.device, non_blocking=True)
            items += self.model.count_items(inputs)
            t1 = now()
            with self.par.sync_context(last):
                with self._autocast():
                    # Divided so the accumulated gradient is the mean over the whole step's batch.
                    loss = self.forward(inputs, targets) / accum
                t2 = now()
                if last:
                    self.comm.begin_backward()
                self.scaler.scale(loss).backward()
            t3 = now()
            wall["data_ms"] += (t1 - t0) * 1e3
            wall["forward_ms"] += (t2 - t1) * 1e3
            wall["backward_wall_ms"] += (t3 - t2) * 1e3
            loss_sum += loss.detach()
        t4 = now()
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.optim.grad_clip or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ctx.device.type == "cuda":
            torch.cuda.synchronize()  # step time is only true once the device has finished
        t5 = now()
        wall["optimizer_ms"] = (t5 - t4) * 1e3
        wall["step_ms"] = (t5 - t_step) * 1e3
        wall["items"] = items
        return loss_sum, grad_norm, wall

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> dict:
        t = self.cfg.train
        progress = Progress(t.steps, self.model.unit, self.ctx.is_main)
        window: list[dict] = []
        step = self.start_step
        while step < t.steps and not self.stop.requested:
            self.phase = f"step {step}: forward/backward with the gradient all_reduce (DDP buckets)"
            loss, grad_norm, wall = self.run_step(step)
            figures = self.comm.end_step(step, wall)
            window.append(figures)
            self.history.step_ms.append(wall["step_ms"])
            is_last = step == t.steps - 1
            if step == self.start_step or (step + 1) % t.log_every == 0 or is_last or self.stop.requested:
                self.phase = f"step {step}: log-step all_gather of rank figures"
                self._log(step, loss.item(), grad_norm.item(), window, progress)
                window = []
            if t.eval_every and ((step + 1) % t.eval_every == 0 or is_last):
                self.phase = f"step {step}: eval all_gather"
                self._eval(step)
                progress.eval_line(step, self.history.eval_loss, self.history.final_loss)
            step += 1
            self.history.steps_done = step
            if (t.ckpt_every and step % t.ckpt_every == 0) or step == t.steps or self.stop.requested:
                self.phase = f"step {step - 1}: checkpoint all_gather_object of RNG states"
                self.save_checkpoint(step)
        return self.summary()

    def _log(self, step: int, loss: float, grad_norm: float, window: list[dict], progress: Progress) -> None:
        local = self.comm.rank_vector(window)
        rows = gather_floats([loss, *local], self.ctx.device)
        mean_loss = statistics.fmean(r[0] for r in rows)
        if self.history.first_loss is None:
            self.history.first_loss = mean_loss
        self.history.final_loss = mean_loss
        step_ms = statistics.median(f["time/step_ms"] for f in window)
        items_per_s = window[-1]["items"] * self.ctx.world_size / (step_ms / 1e3)
        values = {"train/loss": mean_loss, "train/lr": self.scheduler.get_last_lr()[0],
                  "train/grad_norm": grad_norm, f"throughput/{self.model.unit}_per_s": items_per_s}
        values["perf/mfu_pct"] = self.mfu(items_per_s)
        values.update(memory_figures(self.ctx.device))
        values.update(self.comm.window_scalars(window))
        values.update(rank_figures([r[1:] for r in rows]))
        self.sink.scalars(step, values)
        self.comm.log_extras(self.sink, step)
        progress.line(step, mean_loss, items_per_s, step_ms)

    def mfu(self, items_per_s: float) -> float | None:
        peak = peak_tflops(self.ctx.device, self.cfg.train.peak_tflops)
        return mfu_pct(self.model.flops_per_item(), items_per_s, self.ctx.world_size, peak)

    @torch.no_grad()
    def _eval(self, step: int) -> None:
        self.model.eval()
        losses = []
        for k in range(self.cfg.train.eval_batches):
            inputs, targets = self.data.eval.get(self.batches.eval_indices(k, len(self.data.eval)))
            with self._autocast():
                losses.append(self.model(inputs.to(self.ctx.device), targets.to(self.ctx.device)).item())
        self.model.train()
        rows = gather_floats([statistics.fmean(losses)], self.ctx.device)
        self.history.eval_loss = statistics.fmean(r[0] for r in rows)
        self.sink.scalars(step, {"eval/loss": self.history.eval_loss})

    def save_checkpoint(self, step: int) -> None:
        rng = gather_objects(torch.get_rng_state())  # every rank's stream, so resume is exact
        if not self.ctx.is_main:
            return
        m = self.cfg.model
        state = {"step": step, "world_size": self.ctx.world_size, "rng": rng,
                 "model_id": {"name": m.name, "flavor": m.flavor, "params": self.model.num_params()},
                 "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()}
        checkpoint.save(self.run_dir, step, state, self.cfg.train.keep_ckpts)

    def summary(self) -> dict:
        h, t = self.history, self.cfg.train
        steady = h.step_ms[1:] or h.step_ms  # the first step pays one-off costs (allocation, DDP's bucket rebuild)
        step_ms = statistics.median(steady) if steady else None
        items = t.batch_size * (self.data.spec.get("seq_len", 1) if self.model.unit == "tokens" else 1)
        out = {"world_size": self.ctx.world_size, "backend": self.ctx.backend, "device": str(self.ctx.device),
               "model": {"name": self.cfg.model.name, "flavor": self.cfg.model.flavor,
                         "params": self.model.num_params(), "flops_per_item": self.model.flops_per_item(),
                         "unit": self.model.unit},
               "steps": h.steps_done, "start_step": self.start_step, "completed": h.steps_done >= t.steps,
               "first_loss": h.first_loss, "final_loss": h.final_loss, "eval_loss": h.eval_loss,
               "time": {"step_ms_median": step_ms},
               "throughput": {f"{self.model.unit}_per_s": items / (step_ms / 1e3) if step_ms else None},
               "mfu_pct": self.mfu(items / (step_ms / 1e3)) if step_ms else None,
               "device_name": device_name(self.ctx.device), "precision": t.precision,
               "memory": {k.split("/")[1]: v for k, v in memory_figures(self.ctx.device).items()},
               "config": to_dict(self.cfg)}
        out.update(self.comm.summary())
        return out

    def close(self) -> None:
        """Drop DDP and the optimizer before the process group goes (see teardown)."""
        self.comm.detach()
        self.par.close()
        self.forward = self.optimizer = self.scheduler = None
