"""Process-group setup and teardown: the one place that talks to torch.distributed's lifecycle.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT; without them (`python -m train`)
the job runs as world size 1 with no process group at all.
"""
from __future__ import annotations

import datetime
import gc
import os
import random
from dataclasses import dataclass

import torch
import torch.distributed as dist

from train.errors import ConfigError, check_choice, check_range


STRATEGIES = ("ddp", "fsdp", "hsdp")
REDUCE_DTYPES = ("fp32", "bf16")
MAX_TIMEOUT_S = 7 * 24 * 3600.0  # a week: longer than any sane wait for a peer
MAX_BUCKET_CAP_MB = 1 << 20  # 1 TiB: beyond any model's gradients, so one bucket either way


@dataclass(kw_only=True)
class DistConfig:
    backend: str = "auto"
    """auto (nccl when CUDA is available, else gloo) | gloo | nccl."""
    strategy: str = "ddp"
    """ddp (replicate, all-reduce gradients) | fsdp (FSDP2 fully_shard over the whole world) |
    hsdp (shard within groups of dist.shard_size ranks, replicate across the groups)."""
    shard_size: int = 0
    """hsdp: ranks per shard group; 0 = the ranks of one node (LOCAL_WORLD_SIZE)."""
    reshard_after_forward: bool | int = True
    """fsdp/hsdp, as FSDP2 defines it: true frees gathered parameters after forward (all-gathered
    again in backward), false keeps them until backward, N reshards to groups of N ranks."""
    reduce_dtype: str = "fp32"
    """fsdp/hsdp with train.precision=bf16: dtype of the gradient reduce-scatter / all-reduce."""
    timeout_s: float = 600.0
    """Collective timeout: a peer that stops answering fails the job after this long."""
    bucket_cap_mb: float = 25.0
    """DDP gradient bucket size in MiB (DDP's own default is 25)."""
    gradient_as_bucket_view: bool = False
    """Let gradients alias DDP's buckets (saves a copy and memory)."""
    static_graph: bool = False
    """Tell DDP the graph does not change between steps."""
    find_unused_parameters: bool = False
    """Let DDP search for parameters that got no gradient (costs a graph walk per step)."""

    def __post_init__(self):
        check_choice("dist.backend", self.backend, ("auto", "gloo", "nccl"))
        # Upper bounds keep the values inside what c10d and DDP convert without overflow
        # (a timeout of 1e300 s would fail in timedelta after the run had started).
        check_range("dist.timeout_s", self.timeout_s, 0, MAX_TIMEOUT_S, lo_open=True)
        check_range("dist.bucket_cap_mb", self.bucket_cap_mb, 0, MAX_BUCKET_CAP_MB, lo_open=True)
        check_choice("dist.strategy", self.strategy, STRATEGIES)
        if isinstance(self.shard_size, bool) or not isinstance(self.shard_size, int):
            raise ConfigError(f"dist.shard_size={self.shard_size!r} has the wrong type (must be an integer)")
        check_range("dist.shard_size", self.shard_size, 0)
        r = self.reshard_after_forward
        if not isinstance(r, (bool, int)) or (not isinstance(r, bool) and r < 1):
            raise ConfigError(f"dist.reshard_after_forward={r!r} is not allowed (true, false, or a rank count >= 1)")
        check_choice("dist.reduce_dtype", self.reduce_dtype, REDUCE_DTYPES)

    def layout(self, world: int, local_world: int) -> tuple[int, int]:
        """(shard_size, replicate_size) at this world size; checks what only the world can tell."""
        if self.strategy == "ddp":
            return 1, world
        if self.strategy == "fsdp":
            shard = world
        else:
            shard = self.shard_size or local_world
            if world % shard:
                raise ConfigError(f"dist.shard_size={shard} does not divide the world size {world}")
            if shard == world and world > 1:
                raise ConfigError(f"dist.shard_size={shard} equals the world size: hsdp would not replicate "
                                  f"(use dist.strategy=fsdp, or a shard size that divides {world} into groups)")
        r = self.reshard_after_forward
        if not isinstance(r, bool) and (shard % r or r > shard):
            raise ConfigError(f"dist.reshard_after_forward={r} does not divide the shard group of {shard} ranks")
        return shard, world // shard

@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def pick_backend(requested: str) -> str:
    """nccl only with CUDA: gloo on CUDA tensors must never be chosen by accident, nor nccl without GPUs."""
    if requested == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if requested == "nccl" and not torch.cuda.is_available():
        raise ConfigError("dist.backend='nccl' needs CUDA, and no GPU is visible (choose from auto, gloo)")
    return requested


def setup(cfg: DistConfig) -> DistContext:
    """Initialise the process group once (safe to call twice) and pick this rank's device."""
    backend = pick_backend(cfg.backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # TF32 tensor cores for fp32 matmuls and convolutions: ~8x the fp32 rate on Ampere and later.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if launched_by_torchrun() and not dist.is_initialized():
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        timeout = datetime.timedelta(seconds=cfg.timeout_s)
        dist.init_process_group(backend=backend, timeout=timeout, store=restart_scoped_store(timeout),
                                rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]), **kwargs)
    if dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, backend, device)
    return DistContext(0, 1, 0, backend, device)


def restart_scoped_store(timeout: datetime.timedelta) -> dist.Store:
    """The rendezvous store, with keys of this torchrun restart only.

    Restarted workers reuse torchrun's agent store, where the dead generation's gloo addresses
    still sit under the same keys: a new rank can read a dead peer's address and wait out the
    whole timeout (seen here in about one restart in five). A prefix per restart keeps the
    generations apart.
    """
    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    rank = int(os.environ["RANK"])
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          int(os.environ["WORLD_SIZE"]), is_master=rank == 0 and not agent_hosts,
                          timeout=timeout, wait_for_workers=False)
    return dist.PrefixStore(f"gradwire/restart{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def seed_everything(seed: int, rank: int) -> None:
    """Same model init on every rank (DDP broadcasts rank 0's anyway); per-rank streams for dropout."""
    torch.manual_seed(seed)
    random.seed(seed + rank)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def teardown(*holders: object) -> None:
    """Destroy the process group safely; idempotent.

    gloo can abort at exit (SIGABRT, "terminate called without an active exception") when DDP's
    reducer outlives the group: callers drop their DDP modules and optimizers first (pass nothing
    that still holds them), we collect garbage, meet at a barrier, and only then destroy.
    """
    del holders
    gc.collect()
    if dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def gather_floats(values: list[float], device: torch.device) -> list[list[float]]:
    """Every rank's small vector of floats, on every rank: the one collective of a log step."""
    local = torch.tensor(values, dtype=torch.float64, device=device)
    if not dist.is_initialized():
        return [local.tolist()]
    out = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(out, local)
    return [t.tolist() for t in out]


def gather_objects(obj: object) -> list:
    """Every rank's picklable object (RNG states for checkpoints); rare, so the cost is fine."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
