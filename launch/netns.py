"""Emulated nodes: network namespaces, veth links, a bridge, tc rate shaping — and their removal.

Two nodes are joined by one veth pair; more hang off a bridge in a "switch" namespace. Every
name carries this testbed's tag (gw<pid>), so teardown removes exactly what was built and
nothing of anyone else's, and a later testbed can tell a killed one's leftovers (its pid is
gone) from a running one's. Addresses live only inside the namespaces.
"""
from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
from dataclasses import dataclass, field


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def burst_bytes(rate_bit_s: float) -> int:
    """tbf's bucket: room for one 64 KiB GSO segment, which veth hands to the qdisc whole (a
    smaller bucket would drop it), or 2 ms of traffic at high rates. A larger bucket lets small
    messages through at line speed and bends the alpha-beta line at small sizes."""
    return int(max(80 * 1024, rate_bit_s / 8 * 0.002))


@dataclass
class Topology:
    nodes: int
    rate_bit_s: float
    subnet: int = 77
    tag: str = field(default_factory=lambda: f"gw{os.getpid()}")  # the whole pid: stale_namespaces reads it back
    built: list = field(default_factory=list)  # namespaces, in creation order

    def ns(self, k: int) -> str:
        return f"{self.tag}n{k}"

    def addr(self, k: int) -> str:
        return f"10.{self.subnet}.{os.getpid() % 250}.{k + 1}"

    @property
    def switch(self) -> str:
        return f"{self.tag}sw"

    def build(self) -> None:
        for k in range(self.nodes):
            self._add_ns(self.ns(k))
        if self.nodes == 2:
            self._link(self.ns(0), "eth0", self.ns(1), "eth0")
        else:
            self._add_ns(self.switch)
            sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.switch, "link", "set", "br0", "up")
            for k in range(self.nodes):
                self._link(self.ns(k), "eth0", self.switch, f"p{k}")
                sh("ip", "-n", self.switch, "link", "set", f"p{k}", "master", "br0")
        for k in range(self.nodes):
            sh("ip", "-n", self.ns(k), "addr", "add", f"{self.addr(k)}/24", "dev", "eth0")

    def _add_ns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.built.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def _link(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        """A veth pair between two namespaces, both ends shaped: a node's link limits both directions."""
        tmp_a, tmp_b = f"{self.tag}x{len(self.built)}a", f"{self.tag}x{len(self.built)}b"
        sh("ip", "link", "add", tmp_a, "netns", ns_a, "type", "veth", "peer", "name", tmp_b, "netns", ns_b)
        for ns, tmp, final in ((ns_a, tmp_a, if_a), (ns_b, tmp_b, if_b)):
            sh("ip", "-n", ns, "link", "set", tmp, "name", final)
            sh("ip", "-n", ns, "link", "set", final, "up")
            self.shape(ns, final)

    def shape(self, ns: str, dev: str) -> None:
        sh("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
           "rate", f"{int(self.rate_bit_s)}bit", "burst", str(burst_bytes(self.rate_bit_s)), "latency", "200ms")

    def exec_prefix(self, k: int) -> list[str]:
        return ["ip", "netns", "exec", self.ns(k)]

    def teardown(self) -> None:
        """Deleting a namespace deletes the veths and bridge inside it."""
        for name in reversed(self.built):
            sh("ip", "netns", "delete", name, check=False)
        self.built.clear()


def leftovers(tag: str) -> list[str]:
    """Namespaces or links of this tag still present (for tests and for the user's peace of mind)."""
    names = sh("ip", "netns", "list", check=False).stdout.split()
    links = sh("ip", "-o", "link", check=False).stdout
    return [n for n in names if n.startswith(tag)] + [line for line in links.splitlines() if tag in line]


def netem_available() -> tuple[bool, str]:
    """Probe for the netem qdisc (link delay) in a scratch namespace."""
    scratch = f"gwprobe{os.getpid()}"
    try:
        sh("ip", "netns", "add", scratch)
        done = sh("ip", "netns", "exec", scratch, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
                  check=False)
        return done.returncode == 0, done.stderr.strip()
    finally:
        sh("ip", "netns", "delete", scratch, check=False)


OURS = re.compile(r"^gw(?:probe)?(\d+)(?:n\d+|sw)?$")  # every name this module gives a namespace


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_namespaces() -> list[str]:
    """Namespaces of ours whose testbed process is gone (killed before its cleanup ran)."""
    names = [line.split()[0] for line in sh("ip", "netns", "list", check=False).stdout.splitlines() if line.strip()]
    return [n for n in names if (m := OURS.match(n)) and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1)))]


def remove_stale() -> list[str]:
    """Delete stale namespaces, ending first any process still inside one (it would keep the
    namespace, and a port, alive). Only names of our own pattern with a dead owner are touched."""
    removed = []
    for name in stale_namespaces():
        for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        if sh("ip", "netns", "delete", name, check=False).returncode == 0:
            removed.append(name)
    return removed


PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM):
    """A preexec_fn: the child gets `sig` when the testbed dies, even by SIGKILL, so nothing it
    started outlives it. SIGTERM, not SIGKILL: torchrun then stops its own workers (they run in
    sessions of their own, out of reach of a process-group kill)."""
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)
    return preexec


def die_with_parent_now(sig: int = signal.SIGTERM) -> None:
    """The same for this process (the testbed re-executed inside a user namespace, whose
    credential change clears a parent-death signal set before it)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
