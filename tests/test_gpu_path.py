"""The GPU path's logic, tested on CPU; the CUDA-only checks skip cleanly without a GPU."""
import pytest
import torch

from tests_support import make_trainer
from train import distributed
from train.comm.measure.clock import HostClock, clock_for
from train.errors import ConfigError


def test_backend_follows_the_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert distributed.pick_backend("auto") == "nccl"
    assert distributed.pick_backend("gloo") == "gloo"  # asked for explicitly: CPU tensors, not CUDA ones
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.pick_backend("auto") == "gloo"
    with pytest.raises(ConfigError, match="needs CUDA"):
        distributed.pick_backend("nccl")


def test_cpu_timing_uses_the_host_clock():
    assert isinstance(clock_for(torch.device("cpu")), HostClock)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_learn_on_cpu(precision):
    trainer = make_trainer("mlp", ["model.flavor=debug", "data.num_samples=512", "train.batch_size=64",
                                   "train.steps=20", f"train.precision={precision}", "optim.lr=3e-3"])
    losses = [trainer.run_step(step)[0].item() for step in range(20)]
    trainer.close()
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) < sum(losses[:5])
    assert next(trainer.model.parameters()).dtype == torch.float32  # autocast: fp32 master weights


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (NCCL, CUDA events)")
def test_cuda_events_time_a_gpu_interval():
    clock = clock_for(torch.device("cuda"))
    a = clock.mark()
    torch.cuda._sleep(10_000_000)
    b = clock.mark()
    torch.cuda.synchronize()
    assert clock.ms_between(a, b) > 0
