"""A deterministic synthetic world: people, objects, colours and places, and short stories about them.

Every story is a list of facts; each fact has a sentence, plain restatements of it (for the
pretraining corpus: the base model learns to read a story back, never the Q&A format) and the
questions it answers. A fixed share of (person, object, colour) triples is held out: no training
story or pretraining document ever uses one, and every test question asks about one, so the test
set measures reading the story rather than remembering the training data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = (
    "Mia",
    "Tom",
    "Ava",
    "Leo",
    "Zoe",
    "Sam",
    "Ella",
    "Max",
    "Lily",
    "Ben",
    "Ruby",
    "Jack",
    "Nora",
    "Finn",
    "Ivy",
    "Owen",
    "Lucy",
    "Noah",
    "Emma",
    "Liam",
    "Anna",
    "Eli",
    "Rosa",
    "Hugo",
    "Maya",
    "Theo",
    "Isla",
    "Ezra",
    "Cora",
    "Adam",
    "Jade",
    "Omar",
    "Nina",
    "Kai",
    "Lena",
    "Otto",
    "Vera",
    "Ravi",
    "Tara",
    "Yuki",
    "Ines",
    "Paul",
    "Sara",
    "Dan",
    "Kim",
    "Ada",
    "Ian",
    "June",
    "Luca",
    "Alma",
)
OBJECTS = (
    "kite",
    "cup",
    "ball",
    "hat",
    "book",
    "box",
    "bike",
    "lamp",
    "chair",
    "bag",
    "coat",
    "pen",
    "boat",
    "drum",
    "key",
    "clock",
    "shoe",
    "scarf",
    "kettle",
    "vase",
    "mug",
    "plate",
    "sock",
    "car",
    "doll",
    "bell",
    "rug",
    "tent",
    "jar",
    "brush",
)
COLOURS = (
    "red",
    "blue",
    "green",
    "yellow",
    "black",
    "white",
    "pink",
    "purple",
    "orange",
    "brown",
    "grey",
    "gold",
)
PLACES = (
    "kitchen",
    "garden",
    "bedroom",
    "hall",
    "garage",
    "attic",
    "cellar",
    "bathroom",
    "office",
    "shed",
    "porch",
    "library",
    "classroom",
    "park",
    "barn",
    "studio",
)
# Distractor actions: (past tense, preposition) — they mention people and places but no object.
ACTIONS = (
    ("walked", "to"),
    ("sang", "in"),
    ("slept", "in"),
    ("read", "in"),
    ("played", "in"),
    ("cooked", "in"),
    ("danced", "in"),
    ("ran", "to"),
    ("waited", "in"),
    ("painted", "in"),
)

# Share of (name, object, colour) triples reserved for the test split.
HELD_OUT_SHARE = 0.12


@dataclass(frozen=True)
class Question:
    """One question a story answers, and its short answer (one or two words)."""

    text: str
    answer: str
    sentence: str  # the answer as a full sentence, for chat replies


@dataclass(frozen=True)
class Fact:
    """One sentence of a story with what it restates and answers.

    `triple` is the (name, object, colour) the fact uses, or None for a distractor.
    """

    sentence: str
    restatements: tuple[str, ...]
    questions: tuple[Question, ...]
    triple: tuple[str, str, str] | None


@dataclass(frozen=True)
class Story:
    """A short story: its facts in the order they are told."""

    facts: tuple[Fact, ...]

    @property
    def text(self) -> str:
        return " ".join(fact.sentence for fact in self.facts)


def held_out_triples(seed: int) -> frozenset[tuple[str, str, str]]:
    """The (name, object, colour) triples reserved for the test split.

    Args:
        seed: World seed; the same seed always reserves the same triples.
    """
    rng = random.Random(f"held-out-{seed}")
    triples = [(n, o, c) for n in NAMES for o in OBJECTS for c in COLOURS]
    return frozenset(rng.sample(triples, round(len(triples) * HELD_OUT_SHARE)))


def _a(word: str) -> str:
    """`word` with its indefinite article ("a red", "an orange")."""
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _has_fact(name: str, obj: str, colour: str) -> Fact:
    return Fact(
        sentence=f"{name} has {_a(colour)} {obj}.",
        restatements=(f"{name}'s {obj} is {colour}.", f"The {colour} {obj} belongs to {name}."),
        questions=(
            Question(f"What colour is {name}'s {obj}?", colour, f"{name}'s {obj} is {colour}."),
            Question(f"Who has {_a(colour)} {obj}?", name, f"{name} has the {colour} {obj}."),
            Question(f"What does {name} have?", f"{colour} {obj}", f"{name} has {_a(colour)} {obj}."),
        ),
        triple=(name, obj, colour),
    )


def _put_fact(name: str, obj: str, colour: str, place: str) -> Fact:
    return Fact(
        sentence=f"{name} put the {colour} {obj} in the {place}.",
        restatements=(f"The {colour} {obj} is in the {place}.", f"{name} put it there."),
        questions=(
            Question(f"Where is the {colour} {obj}?", place, f"The {colour} {obj} is in the {place}."),
            Question(f"Who put the {colour} {obj} in the {place}?", name, f"{name} put it there."),
            Question(
                f"What colour is the {obj} in the {place}?", colour, f"The {obj} in the {place} is {colour}."
            ),
        ),
        triple=(name, obj, colour),
    )


def _action_fact(name: str, place: str, rng: random.Random) -> Fact:
    verb, prep = rng.choice(ACTIONS)
    return Fact(sentence=f"{name} {verb} {prep} the {place}.", restatements=(), questions=(), triple=None)


def make_story(
    rng: random.Random, held_out: frozenset[tuple[str, str, str]], *, test_fact: bool = False
) -> Story:
    """Draw one story of 2-4 facts with distinct people, objects and places.

    Args:
        rng: The generator's random source (consumed deterministically).
        held_out: Triples reserved for the test split.
        test_fact: When true, the first object fact uses a held-out triple (the one a test question
            asks about) and the others do not; when false, no fact uses a held-out triple.
    """
    n_facts = rng.randint(2, 4)
    names = rng.sample(NAMES, n_facts)
    objects = rng.sample(OBJECTS, n_facts)
    places = rng.sample(PLACES, n_facts)
    kinds = [rng.choice(("has", "put", "has", "put", "action")) for _ in range(n_facts)]
    if "action" in kinds and all(kind == "action" for kind in kinds):
        kinds[0] = "has"
    if test_fact and kinds[0] == "action":
        kinds[0] = "has"
    facts = []
    for i, (name, obj, place, kind) in enumerate(zip(names, objects, places, kinds, strict=True)):
        if kind == "action":
            facts.append(_action_fact(name, place, rng))
            continue
        if test_fact and i == 0:
            free = sorted(t for t in held_out if t[0] not in names[1:] and t[1] not in objects[1:])
            name, obj, colour = rng.choice(free)
        else:
            colour = rng.choice([c for c in COLOURS if (name, obj, c) not in held_out])
        facts.append(_has_fact(name, obj, colour) if kind == "has" else _put_fact(name, obj, colour, place))
    order = list(range(n_facts))
    rng.shuffle(order)
    return Story(facts=tuple(facts[i] for i in order))


def question_fact(story: Story, held_out: frozenset[tuple[str, str, str]]) -> Fact:
    """The fact of a test story that uses a held-out triple (exactly one does).

    Args:
        story: A story made with `test_fact=True`.
        held_out: Triples reserved for the test split.
    """
    (fact,) = [f for f in story.facts if f.triple in held_out]
    return fact
