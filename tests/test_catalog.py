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
]


def test_catalog_has_every_required_model() -> None:
    names = {m.name for m in CATALOG}
    assert set(REQUIRED) <= names
    assert len(CATALOG) == 27


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
