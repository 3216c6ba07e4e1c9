"""Rows to token samples: template segments → tokens, loss mask, shifted labels, truncation."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from tunewiz.text.templates import ChatTemplate
from tunewiz.text.tokenizer import Tokenizer

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Sample:
    """One training row.

    ``labels`` are already shifted: ``labels[t]`` is the target predicted at position ``t``
    (``input_ids[t + 1]``) when that token is trained, else -100; the last position is -100.
    Packed rows also carry ``position_ids`` (restarting per sample) and ``document_ids`` (which
    sample of the row each position belongs to, for the block-diagonal attention mask).
    """

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int] | None = None
    document_ids: list[int] | None = None


def chat_tokens(
    messages: list[dict[str, str]], template: ChatTemplate, tokenizer: Tokenizer, *, train_on_inputs: bool
) -> tuple[list[int], list[bool]]:
    """Token ids of a conversation and which of them are trained.

    The rendering is encoded once, as at inference; each token goes to the template segment that holds
    its last character (so a token spanning the boundary into the reply, like SentencePiece's
    "▁answer" after "[/INST] ", is trained). bos is prepended when the tokenizer has one and the template
    did not emit it; eos follows each assistant turn that has no stop token of its own.

    Args:
        messages: the conversation.
        template: the chat template.
        tokenizer: the tokenizer.
        train_on_inputs: train on every token, not only the assistant's.
    """
    segments = template.segments(messages)
    text = "".join(piece for piece, _ in segments)
    ids, offsets = tokenizer.encode_with_offsets(text)
    ends = []
    total = 0
    for piece, _ in segments:
        total += len(piece)
        ends.append(total)
    groups: list[list[int]] = [[] for _ in segments]
    for token, (start, end) in zip(ids, offsets, strict=True):
        key = end - 1 if end > start else start
        groups[min(bisect_right(ends, key), len(segments) - 1)].append(token)

    tokens: list[int] = []
    trained: list[bool] = []
    if tokenizer.bos_id is not None and (not ids or ids[0] != tokenizer.bos_id):
        tokens.append(tokenizer.bos_id)
        trained.append(False)
    for (_, is_assistant), group in zip(segments, groups, strict=True):
        tokens.extend(group)
        trained.extend([is_assistant or train_on_inputs] * len(group))
        if is_assistant and not tokenizer.stop_ids.intersection(group):
            tokens.append(tokenizer.eos_id)
            trained.append(True)
    return tokens, trained


def text_tokens(text: str, tokenizer: Tokenizer) -> tuple[list[int], list[bool]]:
    """bos + text + eos, every token trained.

    Args:
        text: the document.
        tokenizer: the tokenizer.
    """
    tokens = tokenizer.encode(text, add_bos=True, add_eos=True)
    return tokens, [True] * len(tokens)


def to_sample(tokens: list[int], trained: list[bool], max_seq_len: int) -> tuple[Sample, bool]:
    """A Sample with shifted labels, truncated to ``max_seq_len``; also whether it was truncated.

    Args:
        tokens: token ids.
        trained: per token, whether it is a loss target.
        max_seq_len: longest allowed sample.
    """
    truncated = len(tokens) > max_seq_len
    tokens, trained = tokens[:max_seq_len], trained[:max_seq_len]
    # labels[t] = tokens[t + 1] when trained; the last position has no next token in this sample.
    labels = [tok if keep else IGNORE_INDEX for tok, keep in zip(tokens[1:], trained[1:], strict=True)] + [
        IGNORE_INDEX
    ]
    return Sample(input_ids=tokens, labels=labels), truncated
