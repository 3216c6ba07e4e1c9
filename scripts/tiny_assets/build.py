"""Build the shipped assets: datasets, tokenizer, model config and card (fast, deterministic), then
the weights (random initialisation, then pretraining through `tunewiz train`).

Layout written under the assets directory::

    datasets/{story-qa,story-qa-test,story-chat,story-text,pretrain}.jsonl
    tiny/{config.json,generation_config.json,tokenizer.model,tokenizer_config.json,
          special_tokens_map.json,README.md,model.safetensors}
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tiny_assets.datasets import Sizes, build_datasets, write_jsonl
from tiny_assets.model_files import (
    pretrain,
    tiny_config,
    write_model_card,
    write_model_config,
    write_random_init,
)
from tiny_assets.tokenizer import train_sentencepiece, write_hf_tokenizer_files

TOKENIZER_VOCAB = 1024
PRETRAIN_NOTE = (
    "The weights were pretrained from a random initialisation (seed 0) with tunewiz's own `full` "
    "recipe: `tunewiz train presets/tiny-pretrain.yaml` (CPU, fp32, fixed seed) on `pretrain.jsonl`."
)
RANDOM_NOTE = "The weights are a random initialisation (seed 0); they have not been pretrained yet."


def _tokenizer_lines(datasets: dict[str, list[dict]]) -> Iterator[str]:
    """Every line of training-side text (never the test split), for the tokenizer."""
    for name in ("pretrain.jsonl", "story-text.jsonl"):
        for row in datasets[name]:
            yield from row["text"].split("\n")
    for row in datasets["story-qa.jsonl"]:
        yield row["instruction"]
        yield from row["input"].split("\n")
        yield row["output"]
    for row in datasets["story-chat.jsonl"]:
        for message in row["messages"]:
            yield from message["content"].split("\n")


def build_static(out: Path, seed: int = 0, sizes: Sizes = Sizes(), pretrained: bool = True) -> list[Path]:
    """Write every asset except the weights; return the files written (sorted).

    Args:
        out: The assets directory (`tunewiz/assets` for the shipped ones).
        seed: World seed.
        sizes: Dataset row counts.
        pretrained: The model card says the weights are pretrained (else: random initialisation).
    """
    datasets = build_datasets(seed, sizes)
    for name, rows in datasets.items():
        write_jsonl(out / "datasets" / name, rows)
    model_dir = out / "tiny"
    vocab_size = train_sentencepiece(
        _tokenizer_lines(datasets), model_dir / "tokenizer.model", TOKENIZER_VOCAB
    )
    config = tiny_config(vocab_size)
    write_model_config(model_dir, config)
    write_hf_tokenizer_files(model_dir, config.max_position_embeddings)
    write_model_card(model_dir, config, config.num_parameters(), PRETRAIN_NOTE if pretrained else RANDOM_NOTE)
    return sorted(p for p in out.rglob("*") if p.is_file() and p.suffix != ".safetensors")


def build_weights(
    out: Path, seed: int = 0, *, run_pretraining: bool = True, overrides: list[str] | None = None
) -> None:
    """Write `tiny/model.safetensors`: the random initialisation, pretrained unless told not to.

    Args:
        out: The assets directory that `build_static` filled.
        seed: Initialisation seed.
        run_pretraining: Run `tunewiz train presets/tiny-pretrain.yaml` on the random initialisation.
        overrides: Extra `--set key=value` overrides for the pretraining run.
    """
    model_dir = out / "tiny"
    with tempfile.TemporaryDirectory(prefix="tunewiz-tiny-") as tmp:
        init_dir = Path(tmp) / "init"
        write_random_init(model_dir, init_dir, seed)
        trained = init_dir
        if run_pretraining:
            trained = pretrain(
                init_dir, out / "datasets" / "pretrain.jsonl", Path(tmp) / "run", overrides or []
            )
        shutil.copyfile(trained / "model.safetensors", model_dir / "model.safetensors")
