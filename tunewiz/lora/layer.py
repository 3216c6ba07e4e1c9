"""LoRA's layer: a drop-in ``LoRALinear``, applying it to a model, its state and switching it off.

``LoRALinear`` keeps the base parameters at ``weight`` and ``bias`` (``nn.Linear``'s names), so a
base checkpoint loads into a LoRA model, and FSDP shards it, with no key remapping. The adapter adds
``lora_A`` (r × in) and ``lora_B`` (out × r); the layer computes ``x Wᵀ + b + s · B A drop(x)`` with
``s = alpha / r``. PEFT adapter files are in ``tunewiz/lora/peft_files.py``, merging in
``tunewiz/lora/merge.py``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from tunewiz.errors import TunewizError


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
        # Set by `lora_disabled`: compute only the base layer (compare with and without the adapter).
        self.disabled = False

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

    def forward(self, x: Tensor) -> Tensor:
        """(..., in) -> (..., out): base output plus ``B(scaling · A(dropout(x)))``; the base alone when
        ``disabled``. An NF4 base weight needs no code here: its tensor subclass implements ``F.linear``."""
        out = nn.functional.linear(x, self.weight, self.bias)
        if self.disabled:
            return out
        lora_in = self.dropout(x.to(self.lora_A.weight.dtype))
        # Scale the (..., r) intermediate, not the (..., out) update: out/r times fewer multiplies in
        # forward and backward; bitwise the same as scaling the update when alpha / rank is a power
        # of two (the speed-up is measured in bench/RESULTS.md).
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
            f"rank={self.rank}, alpha={self.alpha}" + (", disabled" if self.disabled else "")
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


def lora_modules(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    """Every LoRALinear of ``model`` with its module path, in model order.

    Args:
        model: any module.
    """
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
    lora_params = {id(p) for _, m in lora_modules(model) for p in (m.lora_A.weight, m.lora_B.weight)}
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
    for _, module in lora_modules(model):
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
    for path, module in lora_modules(model):
        for part in ("lora_A", "lora_B"):
            weight = getattr(module, part).weight.detach()
            state[f"{path}.{part}.weight"] = weight.full_tensor() if isinstance(weight, DTensor) else weight
    return state


@contextmanager
def lora_disabled(model: nn.Module) -> Iterator[None]:
    """Run ``model`` as its base model inside the block: every LoRALinear computes only ``x Wᵀ + b``.

    Nothing is copied or merged; each layer's ``disabled`` flag is set and cleared again on exit (also
    on an exception), so the adapter can be switched off and on for comparisons.

    Args:
        model: a model with LoRALinear layers (a model without any is left unchanged).
    """
    modules = [m for _, m in lora_modules(model)]
    for module in modules:
        module.disabled = True
    try:
        yield
    finally:
        for module in modules:
            module.disabled = False


def lora_parameter_count(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied parameters are counted once.

    Args:
        model: any module.
    """
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
