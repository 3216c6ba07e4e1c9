"""QLoRA's frozen base: the decoder's linear weights as 4-bit NormalFloat (NF4) with double quantization.

Each projection weight of the decoder blocks (q/k/v/o, gate/up/down) becomes a torchao ``NF4Tensor``
as it is read from the checkpoint: blocks of 64 values share one absmax scale, and the scales are
themselves quantized to int8 in blocks of 256 (QLoRA's double quantization). Embeddings, norms and
``lm_head`` stay in the compute dtype, and LoRA adapters are trained in higher precision on top.

``LoRALinear`` needs no NF4 code: the tensor subclass implements ``F.linear`` (dequantize, matmul,
and the matching backward for the input) and ``.to(dtype)`` (dequantize), and it implements FSDP2's
``fsdp_pre_all_gather``/``fsdp_post_all_gather`` so ranks gather the 4-bit bytes, not bf16 weights.

Storage per parameter: 0.5 bytes of codes + 1 int8 scale per 64 values + one compute-dtype factor
per scale block: ≈ 0.516 bytes (:data:`NF4_BYTES_PER_PARAM`).

torchao is an optional dependency (``pip install 'tunewiz[qlora]'``); it is imported inside the
functions here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tunewiz.errors import TunewizError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tunewiz.models.llama import LlamaForCausalLM

NF4_BLOCK_SIZE = 64  # values sharing one absmax scale (QLoRA's block size)
NF4_SCALER_BLOCK_SIZE = (
    256  # first-level scales sharing one second-level factor (QLoRA's double quantization)
)
# 4 bits per value, one int8 scale per 64 values, one fp32 factor per 64·256 values (bf16 runs store bf16).
NF4_BYTES_PER_PARAM = 0.5 + 1 / NF4_BLOCK_SIZE + 4 / (NF4_BLOCK_SIZE * NF4_SCALER_BLOCK_SIZE)
# FSDP2 splits the scale arrays evenly over the ranks: the scale-block count is kept a multiple of this
# (whatever the world size, so 1 rank and N ranks train the very same quantized weights).
_SHARDABLE_OVER = 8
# The base linears QLoRA quantizes: every projection inside a decoder block (not lm_head).
_QUANTIZED_WEIGHT = re.compile(r"^model\.layers\.\d+\.(self_attn|mlp)\.[a-z_]+_proj\.weight$")
_NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


@contextmanager
def _quiet_import() -> Iterator[None]:
    """torchao logs a warning per CUDA-only extension it cannot load on import; a CPU run is not broken."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _nf4_module():  # noqa: ANN202 (the torchao module)
    try:
        with _quiet_import():
            from torchao.quantization.quantize_.workflows.nf4 import nf4_tensor
    except ImportError as exc:
        raise TunewizError(
            f"`method: qlora` needs torchao (NF4 weights), which is not importable: {exc}",
            hint="`pip install 'tunewiz[qlora]'` (torchao>=0.16), or train with `--set method=lora`",
        ) from None
    return nf4_tensor


def is_quantized_weight(key: str) -> bool:
    """True for the state-dict keys QLoRA stores as NF4: ``model.layers.N.self_attn.q_proj.weight`` etc.

    Args:
        key: a parameter name with Hugging Face's module names.
    """
    return bool(_QUANTIZED_WEIGHT.match(key))


def is_nf4(tensor: torch.Tensor) -> bool:
    """True when ``tensor`` (or the local shard of a DTensor) is an NF4 tensor.

    Args:
        tensor: any tensor or parameter.
    """
    local = getattr(tensor, "_local_tensor", tensor)
    return type(local).__name__ == "NF4Tensor"


def scaler_block_size(n_blocks: int) -> int:
    """The second-level block size for a weight of ``n_blocks`` 64-value blocks.

    QLoRA's 256 when it divides the blocks into a multiple of 8 scale blocks (true for 7–8B models);
    otherwise the largest size up to 256 that does, so FSDP2 can split the scale arrays evenly over
    1, 2, 4 or 8 ranks; otherwise the largest divisor up to 256 (such a layer runs on one rank only).
    The choice depends on the shape alone, never on the world size.

    Args:
        n_blocks: the weight's element count divided by :data:`NF4_BLOCK_SIZE`.
    """
    divisors = [d for d in range(NF4_SCALER_BLOCK_SIZE, 0, -1) if n_blocks % d == 0]
    shardable = [d for d in divisors if (n_blocks // d) % _SHARDABLE_OVER == 0]
    return (shardable or divisors)[0]


def to_nf4(weight: torch.Tensor, *, name: str = "weight") -> torch.Tensor:
    """Quantize a 2-D weight to an NF4 tensor (64-value blocks, double-quantized scales).

    Deterministic: the same weight always gives the same bytes, so a resumed run rebuilds the same
    base. The result reports ``weight``'s dtype, shape and device; ``.to(dtype)`` dequantizes it.

    Args:
        weight: (out, in) floating-point weight; its element count must be a multiple of 64.
        name: the weight's name, for the error message.
    """
    if weight.dim() != 2 or weight.numel() % NF4_BLOCK_SIZE:
        raise TunewizError(
            f"`{name}` has shape {tuple(weight.shape)}; NF4 needs a 2-D weight whose size is a multiple of "
            f"{NF4_BLOCK_SIZE}",
            hint="this model cannot use QLoRA; train it with `--set method=lora`",
        )
    n_blocks = weight.numel() // NF4_BLOCK_SIZE
    return _nf4_module().to_nf4(weight.detach().contiguous(), NF4_BLOCK_SIZE, scaler_block_size(n_blocks))


def nf4_converter(device: str | torch.device) -> Callable[[str, torch.Tensor], torch.Tensor]:
    """A ``convert`` hook for :func:`tunewiz.models.loading.load_model` that quantizes as weights load.

    Each base linear weight is moved to ``device`` alone and quantized there (fast on a GPU), so the
    GPU never holds more than one full-precision weight; every other tensor is returned unchanged.

    Args:
        device: where the NF4 weights live (the training device).
    """

    def convert(key: str, tensor: torch.Tensor) -> torch.Tensor:
        if not is_quantized_weight(key):
            return tensor
        return to_nf4(tensor.to(device), name=key)

    return convert


def load_nf4_model(model_dir: Path, *, dtype: torch.dtype, device: str | torch.device) -> LlamaForCausalLM:
    """Load a model with its decoder linears in NF4, quantizing each weight as it is read.

    Embeddings, norms, biases and ``lm_head`` are loaded in ``dtype`` on CPU, as the LoRA path loads
    them (``tunewiz.train.distributed.parallelize`` moves or shards them); NF4 weights are on ``device``.

    Args:
        model_dir: a checked model directory (``resolve_model_dir``).
        dtype: compute dtype; the NF4 weights dequantize to it.
        device: where to quantize and keep the NF4 weights.
    """
    from tunewiz.models.loading import load_model

    return load_model(model_dir, dtype=dtype, device="cpu", convert=nf4_converter(device))


def check_shardable(model: nn.Module, world_size: int) -> None:
    """Fail before sharding when an NF4 weight cannot be split evenly over ``world_size`` ranks.

    FSDP2 splits each weight by rows, and an NF4 tensor's codes, scales and scale factors must split
    at the same boundaries: rows, 64-value blocks and scale blocks must all divide by the world size.

    Args:
        model: a model after :func:`load_nf4_model`.
        world_size: number of ranks that will shard it.
    """
    if world_size == 1:
        return
    for name, param in model.named_parameters():
        if not is_nf4(param):
            continue
        counts = {
            "rows": param.shape[0],
            "blocks": param.n_blocks,
            "scale blocks": param.quantization_factor.numel(),
        }
        uneven = [f"{count} {what}" for what, count in counts.items() if count % world_size]
        if uneven:
            raise TunewizError(
                f"NF4 weight `{name}` {tuple(param.shape)} has {', '.join(uneven)}, which {world_size} ranks "
                "cannot share evenly",
                hint="use `--nproc-per-node` 1 (or a count dividing them), or `--set method=lora`",
            )


def dequantize_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with every NF4 tensor dequantized to its own (compute) dtype; others unchanged.

    Args:
        state: a full (unsharded) state dict, e.g. gathered for the final export.
    """
    return {key: value.to(value.dtype) if is_nf4(value) else value for key, value in state.items()}


def nf4_storage_bytes(model: nn.Module) -> int:
    """Bytes held by the model's NF4 weights (codes, scales, factors, lookup tables).

    Args:
        model: a model after :func:`load_nf4_model` (not sharded).
    """
    total = 0
    for param in model.parameters():
        if is_nf4(param):
            inner, _ = param.__tensor_flatten__()
            total += sum(getattr(param, n).numel() * getattr(param, n).element_size() for n in inner)
    return total
