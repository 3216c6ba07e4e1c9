"""LoRA: a drop-in ``LoRALinear``, applying and merging it, and PEFT-format adapter files.

``LoRALinear`` keeps the base parameters at ``weight`` and ``bias`` (``nn.Linear``'s names), so a
base checkpoint loads into a LoRA model, and FSDP shards it, with no key remapping. The adapter adds
``lora_A`` (r × in) and ``lora_B`` (out × r); the layer computes ``x Wᵀ + b + s · B A drop(x)`` with
``s = alpha / r``.

Adapters are saved exactly as ``peft`` saves them (``adapter_model.safetensors`` with keys
``base_model.model.<module>.lora_A.weight`` and an ``adapter_config.json``), so
``peft.PeftModel.from_pretrained`` loads ours and ``load_peft_adapter`` loads peft's.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from tunewiz.atomic import atomic_write_bytes, atomic_write_json
from tunewiz.errors import TunewizError

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


class LoRALinear(nn.Module):
    """A drop-in ``nn.Linear`` with a trainable low-rank update.

    The base ``weight`` (out × in) and ``bias`` are the very parameters of the wrapped linear (no
    copy: ties such as ``lm_head`` ↔ ``embed_tokens`` survive, meta tensors stay meta) and are
    frozen. The adapters are kept in fp32 when the base is bf16/fp16, as peft does, so small updates
    are not rounded away; the LoRA path runs in the adapters' dtype and is cast back to the output's.

    Args:
        weight: the base weight, shape (out_features, in_features); may be a tensor subclass (NF4).
        bias: the base bias, shape (out_features,), or None.
        rank: r, the inner dimension of B·A.
        alpha: scale numerator; the update is multiplied by ``alpha / rank``.
        dropout: dropout probability on the LoRA input (0 disables it).
    """

    def __init__(
        self, weight: nn.Parameter, bias: nn.Parameter | None, *, rank: int, alpha: float, dropout: float
    ) -> None:
        super().__init__()
        if rank <= 0:
            raise TunewizError(f"LoRA rank must be positive, got {rank}", hint="set `lora.rank` to e.g. 8")
        if not 0.0 <= dropout < 1.0:
            raise TunewizError(
                f"LoRA dropout must be in [0, 1), got {dropout}", hint="set `lora.dropout` to e.g. 0.05"
            )
        self.out_features, self.in_features = weight.shape
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        weight.requires_grad_(False)
        self.weight = weight
        if bias is not None:
            bias.requires_grad_(False)
        self.bias = bias
        lora_dtype = torch.promote_types(weight.dtype, torch.float32)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(self.in_features, rank, bias=False, device=weight.device, dtype=lora_dtype)
        self.lora_B = nn.Linear(rank, self.out_features, bias=False, device=weight.device, dtype=lora_dtype)
        # nn.Linear already drew lora_A from kaiming-uniform(a=√5); B = 0 makes a new layer equal its base.
        # `reset_lora_parameters` redraws A from a seeded generator.
        nn.init.zeros_(self.lora_B.weight)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, alpha: float, dropout: float) -> LoRALinear:
        """Wrap ``linear``'s own parameters (no copy) in a LoRALinear.

        Args:
            linear: the layer to replace.
            rank: LoRA rank r.
            alpha: LoRA alpha; scaling is ``alpha / rank``.
            dropout: dropout probability on the LoRA input.
        """
        return cls(linear.weight, linear.bias, rank=rank, alpha=alpha, dropout=dropout)

    def base_forward(self, x: Tensor) -> Tensor:
        """The frozen base matmul ``x Wᵀ + b``; (..., in) -> (..., out). QLoRA overrides only this."""
        return nn.functional.linear(x, self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(..., in) -> (..., out): base output plus ``B(scaling · A(dropout(x)))``."""
        out = self.base_forward(x)
        lora_in = self.dropout(x.to(self.lora_A.weight.dtype))
        # Scale the (..., r) intermediate, not the (..., out) update: out/r times fewer multiplies in
        # forward and backward (~4% of a bf16 step with all seven targets); bitwise the same as
        # scaling the update when alpha / rank is a power of two.
        update = self.lora_B(self.lora_A(lora_in) * self.scaling)  # (..., out) in the adapter dtype
        return out + update.to(out.dtype)

    @torch.no_grad()
    def reset_lora_parameters(self, generator: torch.Generator) -> None:
        """A ~ kaiming-uniform(a=√5) (peft's and nn.Linear's init: U(±1/√in)), B = 0.

        So the update starts at 0.

        The values are drawn on CPU from ``generator`` and then copied, so they are the same on every
        device and, for sharded (DTensor) parameters, on every rank and world size.

        Args:
            generator: a CPU generator; each call advances it.
        """
        a_full = torch.empty(self.lora_A.weight.shape, dtype=torch.float32)
        nn.init.kaiming_uniform_(a_full, a=math.sqrt(5), generator=generator)
        _copy_full_into(self.lora_A.weight, a_full)
        _copy_full_into(self.lora_B.weight, torch.zeros(self.lora_B.weight.shape))

    @torch.no_grad()
    def merged_weight(self) -> Tensor:
        """``W + s · B A``, computed in fp32 and returned in the base weight's dtype; (out, in)."""
        w = self.weight.to(torch.float32)
        delta = self.lora_B.weight.to(torch.float32) @ self.lora_A.weight.to(torch.float32)  # (out, in)
        return (w + self.scaling * delta).to(self.weight.dtype)

    def extra_repr(self) -> str:
        """Shapes, rank and alpha, shown when the model is printed."""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, "
            f"rank={self.rank}, alpha={self.alpha}"
        )


def _copy_full_into(param: Tensor, full: Tensor) -> None:
    """Copy a full (unsharded) CPU tensor into ``param``, which may be a sharded DTensor."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor):
        # Every rank holds the same full tensor (same seed), so no rank needs to send it: src_data_rank=None.
        full = distribute_tensor(
            full.to(param.device_mesh.device_type, param.dtype),
            param.device_mesh,
            param.placements,
            src_data_rank=None,
        )
    param.copy_(full)


def _lora_modules(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]


def _matches(path: str, target: str) -> bool:
    # peft's rule for list targets: the full module path, or its dotted suffix (`q_proj`, `self_attn.q_proj`).
    return path == target or path.endswith("." + target)


def apply_lora(
    model: nn.Module, *, targets: list[str], rank: int, alpha: float, dropout: float, seed: int | None = None
) -> list[str]:
    """Replace every targeted ``nn.Linear`` by a ``LoRALinear`` in place, and freeze everything else.

    Warns (``UserWarning``) for each target that matches no linear layer. On a meta-device model
    the LoRA parameters are created on meta too; call :func:`init_lora_parameters` after
    materialising it.

    Args:
        model: any module whose linear layers have Hugging Face names (``model.layers.0.self_attn.q_proj``).
        targets: module names (``q_proj``, ``down_proj``, ``lm_head``, ...) or dotted path suffixes.
        rank: LoRA rank r.
        alpha: LoRA alpha; scaling is ``alpha / rank``.
        dropout: dropout probability on the LoRA input.
        seed: seed for the adapter init; None draws one from torch's global RNG.

    Returns:
        The module paths that were replaced, in model order.
    """
    replaced: list[str] = []
    matched: set[str] = set()
    modules = list(model.named_modules())
    for path, module in modules:
        hits = [t for t in targets if _matches(path, t)]
        if not hits:
            continue
        if isinstance(module, LoRALinear):
            raise TunewizError(
                f"module `{path}` already has a LoRA adapter",
                hint="apply LoRA to a fresh model, or `merge_lora` it first",
            )
        if type(module) is not nn.Linear:
            continue
        parent_path, _, attr = path.rpartition(".")
        setattr(model.get_submodule(parent_path), attr, LoRALinear.from_linear(module, rank, alpha, dropout))
        replaced.append(path)
        matched.update(hits)
    linear_names = sorted({p.rpartition(".")[2] for p, m in modules if type(m) is nn.Linear})
    for target in targets:
        if target not in matched:
            warnings.warn(
                f"LoRA target `{target}` matched no nn.Linear in {type(model).__name__}; "
                f"its linear layers are named {linear_names}",
                UserWarning,
                stacklevel=2,
            )
    lora_params = {id(p) for _, m in _lora_modules(model) for p in (m.lora_A.weight, m.lora_B.weight)}
    for p in model.parameters():
        p.requires_grad_(id(p) in lora_params)
    if not any(p.is_meta for p in model.parameters()):
        init_lora_parameters(model, int(torch.randint(0, 2**62, ()).item()) if seed is None else seed)
    return replaced


def init_lora_parameters(model: nn.Module, seed: int) -> None:
    """(Re)initialise every LoRA adapter: A kaiming-uniform, B zero, from one seeded CPU generator.

    Modules are visited in model order, so the same seed gives the same values on every rank,
    device and world size.

    Args:
        model: a model with LoRALinear layers, materialised (not on meta).
        seed: the init seed.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    for _, module in _lora_modules(model):
        module.reset_lora_parameters(generator)


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The adapter weights under our names (``model.layers.0.self_attn.q_proj.lora_A.weight``).

    Sharded (DTensor) parameters are gathered to full tensors, a collective: under FSDP every rank
    must call this.

    Args:
        model: a model with LoRALinear layers.
    """
    from torch.distributed.tensor import DTensor

    state: dict[str, Tensor] = {}
    for path, module in _lora_modules(model):
        for part in ("lora_A", "lora_B"):
            weight = getattr(module, part).weight.detach()
            state[f"{path}.{part}.weight"] = weight.full_tensor() if isinstance(weight, DTensor) else weight
    return state


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
        for path, _ in _lora_modules(model)
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


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace each LoRALinear, in place, by a plain frozen ``nn.Linear`` holding ``W + s·B·A``.

    A base weight shared with another module (tied ``lm_head``/``embed_tokens``) is not changed
    in place: the merged layer gets its own weight, and a warning says the tie is broken.

    Args:
        model: a model with LoRALinear layers.

    Returns:
        ``model``, for chaining.
    """
    lora = _lora_modules(model)
    lora_ids = {id(m) for _, m in lora}
    shared = {id(p) for m in model.modules() if id(m) not in lora_ids for p in m.parameters(recurse=False)}
    for path, module in lora:
        # Built on meta so no throwaway weight is allocated and initialised; both parameters are replaced.
        merged = nn.Linear(
            module.in_features, module.out_features, bias=module.bias is not None, device="meta"
        )
        merged.weight = nn.Parameter(module.merged_weight(), requires_grad=False)
        if module.bias is not None:
            merged.bias = module.bias
        if id(module.weight) in shared:
            warnings.warn(
                f"`{path}.weight` is tied to another module; the merged `{path}` gets its own weight, so "
                "save the merged model with tie_word_embeddings=false",
                UserWarning,
                stacklevel=2,
            )
        parent_path, _, attr = path.rpartition(".")
        setattr(model.get_submodule(parent_path), attr, merged)
    return model


@contextmanager
def lora_disabled(model: nn.Module) -> Iterator[None]:
    """Run ``model`` as its base model inside the block: every LoRALinear computes only ``x Wᵀ + b``.

    Nothing is copied or merged; each layer's ``forward`` is pointed at ``base_forward`` and restored
    on exit (also on an exception), so the adapter can be switched off and on for comparisons.

    Args:
        model: a model with LoRALinear layers (a model without any is left unchanged).
    """
    modules = [m for _, m in _lora_modules(model)]
    for module in modules:
        module.forward = module.base_forward  # an instance attribute shadows the class's forward
    try:
        yield
    finally:
        for module in modules:
            del module.forward


def lora_parameter_count(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied parameters are counted once.

    Args:
        model: any module.
    """
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
