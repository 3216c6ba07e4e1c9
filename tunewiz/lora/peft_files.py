"""PEFT-format adapter files: ``adapter_model.safetensors`` + ``adapter_config.json``.

Adapters are saved exactly as ``peft`` saves them (keys ``base_model.model.<module>.lora_A.weight``),
so ``peft.PeftModel.from_pretrained`` loads ours and ``load_peft_adapter`` loads peft's.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from tunewiz.atomic import atomic_write_bytes, atomic_write_json
from tunewiz.errors import TunewizError
from tunewiz.lora.layer import apply_lora, lora_modules

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# peft prefixes every saved key with the PeftModel -> LoraModel -> base model attribute path.
PEFT_PREFIX = "base_model.model."
# adapter_config.json options we cannot reproduce; each one changes what the adapter computes.
_UNSUPPORTED_OPTIONS = {
    "use_dora": False,
    "use_rslora": False,
    "bias": "none",
    "fan_in_fan_out": False,
    "rank_pattern": {},
    "alpha_pattern": {},
    "lora_bias": False,
    "modules_to_save": None,
    "layers_to_transform": None,
    "trainable_token_indices": None,
    "target_parameters": None,
    "alora_invocation_tokens": None,
}


def to_peft_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename our adapter keys to peft's saved keys.

    ``X.lora_A.weight`` -> ``base_model.model.X.lora_A.weight``.

    Args:
        sd: adapter weights under our names, as :func:`lora_state_dict` returns them.
    """
    return {PEFT_PREFIX + key: value for key, value in sd.items()}


def from_peft_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename peft's saved keys to ours; the inverse of :func:`to_peft_state_dict`.

    peft also saves a targeted embedding-like layer's base weight (``lm_head.base_layer.weight``);
    it becomes ``lm_head.weight``, the base weight's name in a LoRALinear.

    Args:
        sd: weights as read from a peft ``adapter_model.safetensors``.

    Raises:
        TunewizError: a key lacks peft's ``base_model.model.`` prefix.
    """
    foreign = [key for key in sd if not key.startswith(PEFT_PREFIX)]
    if foreign:
        raise TunewizError(
            f"adapter keys {foreign[:5]} do not start with `{PEFT_PREFIX}`; this is not a peft LoRA adapter",
            hint="save the adapter with peft's `save_pretrained` or tunewiz",
        )
    return {key[len(PEFT_PREFIX) :].replace(".base_layer.", "."): value for key, value in sd.items()}


def save_peft_adapter(
    state: dict[str, Tensor],
    out_dir: Path,
    *,
    base_model: str,
    rank: int,
    alpha: float,
    dropout: float,
    targets: list[str],
) -> None:
    """Write ``adapter_model.safetensors`` and ``adapter_config.json`` as peft does, each atomically.

    The config holds the LoraConfig fields that every peft since 0.10 knows (none that a reader
    would ignore with a warning), with peft's defaults for what we do not use.

    Args:
        state: adapter weights under our names (:func:`lora_state_dict`).
        out_dir: the adapter directory; created if missing.
        base_model: the base model's Hub id or path (``base_model_name_or_path``).
        rank: LoRA rank r.
        alpha: LoRA alpha.
        dropout: LoRA dropout.
        targets: the module names LoRA was applied to.
    """
    from safetensors.torch import save

    out_dir = Path(out_dir)
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in to_peft_state_dict(state).items()}
    atomic_write_bytes(out_dir / ADAPTER_WEIGHTS, save(tensors, metadata={"format": "pt"}))
    config = {
        "alpha_pattern": {},
        "auto_mapping": None,
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layers_pattern": None,
        "layers_to_transform": None,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": rank,
        "rank_pattern": {},
        "revision": None,
        "target_modules": sorted(targets),
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": False,
    }
    atomic_write_json(out_dir / ADAPTER_CONFIG, config)


def _read_adapter_config(adapter_dir: Path) -> dict:
    if not adapter_dir.is_dir():
        raise TunewizError(
            f"adapter directory `{adapter_dir}` does not exist",
            hint="pass a directory holding `adapter_config.json` and `adapter_model.safetensors`",
        )
    config_path = adapter_dir / ADAPTER_CONFIG
    weights_path = adapter_dir / ADAPTER_WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise TunewizError(f"`{path}` is missing", hint=f"save the adapter again into `{adapter_dir}`")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise TunewizError(
            f"`{config_path}` is not valid JSON: {err}", hint="save the adapter again"
        ) from err
    if config.get("peft_type") != "LORA":
        raise TunewizError(
            f"`{config_path}` has peft_type {config.get('peft_type')!r}; tunewiz loads only LORA adapters",
            hint="use a LoRA adapter (peft_type `LORA`)",
        )
    for option, plain in _UNSUPPORTED_OPTIONS.items():
        if config.get(option, plain) != plain:
            raise TunewizError(
                f"`{config_path}` sets {option}={config[option]!r}; tunewiz supports only {plain!r}",
                hint="merge it with peft (`merge_and_unload`) and fine-tune the merged model instead",
            )
    return config


def load_peft_adapter(model: nn.Module, adapter_dir: Path) -> None:
    """Apply LoRA as ``adapter_config.json`` says and load ``adapter_model.safetensors`` into ``model``.

    Args:
        model: the base model (plain ``nn.Linear`` layers, Hugging Face names), already holding its weights.
        adapter_dir: a directory written by :func:`save_peft_adapter` or peft's ``save_pretrained``.

    Raises:
        TunewizError: the directory or a file is missing, the adapter is not plain LoRA, its rank
            differs from the config's, or a key matches no module or has the wrong shape.
    """
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    config = _read_adapter_config(adapter_dir)
    weights_path = adapter_dir / ADAPTER_WEIGHTS
    state = from_peft_state_dict(load_file(weights_path))
    rank = int(config["r"])
    wrong_rank = [k for k, v in state.items() if ".lora_A." in k and v.shape[0] != rank]
    if wrong_rank:
        raise TunewizError(
            f"`{weights_path}` has rank {state[wrong_rank[0]].shape[0]} at `{wrong_rank[0]}`, "
            f"but `{adapter_dir / ADAPTER_CONFIG}` says r={rank}",
            hint="the two files come from different adapters; save the adapter again",
        )
    targets = config["target_modules"]
    if isinstance(targets, str):
        # A regex or `all-linear`: the saved weights name exactly the modules that had adapters.
        targets = sorted({k.rpartition(".lora_")[0] for k in state if ".lora_" in k})
    with warnings.catch_warnings(record=True):  # unmatched targets surface below as unmatched keys
        apply_lora(
            model,
            targets=list(targets),
            rank=rank,
            alpha=float(config["lora_alpha"]),
            dropout=float(config.get("lora_dropout", 0.0)),
            seed=0,
        )
    _load_into(model, state, weights_path)


def _load_into(model: nn.Module, state: dict[str, Tensor], weights_path: Path) -> None:
    """Copy ``state`` into ``model``'s parameters, naming every key that matches none or has a wrong shape."""
    unmatched, misshapen, params = [], [], {}
    for key, value in state.items():
        try:
            param = model.get_parameter(key)
        except AttributeError:
            unmatched.append(key)
            continue
        if param.shape != value.shape:
            misshapen.append(f"{key} {tuple(value.shape)} vs model {tuple(param.shape)}")
        params[key] = param
    if unmatched:
        raise TunewizError(
            f"`{weights_path}` has keys that match no module of {type(model).__name__}: {unmatched[:8]}"
            + (f" and {len(unmatched) - 8} more" if len(unmatched) > 8 else ""),
            hint="the adapter was trained on a different model; load it onto its base model",
        )
    if misshapen:
        raise TunewizError(
            f"`{weights_path}` has weights whose shapes differ from the model's: {misshapen[:8]}",
            hint="the adapter was trained on a different model size; load it onto its base model",
        )
    missing = [
        f"{path}.{part}.weight"
        for path, _ in lora_modules(model)
        for part in ("lora_A", "lora_B")
        if f"{path}.{part}.weight" not in state
    ]
    if missing:
        raise TunewizError(
            f"`{weights_path}` has no weights for adapter layers {missing[:8]}",
            hint="the adapter's target_modules do not match its weights; save the adapter again",
        )
    with torch.no_grad():
        for key, param in params.items():
            param.copy_(state[key])
