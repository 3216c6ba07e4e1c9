"""Test support for GGUF export: tiny random models of every exported architecture (SentencePiece and
byte-level BPE tokenizers) and run directories whose `final/` holds merged weights, an adapter, or both."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from runs import write_dataset, write_preset

from tunewiz.export.gguf_vocab import PRE_TOKENIZERS

_WORDS = "the quick brown fox jumps over a lazy dog Mia has red blue cup kite what colour is it".split()
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _corpus(n: int = 1500) -> list[str]:
    rng = random.Random(0)
    extra = [
        "Grüße, naïve café!",
        "日本語のテキスト",
        "emoji 🚀 ok",
        "x = 12345 + 678;",
        "  two  spaces\n\nnew",
    ]
    return [
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 10))) + " " + rng.choice(extra)
        for _ in range(n)
    ]


def build_sp_tokenizer(out: Path, chat_template: str | None = None) -> int:
    """A Llama-style SentencePiece `tokenizer.model` (BPE, byte fallback, identity normalization that keeps
    whitespace, as Llama 2, Mistral and Gemma ship); returns its size."""
    import sentencepiece as spm

    out.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_prefix=str(out / "tokenizer"),
        vocab_size=500,
        model_type="bpe",
        hard_vocab_limit=False,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    (out / "tokenizer.vocab").unlink()
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": False,
    }
    if chat_template:
        config["chat_template"] = chat_template
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model")).get_piece_size()


def build_bpe_tokenizer(out: Path, style: str) -> Path:
    """A byte-level BPE `tokenizer.json` with the Llama 3 (``llama3``) or Qwen2 (``qwen2``) split regex, or
    SmolLM2's single digits + ByteLevel regex (``smollm``), their special tokens and chat template (Qwen2
    and SmolLM2: ChatML, no bos)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    regexes = {name: pattern for pattern, name in PRE_TOKENIZERS.items()}
    if style == "llama3":
        specials = [
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
        ]
        config = {
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot_id|>",
            "chat_template": LLAMA3_TEMPLATE,
        }
    else:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        config = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
        config["chat_template"] = CHATML_TEMPLATE
    tok = Tokenizer(models.BPE(ignore_merges=style == "llama3"))
    if style == "smollm":
        steps = [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    else:
        regex = regexes["llama-bpe" if style == "llama3" else "qwen2"]
        steps = [
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": style == "llama3", **config}
        )
    )
    return out


def build_model(out: Path, kind: str) -> Path:
    """A tiny random model directory of one exported shape.

    kinds: ``llama-sp`` (SentencePiece, GQA, untied; identity normalization), ``mistral-sp``,
    ``llama3-bpe`` (byte-level BPE, Llama 3.1 RoPE scaling, tied embeddings), ``qwen2-bpe`` (q/k/v bias,
    no bos, ChatML), ``smollm-bpe`` (SmolLM2: Llama with single-digit splitting), ``qwen3-bpe`` (q/k
    norms, head_dim ≠ hidden/heads, tied), ``gemma3-sp`` (GeGLU, (1 + w) sandwich norms, q/k norms,
    local/global layers with a window shorter than the prompt),
    ``gemma2-sp`` (alternating local/global layers, attention and final logit soft-caps).
    """
    from tunewiz.models.config import LlamaConfig
    from tunewiz.models.llama import LlamaForCausalLM
    from tunewiz.models.loading import save_model

    hf: dict[str, Any] = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    }
    if kind in ("qwen3-bpe", "gemma3-sp", "gemma2-sp"):
        return _build_from_transformers_config(out, kind)
    if kind in ("llama-sp", "mistral-sp"):
        # llama-sp has no chat template (the run's built-in one is used); Mistral's starts with bos.
        vocab = build_sp_tokenizer(out, MISTRAL_TEMPLATE if kind == "mistral-sp" else None)
        model_type = "llama" if kind == "llama-sp" else "mistral"
        hf.update(model_type=model_type, vocab_size=vocab, bos_token_id=1, eos_token_id=2)
        hf["architectures"] = ["LlamaForCausalLM" if kind == "llama-sp" else "MistralForCausalLM"]
    else:
        style = kind.split("-")[0]
        build_bpe_tokenizer(out, style)
        n_tokens = json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]
        hf["vocab_size"] = len(n_tokens) + 8  # unused padding rows, as real checkpoints have
        if style == "smollm":
            hf.update(model_type="llama", architectures=["LlamaForCausalLM"], tie_word_embeddings=True)
        elif style == "llama3":
            hf.update(model_type="llama", architectures=["LlamaForCausalLM"], tie_word_embeddings=True)
            hf["rope_scaling"] = {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            }
            hf.update(rope_theta=500000.0)
        else:
            hf.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"], use_sliding_window=False)
    config = LlamaConfig.from_hf(hf)
    torch.manual_seed(1)
    model = LlamaForCausalLM(config)
    model.init_weights()
    with torch.no_grad():  # visible biases and norms, so a wrong layout shows in the logits
        for name, param in model.named_parameters():
            if name.endswith(".bias") or "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    save_model(model, out, config)
    (out / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    return out


def build_run(
    root: Path,
    model_dir: Path,
    *,
    method: str = "lora",
    merged: bool = True,
    adapter: bool = True,
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
) -> tuple[Path, dict[str, torch.Tensor]]:
    """A finished run directory without training: `config.yaml` and a `final/` as the recipe writes it,
    with a random LoRA adapter (B ≠ 0, so merging changes the weights).

    Returns:
        The run directory and the merged state dict the export must write (fp32; QLoRA: NF4 base).
    """
    from tunewiz.lora.peft_files import save_peft_adapter
    from tunewiz.models.config import LlamaConfig
    from tunewiz.models.loading import load_state_dict_files, save_model
    from tunewiz.models.nf4 import is_quantized_weight, to_nf4
    from tunewiz.text.tokenizer import load_tokenizer
    from tunewiz.train.export import merge_lora_state

    run = root
    run.mkdir(parents=True)
    dataset = write_dataset(run / "data.jsonl", n=16)
    write_preset(
        run / "config.yaml",
        model_dir,
        dataset,
        method=method,
        name=f"{model_dir.name}-{method}",
        lora={"rank": 4, "alpha": 8, "targets": list(targets)},
        output={"merged": merged, "adapter": adapter},
    )
    config = LlamaConfig.from_file(model_dir / "config.json")
    base = {k: v.float() for k, v in load_state_dict_files(model_dir).items()}
    if method == "qlora":
        base = {k: to_nf4(v).to(torch.float32) if is_quantized_weight(k) else v for k, v in base.items()}
    gen = torch.Generator().manual_seed(2)
    lora = {}
    for key, value in base.items():
        if key.endswith(".weight") and key.rsplit(".", 2)[-2] in targets:
            out_f, in_f = value.shape
            lora[key[: -len(".weight")] + ".lora_A.weight"] = torch.randn(4, in_f, generator=gen) * 0.1
            lora[key[: -len(".weight")] + ".lora_B.weight"] = torch.randn(out_f, 4, generator=gen) * 0.1
    expected = merge_lora_state(base, lora, scaling=8 / 4)
    final = run / "final"
    if merged:
        save_model(expected, final, config)
    if adapter:
        save_peft_adapter(
            lora,
            final / "adapter",
            base_model=str(model_dir),
            rank=4,
            alpha=8,
            dropout=0.0,
            targets=list(targets),
        )
    load_tokenizer(model_dir).save_pretrained(final)
    if (model_dir / "generation_config.json").is_file():
        shutil.copy2(model_dir / "generation_config.json", final / "generation_config.json")
    return run, expected


def _build_from_transformers_config(out: Path, kind: str) -> Path:
    """Qwen3 and Gemma 3 from transformers' own config classes (their defaults fill what we leave out)."""
    import transformers

    from tunewiz.models.config import LlamaConfig
    from tunewiz.models.llama import LlamaForCausalLM
    from tunewiz.models.loading import save_model

    small = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, max_position_embeddings=256)
    if kind == "qwen3-bpe":
        build_bpe_tokenizer(out, "qwen2")
        n_tokens = len(json.loads((out / "tokenizer.json").read_text())["model"]["vocab"])
        hf = transformers.Qwen3Config(
            **small, vocab_size=n_tokens + 8, num_hidden_layers=2, num_key_value_heads=2, head_dim=24,
            tie_word_embeddings=True, rms_norm_eps=1e-6,
        )  # fmt: skip
    else:
        vocab = build_sp_tokenizer(out, MISTRAL_TEMPLATE)
        gemma = dict(
            small, vocab_size=vocab, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
            sliding_window=6, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        )  # fmt: skip
        if kind == "gemma3-sp":
            hf = transformers.Gemma3TextConfig(**gemma, num_hidden_layers=3, sliding_window_pattern=3)
        else:
            hf = transformers.Gemma2Config(**gemma, num_hidden_layers=2, final_logit_softcapping=5.0)
    config = LlamaConfig.from_hf(hf.to_dict())
    torch.manual_seed(1)
    model = LlamaForCausalLM(config)
    model.init_weights()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    save_model(model, out, config)
    (out / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    return out
