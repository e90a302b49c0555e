"""Optimizers and the learning-rate schedule (linear warmup, then cosine or constant)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from train.errors import check_choice, check_range

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")


@dataclass(kw_only=True)
class OptimConfig:
    name: str = "adamw"
    """adam | adamw | rmsprop | sgd (with momentum)."""
    lr: float = 1e-3
    """Peak learning rate, reached after warmup."""
    weight_decay: float = 0.0
    """L2 (adam, rmsprop, sgd) or decoupled (adamw) weight decay."""
    momentum: float = 0.9
    """sgd and rmsprop momentum."""
    beta1: float = 0.9
    """adam/adamw first-moment decay."""
    beta2: float = 0.999
    """adam/adamw second-moment decay."""
    eps: float = 1e-8
    """Denominator guard for adaptive optimizers."""
    warmup_steps: int = 0
    """Linear warmup from lr/warmup_steps to lr."""
    decay: str = "cosine"
    """cosine (to min_lr_ratio x lr at the last step) | constant."""
    min_lr_ratio: float = 0.1
    """Floor of the cosine decay as a fraction of lr."""
    grad_clip: float = 1.0
    """Max global gradient norm; 0 disables clipping (the norm is still measured and guarded)."""

    def __post_init__(self):
        check_choice("optim.name", self.name, OPTIMIZERS)
        check_range("optim.lr", self.lr, 0, lo_open=True)
        check_range("optim.weight_decay", self.weight_decay, 0)
        check_range("optim.momentum", self.momentum, 0, 1)
        # torch refuses a beta of 1 only when the optimizer is built, after start-up: refuse it here.
        check_range("optim.beta1", self.beta1, 0, 1, hi_open=True)
        check_range("optim.beta2", self.beta2, 0, 1, hi_open=True)
        check_range("optim.eps", self.eps, 0, lo_open=True)
        check_range("optim.warmup_steps", self.warmup_steps, 0)
        check_choice("optim.decay", self.decay, ("cosine", "constant"))
        check_range("optim.min_lr_ratio", self.min_lr_ratio, 0, 1)
        check_range("optim.grad_clip", self.grad_clip, 0)


def build_optimizer(cfg: OptimConfig, params, fused: bool = False) -> torch.optim.Optimizer:
    """`fused` asks for the single-kernel CUDA implementation where the optimizer has one."""
    extra = {"fused": True} if fused and cfg.name in ("adam", "adamw") else {}
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                                weight_decay=cfg.weight_decay, **extra)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                                 weight_decay=cfg.weight_decay, **extra)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, eps=cfg.eps, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """Multiplier of cfg.lr at 0-based optimizer step `step`."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.decay == "constant":
        return 1.0
    span = max(1, total_steps - cfg.warmup_steps - 1)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine


def build_scheduler(cfg: OptimConfig, optimizer, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s, total_steps))
