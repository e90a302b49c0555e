"""The planner: replay by hand, the rate search, the CLI from a run and from a description, errors."""
import json

import pytest

from runner import python_m
from train.comm import plan
from train.comm.costmodel import Link
from train.comm.replay import predict, replay_step, required_rate

TIMELINE = {"step": 5, "step_ms": 20.0, "exposed_ms": 1.0, "compute_end_ms": 10.0,
            "buckets": [{"index": 0, "sent_bytes": 1_000_000, "ready_ms": 2.0},
                        {"index": 1, "sent_bytes": 2_000_000, "ready_ms": 3.0},
                        {"index": 2, "sent_bytes": 1_000_000, "ready_ms": 10.0}]}

# The summary.json format the trainer writes (the example of the format, verbatim).
SUMMARY = {"world_size": 2, "backend": "gloo",
           "model": {"name": "mlp", "params": 12345, "flops_per_item": 1.0e5, "unit": "samples"},
           "comm": {"hook": "allreduce", "grad_bytes_per_step": 49380, "sent_bytes_per_step": 49380,
                    "buckets_per_step": 2, "time_ms_median": 1.2, "exposed_ms_median": 0.4, "overlap_pct": 66.0,
                    "busbw_gbit_s_median": 3.1,
                    "timelines": [{"step": 10, "step_ms": 12.0, "data_ms": 0.1, "forward_ms": 3.0, "backward_ms": 5.0,
                                   "optimizer_ms": 1.0, "compute_end_ms": 5.0, "exposed_ms": 0.4, "comm_ms": 1.2,
                                   "buckets": [{"index": 0, "grad_bytes": 30000, "sent_bytes": 30000, "ready_ms": 2.0,
                                                "launch_ms": 2.0, "done_ms": 3.1},
                                               {"index": 1, "grad_bytes": 19380, "sent_bytes": 19380, "ready_ms": 4.8,
                                                "launch_ms": 4.8, "done_ms": 5.4}]}]}}


def test_replay_matches_a_hand_computation():
    # World 2, 1 GB/s link, no latency: a bucket of B bytes takes 1 x B / 1e9 s = B / 1e6 ms.
    got = replay_step(TIMELINE, 2, Link(8e9, 1.0, 0.0))
    # bucket 0: 2.0 -> 3.0; bucket 1: max(3.0, 3.0) -> 5.0; bucket 2: max(10.0, 5.0) -> 11.0
    assert got["comm_ms"] == pytest.approx(11.0 - 2.0)
    assert got["exposed_ms"] == pytest.approx(11.0 - 10.0)
    assert got["step_ms"] == pytest.approx(20.0 - 1.0 + 1.0)
    # At 0.25 GB/s each bucket takes 4x: 2 -> 6; max(3, 6) = 6 -> 14; max(10, 14) = 14 -> 18:
    # exposed 18 - 10 = 8 ms, step 20 - 1 + 8 = 27 ms, efficiency (20 - 1) / 27
    slow = replay_step(TIMELINE, 2, Link(2e9, 1.0, 0.0))
    assert slow["exposed_ms"] == pytest.approx(8.0) and slow["step_ms"] == pytest.approx(27.0)
    assert slow["comm_ms"] == pytest.approx(16.0)
    assert slow["scaling_efficiency"] == pytest.approx(19.0 / 27.0)
    assert slow["exposed_pct"] == pytest.approx(100 * 8 / 27)


def test_replay_goes_in_launch_order_and_takes_medians():
    # Bucket 1 listed first and ready first: DDP still launches bucket 0 first.
    tl = {"step_ms": 20.0, "exposed_ms": 0.0, "compute_end_ms": 10.0,
          "buckets": [{"index": 1, "sent_bytes": 1_000_000, "ready_ms": 1.0},
                      {"index": 0, "sent_bytes": 1_000_000, "ready_ms": 9.5}]}
    # bucket 0: 9.5 -> 10.5; bucket 1: max(1.0, 10.5) -> 11.5: exposed 1.5 ms (ready order would give 0.5)
    assert replay_step(tl, 2, Link(8e9, 1.0, 0.0))["exposed_ms"] == pytest.approx(1.5)
    # medians over steps: exposed of 1.0 (TIMELINE), 1.5 (tl) and 1.5 -> 1.5
    assert predict([TIMELINE, tl, tl], 2, Link(8e9, 1.0, 0.0))["exposed_ms"] == pytest.approx(1.5)


def test_required_rate_is_monotone_and_meets_its_target():
    link = Link(1e9, 0.94, 5e-6)
    targets = (0.02, 0.05, 0.1, 0.2, 0.4)
    answers = [required_rate([TIMELINE], 16, link, t) for t in targets]
    assert all(a >= b for a, b in zip(answers, answers[1:]))  # a looser target never needs more
    assert answers[0] > answers[-1]
    for target, rate in zip(targets, answers):
        at = lambda r: predict([TIMELINE], 16, link.at_rate(r))["exposed_pct"]  # noqa: E731
        assert at(rate) <= 100 * target < at(0.9 * rate)


def test_a_host_ceiling_makes_some_targets_unreachable():
    capped = Link(1e9, 1.0, 0.0, host_bit_s=0.5e9)
    assert required_rate([TIMELINE], 2, capped, 0.01) is None  # exposed can't drop below the host's pace
    assert required_rate([TIMELINE], 2, Link(1e9, 1.0, 0.0), 0.01) is not None


def run_plan(args, capsys):
    """The planner in-process (the error tests below run it as a user would, in a subprocess)."""
    code = plan.main(args)
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def write(tmp_path, name, obj):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return str(path)


def test_planner_json_from_a_run_matches_the_hand_computation(tmp_path, capsys):
    result = json.loads(run_plan([write(tmp_path, "summary.json", SUMMARY), "--world", "64", "--link", "100gbit",
                                  "--hop-latency-us", "5", "--efficiency", "1", "--json"], capsys))
    assert set(result) == {"inputs", "assumptions", "rates", "required"}
    row, = result["rates"]
    assert set(row) == {"link_gbit_s", "comm_ms", "exposed_ms", "step_ms", "exposed_pct", "scaling_efficiency"}
    # World 64: 126 hops x 5 us = 0.630 ms per bucket, plus 2 x 63/64 x bytes x 8 / 100e9 s:
    #   bucket 0: 30000 B -> 0.004725 ms; 2.0 -> 2.634725
    #   bucket 1: 19380 B -> 0.00305235 ms; max(4.8, 2.634725) = 4.8 -> 5.43305235
    # exposed 5.43305235 - 5.0; step 12.0 - 0.4 + exposed; comm from 2.0 to the last done
    exposed = 5.43305235 - 5.0
    assert row["exposed_ms"] == pytest.approx(exposed)
    assert row["step_ms"] == pytest.approx(12.0 - 0.4 + exposed)
    assert row["comm_ms"] == pytest.approx(5.43305235 - 2.0)
    assert row["scaling_efficiency"] == pytest.approx(11.6 / (11.6 + exposed))
    assert result["required"]["target_exposed"] == 0.05
    assert result["inputs"]["world"] == 64 and result["inputs"]["model"] == "mlp"
    assert any("ring" in a for a in result["assumptions"]) and any("126 hops" in a for a in result["assumptions"])


def test_planner_table_over_standard_rates(tmp_path, capsys):
    out = run_plan([write(tmp_path, "summary.json", {"world_size": 2, "model": {"name": "mlp"},
                    "comm": {"hook": "allreduce", "timelines": [TIMELINE]}}), "--world", "8"], capsys)
    links = [line.split("Gbit/s")[0].strip() for line in out.splitlines() if line.strip().endswith(tuple("0123456789"))
             and "Gbit/s" in line]
    assert links == ["1", "10", "25", "100", "200", "400", "800"]
    assert "smallest link for exposed comm <= 5% of the step" in out
    assert "assumptions:" in out and "ring all-reduce" in out and "us per hop" in out


def test_planner_from_a_model_description(capsys):
    result = json.loads(run_plan(["--model", "transformer", "--flavor", "gpt2-small", "--world", "64",
                                  "--link", "400gbit", "--compute-ms", "300", "--json"], capsys))
    assert 120e6 < result["inputs"]["params"] < 130e6
    assert result["inputs"]["grad_bytes"] == 4 * result["inputs"]["params"]
    assert len(result["rates"]) == 1 and result["rates"][0]["exposed_pct"] >= 0
    assert any("uniformly through backward" in a for a in result["assumptions"])


def test_planner_debug_transformer_and_params_with_a_bf16_hook(capsys):
    result = json.loads(run_plan(["--model", "transformer", "--flavor", "debug", "--world", "4", "--json"], capsys))
    assert result["inputs"]["params"] > 0 and len(result["rates"]) == 7
    assert result["inputs"]["seq_len"] == 128  # the debug flavor's context, not the 1024 default
    inputs = json.loads(run_plan(["--params", "7e9", "--hook", "bf16", "--world", "512", "--json"], capsys))["inputs"]
    assert inputs["sent_bytes"] == pytest.approx(2 * 7e9) and inputs["grad_bytes"] == pytest.approx(4 * 7e9)
    # 6 x 7e9 FLOPs per token x 8192 tokens / (989e12 x 0.4) s
    assert inputs["compute_ms"] == pytest.approx(6 * 7e9 * 8192 / (989e12 * 0.4) * 1e3)


@pytest.mark.parametrize("args, fragment", [
    (["/nonexistent/summary.json"], "does not exist"),
    (["NOTIMELINES"], "has no comm.timelines: run with world size > 1 and a comm.hook other than none"),
    (["BROKEN"], "lacks compute_end_ms"),
    (["GOOD", "--link", "10qbit"], "link rate '10qbit' is not understood"),
    (["GOOD", "--world", "0"], "--world 0 must be >= 1"),
    (["GOOD", "--params", "7e9"], "not both"),
    (["--model", "mpl"], "did you mean 'mlp'"),
    (["--model", "transformer", "--flavor", "huge"], "choose from"),
    ([], "give a run's summary.json"),
])
def test_planner_errors_are_one_line_exit_2(tmp_path, args, fragment):
    good = write(tmp_path, "good.json", SUMMARY)
    none = write(tmp_path, "none.json", {"world_size": 2, "comm": {"hook": "none"}})
    broken = write(tmp_path, "broken.json", {"comm": {"timelines": [{"step_ms": 1.0, "exposed_ms": 0.0,
                                                                     "buckets": []}]}})
    subst = {"GOOD": good, "NOTIMELINES": none, "BROKEN": broken}
    done = python_m(["train.comm.plan", *[subst.get(a, a) for a in args]])
    assert done.returncode == 2
    assert fragment in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("gradwire: error: ") and "Traceback" not in done.stderr
