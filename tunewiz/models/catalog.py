"""The supported models: Hub repo id, architecture numbers, licence, gating and chat template family.

The numbers are the ones in each repository's published ``config.json`` (they size the memory plan
and the catalog list of the wizard). A training run never builds a model from this table: it reads
the checkpoint's own ``config.json``. ``lookup`` also accepts a local model directory or a Hub id
already in the local Hugging Face cache, as long as its ``config.json`` is of a supported family.
Qwen3 and Gemma 3 architectures are written as the (sparse) ``config.json`` dicts their repositories
publish and read through ``LlamaConfig.from_hf``, so the catalog and a loaded checkpoint agree.

Pure Python (json + dataclasses): planning and the wizard's first question never import torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tunewiz.errors import TunewizError, did_you_mean
from tunewiz.models.config import Llama3RopeScaling, LlamaConfig

TINY_NAME = "tunewiz:tiny"
TINY_CONFIG = Path(__file__).resolve().parents[1] / "assets" / "tiny" / "config.json"


@dataclass(frozen=True)
class CatalogModel:
    """One model tunewiz knows.

    Args:
        name: short name used on the command line (``llama-3.2-1b-instruct``).
        repo_id: Hugging Face repository id, or the local path / ``tunewiz:tiny`` it was read from.
        arch: the architecture numbers of its ``config.json``.
        license: licence identifier as the Hub shows it.
        gated: the Hub asks you to accept the licence before downloading.
        chat_template: template family of the tokenizer (``llama3``, ``llama2``, ``mistral``,
            ``chatml``, ``qwen3`` (ChatML with the thinking switch), ``gemma``, ``zephyr``), or None for a
            base model without one.
        published_params: parameter count the publisher states (model card / safetensors metadata),
            or None when unknown (local models); tests check ``params`` against it.
    """

    name: str
    repo_id: str
    arch: LlamaConfig
    license: str
    gated: bool
    chat_template: str | None
    published_params: int | None = None

    @property
    def params(self) -> int:
        """Parameter count computed from the architecture numbers (tied embeddings counted once)."""
        return self.arch.num_parameters()

    @property
    def max_context(self) -> int:
        return self.arch.max_position_embeddings


def _llama3(factor: float) -> Llama3RopeScaling:
    return Llama3RopeScaling(
        factor=factor, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
    )


def _arch(
    model_type: str,
    vocab: int,
    hidden: int,
    inter: int,
    layers: int,
    heads: int,
    kv: int,
    ctx: int,
    tie: bool,
    theta: float,
    head_dim: int | None = None,
    rope: Llama3RopeScaling | None = None,
    eps: float = 1e-5,
) -> LlamaConfig:
    return LlamaConfig(
        model_type=model_type,
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim or hidden // heads,
        max_position_embeddings=ctx,
        rms_norm_eps=eps,
        rope_theta=theta,
        rope_scaling=rope,
        attention_bias=model_type == "qwen2",
        tie_word_embeddings=tie,
    )


# Architectures, keyed by family and size; the base and the instruct repository share one.
_L32_1B = _arch("llama", 128256, 2048, 8192, 16, 32, 8, 131072, True, 500000.0, 64, _llama3(32.0))
_L32_3B = _arch("llama", 128256, 3072, 8192, 28, 24, 8, 131072, True, 500000.0, 128, _llama3(32.0))
_L31_8B = _arch("llama", 128256, 4096, 14336, 32, 32, 8, 131072, False, 500000.0, 128, _llama3(8.0))
_L2_7B = _arch("llama", 32000, 4096, 11008, 32, 32, 32, 4096, False, 10000.0)
_L2_13B = _arch("llama", 32000, 5120, 13824, 40, 40, 40, 4096, False, 10000.0)
_MISTRAL_7B = _arch("mistral", 32768, 4096, 14336, 32, 32, 8, 32768, False, 1e6)
_QWEN_05B = _arch("qwen2", 151936, 896, 4864, 24, 14, 2, 32768, True, 1e6, eps=1e-6)
_QWEN_15B = _arch("qwen2", 151936, 1536, 8960, 28, 12, 2, 32768, True, 1e6, eps=1e-6)
_QWEN_3B = _arch("qwen2", 151936, 2048, 11008, 36, 16, 2, 32768, True, 1e6, eps=1e-6)
_QWEN_7B = _arch("qwen2", 152064, 3584, 18944, 28, 28, 4, 32768, False, 1e6, eps=1e-6)
_SMOL_135M = _arch("llama", 49152, 576, 1536, 30, 9, 3, 8192, True, 100000.0)
_SMOL_360M = _arch("llama", 49152, 960, 2560, 32, 15, 5, 8192, True, 100000.0)
_SMOL_17B = _arch("llama", 49152, 2048, 8192, 24, 32, 32, 8192, True, 130000.0)
_TINYLLAMA = _arch("llama", 32000, 2048, 5632, 22, 32, 4, 2048, False, 10000.0)


def _qwen3(hidden: int, inter: int, layers: int, heads: int, tie: bool) -> LlamaConfig:
    # Every Qwen3 dense size: vocab 151936, 8 kv heads of 128, context 40960, RoPE base 1e6.
    return LlamaConfig.from_hf(
        {
            "model_type": "qwen3",
            "vocab_size": 151936,
            "hidden_size": hidden,
            "intermediate_size": inter,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "max_position_embeddings": 40960,
            "rope_theta": 1_000_000.0,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": tie,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
        },
        source="catalog",
    )


def _gemma3(
    vocab: int, hidden: int, inter: int, layers: int, heads: int, kv: int, **extra: object
) -> LlamaConfig:
    # Gemma 3's config.json files name little more than this; the rest are Gemma3TextConfig's defaults
    # (head_dim 256, query_pre_attn_scalar 256, every 6th layer global, local RoPE base 1e4).
    return LlamaConfig.from_hf(
        {
            "model_type": "gemma3_text",
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": inter,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            **extra,
        },
        source="catalog",
    )


# SmolLM3: Llama-like with every 4th layer without RoPE (transformers' default no_rope_layer_interval).
_SMOLLM3_3B = LlamaConfig.from_hf(
    {
        "model_type": "smollm3",
        "vocab_size": 128256,
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "max_position_embeddings": 65536,
        "rope_theta": 5_000_000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
    source="catalog",
)
_QWEN3_06B = _qwen3(1024, 3072, 28, 16, True)
_QWEN3_17B = _qwen3(2048, 6144, 28, 16, True)
_QWEN3_4B = _qwen3(2560, 9728, 36, 32, True)
_QWEN3_8B = _qwen3(4096, 12288, 36, 32, False)
_QWEN3_14B = _qwen3(5120, 17408, 40, 40, False)
_QWEN3_32B = _qwen3(5120, 25600, 64, 64, False)
_SMALL_GEMMA = {"max_position_embeddings": 32768, "sliding_window": 512}
# 4B/12B/27B: the language model of a multimodal checkpoint; global layers with linear RoPE scaling x8.
_BIG_GEMMA = {"sliding_window": 1024, "rope_scaling": {"rope_type": "linear", "factor": 8.0}}
_GEMMA3_270M = _gemma3(262144, 640, 2048, 18, 4, 1, **_SMALL_GEMMA)
_GEMMA3_1B = _gemma3(262144, 1152, 6912, 26, 4, 1, **_SMALL_GEMMA)
_GEMMA3_4B = _gemma3(262208, 2560, 10240, 34, 8, 4, **_BIG_GEMMA)
_GEMMA3_12B = _gemma3(262208, 3840, 15360, 48, 16, 8, **_BIG_GEMMA)
_GEMMA3_27B = _gemma3(262208, 5376, 21504, 62, 32, 16, head_dim=128, query_pre_attn_scalar=168, **_BIG_GEMMA)


def _pair(
    name: str,
    base: str,
    instruct: str,
    arch: LlamaConfig,
    license: str,
    gated: bool,
    template: str,
    published: int,
) -> tuple[CatalogModel, CatalogModel]:
    return (
        CatalogModel(name, base, arch, license, gated, None, published),
        CatalogModel(f"{name}-instruct", instruct, arch, license, gated, template, published),
    )


def _qwen3_pair(size: str, arch: LlamaConfig, published: int) -> tuple[CatalogModel, CatalogModel]:
    # Qwen/Qwen3-N is the post-trained model (thinking and non-thinking modes in one); -Base the pretrained.
    return _pair(
        f"qwen3-{size.lower()}",
        f"Qwen/Qwen3-{size}-Base",
        f"Qwen/Qwen3-{size}",
        arch,
        "apache-2.0",
        False,
        "qwen3",
        published,
    )


def _gemma3_pair(size: str, arch: LlamaConfig, published: int) -> tuple[CatalogModel, CatalogModel]:
    base = "google/gemma-3-270m" if size == "270m" else f"google/gemma-3-{size}-pt"
    return _pair(
        f"gemma-3-{size}", base, f"google/gemma-3-{size}-it", arch, "gemma", True, "gemma", published
    )


# Published counts: the model cards' / Hub safetensors metadata's parameter totals. Tied embeddings count
# once (Qwen3's safetensors totals count its tied lm_head twice: 0.6B's 751,632,384 is 596,049,920 + the
# 155,582,464 duplicate). Gemma 3 4B/12B/27B: the checkpoint's total less its 0.42B SigLIP vision tower
# and projector, i.e. the language model tunewiz trains.
CATALOG: tuple[CatalogModel, ...] = (
    *_pair(
        "smollm2-135m",
        "HuggingFaceTB/SmolLM2-135M",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        _SMOL_135M,
        "apache-2.0",
        False,
        "chatml",
        134_515_008,
    ),
    *_pair(
        "smollm2-360m",
        "HuggingFaceTB/SmolLM2-360M",
        "HuggingFaceTB/SmolLM2-360M-Instruct",
        _SMOL_360M,
        "apache-2.0",
        False,
        "chatml",
        361_821_120,
    ),
    *_pair(
        "qwen2.5-0.5b",
        "Qwen/Qwen2.5-0.5B",
        "Qwen/Qwen2.5-0.5B-Instruct",
        _QWEN_05B,
        "apache-2.0",
        False,
        "chatml",
        494_032_768,
    ),
    CatalogModel(
        "tinyllama-1.1b-chat",
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        _TINYLLAMA,
        "apache-2.0",
        False,
        "zephyr",
        1_100_048_384,
    ),
    *_pair(
        "llama-3.2-1b",
        "meta-llama/Llama-3.2-1B",
        "meta-llama/Llama-3.2-1B-Instruct",
        _L32_1B,
        "llama3.2",
        True,
        "llama3",
        1_235_814_400,
    ),
    *_pair(
        "qwen2.5-1.5b",
        "Qwen/Qwen2.5-1.5B",
        "Qwen/Qwen2.5-1.5B-Instruct",
        _QWEN_15B,
        "apache-2.0",
        False,
        "chatml",
        1_543_714_304,
    ),
    *_pair(
        "smollm2-1.7b",
        "HuggingFaceTB/SmolLM2-1.7B",
        "HuggingFaceTB/SmolLM2-1.7B-Instruct",
        _SMOL_17B,
        "apache-2.0",
        False,
        "chatml",
        1_711_376_384,
    ),
    *_pair(
        "qwen2.5-3b",
        "Qwen/Qwen2.5-3B",
        "Qwen/Qwen2.5-3B-Instruct",
        _QWEN_3B,
        "qwen-research",
        False,
        "chatml",
        3_085_938_688,
    ),
    *_pair(
        "llama-3.2-3b",
        "meta-llama/Llama-3.2-3B",
        "meta-llama/Llama-3.2-3B-Instruct",
        _L32_3B,
        "llama3.2",
        True,
        "llama3",
        3_212_749_824,
    ),
    *_pair(
        "llama-2-7b",
        "meta-llama/Llama-2-7b-hf",
        "meta-llama/Llama-2-7b-chat-hf",
        _L2_7B,
        "llama2",
        True,
        "llama2",
        6_738_415_616,
    ),
    *_pair(
        "mistral-7b-v0.3",
        "mistralai/Mistral-7B-v0.3",
        "mistralai/Mistral-7B-Instruct-v0.3",
        _MISTRAL_7B,
        "apache-2.0",
        True,
        "mistral",
        7_248_023_552,
    ),
    *_pair(
        "qwen2.5-7b",
        "Qwen/Qwen2.5-7B",
        "Qwen/Qwen2.5-7B-Instruct",
        _QWEN_7B,
        "apache-2.0",
        False,
        "chatml",
        7_615_616_512,
    ),
    *_pair(
        "llama-3.1-8b",
        "meta-llama/Llama-3.1-8B",
        "meta-llama/Llama-3.1-8B-Instruct",
        _L31_8B,
        "llama3.1",
        True,
        "llama3",
        8_030_261_248,
    ),
    *_pair(
        "llama-2-13b",
        "meta-llama/Llama-2-13b-hf",
        "meta-llama/Llama-2-13b-chat-hf",
        _L2_13B,
        "llama2",
        True,
        "llama2",
        13_015_864_320,
    ),
    *_pair(
        "smollm3-3b",
        "HuggingFaceTB/SmolLM3-3B-Base",
        "HuggingFaceTB/SmolLM3-3B",
        _SMOLLM3_3B,
        "apache-2.0",
        False,
        "chatml",
        3_080_000_000,  # the model card's 3B (3.08B in the Hub's safetensors total)
    ),
    *_qwen3_pair("0.6B", _QWEN3_06B, 596_049_920),
    *_qwen3_pair("1.7B", _QWEN3_17B, 1_720_000_000),  # 2.03B safetensors total less the 0.31B tied lm_head
    *_qwen3_pair("4B", _QWEN3_4B, 4_020_000_000),
    *_qwen3_pair("8B", _QWEN3_8B, 8_190_000_000),
    *_qwen3_pair("14B", _QWEN3_14B, 14_770_000_000),
    CatalogModel("qwen3-32b", "Qwen/Qwen3-32B", _QWEN3_32B, "apache-2.0", False, "qwen3", 32_760_000_000),
    *_gemma3_pair("270m", _GEMMA3_270M, 268_000_000),  # the model card's 268M
    *_gemma3_pair("1b", _GEMMA3_1B, 999_885_952),
    *_gemma3_pair("4b", _GEMMA3_4B, 3_880_000_000),
    *_gemma3_pair("12b", _GEMMA3_12B, 11_770_000_000),
    *_gemma3_pair("27b", _GEMMA3_27B, 27_010_000_000),
)


def format_params(count: int) -> str:
    """A parameter count for people: ``8.03B`` from 0.1B up, ``135.0M`` or ``0.2M`` below.

    Args:
        count: number of parameters.
    """
    return f"{count / 1e9:.2f}B" if count >= 1e8 else f"{count / 1e6:.1f}M"


def tiny_model() -> CatalogModel | None:
    """The shipped tiny model (``tunewiz:tiny``), or None when its assets are not built."""
    if not TINY_CONFIG.is_file():
        return None
    return CatalogModel(
        TINY_NAME, TINY_NAME, LlamaConfig.from_file(TINY_CONFIG), "apache-2.0", False, "alpaca"
    )


def catalog_models() -> list[CatalogModel]:
    """Every catalog entry, smallest first, with the shipped tiny model first when it is present."""
    tiny = tiny_model()
    return ([tiny] if tiny else []) + sorted(CATALOG, key=lambda m: m.params)


def lookup(name_or_path: str) -> CatalogModel:
    """Find a model by short name, Hub repo id, local directory or Hub id in the local HF cache.

    Args:
        name_or_path: ``llama-3.2-1b``, ``meta-llama/Llama-3.2-1B`` (case-insensitive),
            ``tunewiz:tiny``, a directory holding a Llama-family ``config.json``, or a Hub id whose
            ``config.json`` is in the local Hugging Face cache.

    Returns:
        The catalog entry; for a local or cached model one built from its ``config.json``.
        Raises TunewizError (with a did-you-mean) when nothing matches.
    """
    key = name_or_path.strip()
    if key == TINY_NAME:
        tiny = tiny_model()
        if tiny is None:
            raise TunewizError(
                f"the shipped tiny model is not built (`{TINY_CONFIG}` is missing)",
                hint="reinstall tunewiz, or pick a catalog model (`tunewiz plan --model llama-3.2-1b`)",
            )
        return tiny
    for model in CATALOG:
        if key.lower() in (model.name, model.repo_id.lower()):
            return model
    local = Path(key).expanduser()
    if (local / "config.json").is_file():
        return _from_config(local / "config.json", str(local))
    cached = _cached_config(key)
    if cached is not None:
        return _from_config(cached, key)
    names = [m.name for m in CATALOG] + [m.repo_id for m in CATALOG] + [TINY_NAME]
    raise TunewizError(
        f"unknown model `{key}`{did_you_mean(key, names)}: not in the catalog, not a directory with a "
        "`config.json`, and not in the local Hugging Face cache",
        hint="list the catalog with `tunewiz plan --list-models`, or download it first with "
        "`tunewiz download REPO_ID`",
    )


def _from_config(path: Path, repo_id: str) -> CatalogModel:
    arch = LlamaConfig.from_file(path)
    return CatalogModel(
        name=repo_id.rstrip("/").split("/")[-1].lower(),
        repo_id=repo_id,
        arch=arch,
        license="unknown",
        gated=False,
        chat_template=_template_family(path.parent),
    )


def _template_family(model_dir: Path) -> str | None:
    # The chat template is either chat_template.jinja (transformers 5) or a key of tokenizer_config.json.
    text = ""
    if (model_dir / "chat_template.jinja").is_file():
        text = (model_dir / "chat_template.jinja").read_text(encoding="utf-8", errors="replace")
    elif (model_dir / "tokenizer_config.json").is_file():
        try:
            template = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8")).get(
                "chat_template"
            )
        except json.JSONDecodeError:
            template = None
        text = template if isinstance(template, str) else ""
    markers = (
        ("enable_thinking", "qwen3"),
        ("<start_of_turn>", "gemma"),
        ("<|start_header_id|>", "llama3"),
        ("<|im_start|>", "chatml"),
        ("<<SYS>>", "llama2"),
        ("[INST]", "mistral"),
        ("<|user|>", "zephyr"),
    )
    return next((family for marker, family in markers if marker in text), "custom" if text else None)


def _cached_config(repo_id: str) -> Path | None:
    # The HF cache layout is hub/models--{org}--{name}/snapshots/{commit}/config.json; reading it needs no
    # network and no huggingface_hub import (which costs ~0.3 s on the `plan` path).
    if repo_id.count("/") != 1:
        return None
    hub = Path(
        os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub"
    )
    repo_dir = hub.expanduser() / ("models--" + repo_id.replace("/", "--"))
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        candidate = repo_dir / "snapshots" / ref.read_text().strip() / "config.json"
        if candidate.is_file():
            return candidate
    snapshots = sorted((repo_dir / "snapshots").glob("*/config.json")) if repo_dir.is_dir() else []
    return snapshots[-1] if snapshots else None
