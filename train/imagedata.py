"""Image data: the embedded synthetic task, or torchvision's MNIST / CIFAR-10 from a local root."""
from __future__ import annotations

import torch

from train.errors import ConfigError

SHAPE, CLASSES = (1, 28, 28), 10


def synthetic(num: int, seed: int, label_noise: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """A 10-class task shaped like MNIST, labelled by a fixed random teacher network.

    Inputs are smooth random fields (a 7x7 grid upsampled) plus pixel noise. A two-layer tanh
    network with weights fixed by the seed labels them (logits standardised per class so the
    classes are balanced), then `label_noise` of the labels are replaced by a uniformly random
    class. A student has a real function to learn, which takes a few hundred steps; the noisy
    labels keep a floor under the eval loss (about 0.9 nats at 0.2), so a train loss far below
    the eval loss is memorising, not learning. Deterministic in `seed`; nothing is downloaded.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(num, 1, 7, 7, generator=g)
    images = torch.nn.functional.interpolate(coarse, size=SHAPE[1:], mode="bilinear", align_corners=False)
    images = images + 0.3 * torch.randn(num, *SHAPE, generator=g)
    pixels = SHAPE[1] * SHAPE[2]
    w1 = torch.randn(pixels, 64, generator=g) / pixels ** 0.5  # pre-activations of std ~0.8: tanh bends them
    w2 = torch.randn(64, CLASSES, generator=g)
    logits = torch.tanh(images.flatten(1) @ w1) @ w2
    logits = (logits - logits.mean(0)) / logits.std(0)
    labels = logits.argmax(1)
    noisy = torch.rand(num, generator=g) < label_noise
    labels[noisy] = torch.randint(0, CLASSES, (int(noisy.sum()),), generator=g)
    return images, labels


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
        images, labels = synthetic(cfg.num_samples, seed, cfg.label_noise)
        n_eval = max(1, int(cfg.num_samples * cfg.eval_fraction))
        return (images[n_eval:], labels[n_eval:]), (images[:n_eval], labels[:n_eval])
    (x_train, y_train), (x_eval, y_eval) = _torchvision(cfg, train=True), _torchvision(cfg, train=False)
    # Normalise both splits with the training split's per-channel statistics.
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return ((x_train - mean) / std, y_train), ((x_eval - mean) / std, y_eval)
