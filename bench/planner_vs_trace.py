"""Check the planner against the memory tunewiz's real training step allocates.

For each configuration the model is set up exactly as the recipe does it (``FineTune._build_model``):
``load_model(model_dir, dtype=...)`` (``load_nf4_model``'s NF4 converter for QLoRA), ``apply_lora``, the
adapters cast to the model dtype, activation checkpointing. The checkpoint it loads is a sparse
``model.safetensors`` of the architecture's shapes (a header and holes: no disk, no download), and a
``convert`` hook turns each weight into a fake tensor as it is read. The step (forward with the chunked
loss and backward, ``grad_accum`` times; grad clipping, AdamW step, zero_grad; twice, so the second step
runs with AdamW's states allocated) then runs on fake tensors (``FakeTensorMode``: shapes and dtypes,
no data, no real memory) under a dispatch mode that records the peak of live tensor storage bytes.
The planner's prediction of the same quantity is its breakdown without the fixed runtime overhead
(CUDA context / process RSS and allocator slack), which no tensor trace can see.

Single device only: FSDP2's sharding is modelled analytically (1/N of each persistent tensor plus
the gathered blocks). ``--published`` also prints the planner's full CUDA prediction next to the
peaks torchtune publishes for the same configurations.

    python bench/planner_vs_trace.py            # the full table
    python bench/planner_vs_trace.py --quick    # three small configurations
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tunewiz.models.catalog import lookup
from tunewiz.models.config import LlamaConfig
from tunewiz.plan.memory import PlanInputs, estimate
from tunewiz.units import GiB

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Comparison:
    """One configuration: the traced peak and the planner's tensor peak, in bytes."""

    label: str
    traced: int
    predicted: int

    @property
    def error(self) -> float:
        return self.predicted / self.traced - 1


def write_sparse_checkpoint(arch: LlamaConfig, out: Path, dtype: str) -> Path:
    """A model directory whose ``model.safetensors`` has every weight's header entry and no data.

    The data region is a hole (``truncate``), so a 16 GB checkpoint takes no disk and reads as zeros.

    Args:
        arch: the architecture (written as ``config.json``).
        out: the directory to create.
        dtype: ``bf16`` or ``fp32``: the stored dtype (the model dtype, so loading casts nothing).
    """
    import torch

    from tunewiz.models.llama import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(arch)
    size, tag = (2, "BF16") if dtype == "bf16" else (4, "F32")
    header, offset = {}, 0
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight" and arch.tie_word_embeddings:
            continue  # checkpoints of tied models omit it
        nbytes = tensor.numel() * size
        header[key] = {"dtype": tag, "shape": list(tensor.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    (out / "config.json").write_text(json.dumps(arch.to_hf()))
    return out


def build_traced_model(model_dir: Path, inputs: PlanInputs, fake_mode):  # noqa: ANN001, ANN201
    """The recipe's model setup (``FineTune._build_model``, one rank) with fake weights.

    Args:
        model_dir: from :func:`write_sparse_checkpoint`.
        inputs: method, dtype, LoRA settings, checkpointing.
        fake_mode: the ``FakeTensorMode`` the weights are created in.
    """
    import torch

    from tunewiz.lora.layer import apply_lora
    from tunewiz.models.loading import load_model
    from tunewiz.models.nf4 import nf4_converter
    from tunewiz.train.distributed import apply_activation_checkpointing

    dtype = torch.float32 if inputs.dtype == "fp32" else torch.bfloat16
    quantize = nf4_converter("cpu") if inputs.method == "qlora" else None

    def to_fake(key: str, tensor: torch.Tensor) -> torch.Tensor:
        fake = fake_mode.from_tensor(tensor)
        if quantize is None:
            return fake
        with fake_mode:  # NF4 of the fake weight: shapes only, as load_nf4_model would quantize it
            return quantize(key, fake)

    model = load_model(model_dir, dtype=dtype, device="cpu", convert=to_fake)
    with fake_mode:
        if inputs.method == "full":
            model.requires_grad_(True)
        else:
            apply_lora(
                model,
                targets=list(inputs.lora_targets),
                rank=inputs.lora_rank,
                alpha=16.0,
                dropout=0.0,
                seed=0,
            )
            for param in model.parameters():  # as the recipe: adapters in the model dtype
                if param.requires_grad:
                    param.data = param.data.to(dtype)
        if inputs.activation_checkpointing:
            apply_activation_checkpointing(model)
    return model


def traced_peak(arch: LlamaConfig, inputs: PlanInputs) -> int:
    """Peak live tensor bytes of two real training steps of tunewiz's model, on fake tensors.

    Args:
        arch: the architecture (any size: nothing is really allocated).
        inputs: method (``lora``, ``qlora`` or ``full``), dtype, batch shape, LoRA settings, checkpointing.
    """
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from tunewiz.models.loss import chunked_cross_entropy
    from tunewiz.preset.schema import TrainSection
    from tunewiz.train.distributed import clip_grad_norm
    from tunewiz.train.optim import build_optimizer

    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    with tempfile.TemporaryDirectory(prefix="tunewiz-trace-") as tmp:
        model = build_traced_model(write_sparse_checkpoint(arch, Path(tmp), inputs.dtype), inputs, fake_mode)
    with fake_mode:
        model.train()
        trained = [p for p in model.parameters() if p.requires_grad]
        in_bwd = inputs.optimizer_in_backward
        cfg = TrainSection(optimizer_in_backward=True, max_grad_norm=None) if in_bwd else TrainSection()
        optimizer = build_optimizer(trained, cfg)
        shape = (inputs.micro_batch, inputs.seq_len)
        ids = torch.randint(0, arch.vocab_size, shape)
        labels = torch.randint(0, arch.vocab_size, shape)
        tracker = _StorageTracker(list(model.parameters()) + [ids, labels])
        with tracker:
            for _ in range(2):
                for _ in range(inputs.grad_accum):  # backward adds into the grads of earlier micro-batches
                    hidden = model(ids, output_hidden=True)  # [B, T, D]
                    loss_sum, count = chunked_cross_entropy(hidden, model.lm_head, labels)
                    (loss_sum / count).backward()  # with the step in backward, it also updates and frees
                if not in_bwd:
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

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
    from torch.utils._pytree import tree_leaves
    from torch.utils.weak import WeakIdKeyDictionary

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
            if is_traceable_wrapper_subclass(t):  # NF4: count its inner codes and scales
                for name in t.__tensor_flatten__()[0]:
                    self._add(getattr(t, name))
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
        ("smollm2-135m full bf16 b1x512", smol, PlanInputs(method="full", micro_batch=1, seq_len=512)),
    ]
    if quick:
        return out
    l1 = lookup("llama-3.2-1b").arch
    l3 = lookup("llama-3.2-3b").arch
    l8 = lookup("llama-3.1-8b").arch
    qwen = lookup("qwen2.5-0.5b").arch
    out += [
        (
            "smollm2-135m full fp32 b1x512",
            smol,
            PlanInputs(method="full", dtype="fp32", micro_batch=1, seq_len=512),
        ),
        (
            "smollm2-135m lora all r16 bf16 b4x1024",
            smol,
            PlanInputs(micro_batch=4, seq_len=1024, lora_rank=16, lora_targets=ALL_LINEAR),
        ),
        (
            "smollm2-135m lora qv bf16 AC b4x1024",
            smol,
            PlanInputs(micro_batch=4, seq_len=1024, activation_checkpointing=True),
        ),
        ("smollm2-135m qlora qv bf16 b2x512", smol, PlanInputs(method="qlora", micro_batch=2, seq_len=512)),
        ("qwen2.5-0.5b lora qv bf16 b2x2048", qwen, PlanInputs(micro_batch=2, seq_len=2048)),
        (
            "qwen2.5-0.5b full fp32 AC b2x1024",
            qwen,
            PlanInputs(
                method="full", dtype="fp32", micro_batch=2, seq_len=1024, activation_checkpointing=True
            ),
        ),
        (
            "qwen2.5-0.5b full bf16 AC b2x2048",
            qwen,
            PlanInputs(method="full", micro_batch=2, seq_len=2048, activation_checkpointing=True),
        ),
        (
            "qwen2.5-0.5b qlora all bf16 AC b2x2048",
            qwen,
            PlanInputs(
                method="qlora",
                micro_batch=2,
                seq_len=2048,
                lora_targets=ALL_LINEAR,
                activation_checkpointing=True,
            ),
        ),
        ("llama-3.2-1b lora qv bf16 b2x2048", l1, PlanInputs(micro_batch=2, seq_len=2048)),
        (
            "llama-3.2-1b lora all fp32 b1x1024",
            l1,
            PlanInputs(dtype="fp32", micro_batch=1, seq_len=1024, lora_targets=ALL_LINEAR),
        ),
        (
            "llama-3.2-1b full fp32 b1x2048",
            l1,
            PlanInputs(method="full", dtype="fp32", micro_batch=1, seq_len=2048),
        ),
        ("llama-3.2-1b full bf16 b2x2048", l1, PlanInputs(method="full", micro_batch=2, seq_len=2048)),
        ("llama-3.2-3b full bf16 b2x4096 (torchtune)", l3, TORCHTUNE_3B_FULL),
        (
            "llama-3.2-3b full bf16 AC b2x4096",
            l3,
            dataclasses.replace(TORCHTUNE_3B_FULL, activation_checkpointing=True),
        ),
        ("llama-3.1-8b lora qv bf16 AC b2x2048 (torchtune)", l8, TORCHTUNE_8B_LORA),
        ("llama-3.1-8b lora qv bf16 b1x4096", l8, PlanInputs(micro_batch=1, seq_len=4096)),
        ("llama-3.1-8b qlora qv bf16 AC b2x2048", l8, dataclasses.replace(TORCHTUNE_8B_LORA, method="qlora")),
    ]
    return out


# torchtune's published peaks (README, "memory and training speed"): the same configurations on CUDA.
TORCHTUNE_8B_LORA = PlanInputs(
    method="lora", micro_batch=2, seq_len=2048, lora_rank=8, activation_checkpointing=True
)
TORCHTUNE_3B_FULL = PlanInputs(method="full", micro_batch=2, seq_len=4096)
PUBLISHED = [
    ("llama-3.1-8b LoRA q,v r8 b2 packed 2048 AC, RTX 4090", "llama-3.1-8b", TORCHTUNE_8B_LORA, 16.2),
    ("llama-3.2-3b full b2 seq 4096, A100", "llama-3.2-3b", TORCHTUNE_3B_FULL, 25.5),
    (
        "llama-3.2-3b full b2 seq 4096 + compile, chunked CE, AC",
        "llama-3.2-3b",
        dataclasses.replace(TORCHTUNE_3B_FULL, activation_checkpointing=True),
        24.9,
    ),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only three small configurations")
    args = parser.parse_args(argv)
    worst = 0.0
    print(f"{'configuration':50s} {'traced MiB':>11s} {'planner MiB':>12s} {'error':>7s}")
    for label, arch, inputs in _configs(args.quick):
        c = compare(label, arch, inputs)
        worst = max(worst, abs(c.error))
        print(
            f"{c.label:50s} {c.traced / 2**20:11.1f} {c.predicted / 2**20:12.1f} {c.error:+7.1%}", flush=True
        )
    print(f"worst error: {worst:.1%}")
    print(f"\n{'published (torchtune README)':56s} {'GiB':>6s} {'planner GiB':>12s} {'tensors':>8s}")
    for label, model, inputs, published in PUBLISHED:
        plan = estimate(lookup(model).arch, inputs)
        print(
            f"{label:56s} {published:6.1f} {plan.peak / GiB:12.2f} "
            f"{predicted_tensor_peak(lookup(model).arch, inputs) / GiB:8.2f}"
        )
    return 0 if worst <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
