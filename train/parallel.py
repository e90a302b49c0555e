"""Data-parallel wrapping: the one module that knows DDP, FSDP and HSDP.

The loop sees one face, `Wrapped`: the module to call, a context that skips gradient sync on
non-final micro-steps, gradient clipping that returns the global norm every rank shares, and
the bare model for parameters and state dicts. FSDP2 (`fully_shard`) wraps each of the model's
shard units, then the root; HSDP does the same on a 2-D mesh (replicate x shard).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from train.distributed import DistConfig, DistContext

REDUCE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class Wrapped:
    strategy: str              # none (world size 1) | ddp | fsdp | hsdp
    model: nn.Module           # the bare model: parameters, num_params, state dicts
    module: nn.Module          # what forward calls
    ddp: DDP | None = None     # for the comm hook and DDP's own logging data
    units: list = field(default_factory=list)  # sharded: the FSDP units in forward order, root last
    shard_size: int = 1
    replicate_size: int = 1
    reshard_after_forward: bool | int | None = None
    autocast: bool = True      # False where FSDP's mixed-precision policy already casts

    @property
    def sharded(self) -> bool:
        return self.strategy in ("fsdp", "hsdp")

    def sync_context(self, last_micro_step: bool):
        """Skip gradient sync on non-final micro-steps. DDP's no_sync must wrap forward *and*
        backward (DDP decides at forward time whether the coming backward reduces); FSDP reads its
        flag when each unit's gradients are ready, so the same wrapping serves both."""
        if last_micro_step:
            return contextlib.nullcontext()
        if self.ddp is not None:
            return self.ddp.no_sync()
        if self.sharded:
            return _fsdp_no_sync(self.model)
        return contextlib.nullcontext()

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        """Clip to max_norm (inf: only measure) and return the global gradient norm, the same
        figure on every rank (sharded gradients are reduced across the shards for it)."""
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm if max_norm else math.inf)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def layout(self) -> dict:
        return {"strategy": self.strategy if self.strategy != "none" else "ddp", "shard_size": self.shard_size,
                "replicate_size": self.replicate_size, "reshard_after_forward": self.reshard_after_forward}

    def close(self) -> None:
        """Drop the wrapper (and DDP's reducer) before the process group goes (see teardown)."""
        self.ddp = None
        self.module = self.model


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)  # HSDP: skips both the reduce-scatter and the all-reduce
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def wrap(model: nn.Module, cfg: DistConfig, ctx: DistContext, precision: str = "fp32",
         local_world: int = 1) -> Wrapped:
    if not ctx.distributed:
        return Wrapped("none", model, model, replicate_size=1)
    if cfg.strategy == "ddp":
        ddp = DDP(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                  bucket_cap_mb=cfg.bucket_cap_mb, gradient_as_bucket_view=cfg.gradient_as_bucket_view,
                  static_graph=cfg.static_graph, find_unused_parameters=cfg.find_unused_parameters)
        return Wrapped("ddp", model, ddp, ddp, replicate_size=ctx.world_size)
    return _shard(model, cfg, ctx, precision, local_world)


def _shard(model, cfg: DistConfig, ctx: DistContext, precision: str, local_world: int) -> Wrapped:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    shard, replicate = cfg.layout(ctx.world_size, local_world)
    if cfg.strategy == "fsdp":
        mesh = init_device_mesh(ctx.device.type, (shard,), mesh_dim_names=("shard",))
    else:  # a 2-D mesh: fully_shard shards over the last dimension and replicates over the first
        mesh = init_device_mesh(ctx.device.type, (replicate, shard), mesh_dim_names=("replicate", "shard"))
    if precision == "bf16":
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=REDUCE_DTYPES[cfg.reduce_dtype])
    else:
        mp = MixedPrecisionPolicy()
    units = []
    for unit in model.shard_units():
        fully_shard(unit, mesh=mesh, reshard_after_forward=cfg.reshard_after_forward, mp_policy=mp)
        units.append(unit)
    fully_shard(model, mesh=mesh, reshard_after_forward=cfg.reshard_after_forward, mp_policy=mp)
    return Wrapped(cfg.strategy, model, model, units=[*units, model], shard_size=shard, replicate_size=replicate,
                   reshard_after_forward=cfg.reshard_after_forward, autocast=precision != "bf16")
