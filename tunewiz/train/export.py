"""The end of a run: `final/` with the PEFT adapter and/or the merged model, loadable by
transformers and peft, plus the tokenizer and generation config of the base model."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from tunewiz.preset.schema import Preset
from tunewiz.run.directory import RunDir
from tunewiz.text.prompt import PromptFormat

_LORA_A = ".lora_A.weight"
_LORA_B = ".lora_B.weight"


def split_lora_state(
    full: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(base weights, LoRA weights) of a full model state dict."""
    lora = {k: v for k, v in full.items() if k.endswith((_LORA_A, _LORA_B))}
    base = {k: v for k, v in full.items() if k not in lora}
    return base, lora


def merge_lora_state(
    base: dict[str, torch.Tensor], lora: dict[str, torch.Tensor], *, scaling: float
) -> dict[str, torch.Tensor]:
    """Base weights with W + scaling·B·A folded in (computed in fp32, stored in W's dtype).

    A is [r, in], B is [out, r], W is [out, in].
    """
    merged = dict(base)
    for key_a in (k for k in lora if k.endswith(_LORA_A)):
        prefix = key_a[: -len(_LORA_A)]
        weight = merged[f"{prefix}.weight"]
        delta = lora[f"{prefix}{_LORA_B}"].float() @ lora[key_a].float()
        merged[f"{prefix}.weight"] = (weight.float() + scaling * delta).to(weight.dtype)
    return merged


def exported_state(
    full: dict[str, torch.Tensor], preset: Preset
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(base weights, LoRA weights) as ``final/`` stores them: a QLoRA base's NF4 tensors dequantized
    to the compute dtype (bf16 unless ``model.dtype`` is fp32), the base the adapter was trained on.

    Args:
        full: the model's full state dict, LoRA weights included.
        preset: the run's resolved preset.
    """
    base, lora = split_lora_state(full)
    if preset.method == "qlora":
        from tunewiz.models.nf4 import dequantize_state

        base = dequantize_state(base)
    return base, lora


def export_final(
    run: RunDir,
    full: dict[str, torch.Tensor],
    *,
    preset: Preset,
    model_dir: Path,
    prompt: PromptFormat | None = None,
    dest: Path | None = None,
) -> Path:
    """Write `final/` from the gathered full state dict (rank 0 only).

    The folder is built next to `final/` and renamed into place, so `final/` is either the previous
    export or the complete new one.

    Args:
        run: the run directory.
        full: the full (unsharded) model state dict, LoRA weights included.
        preset: the run's resolved preset.
        model_dir: the base model's directory (config, tokenizer and generation config come from it).
        prompt: the run's prompt format; its template becomes the exported model's template (see
            ``tunewiz.text.prompt.save_tokenizer_with_prompt``), so chat, eval and transformers build
            the prompts training built. None copies the base tokenizer unchanged.
        dest: write this folder instead of ``final/`` (a step checkpoint exported for ``push --from``);
            it must not exist.

    Returns:
        The folder written.
    """
    from tunewiz.lora.peft_files import save_peft_adapter
    from tunewiz.models.config import LlamaConfig
    from tunewiz.models.loading import save_model
    from tunewiz.text.prompt import save_tokenizer_with_prompt
    from tunewiz.text.tokenizer import load_tokenizer

    target = run.final if dest is None else Path(dest)
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    config = LlamaConfig.from_file(model_dir / "config.json")
    base, lora = exported_state(full, preset)
    if lora and preset.output.adapter:
        save_peft_adapter(
            lora,
            staging / "adapter",
            base_model=preset.model.path,
            rank=preset.lora.rank,
            alpha=preset.lora.alpha,
            dropout=preset.lora.dropout,
            targets=preset.lora.targets,
        )
        if preset.method == "qlora":
            _write_qlora_adapter_card(staging / "adapter", preset)
    if preset.output.merged:
        weights = merge_lora_state(base, lora, scaling=preset.lora.alpha / preset.lora.rank) if lora else base
        save_model(weights, staging, config)
    tokenizer = load_tokenizer(model_dir)
    if prompt is None:
        tokenizer.save_pretrained(staging)
    else:
        save_tokenizer_with_prompt(tokenizer, staging, prompt)
    if (model_dir / "generation_config.json").is_file():
        shutil.copy2(model_dir / "generation_config.json", staging / "generation_config.json")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _write_qlora_adapter_card(adapter_dir: Path, preset: Preset) -> None:
    """`adapter/README.md`: say the adapter was trained against a 4-bit base, which matters to whoever
    loads it onto the full-precision base (outputs differ slightly from the training run's)."""
    from tunewiz.atomic import atomic_write_text
    from tunewiz.models.nf4 import NF4_BLOCK_SIZE, NF4_SCALER_BLOCK_SIZE

    atomic_write_text(
        adapter_dir / "README.md",
        f"""---
base_model: {preset.model.path}
library_name: peft
tags: [lora, qlora, tunewiz]
---

# {preset.name}: LoRA adapter trained with QLoRA

This adapter (rank {preset.lora.rank}, alpha {preset.lora.alpha}, on {", ".join(preset.lora.targets)}) was
trained by tunewiz on a **4-bit base**: the base model's decoder linear weights were NF4 with double
quantization (blocks of {NF4_BLOCK_SIZE} values, scales quantized in blocks of up to {NF4_SCALER_BLOCK_SIZE},
torchao's NF4 tensor); embeddings, norms and lm_head stayed in {preset.model.dtype}. Loaded onto the
full-precision base with `peft.PeftModel.from_pretrained`, it behaves close to, not exactly as, in training;
tunewiz's merged export (`final/model.safetensors`, when `output.merged` is on) folds it into the
dequantized base.
""",
    )
