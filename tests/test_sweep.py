"""The collective sweep: 2 gloo ranks through torchrun, exact results, busbw = algbw x factor."""
import json

import pytest
import torch

from runner import python_m, torchrun
from train.comm.busbw import busbw_factor
from train.comm.sweep.collectives import count_wrong
from train.comm.sweep.cli import parse_size
from train.errors import UsageError


def test_two_rank_sweep_is_correct_and_consistent(tmp_path):
    out = tmp_path / "sweep.json"
    ops = ["all_reduce", "all_gather", "reduce_scatter", "broadcast", "all_to_all"]
    done = torchrun(["-m", "train.comm.sweep", "--ops", ",".join(ops), "--max-bytes", "256K", "--factor", "8",
                     "--iters", "3", "--warmup", "1", "--json", str(out), "--tb-dir", str(tmp_path / "tb")])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["backend"] == "gloo"
    sizes = [1024, 8192, 65536]
    for op in ops:
        rows = [r for r in result["results"] if r["op"] == op]
        assert [r["bytes"] for r in rows] == sizes, op
        for r in rows:
            assert r["wrong"] == 0 and r["time_us"] > 0
            assert r["busbw_gbit_s"] == pytest.approx(r["algbw_gbit_s"] * busbw_factor(op, 2))
            assert r["algbw_gbit_s"] == pytest.approx(r["bytes"] * 8 / (r["time_us"] * 1e-6) / 1e9)
        assert "alpha_us" in result["fits"][op]
    assert "#wrong" in done.stdout and "alpha-beta fit, all_reduce" in done.stdout
    assert list((tmp_path / "tb").glob("events.*"))


def test_the_checker_counts_wrong_elements():
    expected = torch.arange(10.0)
    got = expected.clone()
    assert count_wrong(got, expected) == 0
    got[[2, 7]] += 1
    assert count_wrong(got, expected) == 2


def test_sizes_and_bad_arguments():
    assert parse_size("64M") == 64 << 20 and parse_size("1K") == 1024 and parse_size("512") == 512
    with pytest.raises(UsageError):
        parse_size("lots")
    done = python_m(["train.comm.sweep", "--ops", "allreduce"])
    assert done.returncode == 2 and "did you mean 'all_reduce'" in done.stderr
    done = python_m(["train.comm.sweep", "--min-bytes", "1M", "--max-bytes", "1K"])
    assert done.returncode == 2 and "larger than --max-bytes" in done.stderr


def test_a_factor_near_one_still_ends():
    from types import SimpleNamespace
    from train.comm.sweep.cli import sizes
    assert sizes(SimpleNamespace(min_b=4, max_b=8, factor=1.01)) == [4, 5, 6, 7, 8]
