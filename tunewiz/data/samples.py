"""Token samples: shifted labels and truncation to ``max_seq_len`` (right, left or drop).

The tokens of a row come from the prompt builder (``tunewiz.text.prompt.PromptBuilder``), the same
code that builds prompts at inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

IGNORE_INDEX = -100  # label of positions that carry no loss (prompt, padding); torch cross_entropy's default
TruncationMode = Literal["right", "left", "drop"]


@dataclass(frozen=True)
class Sample:
    """One training row.

    ``labels`` are already shifted: ``labels[t]`` is the target predicted at position ``t``
    (``input_ids[t + 1]``) when that token is trained, else IGNORE_INDEX (-100); the last position
    is IGNORE_INDEX.
    Packed rows also carry ``position_ids`` (restarting per sample) and ``document_ids`` (which
    sample of the row each position belongs to, for the block-diagonal attention mask).
    """

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int] | None = None
    document_ids: list[int] | None = None


def truncate(
    tokens: list[int], trained: list[bool], max_seq_len: int, mode: TruncationMode, bos_id: int | None
) -> tuple[list[int], list[bool]] | None:
    """Fit a sample into ``max_seq_len`` tokens, or None when ``mode`` is ``drop`` and it is longer.

    ``right`` keeps the first ``max_seq_len`` tokens (the prompt; a long reply loses its end).
    ``left`` keeps the last ones (the reply; a long prompt loses its beginning), after the bos token
    when the sample starts with one, so the model still sees a sequence start.

    Args:
        tokens: token ids.
        trained: per token, whether it is a loss target.
        max_seq_len: longest allowed sample.
        mode: ``right``, ``left`` or ``drop``.
        bos_id: the tokenizer's bos id (kept first by ``left``), or None.
    """
    if len(tokens) <= max_seq_len:
        return tokens, trained
    if mode == "drop":
        return None
    if mode == "right":
        return tokens[:max_seq_len], trained[:max_seq_len]
    keep_bos = bos_id is not None and tokens[0] == bos_id and max_seq_len > 1
    if keep_bos:
        tail = max_seq_len - 1
        return [tokens[0], *tokens[-tail:]], [trained[0], *trained[-tail:]]
    return tokens[-max_seq_len:], trained[-max_seq_len:]


def to_sample(tokens: list[int], trained: list[bool]) -> Sample:
    """A Sample with shifted labels.

    Args:
        tokens: token ids (already at most ``max_seq_len``).
        trained: per token, whether it is a loss target.
    """
    # labels[t] = tokens[t + 1] when trained; the last position has no next token in this sample.
    labels = [tok if keep else IGNORE_INDEX for tok, keep in zip(tokens[1:], trained[1:], strict=True)] + [
        IGNORE_INDEX
    ]
    return Sample(input_ids=tokens, labels=labels)
