"""The model catalog: parameter counts against the publishers', lookup by name, path and HF cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunewiz.errors import TunewizError
from tunewiz.models.catalog import CATALOG, catalog_models, lookup

REQUIRED = [
    "llama-3.2-1b",
    "llama-3.2-1b-instruct",
    "llama-3.2-3b",
    "llama-3.2-3b-instruct",
    "llama-3.1-8b",
    "llama-2-7b",
    "llama-2-13b",
    "mistral-7b-v0.3",
    "qwen2.5-0.5b",
    "qwen2.5-1.5b",
    "qwen2.5-3b",
    "qwen2.5-7b",
    "smollm2-135m",
    "smollm2-360m",
    "smollm2-1.7b",
    "tinyllama-1.1b-chat",
    *(f"qwen3-{size}{kind}" for size in ("0.6b", "1.7b", "4b", "8b", "14b") for kind in ("", "-instruct")),
    "qwen3-32b",
    "smollm3-3b",
    "smollm3-3b-instruct",
    *(f"gemma-3-{size}{kind}" for size in ("270m", "1b", "4b", "12b", "27b") for kind in ("", "-instruct")),
]


def test_catalog_has_every_required_model() -> None:
    names = {m.name for m in CATALOG}
    assert set(REQUIRED) <= names
    assert len(CATALOG) == 50


@pytest.mark.parametrize("model", CATALOG, ids=lambda m: m.name)
def test_param_count_within_one_percent_of_published(model) -> None:
    assert model.published_params is not None
    assert abs(model.params / model.published_params - 1) < 0.01


def test_known_architecture_numbers() -> None:
    m = lookup("meta-llama/Llama-3.1-8B")  # case-insensitive repo id
    a = m.arch
    assert (a.vocab_size, a.num_hidden_layers, a.hidden_size, a.intermediate_size) == (
        128256,
        32,
        4096,
        14336,
    )
    assert (a.num_attention_heads, a.num_key_value_heads, a.tie_word_embeddings) == (32, 8, False)
    assert m.gated and m.license == "llama3.1" and m.max_context == 131072
    q = lookup("qwen2.5-0.5b-instruct")
    assert q.arch.attention_bias and q.arch.tie_word_embeddings and q.chat_template == "chatml"
    assert lookup("llama-3.2-1b").chat_template is None  # base model
    q3 = lookup("Qwen/Qwen3-8B")
    assert (q3.arch.model_type, q3.arch.qk_norm, q3.arch.head_dim, q3.arch.tie_word_embeddings) == (
        "qwen3",
        True,
        128,
        False,
    )
    assert q3.chat_template == "qwen3" and not q3.gated and lookup("qwen3-4b").arch.tie_word_embeddings
    g = lookup("google/gemma-3-4b-it").arch  # the language model of the multimodal checkpoint
    assert (g.vocab_size, g.sliding_window, g.rope_local_theta, g.rope_scaling.factor) == (
        262208,
        1024,
        1e4,
        8.0,
    )
    assert g.layer_types.count("full_attention") == 5 and g.layer_types[5] == "full_attention"
    assert (
        g.norm_unit_offset and g.sandwich_norm and g.scale_embeddings and g.hidden_act == "gelu_pytorch_tanh"
    )
    assert lookup("gemma-3-27b").arch.query_pre_attn_scalar == 168 and lookup("gemma-3-1b-instruct").gated


def _write_config(d: Path) -> None:
    d.mkdir(parents=True)
    (d / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "vocab_size": 1000,
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "max_position_embeddings": 512,
                "tie_word_embeddings": True,
            }
        )
    )
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": "<|im_start|>{{ x }}"}))


def test_lookup_local_directory(tmp_path: Path) -> None:
    _write_config(tmp_path / "mymodel")
    m = lookup(str(tmp_path / "mymodel"))
    # 1000*64 (tied) + 2 * (64*(64+2*32) + 64*64 + 3*64*128 + 2*64) + 64
    assert m.params == 64000 + 2 * (64 * 128 + 4096 + 24576 + 128) + 64
    assert m.chat_template == "chatml" and m.max_context == 512


def test_lookup_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "hub" / "models--someone--small-llama"
    _write_config(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    m = lookup("someone/small-llama")
    assert m.repo_id == "someone/small-llama" and m.arch.hidden_size == 64


def test_unknown_model_suggests_the_closest() -> None:
    with pytest.raises(TunewizError) as err:
        lookup("llama-3.2-1")
    assert "unknown model `llama-3.2-1`" in err.value.message
    assert "did you mean `llama-3.2-1b`" in err.value.message


def test_catalog_sorted_by_size() -> None:
    sizes = [m.params for m in catalog_models() if m.name != "tunewiz:tiny"]
    assert sizes == sorted(sizes)


def test_lookup_local_gemma3_multimodal_and_qwen3_templates(tmp_path: Path) -> None:
    # gemma-3-4b-it's config.json: the text config names six keys, the rest are Gemma3TextConfig defaults.
    gemma = tmp_path / "gemma"
    gemma.mkdir()
    text_config = {
        "hidden_size": 2560,
        "intermediate_size": 10240,
        "model_type": "gemma3_text",
        "num_hidden_layers": 34,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024,
    }
    config = {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "text_config": text_config,
    }
    (gemma / "config.json").write_text(json.dumps({**config, "eos_token_id": [1, 106], "vision_config": {}}))
    (gemma / "tokenizer_config.json").write_text(json.dumps({"chat_template": "<start_of_turn>{{ x }}"}))
    m = lookup(str(gemma))
    assert m.arch == lookup("gemma-3-4b").arch.__class__(
        **{**vars(lookup("gemma-3-4b").arch), "eos_token_id": (1, 106)}
    )
    assert m.chat_template == "gemma"
    qwen = tmp_path / "qwen"
    _write_config(qwen)
    (qwen / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": "<|im_start|>{% if enable_thinking is defined %}{% endif %}"})
    )
    assert lookup(str(qwen)).chat_template == "qwen3"
