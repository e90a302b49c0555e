"""Non-finite numbers: the divergence guard, the finiteness check of state, the all-ranks verdict.

The guard decides on a figure every rank shares, so every rank stops at the same step and no
rank waits in a collective its peers never join: the global gradient norm. Under DDP the
gradients are all-reduced before it is computed (a NaN on one rank reaches every rank's
norm); under sharded strategies clip_grad_norm_ reduces it across ranks itself. The mean loss
is checked at log steps, where every rank already holds every rank's loss.
"""
from __future__ import annotations

import math
import os
import sys

import torch
import torch.distributed as dist

from train.errors import ConfigError

DIVERGED_EXIT = 3  # 1 is a crash or a lost peer, 2 bad input: a diverged run is neither
MAX_SKIPS = 1_000_000  # "bounded": a policy that can never stop is not one
INJECT_ENV = "GRADWIRE_TEST_INJECT_NONFINITE"  # tests only: "<step>[,<step>...][:<rank>]"


def parse_policy(text: str) -> int:
    """train.nonfinite: 'stop' -> 0 skips allowed; 'skip:N' -> N (N >= 1)."""
    if text == "stop":
        return 0
    head, sep, count = str(text).partition(":")
    if head == "skip" and sep and count.isdigit() and 1 <= int(count) <= MAX_SKIPS:
        return int(count)
    raise ConfigError(f"train.nonfinite={text!r} is not allowed (choose stop or skip:N with "
                      f"1 <= N <= {MAX_SKIPS}, e.g. skip:3)")


class Divergence(Exception):
    """A non-finite figure the policy does not absorb: the run stops at `step` on every rank."""

    def __init__(self, step: int, figure: str, value, why: str):
        self.step, self.figure, self.value, self.why = step, figure, value, why
        super().__init__(f"step {step}: {figure}={value} is not finite; {why}")

    def as_dict(self) -> dict:
        return {"step": self.step, "figure": self.figure, "value": str(self.value), "why": self.why}


def _scalar(t) -> float:
    """A 0-d tensor (or a replicated DTensor) as a float; this is the guard's one host sync."""
    if hasattr(t, "full_tensor"):
        t = t.full_tensor()
    return float(t)


def _injected(rank: int) -> set[int]:
    spec = os.environ.get(INJECT_ENV, "")
    if not spec:
        return set()
    steps, _, only_rank = spec.partition(":")
    if only_rank and int(only_rank) != rank:
        return set()
    return {int(s) for s in steps.split(",") if s}


class Guard:
    def __init__(self, policy: str, rank: int, fp16: bool, loud: bool):
        self.allowed = parse_policy(policy)
        self.policy, self.rank, self.fp16, self.loud = policy, rank, fp16, loud
        self.skipped: list[int] = []  # steps whose non-finite figure the policy absorbed
        self.scaler_step = -1  # the last step left to the fp16 grad scaler to skip
        self.inject = _injected(rank)

    def poison(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        """Tests only (INJECT_ENV): a NaN loss at chosen steps on one rank. Multiplied, not added,
        so the gradients turn NaN too, as a real blow-up's do."""
        return loss * float("nan") if step in self.inject else loss

    def admit(self, step: int, grad_norm: torch.Tensor, scaler) -> bool:
        """Whether to apply this step's update; raises Divergence to stop the run.

        fp16: an overflow of the scaled gradients is the grad scaler's (it skips the update and
        halves its scale), so it is admitted to scaler.step. Once the scale is below 1 the loss is
        no longer scaled up, so a non-finite gradient is not an fp16 overflow: the guard decides.
        """
        value = _scalar(grad_norm)
        if math.isfinite(value):
            return True
        scale = scaler.get_scale() if self.fp16 and scaler.is_enabled() else None
        if scale is not None and scale >= 1.0:
            self.scaler_step = step
            return True
        self.bad(step, "train/grad_norm", value, note="" if scale is None else
                 f" (fp16 grad scaler at scale {scale:g} < 1: not an overflow it can rescale)")
        return False

    def check_loss(self, step: int, mean_loss: float) -> None:
        """At a log step, the mean over ranks (the same number on every rank)."""
        if not math.isfinite(mean_loss) and step != self.scaler_step:
            self.bad(step, "train/loss", mean_loss, applied=True)

    def bad(self, step: int, figure: str, value, applied: bool = False, note: str = "") -> None:
        if step in self.skipped:  # its gradient norm already counted it
            return
        if len(self.skipped) >= self.allowed:
            how = "its gradients were finite, so its update was applied" if applied else "its update was not applied"
            why = (f"stopped ({how}; train.nonfinite=stop)" if not self.allowed else
                   f"stopped ({how}; {len(self.skipped)} step(s) already skipped, train.nonfinite={self.policy})")
            raise Divergence(step, figure, value, why + note)
        self.skipped.append(step)
        if self.loud:
            what = "counted as bad (its gradients were finite, so its update stands)" if applied else "update skipped"
            print(f"gradwire: warning: step {step}: {figure}={value} is not finite; {what} "
                  f"({len(self.skipped)} of {self.allowed} allowed by train.nonfinite={self.policy})",
                  file=sys.stderr, flush=True)

    def check_state(self, step: int, named: dict, device: torch.device) -> None:
        """Before a checkpoint: every rank checks its own (possibly sharded) state, then all agree."""
        where = first_nonfinite(named)
        if not all_ranks_ok(where is None, device):
            raise Divergence(step, where or "state on another rank", "nan/inf",
                             "checkpoint refused (non-finite state is never saved)")

    def report(self, stopped: Divergence | None) -> dict:
        """summary.json's account: what stopped the run (if anything) and which steps were skipped."""
        return {"policy": self.policy, "skipped_steps": list(self.skipped),
                "stopped": stopped.as_dict() if stopped else None}


def finite(x: float | None) -> float | None:
    """summary.json holds strict JSON: a NaN loss is reported as null (stopped_by says why)."""
    return x if x is None or math.isfinite(x) else None


def announce(err: Divergence, run_dir) -> None:
    """The one line a diverged run prints (rank 0), with where `train.resume=auto` will pick up."""
    from train.checkpoint import list_checkpoints  # checkpoint imports this module
    found = list_checkpoints(run_dir)
    tail = f"newest checkpoint: {found[0]}" if found else "no checkpoint was written before it"
    print(f"gradwire: error: {err}; {tail}", file=sys.stderr, flush=True)


def first_nonfinite(tree, prefix: str = "") -> str | None:
    """Name of the first non-finite float in a nest of dicts/lists of tensors and numbers, or None.

    One pass over (model, optimizer) state dicts; shared by the plain and the sharded checkpoint
    paths (a DTensor is checked through its local shard: pair with all_ranks_ok)."""
    leaves: list[tuple[str, torch.Tensor | float]] = []
    _leaves(tree, prefix, leaves)
    tensors = [(k, v) for k, v in leaves if isinstance(v, torch.Tensor)]
    for k, v in leaves:
        if isinstance(v, float) and not math.isfinite(v):
            return k
    if not tensors:
        return None
    flags = torch.stack([torch.isfinite(v).all().to("cpu") for _, v in tensors])  # one sync, not one per tensor
    if bool(flags.all()):
        return None
    return tensors[int((~flags).nonzero()[0])][0]


def _leaves(node, name: str, out: list) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _leaves(v, f"{name}.{k}" if name else str(k), out)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _leaves(v, f"{name}[{i}]", out)
    elif isinstance(node, torch.Tensor):
        if hasattr(node, "to_local"):
            node = node.to_local()
        if node.is_floating_point() or node.is_complex():
            out.append((name, node.detach()))
    elif isinstance(node, float):
        out.append((name, node))


def all_ranks_ok(ok: bool, device: torch.device | None = None) -> bool:
    """The all-ranks verdict on a local bool (True only if every rank says True); no group: `ok`."""
    if not (dist.is_available() and dist.is_initialized()):
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())
