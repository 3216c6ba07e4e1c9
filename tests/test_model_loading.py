"""Loading transformers checkpoints (single file, sharded, from a fake HF cache), saving ours back for
transformers, and the errors a user meets with a wrong model directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunewiz.errors import TunewizError
from tunewiz.models.config import LlamaConfig
from tunewiz.models.llama import LlamaForCausalLM
from tunewiz.models.loading import load_model, load_state_dict_files, resolve_model_dir, save_model

SMALL = dict(
    vocab_size=96,
    hidden_size=64,
    intermediate_size=112,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
IDS = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def hf_models() -> dict[str, torch.nn.Module]:
    """A Llama-3 shaped model, Qwen2 and Qwen3 ones with tied embeddings, Gemma 2 and Gemma 3 ones with
    local/global layers, random and tiny."""
    import transformers

    torch.manual_seed(0)
    llama_cfg = transformers.LlamaConfig(**SMALL, rope_theta=500000.0)
    qwen_cfg = transformers.Qwen2Config(**SMALL, tie_word_embeddings=True)
    qwen3_cfg = transformers.Qwen3Config(**SMALL, head_dim=8, tie_word_embeddings=True)
    gemma3_cfg = transformers.Gemma3TextConfig(
        **SMALL, head_dim=16, sliding_window=4, sliding_window_pattern=2
    )
    gemma2_cfg = transformers.Gemma2Config(**SMALL, head_dim=16, sliding_window=4)
    return {
        "llama": transformers.LlamaForCausalLM(llama_cfg).eval(),
        "qwen2-tied": transformers.Qwen2ForCausalLM(qwen_cfg).eval(),
        "qwen3-tied": transformers.Qwen3ForCausalLM(qwen3_cfg).eval(),
        "gemma3": transformers.Gemma3ForCausalLM(gemma3_cfg).eval(),
        "gemma2": transformers.Gemma2ForCausalLM(gemma2_cfg).eval(),
    }


def _hf_logits(model_dir: Path) -> torch.Tensor:
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(IDS).logits


@torch.no_grad()
def test_load_transformers_checkpoints(hf_models: dict[str, torch.nn.Module], tmp_path: Path) -> None:
    for name, hf in hf_models.items():
        expected = hf(IDS).logits
        for shard_size in ["50MB", "40KB"]:
            out = tmp_path / f"{name}-{shard_size}"
            hf.save_pretrained(out, max_shard_size=shard_size)
            sharded = (out / "model.safetensors.index.json").exists()
            assert sharded == (shard_size == "40KB"), list(out.iterdir())
            model = load_model(resolve_model_dir(str(out)))
            assert not any(t.is_meta for t in model.state_dict().values())
            torch.testing.assert_close(model(IDS), expected, atol=1e-5, rtol=0)
            assert set(load_state_dict_files(out)) <= set(model.state_dict())
        if model.config.tie_word_embeddings:
            assert model.lm_head.weight is model.model.embed_tokens.weight
    bf16 = load_model(tmp_path / "llama-40KB", dtype=torch.bfloat16)
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    torch.testing.assert_close(
        bf16(IDS).float(), expected_llama := hf_models["llama"](IDS).logits, atol=0.1, rtol=0.05
    )
    assert expected_llama.shape == (2, 12, 96)


@torch.no_grad()
def test_saved_models_load_in_transformers(hf_models: dict[str, torch.nn.Module], tmp_path: Path) -> None:
    for name, hf in hf_models.items():
        hf.save_pretrained(tmp_path / name)
        ours = load_model(tmp_path / name)
        out = tmp_path / f"{name}-ours"
        files = save_model(ours, out, ours.config, max_shard_bytes=60_000)  # several shards + index
        assert len(files) > 1 and (out / "model.safetensors.index.json").exists()
        torch.testing.assert_close(_hf_logits(out), hf(IDS).logits, atol=1e-5, rtol=0)
        # Saving again unsharded into the same directory leaves no stale shards behind.
        assert save_model(ours.state_dict(), out, ours.config) == [out / "model.safetensors"]
        assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
        if ours.config.tie_word_embeddings:  # the shared tensor is written once
            assert "lm_head.weight" not in load_state_dict_files(out)
        torch.testing.assert_close(load_model(out)(IDS), hf(IDS).logits, atol=1e-5, rtol=0)

    # A freshly initialised native model (llama3 RoPE scaling, biases) round-trips through transformers.
    config = LlamaConfig.from_hf(
        {
            **SMALL,
            "model_type": "llama",
            "attention_bias": True,
            "mlp_bias": True,
            "eos_token_id": [1, 2],
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        }
    )
    torch.manual_seed(1)
    fresh = LlamaForCausalLM(config)
    fresh.init_weights()
    save_model(fresh, tmp_path / "fresh", config)
    torch.testing.assert_close(_hf_logits(tmp_path / "fresh"), fresh(IDS), atol=1e-5, rtol=0)
    assert LlamaConfig.from_file(tmp_path / "fresh" / "config.json") == config


@torch.no_grad()
def test_language_model_of_a_multimodal_gemma3_checkpoint(tmp_path: Path) -> None:
    # Gemma 3 4B/12B/27B ship as Gemma3ForConditionalGeneration: the text model under `language_model.`,
    # a vision tower and a projector beside it. tunewiz loads the language model alone, and what it saves
    # is a text-only checkpoint transformers loads as Gemma3ForCausalLM.
    import transformers

    text = dict(SMALL, head_dim=16, sliding_window=4, sliding_window_pattern=2, eos_token_id=[1, 7])
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    config = transformers.Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=4, image_token_index=90
    )
    torch.manual_seed(0)
    hf = transformers.Gemma3ForConditionalGeneration(config).eval()
    hf.save_pretrained(tmp_path / "mm")
    ours = load_model(tmp_path / "mm")
    assert ours.config.model_type == "gemma3_text" and ours.config.text_of_multimodal
    assert ours.config.eos_token_id == (1, 7) and ours.config.tie_word_embeddings
    torch.testing.assert_close(ours(IDS), hf(input_ids=IDS).logits, atol=1e-5, rtol=0)
    save_model(ours, tmp_path / "text", ours.config)
    assert json.loads((tmp_path / "text" / "config.json").read_text())["model_type"] == "gemma3_text"
    torch.testing.assert_close(_hf_logits(tmp_path / "text"), ours(IDS), atol=1e-5, rtol=0)


def test_unsupported_architectures_are_named(tmp_path: Path) -> None:
    base = dict(SMALL, architectures=["X"])
    for model_type, why in [
        ("qwen3_moe", "mixture of experts"),
        ("qwen3_next", "hybrid linear attention"),
        ("qwen3_5", "hybrid linear attention"),
        ("gemma3n", "per-layer embeddings"),
    ]:
        with pytest.raises(
            TunewizError, match=rf"model_type `{model_type}` \({why}.*supports llama, .*qwen3"
        ):
            LlamaConfig.from_hf({**base, "model_type": model_type})


def test_resolve_from_hf_cache(
    hf_models: dict[str, torch.nn.Module], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    commit = "0" * 40
    snapshot = tmp_path / "hub" / "models--someone--tiny-llama" / "snapshots" / commit
    hf_models["llama"].save_pretrained(snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_model_dir("someone/tiny-llama") == snapshot
    assert resolve_model_dir("someone/tiny-llama", revision=commit) == snapshot
    with pytest.raises(
        TunewizError, match="`someone/other` is not a directory and is not in the Hugging Face cache"
    ) as e:
        resolve_model_dir("someone/other")
    assert "`tunewiz download someone/other`" in (e.value.hint or "")


def test_errors_name_the_culprit(hf_models: dict[str, torch.nn.Module], tmp_path: Path) -> None:
    from safetensors.torch import save_file

    good = tmp_path / "good"
    hf_models["llama"].save_pretrained(good)
    config = json.loads((good / "config.json").read_text())

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TunewizError, match=f"`{empty}` has no config.json"):
        resolve_model_dir(str(empty))

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps(config))
    torch.save({}, pickled / "pytorch_model.bin")
    with pytest.raises(
        TunewizError,
        match=r"has no model.safetensors or model.safetensors.index.json \(it has "
        r"pytorch_model.bin\).*never pickles",
    ):
        resolve_model_dir(str(pickled))

    missing = tmp_path / "missing"
    missing.mkdir()
    (missing / "config.json").write_text(json.dumps(config))
    state = {
        k: v.clone()
        for k, v in hf_models["llama"].state_dict().items()
        if k != "model.layers.1.mlp.up_proj.weight"
    }
    save_file(state, str(missing / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(
        TunewizError,
        match=r"1 weight\(s\) missing from `.*model.safetensors`: model.layers.1.mlp.up_proj.weight",
    ):
        load_model(missing)

    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "config.json").write_text(json.dumps(config))
    save_file(
        {
            **state,
            "model.layers.1.mlp.up_proj.weight": torch.zeros(112, 64),
            "model.vision.weight": torch.zeros(2),
        },
        str(extra / "model.safetensors"),
        metadata={"format": "pt"},
    )
    with pytest.raises(
        TunewizError, match="unexpected weight `model.vision.weight` in `.*model.safetensors`"
    ):
        load_model(extra)

    wrong_shape = tmp_path / "wrong-shape"
    wrong_shape.mkdir()
    (wrong_shape / "config.json").write_text(json.dumps({**config, "intermediate_size": 128}))
    (wrong_shape / "model.safetensors").symlink_to(good / "model.safetensors")
    with pytest.raises(
        TunewizError,
        match=r"weight `model.layers.0.mlp.gate_proj.weight` .* has shape \(112, 64\), config.json "
        r"implies \(128, 64\)",
    ):
        load_model(wrong_shape)

    with pytest.raises(
        TunewizError, match="model_type `gpt2`.*not supported; tunewiz supports llama, mistral, qwen2"
    ):
        LlamaConfig.from_hf({**config, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    assert (
        LlamaConfig.from_hf(
            {**config, "model_type": "smollm", "architectures": ["LlamaForCausalLM"]}
        ).model_type
        == "llama"
    )
    with pytest.raises(TunewizError, match="unsupported rope_scaling type `yarn`"):
        LlamaConfig.from_hf(
            {**config, "rope_parameters": {"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4}}
        )
    with pytest.raises(TunewizError, match="`use_sliding_window: true` is not supported for qwen2"):
        LlamaConfig.from_hf({**config, "model_type": "qwen2", "use_sliding_window": True})
    with pytest.raises(TunewizError, match="`tunewiz:no-such-model` is not a shipped model; shipped: "):
        resolve_model_dir("tunewiz:no-such-model")
    with pytest.raises(TunewizError, match=f"model directory `{tmp_path}/nope` does not exist"):
        resolve_model_dir(f"{tmp_path}/nope")

    incomplete = tmp_path / "incomplete"
    hf_models["llama"].save_pretrained(incomplete, max_shard_size="40KB")
    shard = sorted(incomplete.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(TunewizError, match=f"index.json` lists `{shard.name}`, which is not in"):
        load_model(incomplete)
    with pytest.raises(TunewizError, match="the KV cache holds 4 tokens but 12 were fed"):
        load_model(good)(IDS, kv_cache=LlamaForCausalLM(LlamaConfig.from_hf(config)).new_kv_cache(2, 4))
