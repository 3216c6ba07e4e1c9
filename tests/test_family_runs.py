"""Qwen3, Gemma 3 (text-only and the language model of a multimodal checkpoint) and Gemma 2 through the
real CLI: tiny random checkpoints written by transformers, with each family's chat template, train a
few LoRA steps on every linear projection; two FSDP2 ranks give the one-rank losses; the merged export
loads back into transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from runs import cli, events, step_losses, write_dataset, write_preset
from test_model_templates import _tokenizer_dir

pytestmark = pytest.mark.slow

SMALL = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
)
# family -> (transformers config class, model class, template family, extra config)
FAMILIES = {
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", "qwen3", dict(tie_word_embeddings=True)),
    "gemma3": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        "gemma3",
        dict(sliding_window=16, sliding_window_pattern=2, tie_word_embeddings=False),
    ),
    "gemma3-multimodal": ("Gemma3Config", "Gemma3ForConditionalGeneration", "gemma3", {}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", "gemma3", dict(sliding_window=16)),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _checkpoint(root: Path, family: str) -> Path:
    """A random transformers checkpoint of `family` with a tokenizer carrying the family's template."""
    import transformers

    config_class, model_class, template, extra = FAMILIES[family]
    out = _tokenizer_dir(root, template)
    vocab = json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]
    text = dict(SMALL, vocab_size=len(vocab) + 8, **extra)
    if family == "gemma3-multimodal":
        vision = dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        )
        text = dict(text, sliding_window=16, sliding_window_pattern=2)
        config = transformers.Gemma3Config(
            text_config=text, vision_config=vision, mm_tokens_per_image=4, image_token_index=len(vocab) + 1
        )
    else:
        config = getattr(transformers, config_class)(**text)
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(config)
    model.save_pretrained(out)  # beside the tokenizer files
    return out


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, Path]:
    root = tmp_path_factory.mktemp(request.param)
    model = _checkpoint(root, request.param)
    return request.param, model, write_dataset(root / "data.jsonl", n=48)


def test_trains_through_the_cli_and_two_ranks_match_one(
    family: tuple[str, Path, Path], tmp_path: Path
) -> None:
    import transformers

    name, model, data = family
    lora = {"rank": 4, "alpha": 8, "targets": TARGETS}
    train = {"max_steps": 4, "micro_batch_size": 4}
    preset = write_preset(tmp_path / "one.yaml", model, data, lora=lora, train=train)
    result = cli("train", str(preset), "--no-tui", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "runs" / "one"
    losses = step_losses(run)
    assert list(losses) == [1, 2, 3, 4] and all(loss == loss for loss in losses.values())  # no NaN
    assert losses[4] < losses[1], losses
    start = events(run)[0]
    assert start["world_size"] == 1
    merged = transformers.AutoModelForCausalLM.from_pretrained(run / "final", dtype=torch.float32)
    assert merged.config.model_type == ("gemma3_text" if name.startswith("gemma3") else name)
    if name in ("qwen3", "gemma3"):  # FSDP2 over two ranks: micro-batch 2 each, the same global batch
        preset = write_preset(
            tmp_path / "two.yaml", model, data, lora=lora, train={**train, "micro_batch_size": 2}
        )
        result = cli("train", str(preset), "--no-tui", "--nproc-per-node", "2", cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        two = tmp_path / "runs" / "two"
        assert events(two)[0]["world_size"] == 2
        assert step_losses(two) == pytest.approx(losses, rel=1e-5)
