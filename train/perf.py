"""Compute efficiency: MFU against the device's peak, and CUDA memory figures.

MFU = model FLOPs per item x items per second / peak FLOP/s (dense bf16 peaks, as vendors
publish them). A device not in the table gets no MFU unless train.peak_tflops names its peak.
"""
from __future__ import annotations

import torch

# Dense bf16 peak TFLOP/s by a substring of torch.cuda.get_device_name(); first match wins.
PEAK_BF16_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10G", 125.0),
    ("L4", 121.0),
    ("V100", 125.0),
)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def peak_tflops(device: torch.device, override: float = 0.0) -> float | None:
    if override > 0:
        return override
    name = device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def mfu_pct(flops_per_item: float, items_per_s: float, world_size: int, peak: float | None) -> float | None:
    """Percent of the world's peak: items_per_s counts all ranks, so the peak does too."""
    if not peak or items_per_s <= 0:
        return None
    return 100.0 * flops_per_item * items_per_s / (peak * 1e12 * world_size)


def memory_figures(device: torch.device) -> dict:
    if device.type != "cuda":
        return {}
    gib = 1024 ** 3
    return {"memory/peak_allocated_gib": torch.cuda.max_memory_allocated(device) / gib,
            "memory/reserved_gib": torch.cuda.memory_reserved(device) / gib}
