"""Data: in-memory datasets and the rank-sharded, resumable batch plan.

Every dataset is held as tensors in memory (the largest, CIFAR-10, is 600 MB as float32),
so a batch is an index gather: no loader workers, and the data time the instrumentation
reports is the real cost of producing a batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from train.errors import ConfigError, check_choice, check_range
from train.textdata import load_text
from train.imagedata import load_images

IMAGE_DATA = ("synthetic", "mnist", "cifar10")
TEXT_DATA = ("text",)


@dataclass(kw_only=True)
class DataConfig:
    name: str = "synthetic"
    """synthetic | mnist | cifar10 | text."""
    root: str = ""
    """mnist/cifar10: the dataset folder; text: a file or a folder ("" = the Python standard library's sources)."""
    download: bool = False
    """mnist/cifar10: let torchvision download into root."""
    num_samples: int = 8192
    """synthetic: images generated."""
    label_noise: float = 0.2
    """synthetic: share of labels replaced by a random class (a floor under the eval loss)."""
    seq_len: int = 64
    """text: tokens per sample."""
    max_bytes: int = 4_000_000
    """text: cap on the bytes read from the corpus."""
    eval_fraction: float = 0.05
    """Share of the items held out for eval (synthetic and text; mnist/cifar10 use their test split)."""

    def __post_init__(self):
        check_choice("data.name", self.name, IMAGE_DATA + TEXT_DATA)
        check_range("data.num_samples", self.num_samples, 16)
        check_range("data.label_noise", self.label_noise, 0, 1)
        check_range("data.seq_len", self.seq_len, 1)
        check_range("data.max_bytes", self.max_bytes, 1024)
        check_range("data.eval_fraction", self.eval_fraction, 0, 0.5, lo_open=True)


class ItemSource:
    """Items as tensors; `get` gathers a batch: image (B,C,H,W)/(B,), text (B,T)/(B,T) shifted by one."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor | None = None, seq_len: int = 0):
        self.inputs, self.targets, self.seq_len = inputs, targets, seq_len

    def __len__(self) -> int:
        if self.targets is not None:
            return len(self.inputs)
        return (len(self.inputs) - 1) // self.seq_len  # non-overlapping chunks of seq_len + 1 bytes

    def get(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.targets is not None:
            return self.inputs[indices], self.targets[indices]
        offsets = indices[:, None] * self.seq_len + torch.arange(self.seq_len + 1)  # (B, T+1)
        chunk = self.inputs[offsets].long()
        return chunk[:, :-1], chunk[:, 1:]


@dataclass
class Datasets:
    train: ItemSource
    eval: ItemSource
    spec: dict


def build_datasets(cfg: DataConfig, task: str, seed: int) -> Datasets:
    allowed = TEXT_DATA if task == "text" else IMAGE_DATA
    if cfg.name not in allowed:
        raise ConfigError(f"data.name={cfg.name!r} does not fit the model's task {task!r} "
                          f"(choose from {', '.join(allowed)})")
    if task == "text":
        data = load_text(cfg.root, cfg.max_bytes)
        n_chunks = (len(data) - 1) // cfg.seq_len
        n_eval = max(1, int(n_chunks * cfg.eval_fraction))
        if n_chunks - n_eval < 2:
            raise ConfigError(f"data.root={cfg.root or '<stdlib>'!r} holds {len(data)} bytes: too few for "
                              f"data.seq_len={cfg.seq_len}")
        split = (n_chunks - n_eval) * cfg.seq_len
        spec = {"vocab_size": 256, "seq_len": cfg.seq_len}
        return Datasets(ItemSource(data[:split + 1], seq_len=cfg.seq_len),
                        ItemSource(data[split:], seq_len=cfg.seq_len), spec)
    (x_train, y_train), (x_eval, y_eval) = load_images(cfg, seed)
    spec = {"input_shape": tuple(x_train.shape[1:]), "num_classes": int(y_train.max()) + 1}
    return Datasets(ItemSource(x_train, y_train), ItemSource(x_eval, y_eval), spec)


class ShardedBatches:
    """Which items rank r uses at optimizer step s, micro-step m.

    A pure function of (seed, step): any step can be reproduced (exact resume) without
    replaying a loader. A step's global batch is cut as [accum, world, micro_batch], so the
    union over ranks and micro-steps is the batch a single process would take.
    """

    def __init__(self, num_items: int, global_batch: int, rank: int, world: int, accum: int, seed: int):
        if global_batch % (world * accum):
            raise ConfigError(f"train.batch_size={global_batch} must divide by world size x train.grad_accum "
                              f"= {world} x {accum}")
        if global_batch > num_items:
            raise ConfigError(f"train.batch_size={global_batch} is larger than the dataset ({num_items} items)")
        self.num_items, self.global_batch, self.rank, self.world, self.accum = num_items, global_batch, rank, world, accum
        self.seed = seed
        self.micro_batch = global_batch // (world * accum)
        self.steps_per_epoch = num_items // global_batch  # drop the ragged tail
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.num_items, generator=g)
        return self._perm

    def indices(self, step: int, micro: int = 0) -> torch.Tensor:
        epoch, pos = divmod(step, self.steps_per_epoch)
        batch = self._permutation(epoch)[pos * self.global_batch:(pos + 1) * self.global_batch]
        return batch.view(self.accum, self.world, self.micro_batch)[micro, self.rank]

    def eval_indices(self, k: int, num_eval_items: int) -> torch.Tensor:
        """The k-th fixed eval batch of this rank (wrapping around a small eval set)."""
        start = (k * self.world + self.rank) * self.micro_batch
        return torch.arange(start, start + self.micro_batch) % num_eval_items
