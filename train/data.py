"""Data: in-memory datasets and the rank-sharded, resumable batch plan.

Every dataset is held as tensors in memory (the largest, CIFAR-10, is 600 MB as float32),
so a batch is an index gather: no loader workers, and the data time the instrumentation
reports is the real cost of producing a batch.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from train.errors import ConfigError, check_choice, check_range
from train.imagedata import CLASSES, load_images
from train.textdata import load_text

IMAGE_DATA = ("synthetic", "mnist", "cifar10")
TEXT_DATA = ("text",)
DATA_OF_TASK = {"image": IMAGE_DATA, "text": TEXT_DATA}


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
    seq_len: int = 64
    """text: tokens per sample."""
    max_bytes: int = 4_000_000
    """text: cap on the bytes read from the corpus."""
    eval_fraction: float = 0.05
    """Share of the items held out for eval (synthetic and text; mnist/cifar10 use their test split)."""

    def __post_init__(self):
        check_choice("data.name", self.name, IMAGE_DATA + TEXT_DATA)
        check_range("data.num_samples", self.num_samples, 16)
        check_range("data.seq_len", self.seq_len, 1)
        check_range("data.max_bytes", self.max_bytes, 1024)
        check_range("data.eval_fraction", self.eval_fraction, 0, 0.5, lo_open=True)


class ItemSource:
    """Items held as tensors; `get` gathers a batch by index.

    Image: ItemSource(images (N,C,H,W) float, labels (N,) long) -> get gives (B,C,H,W), (B,).
    Text: ItemSource(chunks (N,T+1) uint8) -> get gives inputs (B,T) and targets (B,T), the
    same bytes shifted by one, both long.
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor | None = None):
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def get(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.targets is not None:
            return self.inputs[indices], self.targets[indices]
        chunk = self.inputs[indices].long()  # (B, T+1)
        return chunk[:, :-1], chunk[:, 1:]


@dataclass
class Datasets:
    train: ItemSource
    eval: ItemSource
    spec: dict
    """image: {"input_shape": (C,H,W), "num_classes": K}; text: {"vocab_size": 256, "seq_len": T}."""


def build_datasets(cfg: DataConfig, task: str, seed: int) -> Datasets:
    """The train and eval items for a model whose task is "image" or "text"."""
    if task not in DATA_OF_TASK:
        raise ValueError(f"unknown model task {task!r} (expected image or text)")
    allowed = DATA_OF_TASK[task]
    if cfg.name not in allowed:
        raise ConfigError(f"data.name={cfg.name!r} does not fit the model's task {task!r} "
                          f"(choose from {', '.join(allowed)})")
    if task == "text":
        return _text_datasets(cfg)
    (x_train, y_train), (x_eval, y_eval) = load_images(cfg, seed)
    spec = {"input_shape": tuple(x_train.shape[1:]), "num_classes": CLASSES}
    return Datasets(ItemSource(x_train, y_train), ItemSource(x_eval, y_eval), spec)


def _text_datasets(cfg: DataConfig) -> Datasets:
    data = load_text(cfg.root, cfg.max_bytes)
    # Non-overlapping chunks of T+1 bytes: each item is self-contained (T inputs, T targets), and
    # train and eval share no byte. The ragged tail (< T+1 bytes) is dropped.
    n_chunks = len(data) // (cfg.seq_len + 1)
    n_eval = max(1, int(n_chunks * cfg.eval_fraction))
    if n_chunks - n_eval < 1:
        raise ConfigError(f"data.root={cfg.root or '<stdlib>'!r} holds {len(data)} bytes: too few for "
                          f"data.seq_len={cfg.seq_len} (need at least {2 * (cfg.seq_len + 1)})")
    chunks = data[:n_chunks * (cfg.seq_len + 1)].view(n_chunks, cfg.seq_len + 1)
    spec = {"vocab_size": 256, "seq_len": cfg.seq_len}
    return Datasets(ItemSource(chunks[:-n_eval]), ItemSource(chunks[-n_eval:]), spec)


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit hash of (seed, epoch): no two (seed, epoch) pairs share an order by arithmetic accident."""
    digest = hashlib.blake2b(f"{seed},{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class ShardedBatches:
    """Which items rank r uses at optimizer step s, micro-step m.

    A pure function of (seed, step): any step can be reproduced (exact resume) without
    replaying a loader. A step's global batch is cut as [accum, world, micro_batch], so the
    union over ranks and micro-steps is the batch a single process would take.
    """

    def __init__(self, num_items: int, global_batch: int, rank: int, world: int, accum: int, seed: int,
                 *, num_eval_items: int = 0):
        if not (world >= 1 and accum >= 1 and 0 <= rank < world):
            raise ValueError(f"bad shard: rank {rank} of world {world}, accum {accum}")
        if global_batch < 1 or global_batch % (world * accum):
            raise ConfigError(f"train.batch_size={global_batch} must divide by world size x train.grad_accum "
                              f"= {world} x {accum}")
        if global_batch > num_items:
            raise ConfigError(f"train.batch_size={global_batch} is larger than the dataset ({num_items} items)")
        self.num_items, self.global_batch, self.rank, self.world, self.accum = num_items, global_batch, rank, world, accum
        self.seed, self.num_eval_items = seed, num_eval_items
        self.micro_batch = global_batch // (world * accum)
        self.steps_per_epoch = num_items // global_batch  # drop the ragged tail
        self._epoch, self._perm = None, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:  # one epoch cached: consecutive steps reuse it
            g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.num_items, generator=g)
        return self._perm

    def indices(self, step: int, micro: int = 0) -> torch.Tensor:
        """(micro_batch,) item indices of this rank at optimizer step `step`, micro-step `micro`."""
        if not 0 <= micro < self.accum:
            raise IndexError(f"micro-step {micro} outside 0..{self.accum - 1}")
        epoch, pos = divmod(step, self.steps_per_epoch)
        batch = self._permutation(epoch)[pos * self.global_batch:(pos + 1) * self.global_batch]
        return batch.view(self.accum, self.world, self.micro_batch)[micro, self.rank]

    def eval_indices(self, k: int, num_eval_items: int | None = None) -> torch.Tensor:
        """(micro_batch,) indices of this rank's k-th fixed eval batch, wrapping around the eval set.

        The eval set's size comes from the argument or, failing that, the constructor's num_eval_items.
        Ranks take consecutive blocks, so at one k they see disjoint items when the eval set is large enough.
        """
        n = num_eval_items or self.num_eval_items
        if n < 1:
            raise ValueError("eval_indices needs the eval set's size (num_eval_items)")
        start = (k * self.world + self.rank) * self.micro_batch
        return torch.arange(start, start + self.micro_batch) % n
