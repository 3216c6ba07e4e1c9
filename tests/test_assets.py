"""The shipped tiny model and sample datasets: present, consistent with each other, and reproducible
by `scripts/make_tiny_assets.py`."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import jinja2
import pytest
import sentencepiece as spm
from tiny_assets.build import build_static
from tiny_assets.datasets import QA_INSTRUCTION, Sizes
from tiny_assets.world import COLOURS, NAMES, OBJECTS, PLACES

from tunewiz.models.config import LlamaConfig

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tunewiz" / "assets"
TINY = ASSETS / "tiny"
DATA = ASSETS / "datasets"
TINY_FILES = [
    "config.json",
    "generation_config.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "model.safetensors",
    "README.md",
]
DATASET_ROWS = {
    "story-qa.jsonl": 2000,
    "story-qa-test.jsonl": 200,
    "story-chat.jsonl": 500,
    "story-text.jsonl": 300,
    "pretrain.jsonl": 10000,
}


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()]


def _json(name: str) -> dict:
    return json.loads((TINY / name).read_text(encoding="utf-8"))


def _story(row: dict) -> str:
    return row["input"].rsplit("\n", 1)[0]


@pytest.fixture(scope="module")
def sp() -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(TINY / "tokenizer.model"))


def test_shipped_files_exist_and_stay_small() -> None:
    assert sorted(p.name for p in TINY.iterdir()) == sorted(TINY_FILES)
    assert sorted(p.name for p in DATA.iterdir()) == sorted(DATASET_ROWS)
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert total < 15 * 2**20, f"shipped assets are {total / 2**20:.1f} MiB"


def test_config_loads_with_tunewiz_models_and_matches_the_tokenizer(sp: spm.SentencePieceProcessor) -> None:
    config = LlamaConfig.from_file(TINY / "config.json")
    assert (config.model_type, _json("config.json")["architectures"]) == ("llama", ["LlamaForCausalLM"])
    assert config.num_key_value_heads < config.num_attention_heads  # GQA
    assert (
        config.tie_word_embeddings and config.max_position_embeddings == 512 and config.rope_theta == 10000.0
    )
    assert 1_000_000 < config.num_parameters() < 4_000_000
    assert sp.get_piece_size() == config.vocab_size == 1024


def test_special_token_ids_agree_everywhere(sp: spm.SentencePieceProcessor) -> None:
    config, generation = _json("config.json"), _json("generation_config.json")
    tok_config, special = _json("tokenizer_config.json"), _json("special_tokens_map.json")
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2)
    assert (
        config["bos_token_id"] == generation["bos_token_id"] == sp.piece_to_id(tok_config["bos_token"]) == 1
    )
    assert (
        config["eos_token_id"] == generation["eos_token_id"] == sp.piece_to_id(tok_config["eos_token"]) == 2
    )
    assert special == {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    assert tok_config["add_bos_token"] is True and tok_config["add_eos_token"] is False


def test_tokenizer_round_trips_any_text_with_byte_fallback(sp: spm.SentencePieceProcessor) -> None:
    text = "Mia has a red kite.\nWhat colour is Mia's kite? Zoë paid 42 € — ok!"
    assert sp.decode(sp.encode(text)) == text
    assert sp.encode("Mia has a red kite.", out_type=str) == ["▁Mia", "▁has", "▁a", "▁red", "▁kite", "."]


def test_weights_match_the_config() -> None:
    from safetensors import safe_open

    config = LlamaConfig.from_file(TINY / "config.json")
    with safe_open(str(TINY / "model.safetensors"), framework="np") as f:
        shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    assert shapes["model.embed_tokens.weight"] == (config.vocab_size, config.hidden_size)
    assert "lm_head.weight" not in shapes  # tied
    assert sum(n for n in (_numel(s) for s in shapes.values())) == config.num_parameters()
    assert shapes["model.layers.0.self_attn.k_proj.weight"] == (
        config.num_key_value_heads * config.head_dim,
        config.hidden_size,
    )


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def test_chat_template_renders_alpaca_turns_ending_with_eos() -> None:
    tok_config = _json("tokenizer_config.json")
    template = jinja2.Environment().from_string(tok_config["chat_template"])
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Mia has a red kite.\nWhat colour is Mia's kite?"},
        {"role": "assistant", "content": "Mia's kite is red."},
        {"role": "user", "content": "Who has a red kite?"},
    ]
    text = template.render(messages=messages, bos_token="<s>", eos_token="</s>", add_generation_prompt=True)
    assert text == (
        "<s>Be brief.\n\n### Instruction: Mia has a red kite.\nWhat colour is Mia's kite?\n\n"
        "### Response: Mia's kite is red.</s>### Instruction: Who has a red kite?\n\n### Response:"
    )


def test_datasets_parse_as_their_formats() -> None:
    for name, count in DATASET_ROWS.items():
        assert len(_rows(name)) == count, name
    for row in _rows("story-qa.jsonl") + _rows("story-qa-test.jsonl"):
        assert set(row) == {"instruction", "input", "output"} and row["instruction"] == QA_INSTRUCTION
        assert row["input"].endswith("?") and 1 <= len(row["output"].split()) <= 2
        assert row["output"] in _story(row)
    for row in _rows("story-chat.jsonl"):
        roles = [m["role"] for m in row["messages"]]
        turns = roles[1:] if roles[0] == "system" else roles
        assert turns == ["user", "assistant"] * (len(turns) // 2) and turns
    assert any(len(row["messages"]) > 3 for row in _rows("story-chat.jsonl"))  # some multi-turn
    for name in ("story-text.jsonl", "pretrain.jsonl"):
        assert all(set(row) == {"text"} and row["text"] for row in _rows(name))


def test_pretraining_corpus_has_no_questions_or_instructions() -> None:
    text = (DATA / "pretrain.jsonl").read_text(encoding="utf-8")
    assert "?" not in text and "###" not in text and QA_INSTRUCTION not in text


def test_test_stories_appear_in_no_training_file() -> None:
    test_stories = {_story(row) for row in _rows("story-qa-test.jsonl")}
    assert len(test_stories) == 200
    train_text = "\n".join(
        (DATA / name).read_text(encoding="utf-8")
        for name in ("story-qa.jsonl", "story-chat.jsonl", "story-text.jsonl", "pretrain.jsonl")
    )
    # Each test story's questioned fact uses a held-out (name, object, colour) triple: the exact
    # sentence never occurs in training text, so the whole story cannot either.
    for row in _rows("story-qa-test.jsonl"):
        assert _story(row) not in train_text


def test_world_vocabulary_is_what_the_stories_use() -> None:
    words = {w for row in _rows("story-qa.jsonl") for w in re.findall("[A-Za-z]+", row["input"])}
    assert set(NAMES) <= words and set(OBJECTS) <= words and set(COLOURS) <= words and set(PLACES) <= words


def test_generator_is_deterministic(tmp_path: Path) -> None:
    sizes = Sizes(qa_train=40, qa_test=10, chat=10, text=10, pretrain=200)
    first = build_static(tmp_path / "a", seed=3, sizes=sizes)
    second = build_static(tmp_path / "b", seed=3, sizes=sizes)
    assert [p.relative_to(tmp_path / "a") for p in first] == [p.relative_to(tmp_path / "b") for p in second]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second, strict=True))
    build_static(tmp_path / "c", seed=4, sizes=sizes)
    qa = Path("datasets") / "story-qa.jsonl"
    assert (tmp_path / "c" / qa).read_bytes() != (tmp_path / "a" / qa).read_bytes()  # the seed matters


def test_committed_assets_match_a_fresh_build() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_tiny_assets", ROOT / "scripts" / "make_tiny_assets.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.check(ASSETS, seed=0) == []
