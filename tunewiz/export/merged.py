"""The merged weights of a finished run, whatever its ``final/`` holds, or of a step checkpoint.

* ``final/model.safetensors`` (``output.merged: true``, the default, and every full fine-tune): read as is.
  For QLoRA runs the export already folded the adapter into the *dequantized* NF4 base.
* ``final/adapter`` only (``output.merged: false``): the base model named in ``config.yaml`` plus the
  adapter, merged here as the end of training would have: ``W + (alpha / r) · B · A`` in fp32. A QLoRA
  run's base goes through NF4 and back first, because that is the base the adapter was trained on.
* a step checkpoint (``--from step-N``): the model rebuilt as training built it (NF4 base for QLoRA)
  with the checkpoint's trained weights, merged as the end of training merges (:func:`export_step`
  writes it as a ``final/``-like folder, what ``push --from`` publishes).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING

from tunewiz.errors import TunewizError
from tunewiz.run.directory import RunDir

if TYPE_CHECKING:
    import torch

    from tunewiz.inference.load import StepCheckpoint
    from tunewiz.models.config import LlamaConfig
    from tunewiz.preset.schema import Preset


@dataclass
class MergedWeights:
    """What an export needs from a run. The weights are read (and merged) on first use of ``state``, so a
    caller can check the architecture and the disk space first.

    Args:
        config: the architecture.
        preset: the run's resolved preset.
        tokenizer_dir: where the run's tokenizer files are (``final/``, else the base model).
        source: how the weights are obtained, for messages (``final/model.safetensors`` or
            ``base + final/adapter, merged now``).
        load: reads the full state dict under Hugging Face names (CPU tensors, stored dtype).
    """

    config: LlamaConfig
    preset: Preset
    tokenizer_dir: Path
    source: str
    load: Callable[[], dict[str, torch.Tensor]]

    @cached_property
    def state(self) -> dict[str, torch.Tensor]:
        """The merged state dict (loaded once)."""
        return self.load()


def merged_weights(run_path: Path, checkpoint: StepCheckpoint | None = None) -> MergedWeights:
    """A finished run's merged weights (read on first use), merging its adapter on the fly when needed.

    Args:
        run_path: the run directory.
        checkpoint: a step checkpoint of the run to merge instead of ``final/`` (the run need not be
            finished).

    Raises:
        TunewizError: not a run directory, the run is unfinished, or ``final/`` has neither merged
            weights nor an adapter.
    """
    from tunewiz.inference.load import _has_weights, _unfinished_run_error
    from tunewiz.models.config import LlamaConfig
    from tunewiz.models.loading import load_state_dict_files, resolve_model_dir
    from tunewiz.preset.files import load_preset

    run = RunDir(Path(run_path).expanduser())
    if not run.config.is_file():
        raise TunewizError(
            f"`{run.path}` is not a run directory (it has no config.yaml)",
            hint="pass the directory `tunewiz train` wrote, e.g. `runs/tiny-lora` (`ls runs/`)",
        )
    if checkpoint is None and not run.final.is_dir():
        raise _unfinished_run_error(run)
    preset, _ = load_preset(str(run.config))
    tokenizer_dir = run.final if (run.final / "tokenizer_config.json").is_file() else None
    if checkpoint is not None:
        base_dir = resolve_model_dir(preset.model.path, preset.model.revision)
        return MergedWeights(
            LlamaConfig.from_file(base_dir / "config.json"),
            preset,
            tokenizer_dir or base_dir,
            f"{checkpoint.name}, merged now",
            partial(_step_merged, checkpoint),
        )
    if _has_weights(run.final):
        config = LlamaConfig.from_file(run.final / "config.json")
        return MergedWeights(
            config,
            preset,
            tokenizer_dir or run.final,
            "final/model.safetensors",
            partial(load_state_dict_files, run.final),
        )
    if not (run.adapter / "adapter_config.json").is_file():
        raise TunewizError(
            f"`{run.final}` has neither merged weights (model.safetensors) nor an adapter (adapter/)",
            hint=f"export it again: `tunewiz resume {run.path} --set output.merged=true`",
        )
    base_dir = resolve_model_dir(preset.model.path, preset.model.revision)
    config = LlamaConfig.from_file(base_dir / "config.json")

    def load() -> dict[str, torch.Tensor]:
        base = load_state_dict_files(base_dir)
        if preset.method == "qlora":
            base = _through_nf4(base, preset.model.dtype)
        return _merge_adapter(base, run.adapter)

    return MergedWeights(config, preset, tokenizer_dir or base_dir, "base + final/adapter, merged now", load)


def _step_merged(checkpoint: StepCheckpoint) -> dict[str, torch.Tensor]:
    """A step checkpoint's weights merged as ``final/model.safetensors`` would hold them."""
    from tunewiz.inference.load import build_step_model
    from tunewiz.train.export import exported_state, merge_lora_state

    model, preset, _ = build_step_model(checkpoint, dtype=None, device="cpu", nf4=True)
    base, lora = exported_state(model.state_dict(), preset)
    return merge_lora_state(base, lora, scaling=preset.lora.alpha / preset.lora.rank) if lora else base


def export_step(checkpoint: StepCheckpoint, dest: Path, *, adapter: bool, merged: bool) -> Path:
    """Write a step checkpoint as ``final/`` would hold it, into ``dest``: the PEFT adapter and/or the
    merged model, the config, and the tokenizer with the run's recorded chat template.

    With the run's last step, the weight files equal ``final/``'s (the same export code, the same
    tensors).

    Args:
        checkpoint: the step checkpoint.
        dest: the folder to write (replaced if it exists).
        adapter: write ``adapter/`` (LoRA/QLoRA runs).
        merged: write the merged ``model.safetensors``.

    Returns:
        ``dest``.
    """
    from tunewiz.inference.load import build_step_model
    from tunewiz.text.prompt import read_prompt_record
    from tunewiz.train.export import export_final

    model, preset, model_dir = build_step_model(checkpoint, dtype=None, device="cpu", nf4=True)
    output = preset.output.model_copy(update={"adapter": adapter, "merged": merged})
    return export_final(
        checkpoint.run,
        model.state_dict(),
        preset=preset.model_copy(update={"output": output}),
        model_dir=model_dir,
        prompt=read_prompt_record(checkpoint.run.path),
        dest=dest,
    )


def _through_nf4(state: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    """The base as QLoRA training saw it: each quantized weight to NF4 and back to the compute dtype."""
    import torch

    from tunewiz.models.nf4 import is_quantized_weight, to_nf4

    compute = torch.float32 if dtype in ("fp32", "float32") else torch.bfloat16
    return {
        key: to_nf4(value.to(compute), name=key).to(compute) if is_quantized_weight(key) else value
        for key, value in state.items()
    }


def _merge_adapter(base: dict[str, torch.Tensor], adapter_dir: Path) -> dict[str, torch.Tensor]:
    """``base`` with the PEFT adapter in ``adapter_dir`` folded in (``W + alpha/r · B·A``, fp32 math)."""
    from safetensors.torch import load_file

    from tunewiz.lora.peft_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, from_peft_state_dict
    from tunewiz.train.export import merge_lora_state

    adapter_config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    if adapter_config.get("use_rslora") or adapter_config.get("use_dora"):
        raise TunewizError(
            f"`{adapter_dir / ADAPTER_CONFIG}` uses rsLoRA/DoRA, which tunewiz does not merge",
            hint="merge it with peft's `merge_and_unload()` and export that model",
        )
    lora = from_peft_state_dict(load_file(adapter_dir / ADAPTER_WEIGHTS))
    unknown = [k for k in lora if k.rsplit(".lora_", 1)[0] + ".weight" not in base]
    if unknown:
        raise TunewizError(
            f"`{adapter_dir}` has weights for `{unknown[0]}`, which the base model lacks",
            hint="the adapter belongs to another base model; check `model.path` in the run's config.yaml",
        )
    scaling = float(adapter_config["lora_alpha"]) / float(adapter_config["r"])
    return merge_lora_state(base, lora, scaling=scaling)
