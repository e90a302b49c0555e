"""FSDP and HSDP across two emulated nodes: the shaped link counts how much each sends across."""
import pytest

from runner import read_summary
from test_testbed import needs_namespaces, no_leftovers, run_testbed
from tiny import tiny


def cross_node_run(tmp_path, strategy):
    run = tmp_path / strategy
    done = run_testbed(["--nodes", "2", "--nproc-per-node", "2", "--rate", "1gbit", "--run-dir", str(run), "--",
                        "-m", "train", "--recipe", "mlp", "--run-dir", str(run / "run"),
                        *tiny("mlp", "model.flavor=small", f"dist.strategy={strategy}", "train.log_every=3", steps=7)],
                       timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert no_leftovers(done)
    return read_summary(run / "run")


@needs_namespaces
def test_hsdp_sends_less_across_nodes_than_fsdp_as_the_rings_predict(tmp_path):
    fsdp, hsdp = cross_node_run(tmp_path, "fsdp"), cross_node_run(tmp_path, "hsdp")
    assert fsdp["net"]["iface"] == hsdp["net"]["iface"] == "eth0"
    assert hsdp["parallel"]["shard_size"] == 2 and hsdp["parallel"]["replicate_size"] == 2
    for s in (fsdp, hsdp):  # the NIC carried what the per-op, per-group expectation says (headers on top)
        assert 0.95 <= s["net"]["wire_ratio"] <= 1.25, s["net"]
    # Only HSDP's replicate all-reduce crosses; FSDP's gathers and scatters all do.
    ratio = fsdp["net"]["tx_bytes_per_step"] / hsdp["net"]["tx_bytes_per_step"]
    assert ratio == pytest.approx(fsdp["net"]["expected_tx_bytes_per_step"] / hsdp["net"]["expected_tx_bytes_per_step"],
                                  rel=0.15)
    assert ratio > 2
