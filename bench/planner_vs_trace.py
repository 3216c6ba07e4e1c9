"""Check the planner against the memory tunewiz's real training step allocates.

For each configuration the step (forward with the chunked loss, backward, grad clipping, AdamW step,
zero_grad; twice, so the second step runs with AdamW's states allocated) runs on fake tensors
(``FakeTensorMode``: shapes and dtypes, no data, no real memory) under
``torch.distributed._tools.mem_tracker.MemTracker``, which records the peak of live tensor bytes.
The planner's prediction of the same quantity is its breakdown without the fixed runtime overhead
(CUDA context / process RSS and allocator slack), which no tensor trace can see.

Single device only: FSDP2's sharding is modelled analytically (1/N of each persistent tensor plus
the gathered blocks).

    python bench/planner_vs_trace.py            # the full table
    python bench/planner_vs_trace.py --quick    # three small configurations
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass

from tunewiz.catalog import lookup
from tunewiz.models.config import LlamaConfig
from tunewiz.planner.memory import PlanInputs, estimate


@dataclass(frozen=True)
class Comparison:
    """One configuration: the traced peak and the planner's tensor peak, in bytes."""

    label: str
    traced: int
    predicted: int

    @property
    def error(self) -> float:
        return self.predicted / self.traced - 1


def traced_peak(arch: LlamaConfig, inputs: PlanInputs) -> int:
    """Peak live tensor bytes of two real training steps of tunewiz's model, on fake tensors.

    Args:
        arch: the architecture (any size: nothing is really allocated).
        inputs: method (``lora`` or ``full``), dtype, batch shape, LoRA settings, checkpointing.
    """
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from tunewiz.config import TrainSection
    from tunewiz.distributed import apply_activation_checkpointing, clip_grad_norm
    from tunewiz.lora import apply_lora
    from tunewiz.models.llama import LlamaForCausalLM
    from tunewiz.optim import build_optimizer

    if inputs.method == "qlora":
        raise ValueError("QLoRA is not traced: torchao's NF4 tensor does not run under FakeTensorMode here")
    dtype = torch.bfloat16 if inputs.dtype == "bf16" else torch.float32
    # Full fine-tunes keep fp32 master weights; LoRA's frozen base is stored in the compute dtype.
    # (The default dtype, not `.to()`: fake parameters cannot be swapped in place.)
    stored = torch.float32 if inputs.method == "full" else dtype
    previous = torch.get_default_dtype()
    with FakeTensorMode(allow_non_fake_inputs=True):
        torch.set_default_dtype(stored)
        try:
            model = LlamaForCausalLM(arch)
        finally:
            torch.set_default_dtype(previous)
        if inputs.method != "full":
            apply_lora(model, targets=list(inputs.lora_targets), rank=inputs.lora_rank, alpha=16.0, dropout=0.0, seed=0)
        if inputs.activation_checkpointing:
            apply_activation_checkpointing(model)
        trained = [p for p in model.parameters() if p.requires_grad]
        optimizer = build_optimizer(trained, TrainSection())
        shape = (inputs.micro_batch, inputs.seq_len)
        ids = torch.randint(0, arch.vocab_size, shape)
        labels = torch.randint(0, arch.vocab_size, shape)
        tracker = _StorageTracker(list(model.parameters()) + [ids, labels])
        with tracker:
            for _ in range(2):
                with torch.autocast("cpu", dtype=dtype, enabled=inputs.method == "full" and dtype != torch.float32):
                    loss_sum, count = model(ids, labels=labels)
                (loss_sum / count).backward()
                clip_grad_norm(trained, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    return tracker.peak


def _StorageTracker(initial: list) -> object:
    """A dispatch mode counting the bytes of live tensor storages, and their peak.

    MemTracker (torch.distributed._tools.mem_tracker) does the same with per-module attribution, but
    it registers a grad hook on every parameter and so refuses LoRA's frozen base weights. Storages
    are keyed weakly: a storage is counted from the op that creates it until it is garbage.
    """
    import weakref

    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves
    from torch.utils.weak import WeakIdKeyDictionary

    import torch

    class Tracker(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.live: WeakIdKeyDictionary = WeakIdKeyDictionary()
            self.current = 0
            self.peak = 0
            for t in initial:
                self._add(t)

        def _add(self, t: object) -> None:
            if not isinstance(t, torch.Tensor):
                return
            st = t.untyped_storage()
            if st in self.live:
                return
            size = st.nbytes()
            self.live[st] = size
            self.current += size
            weakref.finalize(st, self._free, size)

        def _free(self, size: int) -> None:
            self.current -= size

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            out = func(*args, **(kwargs or {}))
            for t in tree_leaves(out):
                self._add(t)
            # Optimizer states and grads are created by ops too; a tensor's grad slot is set outside
            # dispatch but its storage came from an op, so it is already counted.
            self.peak = max(self.peak, self.current)
            return out

    return Tracker()


def predicted_tensor_peak(arch: LlamaConfig, inputs: PlanInputs) -> int:
    """The planner's peak without the fixed overheads a tensor trace cannot see.

    Args:
        arch: the architecture.
        inputs: the configuration.
    """
    b = estimate(arch, inputs).breakdown
    return b.weights + b.trainable_state + b.activations + b.logits_loss + b.fsdp_buffers


def compare(label: str, arch: LlamaConfig, inputs: PlanInputs) -> Comparison:
    """Trace one configuration and predict it.

    Args:
        label: name shown in the table.
        arch: the architecture.
        inputs: the configuration (``device`` is set to ``cpu`` for the trace).
    """
    inputs = dataclasses.replace(inputs, device="cpu", num_devices=1)
    return Comparison(label, traced_peak(arch, inputs), predicted_tensor_peak(arch, inputs))


def _configs(quick: bool) -> list[tuple[str, LlamaConfig, PlanInputs]]:
    smol = lookup("smollm2-135m").arch
    out = [
        ("smollm2-135m lora qv r8 bf16 b2x512", smol, PlanInputs(micro_batch=2, seq_len=512)),
        ("smollm2-135m lora qv r8 fp32 b2x512", smol, PlanInputs(dtype="fp32", micro_batch=2, seq_len=512)),
        ("smollm2-135m full fp32 b1x512", smol, PlanInputs(method="full", dtype="fp32", micro_batch=1, seq_len=512)),
    ]
    if quick:
        return out
    l1 = lookup("llama-3.2-1b").arch
    l8 = lookup("llama-3.1-8b").arch
    qwen = lookup("qwen2.5-0.5b").arch
    all_linear = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    out += [
        ("smollm2-135m lora all r16 bf16 b4x1024", smol, PlanInputs(micro_batch=4, seq_len=1024, lora_rank=16, lora_targets=all_linear)),
        ("smollm2-135m lora qv bf16 AC b4x1024", smol, PlanInputs(micro_batch=4, seq_len=1024, activation_checkpointing=True)),
        ("qwen2.5-0.5b lora qv bf16 b2x2048", qwen, PlanInputs(micro_batch=2, seq_len=2048)),
        ("qwen2.5-0.5b full fp32 AC b2x1024", qwen, PlanInputs(method="full", dtype="fp32", micro_batch=2, seq_len=1024, activation_checkpointing=True)),
        ("llama-3.2-1b lora qv bf16 b2x2048", l1, PlanInputs(micro_batch=2, seq_len=2048)),
        ("llama-3.2-1b lora all fp32 b1x1024", l1, PlanInputs(dtype="fp32", micro_batch=1, seq_len=1024, lora_targets=all_linear)),
        ("llama-3.2-1b full fp32 b1x2048", l1, PlanInputs(method="full", dtype="fp32", micro_batch=1, seq_len=2048)),
        ("llama-3.1-8b lora qv bf16 AC b2x2048", l8, PlanInputs(micro_batch=2, seq_len=2048, activation_checkpointing=True)),
        ("llama-3.1-8b lora qv bf16 b1x4096", l8, PlanInputs(micro_batch=1, seq_len=4096)),
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only three small configurations")
    args = parser.parse_args(argv)
    worst = 0.0
    print(f"{'configuration':42s} {'traced MiB':>11s} {'planner MiB':>12s} {'error':>7s}")
    for label, arch, inputs in _configs(args.quick):
        c = compare(label, arch, inputs)
        worst = max(worst, abs(c.error))
        print(f"{c.label:42s} {c.traced / 2**20:11.1f} {c.predicted / 2**20:12.1f} {c.error:+7.1%}", flush=True)
    print(f"worst error: {worst:.1%}")
    return 0 if worst <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
