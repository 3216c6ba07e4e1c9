"""The architecture numbers of a decoder-only model, read from (and written back to) Hugging Face's
``config.json``.

One frozen dataclass covers Llama 2/3, Mistral, Qwen2, Qwen3, Gemma 2 and Gemma 3 (text): the families
differ only in switches the decoder reads (``tunewiz/models/llama.py``): which projections carry a
bias, RoPE scaling, sliding windows and which layers use them, q/k norms (Qwen3, Gemma 3), Gemma's
``(1 + weight)`` norms, norms after attention and MLP, GeGLU, scaled embeddings, the attention scale
and soft-capping (Gemma 2). Both the transformers 4 spelling (``rope_theta`` + ``rope_scaling``) and
the transformers 5 one (``rope_parameters``, per layer type for Gemma 3) are read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewiz.errors import TunewizError

# model_type -> the transformers class that loads it; also how an unknown model_type is recognised
# from its `architectures` list.
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "smollm3": "SmolLM3ForCausalLM",
}
# Multimodal wrappers whose language model tunewiz loads alone (config `text_config`, weights under the
# language model's prefix; the vision tower is skipped).
TEXT_OF_MULTIMODAL = {"gemma3": "gemma3_text"}
# Recognised model types tunewiz does not implement, and why (named in the error).
UNSUPPORTED = {
    "qwen3_moe": "mixture of experts",
    "qwen2_moe": "mixture of experts",
    "mixtral": "mixture of experts",
    "qwen3_next": "hybrid linear attention",
    "qwen3_5": "hybrid linear attention",
    "qwen3_5_moe": "hybrid linear attention with mixture of experts",
    "gemma3n": "per-layer embeddings and MatFormer blocks",
    "qwen2_vl": "a vision-language model",
    "qwen2_5_vl": "a vision-language model",
    "qwen3_vl": "a vision-language model",
    "llava": "a vision-language model",
    "mllama": "a vision-language model",
}
# Values transformers' config classes assume when a Hub `config.json` leaves them out (Gemma's configs
# are sparse: e.g. gemma-3-4b's text_config names only six keys).
_FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "qwen3": {"head_dim": 128, "rms_norm_eps": 1e-6},
    "gemma2": {
        "vocab_size": 256000,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "hidden_activation": "gelu_pytorch_tanh",
        "query_pre_attn_scalar": 256,
        "sliding_window": 4096,
        "final_logit_softcapping": 30.0,
        "attn_logit_softcapping": 50.0,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "pad_token_id": 0,
    },
    "gemma3_text": {
        "vocab_size": 262208,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 10_000.0,
        "tie_word_embeddings": True,
        "hidden_activation": "gelu_pytorch_tanh",
        "query_pre_attn_scalar": 256,
        "sliding_window": 4096,
        "sliding_window_pattern": 6,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "pad_token_id": 0,
    },
}
_GEMMA = ("gemma2", "gemma3_text")
_TOKEN_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")
FULL, SLIDING = "full_attention", "sliding_attention"


@dataclass(frozen=True)
class Llama3RopeScaling:
    """Llama 3.1's RoPE frequency scaling (``rope_type: llama3``).

    Args:
        factor: divisor applied to low frequencies (8 in Llama 3.1).
        low_freq_factor: wavelengths above ``original_max_position_embeddings / low_freq_factor`` are scaled.
        high_freq_factor: wavelengths below ``original_max_position_embeddings / high_freq_factor`` are kept.
        original_max_position_embeddings: the pre-training context length (8192 in Llama 3.1).
    """

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class LinearRopeScaling:
    """Position interpolation (``rope_type: linear``): every inverse frequency divided by ``factor``
    (Gemma 3 4B/12B/27B global layers, factor 8).

    Args:
        factor: the divisor.
    """

    factor: float


@dataclass(frozen=True)
class LlamaConfig:
    """Architecture of a Llama-family decoder. Field names are Hugging Face's.

    Args:
        model_type: ``llama``, ``mistral``, ``qwen2``, ``qwen3``, ``gemma2`` or ``gemma3_text``.
        vocab_size: rows of the embedding and of ``lm_head``.
        hidden_size: model width D.
        intermediate_size: SwiGLU width of the MLP.
        num_hidden_layers: number of decoder blocks.
        num_attention_heads: query heads H.
        num_key_value_heads: key/value heads (H for multi-head attention, fewer for GQA).
        head_dim: per-head width; D // H unless the checkpoint says otherwise.
        max_position_embeddings: context length the model was trained for.
        rms_norm_eps: epsilon of every RMSNorm.
        rope_theta: RoPE base frequency.
        rope_scaling: Llama 3.1 or linear frequency scaling (global layers only), or None for plain RoPE.
        attention_bias: q/k/v projections have a bias (Qwen2; Llama when ``attention_bias`` is set).
        o_proj_bias: o_proj has a bias (Llama with ``attention_bias``; never Qwen2 or Mistral).
        mlp_bias: gate/up/down projections have a bias.
        tie_word_embeddings: ``lm_head.weight`` is ``model.embed_tokens.weight``.
        sliding_window: attention window in tokens of the sliding layers (every layer for Mistral), or
            None for full attention everywhere.
        bos_token_id: beginning-of-sequence token.
        eos_token_id: end-of-sequence token(s); Llama 3 instruct models list several.
        pad_token_id: padding token (its embedding row gets no gradient, as in transformers).
        hidden_act: ``silu`` (SwiGLU) or ``gelu_pytorch_tanh`` (Gemma's GeGLU, tanh-approximated GELU).
        norm_unit_offset: RMSNorm scales by ``1 + weight`` (Gemma; the stored weight is 0-centred) and
            multiplies in fp32 before casting back.
        qk_norm: RMSNorm over each head's queries and keys before RoPE (``q_norm``, ``k_norm``: Qwen3,
            Gemma 3).
        sandwich_norm: norms after attention and MLP too (Gemma 2/3: ``post_attention_layernorm`` normalises
            the attention output, ``pre_feedforward_layernorm``/``post_feedforward_layernorm`` wrap the MLP).
        scale_embeddings: multiply embeddings by sqrt(hidden_size), rounded to the model dtype (Gemma).
        query_pre_attn_scalar: attention scores are scaled by ``query_pre_attn_scalar ** -0.5`` instead of
            ``head_dim ** -0.5`` (Gemma).
        attn_logit_softcapping: ``cap * tanh(scores / cap)`` on attention scores (Gemma 2), or None.
        final_logit_softcapping: ``cap * tanh(logits / cap)`` on the output logits (Gemma 2), or None.
        layer_types: per layer ``full_attention`` or ``sliding_attention`` (Gemma's local/global pattern);
            None means every layer alike (windowed when ``sliding_window`` is set, as in Mistral).
        rope_layers: per layer, whether it applies RoPE (SmolLM3 leaves it out of every 4th layer: its
            ``no_rope_layers`` lists 1 for RoPE, 0 for none); None = every layer.
        rope_local_theta: RoPE base of the sliding layers, which also skip ``rope_scaling`` (Gemma 3's
            ``rope_local_base_freq``); None = the sliding layers use the global RoPE.
        text_of_multimodal: read from a multimodal checkpoint (``gemma3``): its weights carry the language
            model's prefix and a vision tower, which loading strips and skips. Not written back:
            ``to_hf`` describes the text-only model.
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: Llama3RopeScaling | LinearRopeScaling | None = None
    attention_bias: bool = False
    o_proj_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    sliding_window: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    hidden_act: str = "silu"
    norm_unit_offset: bool = False
    qk_norm: bool = False
    sandwich_norm: bool = False
    scale_embeddings: bool = False
    query_pre_attn_scalar: float | None = None
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None
    layer_types: tuple[str, ...] | None = None
    rope_local_theta: float | None = None
    rope_layers: tuple[bool, ...] | None = None
    text_of_multimodal: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise TunewizError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}",
                hint="check the model's `config.json`",
            )
        if self.layer_types is not None and len(self.layer_types) != self.num_hidden_layers:
            raise TunewizError(
                f"layer_types lists {len(self.layer_types)} layers, "
                f"num_hidden_layers is {self.num_hidden_layers}",
                hint="check the model's `config.json`",
            )

    def layer_window(self, layer_idx: int) -> int | None:
        """The attention window of layer ``layer_idx`` in tokens, or None for full attention.

        Args:
            layer_idx: 0-based decoder block index.
        """
        if self.layer_types is None or self.layer_types[layer_idx] == SLIDING:
            return self.sliding_window
        return None

    def layer_rope_is_local(self, layer_idx: int) -> bool:
        """Whether layer ``layer_idx`` uses the local RoPE base (Gemma 3 sliding layers).

        Args:
            layer_idx: 0-based decoder block index.
        """
        return self.rope_local_theta is not None and self.layer_window(layer_idx) is not None

    @classmethod
    def from_hf(cls, d: dict[str, Any], source: str = "config.json") -> LlamaConfig:
        """Read a Hugging Face ``config.json`` dict.

        Args:
            d: the parsed ``config.json``; for a multimodal ``gemma3`` one, its ``text_config`` is read.
            source: where ``d`` came from, named in error messages.

        Returns:
            The config. Raises TunewizError for an unsupported model type, activation, RoPE scaling or
            sliding-window layout.
        """
        model_type = _model_type(d, source)
        multimodal = d.get("model_type") in TEXT_OF_MULTIMODAL
        if multimodal:
            # Token ids and tying may sit at the top level only (gemma-3-4b-it: `eos_token_id: [1, 106]`).
            outer = {k: d[k] for k in ("tie_word_embeddings", *_TOKEN_KEYS) if d.get(k) is not None}
            d = {**outer, **(d.get("text_config") or {}), "model_type": model_type}
        d = {**_FAMILY_DEFAULTS.get(model_type, {}), **d}
        gemma = model_type in _GEMMA
        act = (
            d.get("hidden_activation", d.get("hidden_act", "silu")) if gemma else d.get("hidden_act", "silu")
        )
        if act != ("gelu_pytorch_tanh" if gemma else "silu"):
            raise TunewizError(
                f"{source}: hidden_act `{act}` is not supported for {model_type}; tunewiz implements "
                + ("`gelu_pytorch_tanh`" if gemma else "`silu`")
            )
        if d.get("use_bidirectional_attention"):
            raise TunewizError(
                f"{source}: `use_bidirectional_attention: true` (an embedding model) is not supported",
                hint="pick a causal language model",
            )
        try:
            hidden, heads = int(d["hidden_size"]), int(d["num_attention_heads"])
            layers = int(d["num_hidden_layers"])
            rope_theta, rope_scaling, rope_local = _rope(d, source)
            window, layer_types = _sliding_window(d, model_type, layers, source)
            eos = d.get("eos_token_id")
            llama_bias = model_type in ("llama", "smollm3") and bool(d.get("attention_bias"))
            return cls(
                model_type=model_type,
                vocab_size=int(d["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(d["intermediate_size"]),
                num_hidden_layers=layers,
                num_attention_heads=heads,
                num_key_value_heads=int(d.get("num_key_value_heads") or heads),
                head_dim=int(d.get("head_dim") or hidden // heads),
                max_position_embeddings=int(d["max_position_embeddings"]),
                rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
                rope_theta=rope_theta,
                rope_scaling=rope_scaling,
                # transformers' Qwen2 hard-codes bias on q/k/v and none on o_proj; Mistral has no biases;
                # Qwen3 and Gemma put `attention_bias` on all four.
                attention_bias=model_type == "qwen2" or llama_bias or _all_attention_bias(d, model_type),
                o_proj_bias=llama_bias or _all_attention_bias(d, model_type),
                mlp_bias=model_type in ("llama", "smollm3") and bool(d.get("mlp_bias")),
                tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                sliding_window=window,
                bos_token_id=d.get("bos_token_id"),
                eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
                pad_token_id=d.get("pad_token_id"),
                hidden_act=act,
                norm_unit_offset=gemma,
                qk_norm=model_type in ("qwen3", "gemma3_text"),
                sandwich_norm=gemma,
                scale_embeddings=gemma,
                query_pre_attn_scalar=float(d["query_pre_attn_scalar"]) if gemma else None,
                attn_logit_softcapping=_float_or_none(d.get("attn_logit_softcapping")) if gemma else None,
                final_logit_softcapping=_float_or_none(d.get("final_logit_softcapping")) if gemma else None,
                layer_types=layer_types,
                rope_local_theta=rope_local if model_type == "gemma3_text" else None,
                rope_layers=_rope_layers(d, layers) if model_type == "smollm3" else None,
                text_of_multimodal=multimodal,
            )
        except KeyError as e:
            raise TunewizError(
                f"{source} has no `{e.args[0]}`", hint="is this the `config.json` of a causal language model?"
            ) from None

    @classmethod
    def from_file(cls, path: str | Path) -> LlamaConfig:
        """Read a ``config.json`` file.

        Args:
            path: the file.
        """
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TunewizError(
                f"`{path}` does not exist", hint="a model directory needs its `config.json`"
            ) from None
        except json.JSONDecodeError as e:
            raise TunewizError(f"`{path}` is not valid JSON: {e}") from None
        return cls.from_hf(d, source=f"`{path}`")

    def to_hf(self) -> dict[str, Any]:
        """The ``config.json`` dict transformers (4.x and 5.x) loads this architecture from (for a
        multimodal source, the text-only model: ``gemma3_text``)."""
        rope: dict[str, Any] = {"rope_type": "default"}
        if isinstance(self.rope_scaling, Llama3RopeScaling):
            rope = {"rope_type": "llama3", **vars(self.rope_scaling)}
        elif isinstance(self.rope_scaling, LinearRopeScaling):
            rope = {"rope_type": "linear", "factor": self.rope_scaling.factor}
        rope_parameters: dict[str, Any] = {**rope, "rope_theta": self.rope_theta}
        if self.rope_local_theta is not None:  # transformers 5's Gemma 3: one entry per layer type
            rope_parameters = {
                FULL: rope_parameters,
                SLIDING: {"rope_type": "default", "rope_theta": self.rope_local_theta},
            }
        d: dict[str, Any] = {
            "architectures": [ARCHITECTURES[self.model_type]],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": self.hidden_act,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            # transformers 4 reads rope_theta/rope_scaling; 5 reads rope_parameters (and converts the former).
            "rope_theta": self.rope_theta,
            "rope_scaling": rope if self.rope_scaling is not None else None,
            "rope_parameters": rope_parameters,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_id)
            if isinstance(self.eos_token_id, tuple)
            else self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        }
        if self.model_type in ("llama", "smollm3"):
            d["attention_bias"] = self.attention_bias
            d["mlp_bias"] = self.mlp_bias
        if self.model_type == "smollm3":
            d["use_sliding_window"] = False
            d["no_rope_layers"] = [int(r) for r in self.rope_layers or [True] * self.num_hidden_layers]
        if self.model_type in ("mistral", "gemma2", "gemma3_text"):
            d["sliding_window"] = self.sliding_window
        if self.model_type in ("qwen2", "qwen3"):
            d["use_sliding_window"] = False
        if self.model_type in ("qwen3", "gemma2", "gemma3_text"):
            d["attention_bias"] = self.o_proj_bias
        if self.model_type in _GEMMA:
            d["hidden_activation"] = self.hidden_act
            scalar = self.query_pre_attn_scalar
            # transformers 5 types it `int` and validates; fractional values stay floats.
            d["query_pre_attn_scalar"] = int(scalar) if scalar is not None and scalar.is_integer() else scalar
            d["attn_logit_softcapping"] = self.attn_logit_softcapping
            d["final_logit_softcapping"] = self.final_logit_softcapping
            d["layer_types"] = (
                list(self.layer_types) if self.layer_types else [SLIDING] * self.num_hidden_layers
            )
        if self.rope_local_theta is not None:
            d["rope_local_base_freq"] = self.rope_local_theta
        return d

    def num_parameters(self) -> int:
        """Exact parameter count; tied embeddings are counted once."""
        d, q, kv = (
            self.hidden_size,
            self.num_attention_heads * self.head_dim,
            self.num_key_value_heads * self.head_dim,
        )
        attn = d * (q + 2 * kv) + q * d + (q + 2 * kv) * self.attention_bias + d * self.o_proj_bias
        attn += 2 * self.head_dim * self.qk_norm  # q_norm, k_norm
        mlp = 3 * d * self.intermediate_size + (2 * self.intermediate_size + d) * self.mlp_bias
        per_layer = attn + mlp + (4 if self.sandwich_norm else 2) * d  # RMSNorm weights
        embeddings = self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return embeddings + self.num_hidden_layers * per_layer + d  # + final norm


def _model_type(d: dict[str, Any], source: str) -> str:
    model_type = d.get("model_type")
    if model_type in TEXT_OF_MULTIMODAL:
        return TEXT_OF_MULTIMODAL[model_type]
    if model_type in ARCHITECTURES:
        return model_type
    supported = ", ".join([*ARCHITECTURES, *(f"{k} (its language model)" for k in TEXT_OF_MULTIMODAL)])
    if model_type in UNSUPPORTED:
        raise TunewizError(
            f"{source}: model_type `{model_type}` ({UNSUPPORTED[model_type]}) is not supported; "
            f"tunewiz supports {supported}",
            hint="pick a dense model of a supported family (`tunewiz plan --list-models` lists the catalog)",
        )
    by_class = {cls: mt for mt, cls in ARCHITECTURES.items()}
    for arch in d.get("architectures") or []:
        if arch in by_class:
            return by_class[arch]
    raise TunewizError(
        f"{source}: model_type `{model_type}` (architectures {d.get('architectures')}) is not supported; "
        f"tunewiz supports {supported}",
        hint="pick a Llama, Mistral, Qwen2/3 or Gemma 2/3 model "
        "(`tunewiz plan --list-models` lists the catalog)",
    )


def _rope_layers(d: dict[str, Any], layers: int) -> tuple[bool, ...] | None:
    """SmolLM3's ``no_rope_layers`` (1 = RoPE, 0 = none), or every ``no_rope_layer_interval``-th layer
    without RoPE (transformers' default, 4); None when every layer has RoPE."""
    flags = d.get("no_rope_layers")
    if flags is None:
        interval = int(d.get("no_rope_layer_interval", 4))
        flags = [int((i + 1) % interval != 0) for i in range(layers)]
    rope = tuple(bool(f) for f in flags)
    return None if all(rope) else rope


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _all_attention_bias(d: dict[str, Any], model_type: str) -> bool:
    return model_type in ("qwen3", *_GEMMA) and bool(d.get("attention_bias"))


def _rope(
    d: dict[str, Any], source: str
) -> tuple[float, Llama3RopeScaling | LinearRopeScaling | None, float | None]:
    """(global base, global scaling, local base or None), from either transformers spelling."""
    params = d.get("rope_parameters") or d.get("rope_scaling") or {}
    local = d.get("rope_local_base_freq")
    if FULL in params or SLIDING in params:  # transformers 5's Gemma 3: one entry per layer type
        sliding = params.get(SLIDING) or {}
        if sliding.get("rope_type", "default") != "default":
            raise TunewizError(f"{source}: RoPE scaling on the sliding layers is not supported")
        local = sliding.get("rope_theta", local)
        params = params.get(FULL) or {}
    elif d.get("rope_parameters") and d.get("rope_scaling"):
        params = {**d["rope_parameters"], **d["rope_scaling"]}
    theta = float(params.get("rope_theta", d.get("rope_theta", 10000.0)))
    local = float(local) if local is not None else None
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        return theta, None, local
    if rope_type == "linear":
        return theta, LinearRopeScaling(factor=float(params["factor"])), local
    if rope_type != "llama3":
        raise TunewizError(
            f"{source}: unsupported rope_scaling type `{rope_type}`; tunewiz supports plain RoPE, "
            "`linear` and `llama3`",
            hint="pick a model without dynamic/yarn/longrope RoPE scaling",
        )
    return (
        theta,
        Llama3RopeScaling(
            factor=float(params["factor"]),
            low_freq_factor=float(params["low_freq_factor"]),
            high_freq_factor=float(params["high_freq_factor"]),
            original_max_position_embeddings=int(params["original_max_position_embeddings"]),
        ),
        local,
    )


def _sliding_window(
    d: dict[str, Any], model_type: str, layers: int, source: str
) -> tuple[int | None, tuple[str, ...] | None]:
    """(window, per-layer types or None when every layer is alike)."""
    if model_type in ("qwen2", "qwen3", "smollm3") and d.get("use_sliding_window"):
        # transformers applies Qwen2/3's window to layers >= max_window_layers only; not implemented here.
        raise TunewizError(
            f"{source}: `use_sliding_window: true` is not supported for {model_type}",
            hint="set `use_sliding_window` to false (Qwen checkpoints are trained with full attention)",
        )
    window = d.get("sliding_window") if model_type in ("mistral", *_GEMMA) else None
    if window is not None and not (isinstance(window, int) and window > 0):
        raise TunewizError(f"{source}: sliding_window must be a positive integer or null, got {window!r}")
    if model_type not in _GEMMA:
        return window, None
    types = d.get("layer_types")
    if types is None:
        # The older spelling: every `pattern`-th layer is global (Gemma 2: 2, Gemma 3: 6).
        pattern = int(d.get("sliding_window_pattern", 2 if model_type == "gemma2" else 6))
        types = [SLIDING if (i + 1) % pattern else FULL for i in range(layers)]
    unknown = sorted(set(types) - {FULL, SLIDING})
    if unknown:
        raise TunewizError(
            f"{source}: layer type `{unknown[0]}` is not supported; tunewiz knows {FULL}, {SLIDING}"
        )
    if window is None:
        return None, None
    return window, tuple(types)
