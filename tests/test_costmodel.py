"""The alpha-beta fit, link rates, the ring scaling of collective_time, and calibration."""
import json
import math
import random

import pytest

from train.comm.busbw import busbw_factor
from train.comm.costmodel import Link, collective_time, fit_alpha_beta, hops, load_calibration, parse_rate
from train.errors import UsageError


@pytest.mark.parametrize("noise", [0.0, 0.02])
def test_fit_recovers_alpha_and_beta(noise):
    alpha, beta = 250e-6, 8e-9  # 250 us, 1 Gbit/s
    rng = random.Random(0)
    sizes = [2 ** k for k in range(10, 25)]
    times = [(alpha + beta * s) * (1 + rng.uniform(-noise, noise)) for s in sizes]
    ab = fit_alpha_beta(sizes, times)
    if noise == 0:  # exact data: the least squares solution is the model itself
        assert ab.alpha_s == pytest.approx(alpha, rel=1e-9) and ab.beta_s_per_byte == pytest.approx(beta, rel=1e-9)
    assert ab.alpha_s == pytest.approx(alpha, rel=0.05 + 2 * noise)
    assert ab.beta_s_per_byte == pytest.approx(beta, rel=0.01 + noise)
    assert ab.predict(1 << 20) == pytest.approx(alpha + beta * (1 << 20), rel=0.01 + noise)


def test_fit_weights_relative_error():
    # One large size 10% off would drag an unweighted fit's alpha far from 10 us; with 1/t
    # weights the small sizes keep alpha near what they say.
    sizes = [1e3, 2e3, 4e3, 8e3, 1e8]
    times = [10e-6 + 1e-9 * s for s in sizes]
    times[-1] *= 1.1
    ab = fit_alpha_beta(sizes, times)
    assert ab.alpha_s == pytest.approx(10e-6, rel=0.05)


def test_fit_clamps_alpha_and_beta():
    ab = fit_alpha_beta([1e3, 1e4, 1e5], [0.5e-6, 9.8e-6, 100e-6])  # would give alpha < 0
    assert ab.alpha_s == 0.0 and ab.beta_s_per_byte > 0
    flat = fit_alpha_beta([1e3, 1e4, 1e5], [12e-6, 11e-6, 10e-6])  # falls with size: noise
    assert flat.beta_s_per_byte == 0.0 and 10e-6 < flat.alpha_s < 12e-6
    with pytest.raises(ValueError):
        fit_alpha_beta([1e3], [1e-6])
    with pytest.raises(ValueError):
        fit_alpha_beta([1e3, 1e3], [1e-6, 2e-6])


@pytest.mark.parametrize("text, bits", [("100gbit", 100e9), ("200mbit", 200e6), ("25Gbit/s", 25e9),
                                        ("1e9", 1e9), ("512kbit", 512e3), ("1.5Gbit", 1.5e9),
                                        (" 10 GBIT ", 10e9), ("2tbit", 2e12), ("800", 800.0)])
def test_rates_parse(text, bits):
    assert parse_rate(text) == pytest.approx(bits)


@pytest.mark.parametrize("text", ["fast", "10qbit", "-3gbit", "0", "", "100gbps", "1e999", "gbit"])
def test_bad_rates_are_refused_naming_the_string_and_the_forms(text):
    with pytest.raises(UsageError, match="link rate") as err:
        parse_rate(text)
    assert repr(text) in str(err.value) and "100gbit" in str(err.value)


def test_collective_time_scales_with_the_busbw_factor():
    byte_rate, nbytes = 1e9, 1e8  # 1 GB/s, 100 MB, no latency
    at2 = collective_time("all_reduce", nbytes, 2, byte_rate, 0.0)
    assert at2 == pytest.approx(0.1)  # 2(n-1)/n = 1 at n = 2
    for n in (3, 8, 64, 1024):
        ratio = collective_time("all_reduce", nbytes, n, byte_rate, 0.0) / at2
        assert ratio == pytest.approx((2 * (n - 1) / n) / 1.0)
        assert ratio == pytest.approx(busbw_factor("all_reduce", n) / busbw_factor("all_reduce", 2))
    assert collective_time("all_gather", nbytes, 8, byte_rate, 0.0) == pytest.approx(0.1 * 7 / 8)
    assert collective_time("broadcast", nbytes, 8, byte_rate, 0.0) == pytest.approx(0.1)
    assert collective_time("all_reduce", nbytes, 1, byte_rate, 1.0) == 0.0  # nothing crosses a wire


def test_collective_time_adds_latency_per_hop_and_efficiency():
    assert hops("all_reduce", 4) == 6 and hops("all_gather", 4) == 3 and hops("broadcast", 4) == 1
    assert collective_time("all_reduce", 0, 4, 1e9, 1e-3) == pytest.approx(6e-3)
    assert collective_time("all_reduce", 1e9, 2, 1e9, 0.0, efficiency=0.5) == pytest.approx(2.0)
    link = Link(8e9, efficiency=0.5, hop_latency_s=1e-3)  # 1 GB/s nominal, half of it achieved
    assert link.collective_time("all_reduce", 1e9, 2) == pytest.approx(2.0 + 2e-3)
    assert Link(8e9, 1.0, 0.0, host_bit_s=4e9).collective_time("all_reduce", 1e9, 2) == pytest.approx(2.0)


def sweep_json(tmp_path, name, link_bit_s, rate_gbit_s, alpha_us=100.0, world=2):
    path = tmp_path / name
    path.write_text(json.dumps({"world_size": world, "link_bit_s": link_bit_s, "results": [],
                                "fits": {"all_reduce": {"alpha_us": alpha_us, "rate_gbit_s": rate_gbit_s}}}))
    return path


def test_calibration_tells_link_from_host(tmp_path):
    slow = sweep_json(tmp_path, "slow.json", 100e6, 0.094, alpha_us=200.0)  # 94% of a 100 Mbit/s link
    fast = sweep_json(tmp_path, "fast.json", 10e9, 2.5)                     # 25% of 10 Gbit/s: the host
    cal = load_calibration([slow, fast])
    assert cal["efficiency"] == pytest.approx(0.94)
    assert cal["hop_latency_s"] == pytest.approx(100e-6)  # 200 us over the 2 hops of a 2-rank ring
    assert cal["host_bit_s"] == pytest.approx(2.5e9)
    assert load_calibration(str(slow))["efficiency"] == pytest.approx(0.94)  # one path works too
    assert "efficiency" not in load_calibration(fast)  # a host-bound sweep says nothing of links
    link = Link(100e9, cal["efficiency"], 0.0, cal["host_bit_s"])
    assert link.collective_time("all_reduce", 1e9, 2) == pytest.approx(8 / 2.5)  # the host, not the link
    assert math.isinf(Link(1e9).host_bit_s)


def test_calibration_refuses_what_is_not_a_usable_sweep(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"step_ms": 3.0}))
    with pytest.raises(UsageError, match="not a sweep JSON"):
        load_calibration([other])
    with pytest.raises(UsageError, match="cannot be read"):
        load_calibration([tmp_path / "missing.json"])
    with pytest.raises(UsageError, match="world of 1"):
        load_calibration([sweep_json(tmp_path, "one.json", None, None, world=1)])
