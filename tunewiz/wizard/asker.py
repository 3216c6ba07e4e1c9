"""Who answers the wizard's questions: the ``Asker`` protocol and the ``Choice`` of a select question.

The wizard never talks to a terminal itself: ``tunewiz init`` passes a questionary asker, tests pass a
scripted one, and nobody asks when there is no terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Choice:
    """One answer of a select question.

    Args:
        value: what the step receives.
        title: the line shown.
        description: shown under the list while this answer is highlighted.
    """

    value: str
    title: str
    description: str | None = None


class Asker(Protocol):
    """Asks the user; the wizard never talks to a terminal itself."""

    def select(self, message: str, choices: list[Choice], default: str | None) -> str: ...

    def text(self, message: str, default: str, validate: Callable[[str], str | None]) -> str: ...

    def confirm(self, message: str, default: bool) -> bool: ...

    def checkbox(self, message: str, choices: list[Choice], default: list[str]) -> list[str]: ...
