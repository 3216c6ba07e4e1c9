"""The held-out story-qa rows for lm-eval, and each row's user prompt as training builds it.

The prompt is the user message of `tunewiz.data.formats.row_to_messages`; the tasks set
`metadata.chat_template: true`, so `tunewiz eval` renders it with the evaluated model's chat
template (for the tiny model, alpaca-style with bos) exactly as training rendered its samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunewiz.data.formats import row_to_messages

TEST_FILE = Path(__file__).resolve().parents[2] / "datasets" / "story-qa-test.jsonl"


def load_test_split(**_: Any) -> Any:
    """A DatasetDict with the shipped held-out file as its ``test`` split.

    lm-eval passes the task's metadata as keyword arguments; none of them changes the data.
    """
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_json(str(TEST_FILE))})


def user_prompt(doc: dict[str, str]) -> str:
    """The user message of an alpaca row: the instruction, a blank line, then the input."""
    return row_to_messages(doc, "alpaca", 0, str(TEST_FILE))[0]["content"]


def spaced_answer(doc: dict[str, str]) -> str:
    """The answer as the continuation of a chat prompt: lm-eval drops `target_delimiter` when it applies a
    chat template, and the tiny model's template puts one space between `### Response:` and the reply."""
    return " " + doc["output"]
