"""A model's tokenizer as GGUF vocabulary metadata (``tokenizer.ggml.*``), so llama.cpp splits text
into the ids the model was trained on.

Two kinds, chosen as llama.cpp's converter chooses them:

* ``tokenizer.model`` (SentencePiece; Llama 2, Mistral, TinyLlama, Gemma, the shipped tiny model):
  ``tokenizer.ggml.model = llama`` with each piece's score and type (normal, unknown, control, byte, ...).
* ``tokenizer.json`` with byte-level BPE (Llama 3, Qwen2/3, SmolLM2): ``gpt2`` with the byte-level tokens,
  the merges, and ``tokenizer.ggml.pre``, the name under which llama.cpp implements the pre-tokenizer's
  split regex. The name is read from the regex itself (not from a hash of token ids, which only matches
  published vocabularies), and an unknown regex is an error rather than a silently different split.

Added tokens marked special become ``control`` tokens (llama.cpp matches them in text only when asked to
parse specials, like transformers); others become ``user_defined``. Ids the model has rows for but the
tokenizer lacks are padded as ``[PAD<i>]`` / unused, as the converter does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewiz.errors import TunewizError

if TYPE_CHECKING:
    from tunewiz.text.tokenizer import Tokenizer

# gguf.TokenType values (kept literal so that importing this module does not import gguf).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# The split regexes of the byte-level BPE pre-tokenizers tunewiz's models use -> llama.cpp's name for them
# (src/llama-vocab.cpp implements each name with the same regex).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
PRE_TOKENIZERS = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2", _GPT2_SPLIT: "gpt-2"}


@dataclass
class GGUFVocab:
    """The ``tokenizer.ggml.*`` values of one tokenizer.

    Args:
        model: ``llama`` (SentencePiece) or ``gpt2`` (byte-level BPE).
        pre: the pre-tokenizer name (``default`` for SentencePiece).
        tokens: one string per id, ``vocab_size`` of them.
        types: one token type per id (see the constants above).
        scores: SentencePiece scores (empty for BPE).
        merges: BPE merges as ``"a b"`` (empty for SentencePiece).
        bos_id: beginning-of-sequence id, or None.
        eos_id: end-of-sequence id.
        eot_id: the chat template's end-of-turn token when it is not eos (``<|im_end|>``), or None.
        pad_id: padding id, or None.
        unk_id: unknown-token id, or None.
        add_bos: llama.cpp prepends bos to a prompt (the rule training followed).
        add_eos: llama.cpp appends eos.
        add_space_prefix: SentencePiece only: llama.cpp puts a space before text at the start and after
            every special token (see :func:`choose_space_prefix`).
    """

    model: str
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float] = field(default_factory=list)
    merges: list[str] = field(default_factory=list)
    bos_id: int | None = None
    eos_id: int | None = None
    eot_id: int | None = None
    pad_id: int | None = None
    unk_id: int | None = None
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool | None = None


def build_vocab(
    tokenizer: Tokenizer, vocab_size: int, *, add_bos: bool, end_of_turn: str | None
) -> GGUFVocab:
    """The GGUF vocabulary of a tokenizer directory.

    Args:
        tokenizer: the run's tokenizer (its directory holds the files; its ids are the resolved ones).
        vocab_size: rows of the model's embedding (the token list is padded to it).
        add_bos: whether a prompt starts with bos (the run's BOS rule).
        end_of_turn: the chat template's end-of-turn token string, when it has one.

    Raises:
        TunewizError: no tokenizer file, a tokenizer.json that is not byte-level BPE, an unknown
            pre-tokenizer, or more tokens than the model has rows.
    """
    source = Path(tokenizer.source_dir)
    config = _read_json(source / "tokenizer_config.json")
    if (source / "tokenizer.model").is_file():
        vocab = _sentencepiece(source, config, vocab_size)
    elif (source / "tokenizer.json").is_file():
        vocab = _byte_level_bpe(source / "tokenizer.json", vocab_size)
    else:
        raise TunewizError(
            f"`{source}` has no tokenizer.model or tokenizer.json to write into the GGUF",
            hint="copy the base model's tokenizer files into the run's `final/`",
        )
    specials = tokenizer.special_tokens
    vocab.bos_id = tokenizer.bos_id
    vocab.eos_id = tokenizer.eos_id
    vocab.pad_id = tokenizer.token_to_id(specials["pad_token"]) if "pad_token" in specials else None
    vocab.unk_id = tokenizer.token_to_id(specials["unk_token"]) if "unk_token" in specials else None
    eot = tokenizer.token_to_id(end_of_turn) if end_of_turn else None
    vocab.eot_id = eot if eot != tokenizer.eos_id else None
    vocab.add_bos = add_bos and tokenizer.bos_id is not None
    vocab.add_eos = bool(config.get("add_eos_token", False))
    return vocab


def sentencepiece_normalization(model_file: Path) -> str | None:
    """What a SentencePiece model's normalizer does that llama.cpp's tokenizer does not, or None.

    llama.cpp's SentencePiece tokenizer only escapes spaces; it applies no normalization rule (NFKC) and
    keeps repeated whitespace. Llama, Mistral and Gemma ship ``identity`` normalizers without
    whitespace removal, so they tokenize the same; a tokenizer trained with SentencePiece's defaults
    (``nmt_nfkc``, ``remove_extra_whitespaces``) does not, for text those rules change.

    Args:
        model_file: a ``tokenizer.model``.
    """
    from tunewiz.text.tokenizer import _proto_fields

    spec = next((p for n, w, p, _ in _proto_fields(model_file.read_bytes()) if n == 3 and w == 2), b"")
    fields = {n: p for n, _, p, _ in _proto_fields(spec)}
    name = fields.get(1, b"").decode("utf-8", "replace")
    removes_whitespace = fields[4][-1] != 0 if 4 in fields else True  # proto default: true
    rules = []
    if name not in ("identity", "") or fields.get(2):
        rules.append(f"`{name or 'precompiled'}` normalization")
    if removes_whitespace:
        rules.append("removal of repeated whitespace")
    return " and ".join(rules) or None


def choose_space_prefix(tokenizer: Tokenizer, prompt: str) -> bool:
    """``tokenizer.ggml.add_space_prefix`` for a SentencePiece vocabulary: the setting under which
    llama.cpp splits ``prompt`` (a rendered chat prompt) into the ids tunewiz gives it.

    llama.cpp's SentencePiece tokenizer either puts a space before the text at the start *and* after
    every special token, or never. Transformers' non-legacy Llama tokenizer (and tunewiz) add it at the
    start of the text only. No setting matches both everywhere, so the one that reproduces the trained
    chat prompt wins: a template that starts with ``bos_token`` needs False (``<s>### ...`` has no
    space after ``<s>``); a template that starts with plain text needs True.

    Args:
        tokenizer: the run's tokenizer.
        prompt: the chat prompt as the template renders it (bos included when the template writes it).
    """
    ids = tokenizer.encode(prompt)
    starts_with_special = bool(ids) and tokenizer.decode(ids[:1], skip_special=True) == ""
    return not starts_with_special


def _sentencepiece(source: Path, config: dict[str, Any], vocab_size: int) -> GGUFVocab:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(source / "tokenizer.model"))
    size = sp.GetPieceSize()
    _check_fits(size, vocab_size, source / "tokenizer.model")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [UNUSED] * vocab_size
    for i in range(size):
        tokens[i], scores[i] = sp.IdToPiece(i), sp.GetScore(i)
        types[i] = (
            UNKNOWN
            if sp.IsUnknown(i)
            else CONTROL
            if sp.IsControl(i)
            else UNUSED
            if sp.IsUnused(i)
            else BYTE
            if sp.IsByte(i)
            else NORMAL
        )
    for key, entry in (config.get("added_tokens_decoder") or {}).items():
        i = int(key)
        if i >= vocab_size or not isinstance(entry, dict):
            continue
        if i < size and tokens[i] == entry["content"] and types[i] != NORMAL:
            continue  # SentencePiece already has it as a control/unknown piece
        tokens[i], scores[i] = entry["content"], -1000.0
        types[i] = CONTROL if entry.get("special", True) else USER_DEFINED
    return GGUFVocab(model="llama", pre="default", tokens=tokens, types=types, scores=scores)


def _byte_level_bpe(path: Path, vocab_size: int) -> GGUFVocab:
    data = _read_json(path)
    model = data.get("model") or {}
    if model.get("type") != "BPE" or not _is_byte_level(data):
        raise TunewizError(
            f"`{path}` is a {model.get('type')} tokenizer without a byte-level pre-tokenizer; GGUF export "
            "writes SentencePiece (tokenizer.model) or byte-level BPE tokenizers",
            hint="put the model's `tokenizer.model` beside it, or convert with llama.cpp's "
            "`convert_hf_to_gguf.py`",
        )
    pre = _pre_tokenizer_name(data, path)
    ids: dict[int, str] = {i: tok for tok, i in model["vocab"].items()}
    types = dict.fromkeys(ids, NORMAL)
    for added in data.get("added_tokens") or []:
        ids[added["id"]] = added["content"]
        types[added["id"]] = CONTROL if added.get("special") else USER_DEFINED
    _check_fits(max(ids) + 1, vocab_size, path)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return GGUFVocab(
        model="gpt2",
        pre=pre,
        tokens=[ids.get(i, f"[PAD{i}]") for i in range(vocab_size)],
        types=[types.get(i, UNUSED) for i in range(vocab_size)],
        merges=merges,
    )


def _is_byte_level(data: dict[str, Any]) -> bool:
    return '"ByteLevel"' in json.dumps(data.get("pre_tokenizer"))


def _pre_tokenizer_name(data: dict[str, Any], path: Path) -> str:
    """llama.cpp's name for the tokenizer's split regex (see :data:`PRE_TOKENIZERS`)."""
    pre = data.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    splits = [s["pattern"].get("Regex") for s in steps if s.get("type") == "Split"]
    byte_level_regex = any(s.get("type") == "ByteLevel" and s.get("use_regex", True) for s in steps)
    digits = [s for s in steps if s.get("type") == "Digits"]
    if not splits and byte_level_regex and not digits:
        return "gpt-2"  # ByteLevel's own regex
    if not splits and byte_level_regex and [d.get("individual_digits") for d in digits] == [True]:
        return "smollm"  # SmolLM2 / StarCoder: every digit alone, then ByteLevel's regex
    if len(splits) == 1 and splits[0] in PRE_TOKENIZERS:
        return PRE_TOKENIZERS[splits[0]]
    raise TunewizError(
        f"`{path}`: llama.cpp has no pre-tokenizer known to tunewiz for the split {splits or steps}; "
        f"tunewiz knows {', '.join(sorted(set(PRE_TOKENIZERS.values())))}",
        hint="convert `final/` with llama.cpp's `convert_hf_to_gguf.py`, which knows more tokenizers by hash",
    )


def _check_fits(n_tokens: int, vocab_size: int, path: Path) -> None:
    if n_tokens > vocab_size:
        raise TunewizError(
            f"`{path}` has {n_tokens} tokens but the model's embedding has {vocab_size} rows",
            hint="the tokenizer belongs to another model; restore the run's tokenizer files",
        )


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
