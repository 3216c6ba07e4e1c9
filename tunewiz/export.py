"""The end of a run: `final/` with the PEFT adapter and/or the merged model, loadable by
transformers and peft, plus the tokenizer and generation config of the base model."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from tunewiz.config import Preset
from tunewiz.rundir import RunDir

_LORA_A = ".lora_A.weight"
_LORA_B = ".lora_B.weight"


def split_lora_state(full: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
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


def export_final(run: RunDir, full: dict[str, torch.Tensor], *, preset: Preset, model_dir: Path) -> Path:
    """Write `final/` from the gathered full state dict (rank 0 only).

    The folder is built next to `final/` and renamed into place, so `final/` is either the previous
    export or the complete new one.
    """
    from tunewiz.lora import save_peft_adapter
    from tunewiz.models.config import LlamaConfig
    from tunewiz.models.loading import save_model
    from tunewiz.tokenizer import load_tokenizer

    staging = run.path / ".final.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    config = LlamaConfig.from_file(model_dir / "config.json")
    base, lora = split_lora_state(full)
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
    if preset.output.merged:
        weights = merge_lora_state(base, lora, scaling=preset.lora.alpha / preset.lora.rank) if lora else base
        save_model(weights, staging, config)
    load_tokenizer(model_dir).save_pretrained(staging)
    if (model_dir / "generation_config.json").is_file():
        shutil.copy2(model_dir / "generation_config.json", staging / "generation_config.json")
    shutil.rmtree(run.final, ignore_errors=True)
    staging.rename(run.final)
    return run.final
