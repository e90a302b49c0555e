"""Image data: the embedded synthetic task, or torchvision's MNIST / CIFAR-10 from a local root."""
from __future__ import annotations

import torch

from train.errors import ConfigError

SHAPE, CLASSES = (1, 28, 28), 10


def synthetic(num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable 10-class task shaped like MNIST: smooth class prototypes + noise + a shift.

    The prototypes are fixed by the seed, so train and eval splits share the classes; the
    noise and shifts make it harder than a lookup table without making it unlearnable.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(CLASSES, 1, 7, 7, generator=g)
    prototypes = torch.nn.functional.interpolate(coarse, size=SHAPE[1:], mode="bilinear", align_corners=False)
    labels = torch.randint(0, CLASSES, (num,), generator=g)
    images = prototypes[labels] + 0.35 * torch.randn(num, *SHAPE, generator=g)
    shifts = torch.randint(-2, 3, (2,), generator=g).tolist()
    images = torch.roll(images, shifts=shifts, dims=(2, 3))
    return (images - 0.5) / 0.5, labels


def _torchvision(cfg, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np
    from torchvision import datasets  # slow import: only when asked for

    cls, label = (datasets.MNIST, "MNIST") if cfg.name == "mnist" else (datasets.CIFAR10, "CIFAR-10")
    try:
        ds = cls(root=cfg.root or ".", train=train, download=cfg.download)
    except RuntimeError as e:
        if cfg.download:
            raise ConfigError(f"data.root={cfg.root!r}: {label} download failed ({str(e).splitlines()[0]})") from None
        raise ConfigError(f"data.root={cfg.root!r} has no {label} (set data.download=true to fetch it, "
                          f"or point data.root at the folder holding it)") from None
    images = torch.as_tensor(np.asarray(ds.data)).float().div_(255)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)  # -> (N, C, H, W)
    return images, torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)


def load_images(cfg, seed: int):
    """((train images, labels), (eval images, labels))."""
    if cfg.name == "synthetic":
        images, labels = synthetic(cfg.num_samples, seed)
        n_eval = max(1, int(cfg.num_samples * cfg.eval_fraction))
        return (images[n_eval:], labels[n_eval:]), (images[:n_eval], labels[:n_eval])
    (x_train, y_train), (x_eval, y_eval) = _torchvision(cfg, train=True), _torchvision(cfg, train=False)
    # Normalise both splits with the training split's per-channel statistics.
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return ((x_train - mean) / std, y_train), ((x_eval - mean) / std, y_eval)
