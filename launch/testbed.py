"""Emulated multi-node runs: `python -m launch.testbed --nodes 2 --rate 200mbit -- -m train --recipe mlp`.

Builds N nodes as network namespaces with shaped links (netns.py), starts launch/multinode.sh
in each (the same path a real cluster uses), streams node 0's output, keeps every node's log
under <run-dir>/testbed/, returns the worst exit code, and always removes the namespaces.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from launch.netns import Topology, die_with_parent, die_with_parent_now, netem_available, remove_stale

HERE = Path(__file__).resolve().parent
RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(bit|kbit|mbit|gbit)?\s*$", re.I)
SCALE = {None: 1.0, "bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
MAX_NODES = 200


class TestbedError(Exception):
    """Bad input or an environment that cannot host the testbed: one line, exit 2."""


def parse_rate(text: str) -> float:
    m = RATE.match(text)
    if not m or float(m.group(1)) <= 0:
        raise TestbedError(f"--rate {text!r} is not a tc rate (use e.g. 100mbit, 1gbit, 500kbit)")
    return float(m.group(1)) * SCALE[(m.group(2) or "").lower() or None]


def parse_args(argv):
    if "--" in argv:
        cut = argv.index("--")
        argv, program = argv[:cut], argv[cut + 1:]
    else:
        program = []
    p = argparse.ArgumentParser(prog="python -m launch.testbed", description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--nproc-per-node", type=int, default=1)
    p.add_argument("--rate", default="1gbit", help="each node's link rate, tc units (100mbit, 1gbit)")
    p.add_argument("--delay", help="added link latency (needs the kernel's netem qdisc)")
    p.add_argument("--run-dir", help="where node logs go (default runs/testbed-<timestamp>)")
    p.add_argument("--timeout", type=float, default=0, help="kill everything after this many seconds (exit 124)")
    p.add_argument("--grace", type=float, default=15, help="seconds the other nodes get after one fails")
    p.add_argument("--check", action="store_true", help="only build the network, measure it, tear it down")
    args = p.parse_args(argv)
    args.program = program
    if args.nodes < 2:
        raise TestbedError(f"--nodes {args.nodes} must be >= 2 (one node has no network to emulate)")
    if args.nodes > MAX_NODES:
        raise TestbedError(f"--nodes {args.nodes} must be <= {MAX_NODES} (one /24 subnet of addresses)")
    if args.nproc_per_node < 1:
        raise TestbedError(f"--nproc-per-node {args.nproc_per_node} must be >= 1")
    for flag, value in (("--timeout", args.timeout), ("--grace", args.grace)):
        if not (math.isfinite(value) and value >= 0):  # nan would never time out, inf never stop
            raise TestbedError(f"{flag} {value} must be a finite number of seconds >= 0")
    args.rate_bit_s = parse_rate(args.rate)
    if not program and not args.check:
        raise TestbedError("no program after '--' (e.g. -- -m train --recipe mlp)")
    return args


def can_build() -> str | None:
    """None when namespaces can be made here; else why not."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "the testbed needs iproute2's ip and tc"
    return None


def reexec_unprivileged(argv) -> int:
    """Not root: rerun inside a private user+network+mount namespace where we are root."""
    if os.environ.get("GRADWIRE_TESTBED_USERNS") or shutil.which("unshare") is None:
        raise TestbedError("the testbed needs root or unprivileged user namespaces (unshare), and has neither")
    inner = "mount -t tmpfs tmpfs /run && mkdir -p /run/netns && exec \"$0\" -m launch.testbed \"$@\""
    cmd = ["unshare", "--user", "--map-root-user", "--net", "--mount", "sh", "-c", inner, sys.executable, *argv]
    env = {**os.environ, "GRADWIRE_TESTBED_USERNS": "1"}
    done = subprocess.run(cmd, env=env, preexec_fn=die_with_parent())
    return done.returncode


def node_env(topo: Topology, k: int, args) -> dict:
    env = dict(os.environ)
    repo = str(HERE.parent)
    env.update({"NNODES": str(args.nodes), "NODE_RANK": str(k), "MASTER_ADDR": topo.addr(0), "MASTER_PORT": "29500",
                "LOCAL_ADDR": topo.addr(k), "SOCKET_IFNAME": "eth0", "NPROC_PER_NODE": str(args.nproc_per_node),
                "RDZV_ID": topo.tag, "PYTHON": sys.executable, "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)})
    return env


def start_nodes(topo: Topology, args, log_dir: Path) -> list[subprocess.Popen]:
    """One multinode.sh per node. `ip netns exec` and the script exec into torchrun, so the
    parent-death signal lands on torchrun, which then stops its workers."""
    procs, logs = [], []
    for k in range(args.nodes):
        cmd = [*topo.exec_prefix(k), "bash", str(HERE / "multinode.sh"), *args.program]
        logs.append(open(log_dir / f"node{k}.log", "w"))
        procs.append(subprocess.Popen(cmd, env=node_env(topo, k, args), stdout=subprocess.PIPE if k == 0 else logs[k],
                                      stderr=subprocess.STDOUT, start_new_session=True, text=True,
                                      preexec_fn=die_with_parent()))
    # Node 0 is streamed to the console and kept in its log; the thread starts only after the
    # last fork, since a preexec_fn and a running thread do not mix.
    threading.Thread(target=_tee, args=(procs[0].stdout, logs[0]), daemon=True).start()
    return procs


def _tee(stream, log) -> None:
    for line in stream:
        sys.stdout.write(line)
        sys.stdout.flush()
        log.write(line)
        log.flush()


def stop(procs: list[subprocess.Popen], wait: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.1)


def supervise(procs: list[subprocess.Popen], args) -> int:
    """Wait for all nodes; after a failure give the rest a grace period; honour --timeout."""
    started, failed_at = time.monotonic(), None
    while any(p.poll() is None for p in procs):
        now = time.monotonic()
        if failed_at is None and any(p.poll() not in (None, 0) for p in procs):
            failed_at = now
        if failed_at is not None and now - failed_at > args.grace:
            stop(procs)
        if args.timeout and now - started > args.timeout:
            stop(procs)
            print(f"gradwire: error: testbed timed out after {args.timeout:g} s", file=sys.stderr)
            return 124
        time.sleep(0.1)
    codes = [p.returncode for p in procs]
    return max(codes, key=lambda c: (c != 0, abs(c)))


def check_link(topo: Topology) -> None:
    """Send 2 s of data node 1 -> node 0 through the shaped link and report the rate seen."""
    server = subprocess.Popen([*topo.exec_prefix(0), sys.executable, "-c", SINK_SERVER, topo.addr(0)],
                              stdout=subprocess.PIPE, text=True, preexec_fn=die_with_parent())
    time.sleep(0.5)
    subprocess.run([*topo.exec_prefix(1), sys.executable, "-c", SOURCE_CLIENT, topo.addr(0)], timeout=30, check=True,
                   preexec_fn=die_with_parent())
    out = server.communicate(timeout=30)[0].strip()
    print(f"testbed: namespaces {topo.tag}*")
    print(f"link {topo.ns(1)} -> {topo.ns(0)}: shaped {topo.rate_bit_s / 1e6:g} Mbit/s, measured {out} Mbit/s")


SINK_SERVER = """import socket, sys, time
s = socket.create_server((sys.argv[1], 5201)); c, _ = s.accept(); n = 0; t0 = None
while True:
    b = c.recv(1 << 16)
    if not b: break
    t0 = t0 or time.perf_counter(); n += len(b)
print(f"{n * 8 / (time.perf_counter() - t0) / 1e6:.1f}")"""
SOURCE_CLIENT = """import socket, sys, time
c = socket.create_connection((sys.argv[1], 5201)); end = time.perf_counter() + 2; buf = bytes(1 << 16)
while time.perf_counter() < end: c.sendall(buf)
c.close()"""


def run(args) -> int:
    if args.delay:
        ok, why = netem_available()
        if not ok:
            raise TestbedError(f"--delay {args.delay} needs the kernel's netem qdisc, which this kernel lacks "
                               f"(tc said: {why or 'no netem'}); only rate shaping is available")
        raise TestbedError("--delay is not supported by this testbed yet (netem is present, but only rate shaping is wired)")
    run_dir = Path(args.run_dir or f"runs/testbed-{time.strftime('%Y%m%d-%H%M%S')}")
    log_dir = run_dir / "testbed"
    log_dir.mkdir(parents=True, exist_ok=True)
    topo = Topology(args.nodes, args.rate_bit_s)
    procs: list[subprocess.Popen] = []

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal)
    if os.environ.get("GRADWIRE_TESTBED_USERNS"):
        die_with_parent_now()  # the outer testbed's death (even SIGKILL) reaches us as SIGTERM
    try:
        for name in remove_stale():  # a killed testbed's namespaces (their owner pid is gone)
            print(f"testbed: removed stale namespace {name}", flush=True)
        topo.build()
        if args.check:
            check_link(topo)
            return 0
        print(f"testbed: {args.nodes} nodes x {args.nproc_per_node} procs, links shaped to {args.rate}, "
              f"namespaces {topo.tag}*, logs in {log_dir}", flush=True)
        procs = start_nodes(topo, args, log_dir)
        return supervise(procs, args)
    except KeyboardInterrupt:
        return 130
    finally:
        stop(procs)
        topo.teardown()
        signal.signal(signal.SIGTERM, previous)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        why = can_build()
        if why:
            raise TestbedError(why)
        if os.geteuid() != 0:
            return reexec_unprivileged(argv)
        return run(args)
    except TestbedError as e:
        print(f"gradwire: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a failed ip/tc command: the host cannot build this topology
        print(f"gradwire: error: testbed network could not be built: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
