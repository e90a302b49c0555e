"""MFU and memory logic (CPU-testable); the GPU figures themselves live in docs/BENCHMARKS.md."""
import pytest
import torch

from tests_support import make_trainer
from train.perf import PEAK_BF16_TFLOPS, memory_figures, mfu_pct, peak_tflops


def test_mfu_by_hand():
    # 124M-param model ~ 6 x 124e6 FLOPs per token; 500k tokens/s on 1 GPU of 989 TFLOP/s -> 37.6 %
    assert mfu_pct(6 * 124e6, 500_000, 1, 989.0) == pytest.approx(100 * 6 * 124e6 * 500_000 / 989e12)
    assert mfu_pct(1e9, 2000, 2, 1.0) == pytest.approx(100.0)  # the world's peak doubles with 2 ranks
    assert mfu_pct(1e9, 2000, 1, None) is None


def test_peak_lookup_and_override():
    assert peak_tflops(torch.device("cpu")) is None
    assert peak_tflops(torch.device("cpu"), override=2.5) == 2.5
    names = [k for k, _ in PEAK_BF16_TFLOPS]
    assert names.index("H100 PCIe") < names.index("H100")  # the PCIe part must match before the SXM one
    assert memory_figures(torch.device("cpu")) == {}


def test_trainer_reports_mfu_with_a_known_peak():
    trainer = make_trainer("mlp", ["model.flavor=debug", "data.num_samples=256", "train.batch_size=32",
                                   "train.steps=3", "train.peak_tflops=0.001"])
    summary = trainer.run()
    trainer.close()
    expected = 100 * trainer.model.flops_per_item() * summary["throughput"]["samples_per_s"] / 1e9
    assert summary["mfu_pct"] == pytest.approx(expected)
    assert summary["device_name"] == "cpu"
    # On CPU memory holds only what this rank's tensors take (world 1: the whole model; Adam's two
    # moments per parameter and a float32 step count per tensor).
    params, tensors = trainer.model.num_params() * 4, len(list(trainer.model.parameters()))
    assert summary["memory"] == {"param_bytes": params, "grad_bytes": params, "optim_bytes": 2 * params + 4 * tensors}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: CPU CI covers the logic above")
def test_cuda_memory_figures_on_gpu():
    x = torch.ones(1024, 1024, device="cuda")
    figures = memory_figures(torch.device("cuda"))
    assert figures["memory/peak_allocated_gib"] >= x.numel() * 4 / 1024 ** 3
