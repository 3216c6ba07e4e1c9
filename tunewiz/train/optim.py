"""The optimizer (AdamW, or torchao's 8-bit AdamW; optionally stepped inside backward) and the
learning-rate schedule (linear warm-up, then cosine, linear or constant).

Memory (``tunewiz/plan/memory.py`` models each): torch AdamW keeps two states per trained parameter in
its dtype; its foreach step (used on CPU: exact and reproducible) allocates sqrt(exp_avg_sq) for all
parameters at once, its fused step (used on CUDA) allocates nothing extra. ``adamw8bit`` keeps both
states in 8 bits with one fp32 scale per 256 values. With ``optimizer_in_backward`` each parameter is
stepped by a post-accumulate-grad hook as soon as its gradient is complete, and the gradient is freed
at once: there is no moment where every gradient exists.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch

from tunewiz.errors import TunewizError
from tunewiz.preset.schema import TrainSection


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainSection) -> torch.optim.Optimizer:
    """The preset's optimizer over the trainable parameters, hooked into backward when asked.

    Args:
        params: the trainable parameters (all on one device type).
        cfg: ``train``: ``optimizer``, ``lr``, ``betas``, ``weight_decay``, ``optimizer_in_backward``.

    Raises:
        TunewizError: ``adamw8bit`` without torchao installed.
    """
    cuda = bool(params) and params[0].device.type == "cuda"
    kwargs = {"lr": cfg.lr, "betas": cfg.betas, "weight_decay": cfg.weight_decay}
    if cfg.optimizer == "adamw8bit":
        try:
            from torchao.optim import AdamW8bit
        except ImportError as exc:
            raise TunewizError(
                "train.optimizer `adamw8bit` needs torchao, which is not installed",
                hint="`pip install 'tunewiz[qlora]'`, or `--set train.optimizer=adamw`",
            ) from exc
        optimizer: torch.optim.Optimizer = AdamW8bit(params, **kwargs)
    else:
        # fused on CUDA: one kernel and no temporary; foreach on CPU (the golden losses are foreach's).
        impl = {"fused": True} if cuda else {"foreach": True}
        optimizer = torch.optim.AdamW(params, **kwargs, **impl)
    if cfg.optimizer_in_backward:
        _step_in_backward(optimizer, params)
    return optimizer


def _step_in_backward(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> None:
    """Step each parameter as soon as its gradient is accumulated, then free that gradient.

    One optimizer over every parameter: when a hook runs, the gradient it just completed is the only
    one that exists (the others are freed or not produced yet), so ``optimizer.step()`` updates exactly
    that parameter; states, the LR scheduler and checkpoints stay those of one ordinary optimizer.
    """

    def hook(param: torch.Tensor) -> None:
        with eager_step(optimizer):
            optimizer.step()
        param.grad = None

    for p in params:
        p.register_post_accumulate_grad_hook(hook)
    optimizer.in_backward = True  # type: ignore[attr-defined]


def steps_in_backward(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer already stepped inside backward (the loop then does not step it)."""
    return bool(getattr(optimizer, "in_backward", False))


def eager_step(optimizer: torch.optim.Optimizer) -> AbstractContextManager[None]:
    """A context for ``optimizer.step()``: torchao's 8-bit step is ``torch.compile``d, which costs
    ~30-100 s of compilation on CPU; there it runs eagerly (same result), on CUDA compiled.

    Args:
        optimizer: the optimizer about to step.
    """
    params = [p for g in optimizer.param_groups for p in g["params"]]
    compiled = type(optimizer).__module__.startswith("torchao")
    if compiled and params and params[0].device.type == "cpu":
        return _force_eager()
    return nullcontext()


@contextmanager
def _force_eager() -> Iterator[None]:
    with torch.compiler.set_stance("force_eager"):
        yield


def lr_factor(step: int, *, total_steps: int, cfg: TrainSection) -> float:
    """Multiplier of the peak LR for optimizer step `step` (0-based).

    Warm-up rises linearly to 1 over `warmup_steps`; the decay then goes from 1 towards `min_lr_ratio`,
    which it reaches at step `total_steps` (one past the last, so the last step's factor is just above).
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    decay_steps = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape


def warmup_warning(total_steps: int, cfg: TrainSection) -> str | None:
    """A warning when the warm-up does not end before the run does (``train.warmup_steps`` ≥ the run's
    steps): the learning rate then never reaches ``train.lr``. None when it does.

    Args:
        total_steps: optimizer steps of the run.
        cfg: the preset's train section.
    """
    if not cfg.warmup_steps or cfg.warmup_steps < total_steps:
        return None
    peak = cfg.lr * lr_factor(total_steps - 1, total_steps=total_steps, cfg=cfg)
    return (
        f"train.warmup_steps {cfg.warmup_steps} is not shorter than the run's {total_steps} steps: the "
        f"learning rate peaks at {peak:.3g} and never reaches train.lr {cfg.lr:g} (`--set "
        f"train.warmup_steps={max(0, total_steps // 10)}` warms up over a tenth of the run)"
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, total_steps: int, cfg: TrainSection
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over `lr_factor`; its state (last step) is checkpointed for exact resume."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps=total_steps, cfg=cfg)
    )
