"""Test support for end-to-end runs: a tiny random model, a dataset with samples of different
lengths, presets, and the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

TUNEWIZ = [sys.executable, "-m", "tunewiz"]
_NAMES = ["Mia", "Tom", "Ana", "Leo", "Sam", "Ivy"]
_COLOURS = ["red", "blue", "green", "yellow"]
_OBJECTS = ["cup", "ball", "kite", "hat"]


def build_tiny_model(out: Path) -> Path:
    """A ~100k-parameter Llama (GQA, untied) with a SentencePiece tokenizer, random weights, seed 0."""
    import sentencepiece as spm
    import torch

    from tunewiz.models.config import LlamaConfig
    from tunewiz.models.llama import LlamaForCausalLM
    from tunewiz.models.loading import save_model

    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    corpus = [
        f"{rng.choice(_NAMES)} has a {rng.choice(_COLOURS)} {rng.choice(_OBJECTS)}. What colour is it? "
        "Below is an instruction. ### Instruction: ### Response:"
        for _ in range(2000)
    ]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_prefix=str(out / "tokenizer"),
        vocab_size=400,
        model_type="bpe",
        hard_vocab_limit=False,
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    (out / "tokenizer.vocab").unlink()
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "LlamaTokenizer",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "add_bos_token": True,
                "add_eos_token": False,
            }
        )
    )
    vocab = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model")).get_piece_size()
    config = LlamaConfig.from_hf(
        {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "vocab_size": vocab,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "tie_word_embeddings": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
        }
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.init_weights()
    save_model(model, out, config)
    return out


def write_dataset(path: Path, n: int = 96) -> Path:
    """Alpaca rows whose answers have different lengths (1–3 words), so samples differ in length."""
    rng = random.Random(1)
    rows = []
    for _ in range(n):
        name, colour, obj = rng.choice(_NAMES), rng.choice(_COLOURS), rng.choice(_OBJECTS)
        rows.append(
            {
                "instruction": "Answer the question.",
                "input": f"{name} has a {colour} {obj}. What colour is the {obj}?",
                "output": " ".join([colour] * rng.randint(1, 3)),
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# Validation every 2 steps, each with greedy replies of up to 16 tokens to 3 validation prompts: the session's
# trained run and the runs compared with it (2 ranks, resumed) use it, so their replies can be compared.
SAMPLED = {"eval_every_n_steps": 2, "sample_generations": 3, "sample_max_new_tokens": 16}


def write_preset(path: Path, model_dir: Path, dataset: Path, **sections: dict[str, Any]) -> Path:
    """A CPU fp32 LoRA preset; keyword arguments update its sections (train={...}, lora={...})."""
    preset: dict[str, Any] = {
        "name": path.stem,
        "method": "lora",
        "device": "cpu",
        "model": {"path": str(model_dir), "dtype": "fp32"},
        "lora": {"rank": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]},
        "data": {"path": str(dataset), "max_seq_len": 128, "val_fraction": 0.1},
        "train": {"max_steps": 6, "micro_batch_size": 4, "grad_accum": 1, "lr": 1e-2, "warmup_steps": 2},
        "checkpoint": {"every_n_steps": 2, "keep_last": 10},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            preset.setdefault(key, {}).update(value)
        else:
            preset[key] = value
    path.write_text(yaml.safe_dump(preset))
    return path


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `tunewiz ARGS` in a subprocess (plain output: stdout is not a TTY)."""
    full_env = {**os.environ, "TMPDIR": str(cwd), **(env or {})}
    return subprocess.run(
        [*TUNEWIZ, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]


def step_losses(run_dir: Path) -> dict[int, float]:
    """The last logged loss of each step (a resumed run logs the steps after its checkpoint again)."""
    return {e["step"]: e["loss"] for e in events(run_dir) if e["event"] == "step"}


def samples_by_step(run_dir: Path) -> dict[int, list[dict[str, Any]]]:
    """The replies of the last ``samples`` event of each step (a resumed run writes a step's again)."""
    return {e["step"]: e["samples"] for e in events(run_dir) if e["event"] == "samples"}
