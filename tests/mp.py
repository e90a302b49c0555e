"""Multi-process test helper: N gloo ranks through torch.multiprocessing, a file:// store, a deadline."""
from __future__ import annotations

import datetime
import os
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank: int, world: int, store_file: str, fn, args):
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(world)})
    torch.set_num_threads(1)  # two ranks on two cores
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        fn(rank, world, *args)
    finally:
        dist.barrier()
        dist.destroy_process_group()


def run_ranks(fn, world: int, tmp_path, *args, timeout: float = 120.0) -> None:
    """Run fn(rank, world, *args) on `world` gloo ranks; fail the test on error or after `timeout` s."""
    store = tmp_path / f"store-{time.monotonic_ns()}"
    ctx = mp.start_processes(_entry, args=(world, str(store), fn, args), nprocs=world, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            raise TimeoutError(f"ranks did not finish within {timeout} s")
