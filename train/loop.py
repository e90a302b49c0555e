"""The training loop: micro-steps with no_sync, optimizer, timing, log steps, eval, checkpoints.

The loop never asks which model it runs: the model computes its own loss from a batch and
reports its throughput unit; everything about the network is the comm instrumentation's.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from train import checkpoint, checkpoint_sharded
from train.comm.measure.instrument import Instrumentation
from train.comm.measure.ranks import rank_figures
from train.config import RunConfig, to_dict
from train.data import Datasets, ShardedBatches
from train.distributed import DistContext, gather_floats, gather_objects
from train.guard import Divergence, Guard, announce, finite
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
    """What the summary needs from the whole run (rank-local unless said); step times are in the
    instrumentation's bounded step history."""
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
        if resume is not None:
            if "model" in resume:  # before wrapping: DDP broadcasts rank 0's parameters at construction
                self.model.load_state_dict(resume["model"])
            self.start_step = int(resume["step"])
        self.comm = Instrumentation(cfg.comm, ctx, self.model)  # counts grad bytes before sharding
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        self.par = wrap(self.model, cfg.dist, ctx, cfg.train.precision, local_world)
        self.comm.attach(self.par)
        self.forward = torch.compile(self.par.module) if cfg.train.compile else self.par.module
        self.optimizer = build_optimizer(cfg.optim, self.model.parameters(), fused=ctx.device.type == "cuda")
        self.scheduler = build_scheduler(cfg.optim, self.optimizer, cfg.train.steps)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.train.precision == "fp16")
        if resume is not None and "dcp" in resume:  # sharded: every rank loads its own shards
            checkpoint_sharded.load_into(resume["dcp"], self.model, self.optimizer)
        elif resume is not None:
            self.optimizer.load_state_dict(resume["optimizer"])
        if resume is not None:
            self.scheduler.load_state_dict(resume["scheduler"])
            self.scaler.load_state_dict(resume["scaler"])
            if resume.get("world_size") == ctx.world_size:
                torch.set_rng_state(resume["rng"][ctx.rank])
        t = cfg.train
        self.batches = ShardedBatches(len(data.train), t.batch_size, ctx.rank, ctx.world_size, t.grad_accum, t.seed)
        self.history = History()
        self.window: list[dict] = []  # the steps' figures since the last log step
        self.guard = Guard(t.nonfinite, ctx.rank, t.precision == "fp16", loud=ctx.is_main)
        self.diverged: Divergence | None = None
        self.phase = "setup"  # what the rank was doing, for the one-line error when a peer is lost
        self.step_phase = ("forward/backward with FSDP's all-gathers and reduce-scatters" if self.par.sharded
                           else "forward/backward with the gradient all_reduce (DDP buckets)")

    # -- one optimizer step ------------------------------------------------------------------
    def _autocast(self):
        dtype = PRECISIONS[self.cfg.train.precision] if self.par.autocast else None
        return torch.autocast(self.ctx.device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def run_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        accum = self.cfg.train.grad_accum
        wall = {"data_ms": 0.0, "forward_ms": 0.0, "backward_wall_ms": 0.0}
        loss_sum = torch.zeros((), device=self.ctx.device)
        items = 0
        t_step = now()
        self.comm.begin_step()
        for micro in range(accum):
            last = micro == accum - 1
            t0 = now()
            inputs, targets = self.data.train.get(self.batches.indices(step, micro))
            inputs, targets = inputs.to(self.ctx.device, non_blocking=True), targets.to(self.ctx.device, non_blocking=True)
            items += self.model.count_items(inputs)
            t1 = now()
            self.comm.begin_forward()
            with self.par.sync_context(last):
                with self._autocast():
                    loss = self.guard.poison(self.forward(inputs, targets), step)
                    if accum > 1:  # the accumulated gradient is then the mean over the step's batch
                        loss = loss / accum
                t2 = now()
                self.comm.begin_backward(last)
                self.scaler.scale(loss).backward()
            t3 = now()
            wall["data_ms"] += (t1 - t0) * 1e3
            wall["forward_ms"] += (t2 - t1) * 1e3
            wall["backward_wall_ms"] += (t3 - t2) * 1e3
            loss_sum += loss.detach()
        t4 = now()
        self.comm.end_backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = self.par.clip_grad_norm(self.cfg.optim.grad_clip)
        if self.guard.admit(step, grad_norm, self.scaler):  # every rank decides alike (a shared figure)
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
        progress = Progress(self.cfg.train.steps, self.model.unit, self.ctx.is_main)
        try:
            self._steps(progress)
        except Divergence as e:  # raised on every rank at the same step: stop together
            self.diverged = e
            if self.ctx.is_main:
                announce(e, self.run_dir)
        return self.summary()

    def _steps(self, progress: Progress) -> None:
        step = self.start_step
        while step < self.cfg.train.steps and not self.stop.requested:
            self.train_one(step, progress)
            step += 1

    def train_one(self, step: int, progress: Progress) -> None:
        """One step and whatever falls due after it: a log step, eval, a checkpoint."""
        t = self.cfg.train
        self.phase = f"step {step}: {self.step_phase}"
        loss, grad_norm, wall = self.run_step(step)
        self.window.append(self.comm.end_step(step, wall))
        is_last = step == t.steps - 1
        if step == self.start_step or (step + 1) % t.log_every == 0 or is_last or self.stop.requested:
            self.phase = f"step {step}: log-step all_gather of rank figures"
            self._log(step, loss.item(), grad_norm.item(), self.window, progress)
            self.window = []
        if t.eval_every and ((step + 1) % t.eval_every == 0 or is_last):
            self.phase = f"step {step}: eval all_gather"
            self._eval(step)
            progress.eval_line(step, self.history.eval_loss, self.history.final_loss)
        self.history.steps_done = step + 1
        if (t.ckpt_every and (step + 1) % t.ckpt_every == 0) or step + 1 == t.steps or self.stop.requested:
            self.phase = f"step {step}: checkpoint all_gather_object of RNG states"
            self.save_checkpoint(step + 1)

    def _log(self, step: int, loss: float, grad_norm: float, window: list[dict], progress: Progress) -> None:
        local = self.comm.rank_vector(window)
        rows = gather_floats([loss, *local], self.ctx.device)
        mean_loss = statistics.fmean(r[0] for r in rows)
        self.guard.check_loss(step, mean_loss)
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
        self.guard.check_state(step, {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()},
                               self.ctx.device)  # every rank, its own shards; one verdict for all
        m = self.cfg.model
        state = {"step": step, "world_size": self.ctx.world_size, "rng": rng, "strategy": self.par.layout()["strategy"],
                 "model_id": {"name": m.name, "flavor": m.flavor, "params": self.model.num_params()},
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()}
        if self.par.sharded:  # every rank writes its shards
            checkpoint_sharded.save(self.run_dir, step, self.model, self.optimizer, state,
                                    self.cfg.train.keep_ckpts, self.ctx.is_main)
            return
        if not self.ctx.is_main:
            return
        state.update({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()})
        checkpoint.save(self.run_dir, step, state, self.cfg.train.keep_ckpts)

    def held_bytes(self) -> dict:
        """Bytes of the parameter, gradient and optimizer tensors this rank holds (its shards when
        sharded). Gradients are counted as their parameters' local shapes: they exist from backward
        to the optimizer step."""
        local = lambda t: t.to_local() if hasattr(t, "to_local") else t  # noqa: E731
        params = [local(p) for p in self.model.parameters()]
        optim = [local(v) for st in self.optimizer.state.values() for v in st.values() if torch.is_tensor(v)]
        return {"param_bytes": sum(p.numel() * p.element_size() for p in params),
                "grad_bytes": sum(p.numel() * p.element_size() for p, q in zip(params, self.model.parameters())
                                  if q.requires_grad),
                "optim_bytes": sum(v.numel() * v.element_size() for v in optim)}

    def summary(self) -> dict:
        h, t = self.history, self.cfg.train
        step_ms = self.comm.steps.median("time/step_ms")  # steady steps: the first ones pay one-off costs
        items = t.batch_size * (self.data.spec.get("seq_len", 1) if self.model.unit == "tokens" else 1)
        out = {"world_size": self.ctx.world_size, "backend": self.ctx.backend, "device": str(self.ctx.device),
               "model": {"name": self.cfg.model.name, "flavor": self.cfg.model.flavor,
                         "params": self.model.num_params(), "flops_per_item": self.model.flops_per_item(),
                         "unit": self.model.unit},
               "steps": h.steps_done, "start_step": self.start_step,
               "completed": h.steps_done >= t.steps and self.diverged is None,
               "stopped_by": "nonfinite" if self.diverged else "signal" if self.stop.requested else None,
               "nonfinite": self.guard.report(self.diverged),
               "first_loss": finite(h.first_loss), "final_loss": finite(h.final_loss), "eval_loss": finite(h.eval_loss),
               "time": {"step_ms_median": step_ms},
               "throughput": {f"{self.model.unit}_per_s": items / (step_ms / 1e3) if step_ms else None},
               "mfu_pct": self.mfu(items / (step_ms / 1e3)) if step_ms else None,
               "device_name": device_name(self.ctx.device), "precision": t.precision,
               "memory": {**self.held_bytes(), **{k.split("/")[1]: v for k, v in memory_figures(self.ctx.device).items()}},
               "parallel": {**self.par.layout(), "world_size": self.ctx.world_size},
               "config": to_dict(self.cfg)}
        out.update(self.comm.summary())
        return out

    def close(self) -> None:
        """Drop DDP and the optimizer before the process group goes (see teardown)."""
        self.comm.detach()
        self.par.close()
        self.forward = self.optimizer = self.scheduler = None
