"""Wire bytes: what the NIC counted (psutil per-interface counters) against the ring expectation.

Counters are per interface, so they hold every local rank's traffic (and anything else the
machine sends: the rendezvous store, headers, retransmits). The expectation (expect.py) is
what the step's collectives put on this node's link.
"""
from __future__ import annotations

import os

import psutil


def choose_interfaces(requested: str, world_size: int, local_world_size: int) -> list[str]:
    """comm.nic if set, else the socket interface the backend was told to use, else guess."""
    known = psutil.net_io_counters(pernic=True)
    names = [n.strip() for n in (requested or os.environ.get("GLOO_SOCKET_IFNAME", "")
                                 or os.environ.get("NCCL_SOCKET_IFNAME", "")).split(",") if n.strip()]
    if names:
        missing = [n for n in names if n not in known]
        if missing:
            from train.errors import ConfigError
            raise ConfigError(f"comm.nic={','.join(missing)!r} is not an interface here "
                              f"(choose from {', '.join(sorted(known))})")
        return names
    if local_world_size >= world_size:  # every rank on this machine: traffic goes over loopback
        return ["lo"] if "lo" in known else sorted(known)
    return sorted(n for n in known if n != "lo")


class WireCounter:
    def __init__(self, interfaces: list[str], ranks_on_link: int):
        self.interfaces = interfaces
        self.ranks_on_link = ranks_on_link
        self.last = self._read()

    def _read(self) -> tuple[int, int]:
        counters = psutil.net_io_counters(pernic=True)
        found = [counters[n] for n in self.interfaces if n in counters]
        return sum(c.bytes_sent for c in found), sum(c.bytes_recv for c in found)

    def window(self, steps: int, ring_bytes: float) -> dict:
        """Per-step counter deltas over the `steps` since the previous call, and their ratio to
        the expectation (`ring_bytes`: what the step's collectives put on this node's link).
        Read at log steps only: one read costs ~0.2 ms, too much for every small step."""
        now = self._read()
        tx, rx = (now[0] - self.last[0]) / max(1, steps), (now[1] - self.last[1]) / max(1, steps)
        self.last = now
        expected = ring_bytes
        return {"net/tx_bytes": tx, "net/rx_bytes": rx, "net/wire_ratio": tx / expected if expected else None}
