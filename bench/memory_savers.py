"""What each memory saver costs in speed, and what it saves in memory, measured on this CPU.

A randomly initialised 25M-parameter Llama (bench/train_speed.py's shape: 6 layers, hidden 512,
vocabulary 8000) is fully fine-tuned in bf16, micro-batch 4 × 256 tokens, through tunewiz's own model
and ``build_optimizer``; each variant runs 2 warm-up and ``--steps`` timed steps in this process:

- baseline: torch AdamW (foreach), gradient clipping;
- ``adamw8bit``: torchao's AdamW8bit (run eagerly on CPU; on CUDA it is ``torch.compile``d);
- ``optimizer_in_backward``: the step in per-parameter hooks during backward (no clipping);
- ``activation_offloading``: ``torch.autograd.graph.save_on_cpu`` — on a CPU it copies every saved
  tensor once more in RAM (the recipe does not enable it on CPU), so this times the copies only; on a
  GPU the copies cross PCIe to pinned memory.

Memory: the tensor peak of the same step on fake tensors (bench/planner_vs_trace.py's tracer) beside
the planner's prediction, for the savers the tracer can run (not the 8-bit states: a tensor subclass
the fake-tensor tracer does not count).

    python bench/memory_savers.py [--steps 6]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = ("baseline", "adamw8bit", "optimizer_in_backward", "activation_offloading")


def _model():  # noqa: ANN202
    import torch

    from tunewiz.models.config import LlamaConfig
    from tunewiz.models.llama import LlamaForCausalLM

    torch.manual_seed(0)
    arch = LlamaConfig(
        model_type="llama",
        vocab_size=8000,
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=8,
        head_dim=64,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(arch).to(torch.bfloat16), arch


def time_variant(variant: str, steps: int) -> float:
    """Seconds per optimizer step of one variant (full fine-tune, bf16, 4 × 256 tokens).

    Args:
        variant: one of ``VARIANTS``.
        steps: timed steps after 2 warm-up steps.
    """
    import torch

    from tunewiz.models.loss import chunked_cross_entropy
    from tunewiz.preset.schema import TrainSection
    from tunewiz.train.distributed import clip_grad_norm
    from tunewiz.train.optim import build_optimizer, eager_step, steps_in_backward

    model, arch = _model()
    model.train()
    params = list(model.parameters())
    cfg = {
        "baseline": TrainSection(),
        "adamw8bit": TrainSection(optimizer="adamw8bit"),
        "optimizer_in_backward": TrainSection(optimizer_in_backward=True, max_grad_norm=None),
        "activation_offloading": TrainSection(activation_offloading=True),
    }[variant]
    optimizer = build_optimizer(params, cfg)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, arch.vocab_size, (4, 256), generator=g)
    offload = variant == "activation_offloading"
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        with torch.autograd.graph.save_on_cpu() if offload else nullcontext():
            loss_sum, n = chunked_cross_entropy(model(ids, output_hidden=True), model.lm_head, ids)
        (loss_sum / n).backward()
        if not steps_in_backward(optimizer):
            clip_grad_norm(params, 1.0)
            with eager_step(optimizer):
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def traced(variant: str) -> tuple[float, float] | None:
    """(traced MiB, planned MiB) of the variant's step on the same shape, or None when not traceable.

    Args:
        variant: one of ``VARIANTS``.
    """
    from planner_vs_trace import compare

    from tunewiz.plan.memory import PlanInputs

    _, arch = _model()
    base = PlanInputs(method="full", dtype="bf16", micro_batch=4, seq_len=256)
    if variant == "baseline":
        inputs = base
    elif variant == "optimizer_in_backward":
        inputs = dataclasses.replace(base, optimizer_in_backward=True)
    else:
        return None
    c = compare(variant, arch, inputs)
    return c.traced / 2**20, c.predicted / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    args = parser.parse_args(argv)
    base = None
    print(f"{'variant':24s} {'s/step':>7s} {'vs base':>8s} {'traced MiB':>11s} {'planned MiB':>12s}")
    for variant in VARIANTS:
        seconds = time_variant(variant, args.steps)
        base = base or seconds
        mem = traced(variant)
        memory = f"{mem[0]:11.1f} {mem[1]:12.1f}" if mem else f"{'—':>11s} {'—':>12s}"
        print(f"{variant:24s} {seconds:7.3f} {seconds / base:7.2f}x {memory}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
