"""How each architecture tunewiz trains looks inside a GGUF file: llama.cpp's architecture name, the
hyper-parameter keys it reads, and each Hugging Face tensor under llama.cpp's name.

Names come from the ``gguf`` package's own map (``gguf.get_tensor_name_map``), so they follow llama.cpp.
Two layout facts, both from llama.cpp's ``convert_hf_to_gguf.py``:

* llama.cpp runs the ``llama`` architecture (Llama, Mistral) with *interleaved* RoPE (pairs ``2i, 2i+1``)
  while Hugging Face checkpoints use the rotate-half layout (``i, i + d/2``), so the rows of ``q_proj`` and
  ``k_proj`` are permuted per head; Qwen2/Qwen3 run with NEOX (rotate-half) RoPE and are written as they are.
* Llama 3.1 RoPE scaling is not a hyper-parameter in llama.cpp but a ``rope_freqs`` tensor of per-frequency
  divisors, computed from the same formula transformers uses.
* Gemma's RMSNorm multiplies by ``(1 + weight)`` and checkpoints store ``weight``; llama.cpp's Gemma
  graphs multiply by the stored value, so every ``*norm.weight`` is written plus one (the converter's
  ``norm_shift``). Gemma's local/global layers are written as an explicit per-layer sliding-window
  pattern, and llama.cpp derives the attention scale from ``head_dim`` (from ``hidden / heads`` for the
  27B sizes), so a ``query_pre_attn_scalar`` that matches neither is refused rather than exported wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from tunewiz.errors import TunewizError

if TYPE_CHECKING:
    import torch

    from tunewiz.models.config import LlamaConfig

# model_type -> (llama.cpp architecture, rows of q/k permuted for interleaved RoPE)
_ARCH: dict[str, tuple[str, bool]] = {
    "llama": ("LLAMA", True),
    "mistral": ("LLAMA", True),
    "qwen2": ("QWEN2", False),
    "qwen3": ("QWEN3", False),
    "gemma2": ("GEMMA2", False),
    "gemma3_text": ("GEMMA3", False),
}
# llama.cpp recognises the 27B Gemma sizes by layer count and then scales attention by hidden / heads.
_GEMMA_27B_LAYERS = {"gemma2": 46, "gemma3_text": 62}
# Checkpoint keys that carry nothing a GGUF needs (transformers recomputes them too).
_SKIPPED_SUFFIXES = ("rotary_emb.inv_freq",)


def gguf_arch_name(config: LlamaConfig) -> str:
    """llama.cpp's architecture string (``general.architecture``) for a model.

    Args:
        config: the model's architecture.

    Raises:
        TunewizError: the model type has no GGUF mapping here.
    """
    import gguf

    return gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[_arch(config)[0]]]


def _arch(config: LlamaConfig) -> tuple[str, bool]:
    if config.model_type not in _ARCH:
        raise TunewizError(
            f"GGUF export does not know model_type `{config.model_type}`; it writes {', '.join(_ARCH)}",
            hint="export the Hugging Face weights in `final/` with llama.cpp's `convert_hf_to_gguf.py`",
        )
    return _ARCH[config.model_type]


def hyperparameters(config: LlamaConfig) -> dict[str, Any]:
    """The ``{arch}.*`` metadata llama.cpp reads to build the model, keyed by GGUF key name.

    Args:
        config: the model's architecture.
    """
    import gguf

    from tunewiz.models.config import LinearRopeScaling

    arch = gguf_arch_name(config)
    keys = gguf.Keys
    values: dict[str, Any] = {
        keys.LLM.CONTEXT_LENGTH: config.max_position_embeddings,
        keys.LLM.EMBEDDING_LENGTH: config.hidden_size,
        keys.LLM.BLOCK_COUNT: config.num_hidden_layers,
        keys.LLM.FEED_FORWARD_LENGTH: config.intermediate_size,
        keys.LLM.VOCAB_SIZE: config.vocab_size,
        keys.Attention.HEAD_COUNT: config.num_attention_heads,
        keys.Attention.HEAD_COUNT_KV: config.num_key_value_heads,
        keys.Attention.KEY_LENGTH: config.head_dim,
        keys.Attention.VALUE_LENGTH: config.head_dim,
        keys.Attention.LAYERNORM_RMS_EPS: config.rms_norm_eps,
        keys.Rope.DIMENSION_COUNT: config.head_dim,
        keys.Rope.FREQ_BASE: config.rope_theta,
    }
    if isinstance(config.rope_scaling, LinearRopeScaling):
        values[keys.Rope.SCALING_TYPE] = "linear"
        values[keys.Rope.SCALING_FACTOR] = config.rope_scaling.factor
    if config.model_type.startswith("gemma"):
        values.update(_gemma_hyperparameters(config))
    return {key.format(arch=arch): value for key, value in values.items()}


def _gemma_hyperparameters(config: LlamaConfig) -> dict[str, Any]:
    """Gemma 2/3: sliding window and its per-layer pattern, local RoPE base, soft-caps."""
    import gguf

    keys = gguf.Keys
    scale_from = config.hidden_size // config.num_attention_heads
    is_27b = config.num_hidden_layers == _GEMMA_27B_LAYERS[config.model_type]
    expected = scale_from if is_27b else config.head_dim
    if config.query_pre_attn_scalar is not None and config.query_pre_attn_scalar != expected:
        raise TunewizError(
            f"query_pre_attn_scalar={config.query_pre_attn_scalar:g} differs from the {expected} llama.cpp "
            f"derives for a {config.num_hidden_layers}-layer {config.model_type}; its attention would differ",
            hint="export `final/` with llama.cpp's `convert_hf_to_gguf.py` and check it, or use the "
            "Hugging Face weights in `final/`",
        )
    values: dict[str, Any] = {}
    if config.sliding_window is not None:
        values[keys.Attention.SLIDING_WINDOW] = config.sliding_window
        types = config.layer_types or ()
        values[keys.Attention.SLIDING_WINDOW_PATTERN] = [t == "sliding_attention" for t in types]
    if config.rope_local_theta is not None:
        values[keys.Rope.FREQ_BASE_SWA] = config.rope_local_theta
    if config.attn_logit_softcapping is not None:
        values[keys.LLM.ATTN_LOGIT_SOFTCAPPING] = config.attn_logit_softcapping
    if config.final_logit_softcapping is not None:
        values[keys.LLM.FINAL_LOGIT_SOFTCAPPING] = config.final_logit_softcapping
    return values


def gguf_tensors(
    state: dict[str, torch.Tensor], config: LlamaConfig
) -> list[tuple[str, tuple[int, ...], Callable[[], torch.Tensor]]]:
    """Each tensor's GGUF name, shape and a function giving it in llama.cpp's layout as fp32.

    Nothing is converted here: each function runs when its tensor is written, so only one converted
    tensor is in memory at a time.

    Args:
        state: the merged model's state dict under Hugging Face names.
        config: its architecture.

    Raises:
        TunewizError: a tensor has no GGUF name (an architecture this map does not cover).
    """
    import gguf

    from tunewiz.models.config import Llama3RopeScaling

    arch, permute = _arch(config)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch], config.num_hidden_layers)
    out: list[tuple[str, tuple[int, ...], Callable[[], torch.Tensor]]] = []
    if isinstance(config.rope_scaling, Llama3RopeScaling):
        name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        out.append((name, (config.head_dim // 2,), lambda: _llama3_rope_factors(config)))
    for key, value in state.items():
        if key.endswith(_SKIPPED_SUFFIXES):
            continue
        if key == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp uses token_embd when `output` is absent
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise TunewizError(
                f"tensor `{key}` has no GGUF name for architecture `{arch.lower()}`",
                hint="this checkpoint has parts tunewiz's GGUF export does not know; report it with the key",
            )
        heads = None
        if permute and key.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
            heads = config.num_attention_heads
        elif permute and key.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
            heads = config.num_key_value_heads
        offset = 1.0 if config.norm_unit_offset and key.endswith("norm.weight") else 0.0
        out.append((name, tuple(value.shape), partial(_converted, value, heads, offset)))
    return out


def _converted(value: torch.Tensor, rope_heads: int | None, offset: float) -> torch.Tensor:
    import torch

    tensor = value.detach().to(torch.float32)
    if offset:
        tensor = tensor + offset  # Gemma: (1 + weight) stored as the factor llama.cpp multiplies by
    return _interleave_rope_rows(tensor, rope_heads) if rope_heads else tensor


def _interleave_rope_rows(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of a q/k projection reordered from rotate-half RoPE to interleaved RoPE, per head.

    Within a head of width d, HF rotates row ``i`` with row ``i + d/2``; llama.cpp's interleaved RoPE
    rotates rows ``2i`` and ``2i+1``. So row ``j·d/2 + i`` (half j, pair i) moves to ``2i + j``.

    Args:
        weight: [n_heads·d, in] weight or [n_heads·d] bias.
        n_heads: heads in this projection (key/value heads for ``k_proj``).
    """
    rows = weight.shape[0]
    return (
        weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])
        .transpose(1, 2)
        .reshape(weight.shape)
        .contiguous()
    )


def _llama3_rope_factors(config: LlamaConfig) -> torch.Tensor:
    """[head_dim / 2] divisors of the RoPE frequencies for Llama 3.1 scaling (llama.cpp's ``rope_freqs``).

    Same piecewise rule as transformers' ``_compute_llama3_parameters``: wavelengths shorter than
    ``original / high_freq_factor`` keep their frequency (1), longer than ``original / low_freq_factor``
    are divided by ``factor``, and the band between is interpolated smoothly.
    """
    import torch

    from tunewiz.models.config import Llama3RopeScaling

    scaling = config.rope_scaling
    assert isinstance(scaling, Llama3RopeScaling)
    dim = config.head_dim
    freqs = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
    factors = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(scaling.factor)
        else:
            smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
                scaling.high_freq_factor - scaling.low_freq_factor
            )
            factors.append(1 / ((1 - smooth) / scaling.factor + smooth))
    return torch.tensor(factors, dtype=torch.float32)
