"""AdamW and the learning-rate schedule (linear warm-up, then cosine, linear or constant)."""

from __future__ import annotations

import math

import torch

from tunewiz.preset.schema import TrainSection


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainSection) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; foreach kernels (one launch per group, not per tensor)."""
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, foreach=True)


def lr_factor(step: int, *, total_steps: int, cfg: TrainSection) -> float:
    """Multiplier of the peak LR for optimizer step `step` (0-based).

    Warm-up rises linearly to 1 over `warmup_steps`; the decay then goes from 1 to `min_lr_ratio` at
    the last step.
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    decay_steps = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, total_steps: int, cfg: TrainSection
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over `lr_factor`; its state (last step) is checkpointed for exact resume."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps=total_steps, cfg=cfg)
    )
