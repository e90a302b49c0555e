"""The emulated multi-node testbed: real namespaces, a real shaped link, real torchrun per node."""
import json
import os
import subprocess
import sys

import pytest

from runner import REPO, env, read_summary

needs_namespaces = pytest.mark.skipif(
    os.geteuid() != 0 and subprocess.run(["unshare", "--user", "--map-root-user", "--net", "true"]).returncode != 0,
    reason="needs root or unprivileged user namespaces to build network namespaces")


def run_testbed(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch.testbed", *args], capture_output=True, text=True,
                          timeout=timeout, env=env(), cwd=REPO)


def no_leftovers(done: subprocess.CompletedProcess) -> bool:
    """Nothing of this testbed's own tag is left (others may run testbeds beside it)."""
    tag = done.stdout.split("namespaces ", 1)[1].split("*", 1)[0]
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return tag.startswith("gw") and not any(n.startswith(tag) for n in names.split()) and tag not in links


@needs_namespaces
def test_sweep_on_a_shaped_link_sees_the_shaped_rate(tmp_path):
    out = tmp_path / "sweep.json"
    done = run_testbed(["--nodes", "2", "--rate", "100mbit", "--run-dir", str(tmp_path), "--",
                    "-m", "train.comm.sweep", "--min-bytes", "512K", "--max-bytes", "8M", "--factor", "4",
                    "--iters", "5", "--warmup", "1", "--json", str(out)])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]
    largest = max(rows, key=lambda r: r["bytes"])
    # 8 MiB x 5 iterations: long enough that scheduling hiccups on 2 busy cores average out
    assert largest["op"] == "all_reduce" and largest["bytes"] == 8 << 20
    assert 0.85 * 0.1 <= largest["busbw_gbit_s"] <= 1.15 * 0.1  # within 15% of 100 Mbit/s
    assert all(r["wrong"] == 0 for r in rows)
    assert (tmp_path / "testbed" / "node0.log").exists() and (tmp_path / "testbed" / "node1.log").exists()
    assert no_leftovers(done)


@needs_namespaces
def test_training_across_two_emulated_nodes(tmp_path):
    run = tmp_path / "run"
    done = run_testbed(["--nodes", "2", "--rate", "1gbit", "--run-dir", str(tmp_path), "--", "-m", "train",
                    "--recipe", "mlp", "--run-dir", str(run), "model.flavor=debug", "train.steps=10",
                    "train.log_every=5", "train.eval_every=0"])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = read_summary(run)
    assert summary["world_size"] == 2 and summary["net"]["iface"] == "eth0"
    assert summary["net"]["wire_ratio"] >= 1.0  # the node's NIC carried at least the ring's bytes
    assert no_leftovers(done)


@needs_namespaces
def test_a_failing_node_fails_the_testbed_and_cleans_up(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text("import os, sys, time\nif os.environ['RANK'] == '1': sys.exit(3)\ntime.sleep(60)\n")
    done = run_testbed(["--nodes", "2", "--rate", "1gbit", "--grace", "2", "--run-dir", str(tmp_path), "--",
                    str(script)], timeout=120)
    assert done.returncode != 0
    assert no_leftovers(done)


@needs_namespaces
def test_three_nodes_through_a_bridge(tmp_path):
    done = run_testbed(["--nodes", "3", "--rate", "200mbit", "--check"], timeout=60)
    assert done.returncode == 0, done.stderr
    measured = float(done.stdout.split("measured ")[1].split()[0])
    assert 0.85 * 200 <= measured <= 1.1 * 200
    assert no_leftovers(done)


@pytest.mark.parametrize("args, fragment", [
    (["--nodes", "1", "--", "-m", "train"], "--nodes 1 must be >= 2"),
    (["--rate", "fast", "--", "-m", "train"], "--rate 'fast' is not a tc rate"),
    (["--nodes", "2"], "no program after '--'"),
    (["--delay", "5ms", "--", "-m", "train"], "--delay 5ms"),
])
def test_bad_testbed_input_is_one_line_exit_2(args, fragment):
    done = run_testbed(args, timeout=60)
    assert done.returncode == 2 and fragment in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "namespaces" not in done.stdout  # refused before anything was built


@needs_namespaces
def test_a_killed_testbed_leaves_no_process_and_its_namespaces_are_removed_next_time(tmp_path):
    import signal
    import time

    import psutil
    script = tmp_path / "sleeper.py"
    script.write_text("import time\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-m", "launch.testbed", "--nodes", "2", "--rate", "1gbit",
                             "--run-dir", str(tmp_path), "--", str(script)], stdout=subprocess.PIPE, text=True,
                            env=env(), cwd=REPO)
    try:
        line = proc.stdout.readline()
        tag = line.split("namespaces ", 1)[1].split("*", 1)[0]
        ours = lambda: [p for p in psutil.process_iter(["cmdline"]) if str(script) in (p.info["cmdline"] or [])]
        deadline = time.monotonic() + 60
        while len(ours()) < 2:  # both nodes' workers are running the script
            assert time.monotonic() < deadline, "the nodes never started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)  # no finally, no cleanup of its own
        proc.wait(timeout=10)
        deadline = time.monotonic() + 45
        while ours():
            assert time.monotonic() < deadline, f"left behind: {[p.pid for p in ours()]}"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
    stale = lambda: [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                     if n.startswith(tag)]
    if os.geteuid() == 0:  # unprivileged, the namespaces lived in a private mount that died with it
        assert stale(), "the killed testbed had no chance to remove its namespaces"
    done = run_testbed(["--nodes", "2", "--rate", "200mbit", "--check"], timeout=60)
    assert done.returncode == 0, done.stderr
    assert not stale() and no_leftovers(done)
