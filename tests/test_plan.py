"""Alpha-beta fit, link rates, the planner's replay (by hand), the rate search, planner errors."""
import json
import random

import pytest

from runner import python_m
from train.comm.plan.costmodel import Link, fit_alpha_beta, hops, parse_rate
from train.comm.plan.replay import predict, replay_step, required_rate
from train.errors import UsageError


@pytest.mark.parametrize("noise", [0.0, 0.02])
def test_fit_recovers_alpha_and_beta(noise):
    alpha, beta = 250e-6, 8e-9  # 250 us, 1 Gbit/s
    rng = random.Random(0)
    sizes = [2 ** k for k in range(10, 25)]
    times = [(alpha + beta * s) * (1 + rng.uniform(-noise, noise)) for s in sizes]
    ab = fit_alpha_beta(sizes, times)
    assert ab.alpha_s == pytest.approx(alpha, rel=0.05 + 2 * noise)
    assert ab.beta_s_per_byte == pytest.approx(beta, rel=0.01 + noise)


@pytest.mark.parametrize("text, bits", [("100gbit", 100e9), ("200mbit", 200e6), ("25Gbit/s", 25e9),
                                        ("1e9", 1e9), ("512kbit", 512e3), ("1.5Gbit", 1.5e9)])
def test_rates_parse(text, bits):
    assert parse_rate(text) == pytest.approx(bits)


@pytest.mark.parametrize("text", ["fast", "10qbit", "-3gbit", "0", ""])
def test_bad_rates_are_refused(text):
    with pytest.raises(UsageError, match="link rate"):
        parse_rate(text)


def test_collective_time_uses_the_ring_factor_and_hops():
    link = Link(8e9, efficiency=1.0, hop_latency_s=0.0)  # 1 GB/s
    assert link.collective_time("all_reduce", 1e9, 2) == pytest.approx(1.0)  # 2(n-1)/n = 1
    assert link.collective_time("all_reduce", 1e9, 64) == pytest.approx(126 / 64)
    assert hops("all_reduce", 4) == 6
    assert Link(8e9, 1.0, 1e-3).collective_time("all_reduce", 0, 4) == pytest.approx(6e-3)


TIMELINE = {"step": 5, "step_ms": 20.0, "exposed_ms": 1.0, "compute_end_ms": 10.0,
            "buckets": [{"index": 0, "sent_bytes": 1_000_000, "ready_ms": 2.0},
                        {"index": 1, "sent_bytes": 2_000_000, "ready_ms": 3.0},
                        {"index": 2, "sent_bytes": 1_000_000, "ready_ms": 10.0}]}


def test_replay_matches_a_hand_computation():
    # World 2, 1 GB/s link, no latency: a bucket of B bytes takes B / 1e9 s = B / 1e6 ms.
    link = Link(8e9, 1.0, 0.0)
    got = replay_step(TIMELINE, 2, link)
    # bucket 0: 2.0 -> 3.0; bucket 1: max(3.0, 3.0) -> 5.0; bucket 2: max(10.0, 5.0) -> 11.0
    assert got["comm_ms"] == pytest.approx(11.0 - 2.0)
    assert got["exposed_ms"] == pytest.approx(11.0 - 10.0)
    assert got["step_ms"] == pytest.approx(20.0 - 1.0 + 1.0)
    # At 0.25 GB/s: 2 -> 6; 6 -> 14; 14 -> 18: exposed 8 ms, step 27 ms
    slow = replay_step(TIMELINE, 2, Link(2e9, 1.0, 0.0))
    assert slow["exposed_ms"] == pytest.approx(8.0) and slow["step_ms"] == pytest.approx(27.0)
    assert slow["scaling_efficiency"] == pytest.approx(19.0 / 27.0)


def test_required_rate_is_monotone_and_meets_its_target():
    link = Link(1e9, 0.94, 5e-6)
    answers = [required_rate([TIMELINE], 16, link, t) for t in (0.02, 0.05, 0.1, 0.2)]
    assert all(a >= b for a, b in zip(answers, answers[1:]))
    for target, rate in zip((0.02, 0.05, 0.1, 0.2), answers):
        at = lambda r: predict([TIMELINE], 16, Link(r, 0.94, 5e-6))["exposed_pct"]  # noqa: E731
        assert at(rate) <= 100 * target < at(0.9 * rate)


def summary_file(tmp_path, comm):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"world_size": 2, "model": {"name": "mlp"}, "comm": comm}))
    return str(path)


def test_planner_json_from_a_run(tmp_path):
    done = python_m(["train.comm.plan", summary_file(tmp_path, {"hook": "allreduce", "timelines": [TIMELINE]}),
                     "--world", "8", "--json", "--hop-latency-us", "0", "--efficiency", "1"])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [r["link_gbit_s"] for r in result["rates"]] == [1, 10, 25, 100, 200, 400, 800]
    assert result["inputs"]["world"] == 8 and result["required"]["link_gbit_s"] > 0
    assert any("ring" in a for a in result["assumptions"])


def test_planner_from_a_model_description():
    done = python_m(["train.comm.plan", "--model", "transformer", "--flavor", "gpt2-small", "--world", "64",
                     "--link", "400gbit", "--compute-ms", "300", "--json"])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert 120e6 < result["inputs"]["params"] < 130e6
    assert [s["strategy"] for s in result["strategies"]] == ["ddp", "fsdp", "hsdp"]
    for s in result["strategies"]:  # --link evaluates one NIC rate per GPU
        assert [r["nic_gbit_s"] for r in s["rates"]] == [400] and s["rates"][0]["exposed_pct"] >= 0
        assert s["compute_ms"] == pytest.approx(300.0)  # --compute-ms wins over FLOPs / throughput


@pytest.mark.parametrize("args, fragment", [
    (["/nonexistent/summary.json"], "does not exist"),
    (["NOTIMELINES"], "has no comm.timelines"),
    (["GOOD", "--link", "10qbit"], "link rate '10qbit'"),
    (["GOOD", "--world", "0"], "--world 0 is out of range (must be an integer >= 1)"),
    (["--model", "mpl"], "did you mean 'mlp'"),
    ([], "give a run's summary.json"),
])
def test_planner_errors_are_one_line_exit_2(tmp_path, args, fragment):
    good = summary_file(tmp_path, {"hook": "allreduce", "timelines": [TIMELINE]})
    bad = tmp_path / "bad"
    bad.mkdir()
    none = summary_file(bad, {"hook": "none", "measured": False})
    args = [good if a == "GOOD" else none if a == "NOTIMELINES" else a for a in args]
    done = python_m(["train.comm.plan", *args])
    assert done.returncode == 2
    assert fragment in done.stderr and len(done.stderr.strip().splitlines()) == 1


def sweep_json(tmp_path, name, link_bit_s, busbw_gbit_s, alpha_us=100.0):
    path = tmp_path / name
    path.write_text(json.dumps({"world_size": 2, "link_bit_s": link_bit_s, "results": [],
                                "fits": {"all_reduce": {"alpha_us": alpha_us, "busbw_gbit_s_fit": busbw_gbit_s}}}))
    return path


def test_calibration_tells_link_from_host(tmp_path):
    from train.comm.plan.costmodel import load_calibration
    slow = sweep_json(tmp_path, "slow.json", 100e6, 0.095, alpha_us=200.0)   # 95% of a 100 Mbit/s link
    fast = sweep_json(tmp_path, "fast.json", 10e9, 2.5)                      # 25% of 10 Gbit/s: the host
    cal = load_calibration([slow, fast])
    assert cal["efficiency"] == pytest.approx(0.95)
    assert cal["hop_latency_s"] == pytest.approx(100e-6)  # 200 us over the 2 hops of a 2-rank ring
    assert cal["host_bit_s"] == pytest.approx(2.5e9)
    link = Link(100e9, cal["efficiency"], 0.0, cal["host_bit_s"])
    assert link.collective_time("all_reduce", 1e9, 2) == pytest.approx(8 / 2.5)  # the host, not the link
    with pytest.raises(UsageError, match="not a sweep JSON"):
        load_calibration([tmp_path / "slow.json", TIMELINE_FILE(tmp_path)])


def TIMELINE_FILE(tmp_path):
    path = tmp_path / "not-a-sweep.json"
    path.write_text(json.dumps(TIMELINE))
    return path


def test_a_host_ceiling_makes_some_targets_unreachable():
    capped = Link(1e9, 1.0, 0.0, host_bit_s=0.5e9)
    assert required_rate([TIMELINE], 2, capped, 0.01) is None  # exposed can't drop below the host's pace
    assert required_rate([TIMELINE], 2, Link(1e9, 1.0, 0.0), 0.01) is not None


def test_replay_waits_for_the_last_rank():
    late = json.loads(json.dumps(TIMELINE))
    late["buckets"][0]["ready_max_ms"] = 6.0  # the peer had bucket 0 ready 4 ms after this rank
    got = replay_step(late, 2, Link(8e9, 1.0, 0.0))
    # bucket 0 waits for the peer: 6 -> 7; bucket 1: max(3, 7) -> 9; bucket 2: max(10, 9) -> 11
    assert got["comm_ms"] == pytest.approx(11.0 - 6.0)
    assert got["exposed_ms"] == pytest.approx(1.0)


def test_planner_describes_a_small_flavor_with_its_own_context():
    done = python_m(["train.comm.plan", "--model", "transformer", "--flavor", "debug", "--world", "4", "--json"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["inputs"]["params"] > 0


def test_calibration_ignores_a_fit_faster_than_its_link(tmp_path):
    from train.comm.plan.costmodel import load_calibration
    slow = sweep_json(tmp_path, "slow.json", 100e6, 0.094, alpha_us=200.0)
    noisy = sweep_json(tmp_path, "noisy.json", 10e9, 250.0)  # 25x its link: a fit of noise, not a link
    cal = load_calibration([slow, noisy])
    assert cal["efficiency"] == pytest.approx(0.94) and "host_bit_s" not in cal
