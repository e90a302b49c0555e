"""The collective sweep: 2 gloo ranks through torchrun, exact results, busbw = algbw x factor;
the checker, skipped ops and the exit code in a world of one, in-process."""
import json
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from runner import python_m, torchrun
from train.comm import sweep
from train.comm.busbw import busbw_factor
from train.comm.collectives import OPS, Collective, count_wrong
from train.errors import UsageError


def test_two_rank_sweep_is_correct_and_consistent(tmp_path):
    out = tmp_path / "sweep.json"
    ops = ["all_reduce", "all_gather", "broadcast", "reduce_scatter", "all_to_all"]
    done = torchrun(["-m", "train.comm.sweep", "--ops", ",".join(ops), "--max-bytes", "256K",
                     "--iters", "3", "--warmup", "1", "--json", str(out), "--tb-dir", str(tmp_path / "tb")],
                    timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["backend"] == "gloo" and result["dtype"] == "float32"
    sizes = [1024 << k for k in range(9)]  # 1K, 2K, ... 256K: factor 2
    for op in ops:
        if op in result["skipped"]:  # a gloo without this op: skipped with a note, never a crash
            assert f"note: skipping {op}" in done.stdout
            continue
        rows = [r for r in result["results"] if r["op"] == op]
        assert [r["bytes"] for r in rows] == sizes, op
        for r in rows:
            assert r["wrong"] == 0 and r["time_us"] > 0 and r["count"] == r["bytes"] // 4
            assert r["busbw_gbit_s"] == pytest.approx(r["algbw_gbit_s"] * busbw_factor(op, 2))
            assert r["busbw_gbyte_s"] == pytest.approx(r["algbw_gbyte_s"] * busbw_factor(op, 2))
            assert r["algbw_gbit_s"] == pytest.approx(r["bytes"] * 8 / (r["time_us"] * 1e-6) / 1e9)
            assert r["algbw_gbit_s"] == pytest.approx(8 * r["algbw_gbyte_s"])
        fit = result["fits"][op]
        assert fit["alpha_us"] >= 0 and [e["bytes"] for e in fit["errors"]] == sizes
        for e in fit["errors"]:
            assert e["error_pct"] == pytest.approx(100 * (e["predicted_us"] - e["measured_us"]) / e["measured_us"])
    for op in ("all_reduce", "all_gather", "broadcast"):  # gloo has had these always
        assert op not in result["skipped"]
    header = next(line for line in done.stdout.splitlines() if "#wrong" in line).split()
    assert header[1:] == ["size(B)", "count", "type", "time(us)", "algbw(GB/s)", "busbw(GB/s)", "busbw(Gbit/s)",
                          "#wrong"]
    assert "alpha-beta fit, all_reduce" in done.stdout
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    steps = [e.step for e in acc.Scalars("sweep/all_reduce_busbw_gbit_s")]
    assert steps == sizes and "sweep/broadcast_time_us" in acc.Tags()["scalars"]


@pytest.fixture
def world_of_one():
    store = Path(tempfile.mkdtemp(prefix="gradwire-test-")) / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("op", OPS)
def test_the_checker_counts_corrupted_elements(world_of_one, op, monkeypatch):
    coll = Collective(op, 64, 0, 1, torch.device("cpu"), torch.float32)
    assert coll.check() == 0
    real_run = Collective.run

    def corrupted(self):  # the collective "delivers" three wrong elements
        real_run(self)
        self.out[[1, 5, 40]] += 1
    monkeypatch.setattr(Collective, "run", corrupted)
    assert coll.check() == 3
    assert count_wrong(torch.arange(10.0), torch.arange(10.0)) == 0


def test_an_unsupported_op_is_skipped_with_a_note(world_of_one, monkeypatch, capsys):
    real_run = Collective.run

    def gloo_without_reduce_scatter(self):
        if self.op == "reduce_scatter":
            raise RuntimeError("ProcessGroupGloo does not support reduce_scatter")
        real_run(self)
    monkeypatch.setattr(Collective, "run", gloo_without_reduce_scatter)
    args = sweep.parse_args(["--ops", "all_reduce,reduce_scatter", "--max-bytes", "4K", "--iters", "1",
                             "--warmup", "0"])
    ctx = type("Ctx", (), {"rank": 0, "world_size": 1, "device": torch.device("cpu"), "backend": "gloo",
                           "is_main": True})()
    skipped = {}
    rows = sweep.measure(args, ctx, skipped)
    assert {r["op"] for r in rows} == {"all_reduce"} and len(rows) == 3
    assert "reduce_scatter" in skipped and "note: skipping reduce_scatter" in capsys.readouterr().out
    monkeypatch.setattr(Collective, "run", lambda self: (_ for _ in ()).throw(RuntimeError("connection reset")))
    with pytest.raises(RuntimeError, match="connection reset"):  # a real failure is not "unsupported"
        sweep.measure(args, ctx, {})


def test_wrong_elements_make_the_exit_code_non_zero(tmp_path, monkeypatch, capsys):
    assert not dist.is_initialized()
    args = ["--max-bytes", "2K", "--iters", "1", "--warmup", "0", "--json", str(tmp_path / "one.json")]
    assert sweep.main(args) == 0  # a world of one (no torchrun): still measured and checked
    assert json.loads((tmp_path / "one.json").read_text())["world_size"] == 1
    monkeypatch.setattr(Collective, "check", lambda self: 2)
    assert sweep.main(args) == 1
    assert [r["wrong"] for r in json.loads((tmp_path / "one.json").read_text())["results"]] == [2, 2]
    assert not dist.is_initialized()  # main tore its group down


def test_sizes_and_bad_arguments():
    assert sweep.parse_size("64M") == 64 << 20 and sweep.parse_size("1K") == 1024 and sweep.parse_size("512") == 512
    assert sweep.sizes(sweep.parse_args(["--min-bytes", "1K", "--max-bytes", "8K"])) == [1024, 2048, 4096, 8192]
    near_one = sweep.sizes(sweep.parse_args(["--min-bytes", "4", "--max-bytes", "8", "--factor", "1.01"]))
    assert near_one == [4, 5, 6, 7, 8]  # int() would have stuck at 4 forever
    with pytest.raises(UsageError):
        sweep.parse_size("lots")
    done = python_m(["train.comm.sweep", "--ops", "allreduce"])
    assert done.returncode == 2 and "did you mean 'all_reduce'" in done.stderr
    assert done.stderr.startswith("gradwire: error: ") and len(done.stderr.strip().splitlines()) == 1
    done = python_m(["train.comm.sweep", "--min-bytes", "1M", "--max-bytes", "1K"])
    assert done.returncode == 2 and "larger than --max-bytes" in done.stderr
