"""The architecture numbers of a Llama-family model, read from (and written back to) Hugging Face's
``config.json``.

One frozen dataclass covers Llama 2/3, Mistral and Qwen2: they differ only in which projections carry
a bias, in RoPE scaling and in Mistral's sliding window. Both the transformers 4 spelling
(``rope_theta`` + ``rope_scaling``) and the transformers 5 one (``rope_parameters``) are read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewiz.errors import TunewizError

# model_type -> the transformers class that loads it; also how an unknown model_type is recognised
# from its `architectures` list.
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


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
class LlamaConfig:
    """Architecture of a Llama-family decoder. Field names are Hugging Face's.

    Args:
        model_type: ``llama``, ``mistral`` or ``qwen2``.
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
        rope_scaling: Llama 3.1 frequency scaling, or None for plain RoPE.
        attention_bias: q/k/v projections have a bias (Qwen2; Llama when ``attention_bias`` is set).
        o_proj_bias: o_proj has a bias (Llama with ``attention_bias``; never Qwen2 or Mistral).
        mlp_bias: gate/up/down projections have a bias.
        tie_word_embeddings: ``lm_head.weight`` is ``model.embed_tokens.weight``.
        sliding_window: Mistral's attention window in tokens, or None for full attention.
        bos_token_id: beginning-of-sequence token.
        eos_token_id: end-of-sequence token(s); Llama 3 instruct models list several.
        pad_token_id: padding token (its embedding row gets no gradient, as in transformers).
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
    rope_scaling: Llama3RopeScaling | None = None
    attention_bias: bool = False
    o_proj_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    sliding_window: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise TunewizError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}",
                hint="check the model's `config.json`",
            )

    @classmethod
    def from_hf(cls, d: dict[str, Any], source: str = "config.json") -> LlamaConfig:
        """Read a Hugging Face ``config.json`` dict.

        Args:
            d: the parsed ``config.json``.
            source: where ``d`` came from, named in error messages.

        Returns:
            The config. Raises TunewizError for an unsupported model type, activation, RoPE scaling or
            sliding-window layout.
        """
        model_type = _model_type(d, source)
        if d.get("hidden_act", "silu") != "silu":
            raise TunewizError(
                f"{source}: hidden_act `{d['hidden_act']}` is not supported; tunewiz implements `silu`"
            )
        try:
            hidden, heads = int(d["hidden_size"]), int(d["num_attention_heads"])
            rope_theta, rope_scaling = _rope(d, source)
            eos = d.get("eos_token_id")
            return cls(
                model_type=model_type,
                vocab_size=int(d["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(d["intermediate_size"]),
                num_hidden_layers=int(d["num_hidden_layers"]),
                num_attention_heads=heads,
                num_key_value_heads=int(d.get("num_key_value_heads") or heads),
                head_dim=int(d.get("head_dim") or hidden // heads),
                max_position_embeddings=int(d["max_position_embeddings"]),
                rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
                rope_theta=rope_theta,
                rope_scaling=rope_scaling,
                # transformers' Qwen2 hard-codes bias on q/k/v and none on o_proj; Mistral has no biases.
                attention_bias=model_type == "qwen2"
                or (model_type == "llama" and bool(d.get("attention_bias"))),
                o_proj_bias=model_type == "llama" and bool(d.get("attention_bias")),
                mlp_bias=model_type == "llama" and bool(d.get("mlp_bias")),
                tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                sliding_window=_sliding_window(d, model_type, source),
                bos_token_id=d.get("bos_token_id"),
                eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
                pad_token_id=d.get("pad_token_id"),
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
        """The ``config.json`` dict transformers (4.x and 5.x) loads this architecture from."""
        rope: dict[str, Any] = {"rope_type": "default"}
        if self.rope_scaling is not None:
            rope = {"rope_type": "llama3", **vars(self.rope_scaling)}
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
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            # transformers 4 reads rope_theta/rope_scaling; 5 reads rope_parameters (and converts the former).
            "rope_theta": self.rope_theta,
            "rope_scaling": rope if self.rope_scaling is not None else None,
            "rope_parameters": {**rope, "rope_theta": self.rope_theta},
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_id)
            if isinstance(self.eos_token_id, tuple)
            else self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        }
        if self.model_type == "llama":
            d["attention_bias"] = self.attention_bias
            d["mlp_bias"] = self.mlp_bias
        if self.model_type == "mistral":
            d["sliding_window"] = self.sliding_window
        if self.model_type == "qwen2":
            d["use_sliding_window"] = False
        return d

    def num_parameters(self) -> int:
        """Exact parameter count; tied embeddings are counted once."""
        d, q, kv = (
            self.hidden_size,
            self.num_attention_heads * self.head_dim,
            self.num_key_value_heads * self.head_dim,
        )
        attn = d * (q + 2 * kv) + q * d + (q + 2 * kv) * self.attention_bias + d * self.o_proj_bias
        mlp = 3 * d * self.intermediate_size + (2 * self.intermediate_size + d) * self.mlp_bias
        per_layer = attn + mlp + 2 * d  # two RMSNorm weights
        embeddings = self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return embeddings + self.num_hidden_layers * per_layer + d  # + final norm


def _model_type(d: dict[str, Any], source: str) -> str:
    model_type = d.get("model_type")
    if model_type in ARCHITECTURES:
        return model_type
    by_class = {cls: mt for mt, cls in ARCHITECTURES.items()}
    for arch in d.get("architectures") or []:
        if arch in by_class:
            return by_class[arch]
    raise TunewizError(
        f"{source}: model_type `{model_type}` (architectures {d.get('architectures')}) is not supported; "
        f"tunewiz supports {', '.join(ARCHITECTURES)}",
        hint="pick a Llama, Mistral or Qwen2 model (`tunewiz models` lists the catalog)",
    )


def _rope(d: dict[str, Any], source: str) -> tuple[float, Llama3RopeScaling | None]:
    # transformers 5 writes `rope_parameters` (with rope_theta inside); 4.x writes rope_theta + rope_scaling.
    params = d.get("rope_parameters") or d.get("rope_scaling") or {}
    theta = float(params.get("rope_theta", d.get("rope_theta", 10000.0)))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        return theta, None
    if rope_type != "llama3":
        raise TunewizError(
            f"{source}: unsupported rope_scaling type `{rope_type}`; "
            "tunewiz supports plain RoPE and `llama3`",
            hint="pick a model without linear/dynamic/yarn RoPE scaling",
        )
    return theta, Llama3RopeScaling(
        factor=float(params["factor"]),
        low_freq_factor=float(params["low_freq_factor"]),
        high_freq_factor=float(params["high_freq_factor"]),
        original_max_position_embeddings=int(params["original_max_position_embeddings"]),
    )


def _sliding_window(d: dict[str, Any], model_type: str, source: str) -> int | None:
    if model_type == "qwen2" and d.get("use_sliding_window"):
        # transformers applies Qwen2's window to layers >= max_window_layers only; not implemented here.
        raise TunewizError(
            f"{source}: Qwen2 `use_sliding_window: true` is not supported",
            hint="set `use_sliding_window` to false (Qwen2 checkpoints are trained with full attention)",
        )
    window = d.get("sliding_window") if model_type == "mistral" else None
    if window is not None and not (isinstance(window, int) and window > 0):
        raise TunewizError(f"{source}: sliding_window must be a positive integer or null, got {window!r}")
    return window
