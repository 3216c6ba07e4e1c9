"""The tiny model's architecture files, its random initialisation, and its pretraining through
tunewiz's own `full` recipe (`tunewiz train presets/tiny-pretrain.yaml`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tiny_assets.tokenizer import BOS_ID, EOS_ID
from tunewiz.atomic import atomic_write_json, atomic_write_text
from tunewiz.models.config import LlamaConfig

# Sized so that pretraining takes a few minutes and the LoRA demo ~2 minutes on two CPU cores
# (~9k tokens/s fwd+bwd in fp32), with enough depth to read a story back (attending from a question
# to the fact it names takes at least two layers); GQA: 6 query heads share 2 key/value heads.
ARCHITECTURE = {
    "model_type": "llama",
    "hidden_size": 192,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "bos_token_id": BOS_ID,
    "eos_token_id": EOS_ID,
}
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")
PRETRAIN_PRESET = Path(__file__).resolve().parents[2] / "presets" / "tiny-pretrain.yaml"


def tiny_config(vocab_size: int) -> LlamaConfig:
    """The tiny model's architecture for a tokenizer of `vocab_size` pieces.

    Args:
        vocab_size: Number of tokenizer pieces (the embedding rows).
    """
    return LlamaConfig.from_hf({**ARCHITECTURE, "vocab_size": vocab_size}, source="tiny model architecture")


def write_model_config(out_dir: Path, config: LlamaConfig) -> None:
    """Write `config.json` (as `save_model` writes it, fp32) and `generation_config.json`.

    Args:
        out_dir: The model directory.
        config: The architecture.
    """
    atomic_write_json(out_dir / "config.json", {**config.to_hf(), "dtype": "float32"})
    # Greedy by default: the tiny model answers questions; sampling only adds noise.
    generation = {
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "do_sample": False,
    }
    atomic_write_json(out_dir / "generation_config.json", generation)


def write_random_init(model_dir: Path, out_dir: Path, seed: int) -> None:
    """Write a randomly initialised model (fp32 safetensors) with `model_dir`'s config and tokenizer.

    Args:
        model_dir: Directory holding `config.json` and the tokenizer files.
        out_dir: Where the initial model goes (a complete model directory).
        seed: Seed of the initialisation.
    """
    import torch

    from tunewiz.models.llama import LlamaForCausalLM
    from tunewiz.models.loading import save_model

    config = LlamaConfig.from_file(model_dir / "config.json")
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.init_weights()
    save_model(model, out_dir, config)
    for name in (*TOKENIZER_FILES, "generation_config.json"):
        shutil.copyfile(model_dir / name, out_dir / name)


def pretrain(init_dir: Path, corpus: Path, run_dir: Path, overrides: list[str]) -> Path:
    """Pretrain `init_dir` on `corpus` with `tunewiz train presets/tiny-pretrain.yaml`; return the
    directory of the trained model (the run's `final/`).

    Args:
        init_dir: The randomly initialised model directory.
        corpus: The pretraining corpus (text-format JSONL).
        run_dir: The run directory to create.
        overrides: Extra `--set key=value` overrides (e.g. `train.max_steps=2` for a dry run).
    """
    sets = [f"model.path={init_dir}", f"data.path={corpus}", *overrides]
    argv = [
        sys.executable,
        "-m",
        "tunewiz",
        "train",
        str(PRETRAIN_PRESET),
        "--run-dir",
        str(run_dir),
        "--no-tui",
    ]
    for item in sets:
        argv += ["--set", item]
    # torchrun leaves files in TMPDIR: keep them inside the run's parent (a temp dir).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0", "TMPDIR": str(run_dir.parent)}
    subprocess.run(argv, check=True, env=env)
    return run_dir / "final"


def write_model_card(out_dir: Path, config: LlamaConfig, n_params: int, pretrain_note: str) -> None:
    """Write the model card `README.md`.

    Args:
        out_dir: The model directory.
        config: The architecture.
        n_params: Parameter count.
        pretrain_note: How the weights were made (pretraining run, or random initialisation).
    """
    attention = (
        f"{config.num_attention_heads} query heads, {config.num_key_value_heads} key/value heads (GQA), "
        f"head dim {config.head_dim}"
    )
    text = f"""---
license: bsd-3-clause
library_name: tunewiz
pipeline_tag: text-generation
tags: [llama, tiny, synthetic, tunewiz]
---
# tunewiz tiny

A {n_params / 1e6:.2f}M-parameter Llama-architecture model (`LlamaForCausalLM`) shipped with tunewiz as
`tunewiz:tiny`, so the whole flow — train, resume, chat, eval, push — runs on a laptop CPU in minutes.
It knows nothing but a small synthetic world of people, objects, colours and places.

| | |
|---|---|
| layers | {config.num_hidden_layers} |
| hidden size | {config.hidden_size} (MLP {config.intermediate_size}) |
| attention | {attention} |
| vocabulary | {config.vocab_size} (SentencePiece BPE, byte fallback; `<unk>`=0 `<s>`=1 `</s>`=2) |
| context | {config.max_position_embeddings} tokens, RoPE theta {config.rope_theta:g} |
| embeddings | tied with `lm_head` |

## How it was made

Everything is generated by `scripts/make_tiny_assets.py`; nothing is downloaded.

1. A seeded synthetic world writes short stories ("Mia has a red kite. Tom put the blue cup in the
   kitchen.") and the datasets in `tunewiz/assets/datasets/`.
2. The tokenizer is trained on the pretraining corpus `pretrain.jsonl` (stories, each followed by its
   facts restated) plus the prompt templates.
3. {pretrain_note}

The pretraining corpus has no questions and no instruction format, so the base model reads stories
but does not answer questions about them: fine-tuning on `tunewiz:story-qa` (the demo preset
`presets/tiny-lora.yaml`) teaches that, measured by exact match on `story-qa-test.jsonl`, whose
(name, object, colour) combinations appear in no training file.

`python scripts/make_tiny_assets.py --check` regenerates the data, tokenizer and configs and checks
they match these files byte for byte.

## Chat template

Alpaca-style: a system prompt as a preamble, user turns as `### Instruction:`, assistant turns as
`### Response:` closed with `</s>`.
"""
    atomic_write_text(out_dir / "README.md", text)
