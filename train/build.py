"""Everything that can fail on user input, done before any process group starts.

Data is loaded, the model built and a resume checkpoint loaded and matched against the model
here, so a missing path, a typo'd flavor or a checkpoint of another model exits 2 at once
instead of hanging peers at a rendezvous.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from models import build_model
from train import checkpoint, checkpoint_sharded
from train.config import RunConfig
from train.data import Datasets, ShardedBatches, build_datasets
from train.distributed import pick_backend
from train.errors import ConfigError, UsageError

RUN_MARKERS = ("config.toml", "summary.json", "checkpoints")
JOB_MARK = "torchrun_job"  # the torchrun job (TORCHELASTIC_RUN_ID) whose workers started this folder's run


@dataclass
class Prepared:
    cfg: RunConfig
    data: Datasets
    model: object
    run_dir: Path | None  # None: rank 0 names it after init (a timestamp every rank must agree on)
    resume: dict | None


def holds_a_run(folder: Path) -> bool:
    return folder.is_dir() and any((folder / m).exists() for m in RUN_MARKERS)


def check_run_dir(folder: Path, cfg: RunConfig) -> None:
    """Refuse to mix two runs in one folder unless asked to resume or overwrite."""
    t = cfg.train
    if holds_a_run(folder) and t.resume == "off" and not t.overwrite:
        raise UsageError(f"run folder '{folder}' already holds a run (set train.resume=auto to continue it, "
                         f"train.overwrite=true to replace it, or choose another --run-dir)")
    try:  # really try: permission bits say little for root, read-only mounts or /proc
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UsageError(f"run folder '{folder}' is not writable ({e.strerror or e})") from None


def named_run_dir(cfg: RunConfig, run_dir_arg: str | None) -> Path | None:
    if run_dir_arg:
        return Path(run_dir_arg)
    if cfg.train.run_name:
        return Path("runs") / cfg.train.run_name
    return None


def fresh_run_dir(cfg: RunConfig) -> Path:
    """runs/<model>-<timestamp>, made unique on this file system."""
    base = Path("runs") / f"{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, k = base, 1
    while folder.exists():
        folder, k = base.with_name(f"{base.name}-{k}"), k + 1
    return folder


def clear_old_run(folder: Path) -> None:
    """train.overwrite=true: remove the previous run's outputs so dashboards don't mix two runs."""
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    for pattern in ("events.out.tfevents.*", "summary.json", "report.png", "config.toml"):
        for path in folder.glob(pattern):
            path.unlink()


def newest_checkpoint(run_dir: Path) -> tuple[Path, dict] | None:
    """The newer of the run's newest good full checkpoint (DDP) and its newest sharded one."""
    found = [f for f in (checkpoint.load_newest(run_dir), checkpoint_sharded.load_newest(run_dir)) if f]
    return max(found, key=lambda f: int(f[1]["step"])) if found else None


def restart_count() -> int:
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def started_by_this_job(folder: Path) -> bool:
    """The folder's run was started by this torchrun job (torchrun keeps the run id across restarts;
    --standalone makes it a fresh uuid per launch, multinode.sh passes RDZV_ID)."""
    job = os.environ.get("TORCHELASTIC_RUN_ID", "")
    try:
        return bool(job) and (folder / JOB_MARK).read_text().strip() == job
    except OSError:
        return False


def for_restart(cfg: RunConfig, run_dir: Path) -> RunConfig:
    """A worker restarted by torchrun (restart count > 0) continues this job's run: from its newest
    good checkpoint, else afresh. Without this every restart would exit 2 ("already holds a run")
    until the restarts were used up. A folder of another job's run is still refused."""
    if restart_count() == 0 or not started_by_this_job(run_dir):
        return cfg
    t = cfg.train
    resume = "auto" if t.resume in ("off", "auto") or any_checkpoint(run_dir) else t.resume
    if os.environ.get("RANK") == "0":
        print(f"gradwire: torchrun restart {restart_count()}: continuing this run in {run_dir} "
              f"(train.resume={resume}; afresh if it has no good checkpoint)", file=sys.stderr, flush=True)
    # overwrite=true: with no checkpoint to resume, the dead attempt's outputs are cleared, not mixed in
    return dataclasses.replace(cfg, train=dataclasses.replace(t, resume=resume, overwrite=True))


def mark_job(run_dir: Path) -> None:
    """Rank 0 records which torchrun job owns the run (atomically: restarted peers may read it)."""
    job = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if not job or os.environ.get("RANK") != "0":
        return
    tmp = run_dir / f".{JOB_MARK}.tmp{os.getpid()}"
    tmp.write_text(job + "\n")
    os.replace(tmp, run_dir / JOB_MARK)


def any_checkpoint(run_dir: Path) -> bool:
    return bool(checkpoint.list_checkpoints(run_dir) or checkpoint_sharded.list_checkpoints(run_dir))


def load_resume(cfg: RunConfig, run_dir: Path | None, model) -> dict | None:
    resume = cfg.train.resume
    if resume == "off" or (resume == "auto" and run_dir is None):
        return None
    if resume == "auto":
        found = newest_checkpoint(run_dir)
    elif Path(resume).is_dir():
        try:
            found = Path(resume), checkpoint_sharded.read_train_state(resume)
        except ValueError as e:
            raise UsageError(f"train.resume={resume!r} {e}") from None
    else:
        found = checkpoint.load_explicit(resume)
    if found is None:
        return None
    path, state = found
    if "model" not in state:  # sharded (DCP): shards load after wrapping, on every rank
        check_sharded_resume(cfg, path, state, model)
        return {**state, "dcp": path}
    if cfg.dist.strategy != "ddp" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError(f"checkpoint '{path}' was written by a ddp run and holds no shards: resume it with "
                         f"dist.strategy=ddp (dist.strategy={cfg.dist.strategy} resumes from fsdp/hsdp checkpoints)")
    try:
        model.load_state_dict(state["model"])  # strict: a checkpoint of another model or shape fails here
    except (RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()
        raise UsageError(f"checkpoint '{path}' does not fit model {cfg.model.name}/{cfg.model.flavor} "
                         f"({first[1].strip() if len(first) > 1 else first[0] if first else type(e).__name__})") from None
    return state


def check_sharded_resume(cfg: RunConfig, path: Path, state: dict, model) -> None:
    mine = {"name": cfg.model.name, "flavor": cfg.model.flavor, "params": model.num_params()}
    if state.get("model_id") != mine:
        raise UsageError(f"checkpoint '{path}' does not fit model {cfg.model.name}/{cfg.model.flavor} "
                         f"(it holds {state.get('model_id')})")


def check_parallel(cfg: RunConfig, world: int, local_world: int) -> None:
    """What only the strategy and the world size can tell, before any group starts."""
    d = cfg.dist
    if d.strategy == "ddp":
        return
    if cfg.comm.hook not in ("allreduce", "none"):
        raise ConfigError(f"comm.hook={cfg.comm.hook!r} is a DDP comm hook and cannot be combined with "
                          f"dist.strategy={d.strategy} (use comm.hook=allreduce, or dist.strategy=ddp)")
    if cfg.train.precision == "fp16":
        raise ConfigError(f"train.precision='fp16' is not supported with dist.strategy={d.strategy} "
                          f"(use bf16: FSDP's mixed-precision policy needs no grad scaler)")
    d.layout(world, local_world)


def prepare(cfg: RunConfig, run_dir_arg: str | None) -> Prepared:
    pick_backend(cfg.dist.backend)  # nccl without a GPU fails here, not at the rendezvous
    data = build_datasets(cfg.data, _task_of(cfg), cfg.train.seed)
    torch.manual_seed(cfg.train.seed)  # identical init on every rank, before any group exists
    try:
        model = build_model(cfg.model.name, cfg.model.flavor, data.spec, cfg.model.options)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    check_parallel(cfg, world, int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))
    ShardedBatches(len(data.train), cfg.train.batch_size, 0, world, cfg.train.grad_accum, cfg.train.seed)
    run_dir = named_run_dir(cfg, run_dir_arg)
    if run_dir is not None:
        cfg = for_restart(cfg, run_dir)
        check_run_dir(run_dir, cfg)
    resume = load_resume(cfg, run_dir, model)
    if run_dir is not None:
        mark_job(run_dir)  # the last step: nothing is written unless the input was good
    return Prepared(cfg, data, model, run_dir, resume)


def _task_of(cfg: RunConfig) -> str:
    """The model's task (image or text), asked of the registry without building the model."""
    from models.registry import task_of
    try:
        return task_of(cfg.model.name)
    except ValueError as e:
        raise ConfigError(str(e)) from None
