"""Image data: the embedded synthetic task, or torchvision's MNIST / CIFAR-10 from a local root."""
from __future__ import annotations

import torch

from train.errors import ConfigError

SHAPE, CLASSES = (1, 28, 28), 10  # the synthetic task; MNIST and CIFAR-10 also have 10 classes
SHIFT = 2  # synthetic: largest per-sample shift in pixels, so a model must generalise, not memorise pixels
NOISE = 0.35  # synthetic: per-pixel noise; prototypes span [0, 1]

# Fixed, published per-channel statistics instead of per-split ones: eval is normalised exactly like
# train (per-split statistics would shift eval inputs), and no extra pass over 600 MB of CIFAR.
MEAN_STD = {"mnist": ((0.1307,), (0.3081,)),
            "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))}
# Human name and the folder under data.root that torchvision looks for (for the error message).
FOLDERS = {"mnist": ("MNIST", "MNIST/raw"), "cifar10": ("CIFAR-10", "cifar-10-batches-py")}


def synthetic(num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(num, 1, 28, 28) float images and (num,) labels: smooth class prototypes, shifted, plus noise.

    Each class is a 7x7 random pattern upsampled to 32x32; a sample is a 28x28 window of it at
    a random offset (a shift of up to SHIFT pixels each way) plus Gaussian noise. The seed fixes
    everything, so every rank builds the same data and the eval split shares the classes.
    """
    g = torch.Generator().manual_seed(seed)
    side = SHAPE[1] + 2 * SHIFT
    coarse = torch.rand(CLASSES, 1, 7, 7, generator=g)
    prototypes = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear",
                                                 align_corners=False)[:, 0]  # (K, side, side)
    labels = torch.randint(0, CLASSES, (num,), generator=g)
    offsets = torch.randint(0, 2 * SHIFT + 1, (2, num), generator=g)
    # Only K x (2*SHIFT+1)^2 distinct windows exist: cut them once, then a sample is one row gather.
    windows = prototypes.unfold(1, SHAPE[1], 1).unfold(2, SHAPE[2], 1).contiguous()  # (K, 5, 5, 28, 28)
    images = windows[labels, offsets[0], offsets[1]].unsqueeze(1)  # (N, 1, 28, 28)
    images.add_(torch.randn(num, *SHAPE, generator=g), alpha=NOISE)
    return images.sub_(0.5).div_(0.5), labels


def _torchvision(cfg, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np
    from torchvision import datasets  # a slow import: only when a torchvision dataset is asked for

    cls = datasets.MNIST if cfg.name == "mnist" else datasets.CIFAR10
    label, folder = FOLDERS[cfg.name]
    try:
        ds = cls(root=cfg.root or ".", train=train, download=cfg.download)
    except (RuntimeError, OSError) as e:  # not found / corrupt; OSError: a failed download
        if cfg.download:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ConfigError(f"data.root={cfg.root!r}: {label} download failed ({first})") from None
        raise ConfigError(f"data.root={cfg.root!r} has no {label} (set data.download=true to fetch it, "
                          f"or point data.root at a folder holding {folder})") from None
    images = torch.as_tensor(np.asarray(ds.data))  # uint8: MNIST (N, H, W), CIFAR (N, H, W, C)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2).contiguous()
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in MEAN_STD[cfg.name])
    images = images.float().div_(255).sub_(mean).div_(std)  # in place: CIFAR is 600 MB as float
    return images, torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)


def load_images(cfg, seed: int):
    """((train images, labels), (eval images, labels)); eval is held out of the synthetic set, or the test split."""
    if cfg.name == "synthetic":
        images, labels = synthetic(cfg.num_samples, seed)
        n_eval = max(1, int(cfg.num_samples * cfg.eval_fraction))
        return (images[n_eval:], labels[n_eval:]), (images[:n_eval], labels[:n_eval])
    return _torchvision(cfg, train=True), _torchvision(cfg, train=False)
