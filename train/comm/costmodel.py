"""The alpha-beta cost model of a collective, link rates, and what a sweep can calibrate.

time(bytes) = alpha + beta x bytes for one collective at a fixed world size and link. To move
to another world size n and link, these assumptions are made (the planner prints them):
- a ring algorithm: each rank's link carries busbw_factor(op, n) x bytes (2(n-1)/n for
  all_reduce) and the ring takes 2(n-1) latency hops for all_reduce ((n-1) for the gathers and
  scatters, 1 for broadcast and reduce);
- the bottleneck is each rank's own link: full bisection behind it, no in-network reduction
  (SHARP), no hierarchy (NVLink inside a node, network between nodes);
- a collective achieves `efficiency` x the nominal rate. The default is 1.0 (an ideal link);
  the testbed's shaped links measured about 0.94, and `load_calibration` supplies the figure
  of a real sweep. Nothing is assumed silently: the planner prints the value and its source.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from train.comm.busbw import busbw_factor
from train.errors import UsageError

RATE_UNITS = {"": 1.0, "bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}
# tc's "kbps" means kilobytes per second while vendors' "Gbps" means gigabits: refused, not guessed.
RATE_FORMS = "a number of bit/s, or a number with kbit, mbit, gbit or tbit (e.g. 100gbit, 200mbit, 25Gbit/s, 1e9)"
DEFAULT_HOP_LATENCY_S = 5e-6  # a typical NCCL ring step on a modern fabric; calibrate for yours


def parse_rate(text: str) -> float:
    """'100gbit' | '200mbit' | '25Gbit/s' | '1e9' -> bits per second (decimal, as tc and vendors count)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kmgt]?bit)?(?:/s)?\s*", str(text), re.I)
    if not m:
        raise UsageError(f"link rate {text!r} is not understood (use {RATE_FORMS})")
    value = float(m.group(1)) * RATE_UNITS[(m.group(2) or "").lower()]
    if not 0 < value < math.inf:
        raise UsageError(f"link rate {text!r} must be positive and finite (use {RATE_FORMS})")
    return value


def hops(op: str, world: int) -> int:
    """Latency steps of the ring algorithm."""
    if world <= 1:
        return 0
    return {"all_reduce": 2 * (world - 1), "broadcast": 1, "reduce": 1}.get(op, world - 1)


def collective_time(op: str, num_bytes: float, world: int, link_bytes_per_s: float,
                    hop_latency_s: float, efficiency: float = 1.0) -> float:
    """Seconds for one ring collective of `num_bytes` (nccl-tests' size) over each rank's link.

    busbw_factor x bytes cross the bottleneck link at efficiency x its rate; the ring's hops
    each add one latency. A world of one moves nothing."""
    if world <= 1:
        return 0.0
    wire_bytes = busbw_factor(op, world) * num_bytes
    return hops(op, world) * hop_latency_s + wire_bytes / (link_bytes_per_s * efficiency)


@dataclass
class AlphaBeta:
    alpha_s: float     # fixed cost per collective, seconds
    beta_s_per_byte: float

    def predict(self, num_bytes: float) -> float:
        return self.alpha_s + self.beta_s_per_byte * num_bytes


def fit_alpha_beta(sizes: list[float], times: list[float]) -> AlphaBeta:
    """Least squares on relative error (each residual weighted 1/t), so a 1 KiB point counts as
    much as a 64 MiB one instead of the big sizes deciding alpha alone. alpha is clamped at 0
    and beta at 0 (a negative latency or a cost that falls with size is noise, not a link)."""
    if len(sizes) < 2 or len(sizes) != len(times):
        raise ValueError("need at least two (size, time) points")
    if min(times) <= 0:
        raise ValueError("times must be positive")
    w2 = [1.0 / (t * t) for t in times]
    # minimise sum w2 (a + b x - t)^2: the 2x2 normal equations
    sw = sum(w2)
    sx = sum(w * x for w, x in zip(w2, sizes))
    sxx = sum(w * x * x for w, x in zip(w2, sizes))
    st = sum(w * t for w, t in zip(w2, times))
    sxt = sum(w * x * t for w, x, t in zip(w2, sizes, times))
    det = sw * sxx - sx * sx
    if det <= 1e-12 * sw * sxx:
        raise ValueError("sizes must differ")
    a = (st * sxx - sx * sxt) / det
    b = (sw * sxt - sx * st) / det
    if a < 0:  # refit the slope through the origin
        a, b = 0.0, sxt / sxx
    if b < 0:  # flat: a constant cost
        a, b = st / sw, 0.0
    return AlphaBeta(a, b)


@dataclass
class Link:
    """A rank's bottleneck link: its nominal rate, the share of it a collective achieves, the
    latency of one ring hop, and the most the host's stack can push through any link (CPU
    copies, TCP): a collective moves bytes at the smaller of rate x efficiency and that ceiling."""
    rate_bit_s: float
    efficiency: float = 1.0
    hop_latency_s: float = DEFAULT_HOP_LATENCY_S
    host_bit_s: float = math.inf

    def effective_bit_s(self) -> float:
        return min(self.rate_bit_s * self.efficiency, self.host_bit_s)

    def collective_time(self, op: str, num_bytes: float, world: int) -> float:
        # the efficiency is already inside effective_bit_s (it may be the host ceiling that binds)
        return collective_time(op, num_bytes, world, self.effective_bit_s() / 8, self.hop_latency_s)

    def at_rate(self, rate_bit_s: float) -> "Link":
        return Link(rate_bit_s, self.efficiency, self.hop_latency_s, self.host_bit_s)


LINK_BOUND = 0.8  # a sweep reaching >= 80% of its link's rate measured the link, else the host


def load_calibration(paths) -> dict:
    """From sweep JSONs (train.comm.sweep --link RATE --json PATH; one path or a list): what
    honestly transfers to another link.

    - A sweep whose all_reduce fit reached most of the link it ran on measured the link: its
      bus rate / nominal rate is the efficiency a collective achieves on a link of that kind,
      and alpha / hops its per-hop latency. The absolute bandwidth never transfers.
    - A sweep far below its link (or with no --link recorded) measured the host instead: its
      bus rate is the hosts' ceiling (TCP, copies), which caps every link faster than it.
    - The hop latency is the software stack's plus the wire's: on the namespace testbed (no
      netem, no propagation delay) it is the host's alone, so it understates a long-haul link
      and overstates NCCL on RDMA. Use a sweep from the fabric you plan for, or --hop-latency-us.
    Returns {"sources", "hop_latency_s", and "efficiency" and/or "host_bit_s" when measured}."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out: dict = {"sources": []}
    for path in paths:
        try:
            sweep = json.loads(Path(path).read_text())
            fit = sweep["fits"]["all_reduce"]
            world = int(sweep["world_size"])
            if world < 2:
                raise UsageError(f"--calibration {str(path)!r} comes from a world of {world}: a sweep needs "
                                 f"2 or more ranks to measure a link")
            # rate_gbit_s since the sweep names it so; busbw_gbit_s_fit in older sweep files
            bus = float(fit.get("rate_gbit_s", fit.get("busbw_gbit_s_fit"))) * 1e9
            alpha_s = float(fit["alpha_us"]) * 1e-6
        except OSError as e:
            raise UsageError(f"--calibration {str(path)!r} cannot be read ({e.strerror})") from None
        except UsageError:
            raise
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"--calibration {str(path)!r} is not a sweep JSON with an all_reduce fit "
                             f"(make one with: torchrun ... -m train.comm.sweep --link RATE --json PATH)") from None
        if bus <= 0:
            raise UsageError(f"--calibration {str(path)!r} has an all_reduce fit with no bus rate")
        link = sweep.get("link_bit_s")
        hop = alpha_s / hops("all_reduce", world)
        if link and bus >= LINK_BOUND * link:
            out.update(efficiency=min(1.0, bus / link), hop_latency_s=hop)
        else:
            out["host_bit_s"] = min(out.get("host_bit_s", math.inf), bus)
            out.setdefault("hop_latency_s", hop)
        out["sources"].append(str(path))
    return out


def format_rate(bit_s: float) -> str:
    if math.isinf(bit_s):
        return "inf"
    for unit, scale in (("Tbit/s", 1e12), ("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bit_s >= scale:
            return f"{bit_s / scale:.3g} {unit}"
    return f"{bit_s:.3g} bit/s"
