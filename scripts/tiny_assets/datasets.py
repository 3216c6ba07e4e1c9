"""The shipped sample datasets and the pretraining corpus, as rows ready for JSONL.

Each dataset draws from its own seeded random stream, so changing the size of one never changes
another. Train-side rows never use a held-out (name, object, colour) triple; test rows always ask
about one, so no test story can appear in any training file.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from tiny_assets.world import Story, held_out_triples, make_story, question_fact

QA_INSTRUCTION = "Answer the question about the story."
CHAT_SYSTEM = "You answer questions about short stories in one sentence."


@dataclass(frozen=True)
class Sizes:
    """How many rows each file gets."""

    qa_train: int = 2000
    qa_test: int = 200
    chat: int = 500
    text: int = 300
    pretrain: int = 10000


def _rng(seed: int, name: str) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`, so it does not depend on PYTHONHASHSEED.
    return random.Random(f"tunewiz-{seed}-{name}")


def _reading(story: Story, rng: random.Random) -> str:
    """The story, a newline, then its facts restated in a new order (the pretraining signal)."""
    facts = [fact for fact in story.facts if fact.restatements]
    rng.shuffle(facts)
    restated = [" ".join(fact.restatements[: rng.randint(1, len(fact.restatements))]) for fact in facts]
    return story.text + "\n" + " ".join(restated)


def qa_rows(seed: int, count: int, *, test: bool) -> list[dict[str, str]]:
    """Alpaca rows (instruction/input/output) asking one question about a story.

    Args:
        seed: World seed.
        count: Number of rows.
        test: Held-out rows (each asks about a held-out triple) instead of training rows.
    """
    held_out = held_out_triples(seed)
    rng = _rng(seed, "qa-test" if test else "qa-train")
    rows = []
    for _ in range(count):
        story = make_story(rng, held_out, test_fact=test)
        if test:
            fact = question_fact(story, held_out)
        else:
            fact = rng.choice([f for f in story.facts if f.questions])
        question = rng.choice(fact.questions)
        rows.append(
            {
                "instruction": QA_INSTRUCTION,
                "input": f"{story.text}\n{question.text}",
                "output": question.answer,
            }
        )
    return rows


def chat_rows(seed: int, count: int) -> list[dict[str, list[dict[str, str]]]]:
    """Chat rows (`messages` with role/content): one to three questions about a story.

    Args:
        seed: World seed.
        count: Number of conversations.
    """
    held_out = held_out_triples(seed)
    rng = _rng(seed, "chat")
    rows = []
    for _ in range(count):
        story = make_story(rng, held_out)
        questions = [q for fact in story.facts for q in fact.questions]
        turns = rng.sample(questions, min(len(questions), rng.choice((1, 1, 1, 2, 3))))
        messages = [{"role": "system", "content": CHAT_SYSTEM}] if rng.random() < 0.3 else []
        for i, question in enumerate(turns):
            user = f"{story.text}\n{question.text}" if i == 0 else question.text
            messages += [
                {"role": "user", "content": user},
                {"role": "assistant", "content": question.sentence},
            ]
        rows.append({"messages": messages})
    return rows


def text_rows(seed: int, count: int, name: str) -> list[dict[str, str]]:
    """Plain-text rows: a story followed by its facts restated (no questions, no instructions).

    Args:
        seed: World seed.
        count: Number of rows.
        name: Stream name, so the text sample and the pretraining corpus differ.
    """
    held_out = held_out_triples(seed)
    rng = _rng(seed, name)
    return [{"text": _reading(make_story(rng, held_out), rng)} for _ in range(count)]


def build_datasets(seed: int, sizes: Sizes) -> dict[str, list[dict]]:
    """Every dataset file's rows, keyed by file name.

    Args:
        seed: World seed.
        sizes: Row counts.
    """
    return {
        "story-qa.jsonl": qa_rows(seed, sizes.qa_train, test=False),
        "story-qa-test.jsonl": qa_rows(seed, sizes.qa_test, test=True),
        "story-chat.jsonl": chat_rows(seed, sizes.chat),
        "story-text.jsonl": text_rows(seed, sizes.text, "text"),
        "pretrain.jsonl": text_rows(seed, sizes.pretrain, "pretrain"),
    }


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write rows as UTF-8 JSON lines with a fixed layout (byte-stable across runs).

    Args:
        path: Output file.
        rows: JSON-serialisable rows.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
