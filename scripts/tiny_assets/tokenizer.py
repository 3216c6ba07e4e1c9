"""The tiny model's SentencePiece tokenizer and its Hugging Face tokenizer files.

The tokenizer is trained like Llama's: BPE with byte fallback (any text encodes, unknown characters
become bytes), <unk>=0 <s>=1 </s>=2, digits split, no normalisation. It is trained single-threaded on
the corpus plus the prompt templates, so the same inputs always give the same `tokenizer.model`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

from tunewiz.atomic import atomic_write_json

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2

# An alpaca-style chat template: the system prompt as a preamble, user turns as instructions,
# assistant turns as responses closed with eos (the model learns to stop there).
# A message starts after "Header: " rather than on a new line: SentencePiece gives a word after a
# space ("▁red") a different piece than a word after a newline ("red"), and the model learned the
# spaced pieces from its corpus, so an answer copied from the story is the same tokens. The
# generation prompt ends at the colon; the reply's first piece carries the space.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### Instruction: ' + message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '### Response: ' + message['content'] + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:' }}{% endif %}"
)

# Prompt scaffolding the tokenizer should encode compactly: the chat template's headers and the
# classic alpaca prompt that tunewiz's `alpaca` template uses.
TEMPLATE_TEXT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.",
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.",
    "### Instruction:",
    "### Input:",
    "### Response:",
    "### System:",
    # Every printable ASCII character once, so ordinary chat input needs no byte fallback.
    "".join(chr(c) for c in range(33, 127)),
)


def train_sentencepiece(lines: Iterable[str], out_file: Path, vocab_size: int) -> int:
    """Train the BPE tokenizer and write `tokenizer.model`; return the vocabulary size reached.

    Args:
        lines: Training text, one sentence or paragraph per item (no newlines inside).
        out_file: Where `tokenizer.model` goes.
        vocab_size: Target size; a small corpus may reach fewer pieces (hard_vocab_limit=False).
    """
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(lines) + list(TEMPLATE_TEXT)),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        byte_fallback=True,
        character_coverage=1.0,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        pad_id=-1,
        unk_piece=UNK,
        bos_piece=BOS,
        eos_piece=EOS,
        # Single-threaded and unshuffled: the same input gives the same model, byte for byte.
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        max_sentence_length=16384,
        minloglevel=2,
    )
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_bytes(model.getvalue())
    return spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()


def write_hf_tokenizer_files(out_dir: Path, model_max_length: int) -> None:
    """Write `tokenizer_config.json` (with the chat template) and `special_tokens_map.json`.

    Args:
        out_dir: The model directory.
        model_max_length: Longest sequence the model was built for.
    """
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": None,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        "legacy": False,
        "chat_template": CHAT_TEMPLATE,
    }
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": UNK}
    atomic_write_json(out_dir / "tokenizer_config.json", config)
    atomic_write_json(out_dir / "special_tokens_map.json", special)
