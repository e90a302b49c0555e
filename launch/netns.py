"""Emulated nodes: network namespaces, veth links, a bridge, tc rate shaping — and their removal.

Two nodes are joined by one veth pair; more hang off a bridge in a "switch" namespace. Every
name carries this testbed's tag (gw<pid>), so teardown removes exactly what was built and
nothing of anyone else's. Veths are created directly inside the namespaces and addresses live
only there: the host's interfaces, addresses and routes are never touched.
"""
from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
from dataclasses import dataclass, field

# Names this module owns: gw<pid>n<k> (node k) and gw<pid>sw (the switch).
OWNED = re.compile(r"^gw(\d+)(n\d+|sw)$")
MAX_NODES = 90  # host octets 10..99 (see Topology.addr)


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def burst_bytes(rate_bit_s: float) -> int:
    """tbf's bucket: room for one 64 KiB GSO segment, which veth hands to the qdisc whole, or
    2 ms of traffic at high rates (a timer tick must not starve the link). A larger bucket lets
    small messages through at line speed and bends the alpha-beta line at small sizes."""
    return int(max(80 * 1024, rate_bit_s / 8 * 0.002))


def free_subnet(pid: int) -> int:
    """A third octet k for 10.77.k.0/24 that overlaps none of this network namespace's routes.
    The node namespaces have no routes to the host, so a clash could not misroute anything;
    avoiding one keeps `ip route` output and packet captures unambiguous."""
    taken = []
    for line in sh("ip", "-4", "route", "show", "table", "all", check=False).stdout.splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("broadcast", "local", "unicast", "multicast") and len(line.split()) > 1:
            word = line.split()[1]
        try:
            net = ipaddress.ip_network(word, strict=False)
        except ValueError:
            continue  # "default" and the like
        if net.prefixlen > 0:
            taken.append(net)
    for i in range(250):
        k = (pid + i) % 250 + 1
        net = ipaddress.ip_network(f"10.77.{k}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return k
    raise RuntimeError("every 10.77.k.0/24 overlaps an existing route")


@dataclass
class Topology:
    nodes: int
    rate_bit_s: float
    delay: str | None = None  # tc time ("5ms"); needs netem
    pid: int = field(default_factory=os.getpid)
    built: list = field(default_factory=list)  # namespaces, in creation order

    def __post_init__(self):
        self.tag = f"gw{self.pid}"
        self.subnet = free_subnet(self.pid)

    def ns(self, k: int) -> str:
        return f"{self.tag}n{k}"

    def addr(self, k: int) -> str:
        # Two-digit host octets (10..99): torchrun's c10d rendezvous ranks nodes by sorting their
        # advertised address *strings*, so equal-length addresses make node k group rank k and
        # put global rank 0 on node 0, whose output the testbed streams.
        return f"10.77.{self.subnet}.{10 + k}"

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
        # gloo and torchrun also talk to themselves; a namespace starts with lo down.
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def _link(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        """A veth pair between two namespaces, both ends shaped: a node's link limits both
        directions, like a NIC and its switch port. The pair is born inside the namespaces under
        tagged names (so it never appears on the host), then renamed."""
        tmp_a, tmp_b = f"{self.tag}x{len(self.built)}a", f"{self.tag}x{len(self.built)}b"
        sh("ip", "link", "add", tmp_a, "netns", ns_a, "type", "veth", "peer", "name", tmp_b, "netns", ns_b)
        for ns, tmp, final in ((ns_a, tmp_a, if_a), (ns_b, tmp_b, if_b)):
            sh("ip", "-n", ns, "link", "set", tmp, "name", final)
            sh("ip", "-n", ns, "link", "set", final, "up")
            self.shape(ns, final)

    def shape(self, ns: str, dev: str) -> None:
        tc = ["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev]
        # latency bounds the queue (rate x 200 ms); TCP small queues keep it far from full, so
        # the link is never idle while the sender has data and nothing is dropped.
        tbf = ["tbf", "rate", f"{int(self.rate_bit_s)}bit", "burst", str(burst_bytes(self.rate_bit_s)),
               "latency", "200ms"]
        if not self.delay:
            sh(*tc, "root", *tbf)
            return
        # netem delays, tbf (its child) shapes; netem's queue must hold rate x delay in flight.
        limit = str(max(1000, int(self.rate_bit_s / 8 / 1500 * 2)))
        sh(*tc, "root", "handle", "1:", "netem", "delay", self.delay, "limit", limit)
        sh(*tc, "parent", "1:1", "handle", "10:", *tbf)

    def describe(self, k: int = 0) -> str:
        """The qdiscs the kernel actually installed on node k's link, one line."""
        out = sh("ip", "netns", "exec", self.ns(k), "tc", "qdisc", "show", "dev", "eth0").stdout
        return "; ".join(line.strip() for line in out.splitlines() if line.strip())

    def exec_prefix(self, k: int) -> list[str]:
        return ["ip", "netns", "exec", self.ns(k)]

    def teardown(self) -> None:
        """Kill what still runs inside, then delete. A live process would keep a deleted
        namespace (and its veths) alive without a name; deleting a namespace deletes the veths
        and the bridge inside it."""
        for name in reversed(self.built):
            remove_namespace(name)
        self.built.clear()


def remove_namespace(name: str) -> None:
    """SIGKILL every process in the namespace (all ours: we made it), then delete it."""
    pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    sh("ip", "netns", "delete", name, check=False)


def owned_namespaces() -> list[str]:
    lines = sh("ip", "netns", "list", check=False).stdout.splitlines()
    return [line.split()[0] for line in lines if line.split() and OWNED.match(line.split()[0])]


def remove_stale() -> list[str]:
    """Namespaces left by a testbed that was SIGKILLed (no finally runs then): their owner pid
    is gone, or is now some other program. Removed so they do not pile up."""
    stale = []
    for name in owned_namespaces():
        pid = int(OWNED.match(name).group(1))
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                alive = b"launch.testbed" in f.read()
        except OSError:
            alive = False
        if not alive and pid != os.getpid():
            remove_namespace(name)
            stale.append(name)
    return stale


def leftovers(tag: str) -> list[str]:
    """Namespaces or links of this tag still present (for tests and for the user's peace of mind)."""
    names = [n for n in owned_namespaces() if OWNED.match(n).group(1) == tag[2:]]
    links = sh("ip", "-o", "link", check=False).stdout
    return names + [line for line in links.splitlines() if re.search(rf"\b{tag}x\d", line)]


def netem_available() -> tuple[bool, str]:
    """Probe for the netem qdisc (link delay) in a scratch namespace, never on a host device."""
    scratch = f"gw{os.getpid()}sw"  # our own name pattern, so remove_stale can clean a crash here
    try:
        sh("ip", "netns", "add", scratch)
        done = sh("ip", "netns", "exec", scratch, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
                  check=False)
        return done.returncode == 0, done.stderr.strip().splitlines()[0] if done.stderr.strip() else ""
    finally:
        sh("ip", "netns", "delete", scratch, check=False)
