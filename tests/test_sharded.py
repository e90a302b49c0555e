"""Sharded data parallel on 2 and 4 gloo ranks: exact op bytes, the DDP trajectory, shard memory."""
import math

import pytest
import torch

from mp import run_ranks
from tests_support import make_trainer
from tiny import tiny

SGD = ["optim.name=sgd", "optim.momentum=0.0", "optim.grad_clip=0.0", "optim.lr=0.5", "optim.warmup_steps=0"]


def unit_shapes(model) -> list[list[torch.Size]]:
    """Parameter shapes per FSDP unit in the order train/parallel.py wraps them: the model's shard
    units, then the root with whatever no unit holds (a tied tensor counts once)."""
    units = model.shard_units()
    inner = {id(p) for u in units for p in u.parameters()}
    return [[p.shape for p in u.parameters()] for u in units] + [
        [p.shape for p in model.parameters() if id(p) not in inner]]


def padded_numel(shapes, group: int) -> int:
    """FSDP2 shards dim 0, padding it to a multiple of the group: the whole (padded) array."""
    return sum(math.ceil(s[0] / group) * group * math.prod(s[1:]) for s in shapes)


def expected_ops(shapes_per_unit, world: int, shard: int, reshard: bool, param_size=4, reduce_size=4) -> dict:
    units = [s for s in shapes_per_unit if s]
    gathered = sum(padded_numel(s, shard) for s in units) * param_size
    reduced = gathered // param_size * reduce_size
    out = {"all_gather": {"calls": len(units) * (2 if reshard else 1), "sent_bytes": gathered * (2 if reshard else 1)},
           "reduce_scatter": {"calls": len(units), "sent_bytes": reduced}}
    if world > shard:  # HSDP: each rank all-reduces its gradient shard across the replicas
        out["all_reduce"] = {"calls": len(units), "sent_bytes": reduced // shard}
    return out


def figures_worker(rank, world, recipe, overrides, steps, out):
    trainer = make_trainer(recipe, overrides)
    figs = []
    for step in range(steps):
        loss, _, wall = trainer.run_step(step)
        fig = trainer.comm.end_step(step, wall)
        figs.append({"loss": loss.item(), **{k: v for k, v in fig.items() if isinstance(v, (int, float))}})
    held = trainer.held_bytes()
    trainer.close()
    if rank == 0:
        torch.save({"figs": figs, "held": held}, out)


def run_figures(tmp_path, world, recipe, overrides, steps=3):
    out = tmp_path / f"figs-{world}-{len(list(tmp_path.glob('figs-*')))}.pt"
    run_ranks(figures_worker, world, tmp_path, recipe, overrides, steps, str(out), timeout=240)
    return torch.load(out)


def bare_model(recipe, overrides):
    from train.build import prepare
    from train.config import load_config
    return prepare(load_config(recipe, None, [o for o in overrides if not o.startswith("dist.")]), None).model


@pytest.mark.parametrize("recipe, extra, reshard, sizes", [
    ("transformer", [], True, (4, 4)),
    ("mlp", ["dist.reshard_after_forward=false", "train.grad_accum=2"], False, (4, 4)),
    ("lstm", ["train.precision=bf16"], True, (2, 4)),  # bf16 parameters gathered, fp32 gradients reduced
    ("mlp", ["train.precision=bf16", "dist.reduce_dtype=bf16"], True, (2, 2)),
])
def test_fsdp_op_bytes_equal_the_shape_arithmetic(tmp_path, recipe, extra, reshard, sizes):
    overrides = tiny(recipe, "dist.strategy=fsdp", *extra)
    got = run_figures(tmp_path, 2, recipe, overrides)
    accum = 2 if "train.grad_accum=2" in extra else 1
    want = expected_ops(unit_shapes(bare_model(recipe, overrides)), 2, 2, reshard, *sizes)
    want["all_gather"] = {k: v * accum for k, v in want["all_gather"].items()}  # every micro-step gathers
    for fig in got["figs"]:
        for op, w in want.items():
            assert fig[f"comm/{op}/calls"] == w["calls"], op
            assert fig[f"comm/{op}/sent_bytes"] == w["sent_bytes"], op
        assert "comm/all_reduce/calls" not in fig  # plain FSDP replicates nothing
        assert 0 < fig["time/exposed_comm_ms"] <= fig["comm/time_ms"] + 1e-6
        assert fig["comm/all_gather/busbw_gbit_s"] > 0


def test_hsdp_all_reduce_carries_one_shard_of_the_gradients(tmp_path):
    overrides = tiny("mlp", "dist.strategy=hsdp", "dist.shard_size=2")
    got = run_figures(tmp_path, 4, "mlp", overrides, steps=2)
    want = expected_ops(unit_shapes(bare_model("mlp", overrides)), 4, 2, True)
    for fig in got["figs"]:
        for op, w in want.items():
            assert (fig[f"comm/{op}/calls"], fig[f"comm/{op}/sent_bytes"]) == (w["calls"], w["sent_bytes"]), op
    assert want["all_reduce"]["sent_bytes"] * 2 == want["reduce_scatter"]["sent_bytes"]


def test_fsdp_follows_the_ddp_trajectory_and_holds_half_the_memory(tmp_path):
    base = tiny("transformer", *SGD)
    ddp = run_figures(tmp_path, 2, "transformer", base, steps=4)
    fsdp = run_figures(tmp_path, 2, "transformer", [*base, "dist.strategy=fsdp"], steps=4)
    losses = [f["loss"] for f in ddp["figs"]], [f["loss"] for f in fsdp["figs"]]
    assert losses[0][0] != losses[0][-1]  # it trained, so agreement means something
    assert losses[1] == pytest.approx(losses[0], rel=1e-5, abs=1e-6)
    shapes = [s for unit in unit_shapes(bare_model("transformer", base)) for s in unit]
    local = sum(math.ceil(s[0] / 2) * math.prod(s[1:]) for s in shapes) * 4  # this rank's rows of each parameter
    assert fsdp["held"]["param_bytes"] == local == fsdp["held"]["grad_bytes"]
    assert ddp["held"]["param_bytes"] == sum(math.prod(s) for s in shapes) * 4
    assert 0.45 < fsdp["held"]["param_bytes"] / ddp["held"]["param_bytes"] <= 0.55


def optimizers_worker(rank, world, out):
    """Every optimizer, with clipping and eval, trains under fsdp and hsdp-like sharding alike."""
    results = {}
    for name in ("adam", "adamw", "rmsprop", "sgd"):
        trainer = make_trainer("mlp", tiny("mlp", "dist.strategy=fsdp", f"optim.name={name}", "optim.grad_clip=0.5",
                                           "optim.lr=1e-3", "optim.warmup_steps=0", "train.eval_batches=2"))
        losses = [trainer.run_step(step)[0].item() for step in range(6)]
        _, norm, _ = trainer.run_step(6)
        trainer._eval(6)
        results[name] = (losses[0], losses[-1], float(norm), trainer.history.eval_loss)
        trainer.close()
    if rank == 0:
        torch.save(results, out)


def test_every_optimizer_clips_and_evaluates_under_fsdp(tmp_path):
    out = tmp_path / "optim.pt"
    run_ranks(optimizers_worker, 2, tmp_path, str(out), timeout=240)
    for name, (first, last, norm, eval_loss) in torch.load(out).items():
        assert last < first, name
        assert math.isfinite(norm) and norm > 0 and math.isfinite(eval_loss), name
