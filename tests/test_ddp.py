"""DDP correctness: 2 gloo ranks on half-batches step exactly like 1 process on the full batch."""
import pytest
import torch

from tests_support import load_step_params
from tiny import tiny
from mp import run_ranks

SGD = ["optim.name=sgd", "optim.momentum=0.0", "optim.grad_clip=0.0", "optim.lr=0.5", "optim.warmup_steps=0"]


def one_step_worker(rank, world, recipe, overrides, out):
    params = load_step_params(recipe, overrides)
    if rank == 0:
        torch.save(params, out)


@pytest.mark.parametrize("recipe, extra", [
    ("mlp", []),
    ("lstm", []),
    ("transformer", ["train.grad_accum=2"]),  # no_sync on the first micro-step, sync on the last
])
def test_two_ranks_match_one_process(tmp_path, recipe, extra):
    overrides = tiny(recipe, *SGD, *extra, steps=1)
    out = tmp_path / "ddp.pt"
    run_ranks(one_step_worker, 2, tmp_path, recipe, overrides, str(out))
    two = torch.load(out)
    one = load_step_params(recipe, [o for o in overrides if not o.startswith("train.grad_accum")])
    initial = load_step_params(recipe, overrides, steps_to_run=0)
    assert two.keys() == one.keys()
    moved = 0.0
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6, msg=name)
        moved = max(moved, (one[name] - initial[name]).abs().max().item())
    assert moved > 1e-4  # the step really changed the parameters, so equality means something
