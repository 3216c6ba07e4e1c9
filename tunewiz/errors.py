"""Known failures, and how the CLI shows them.

A known failure is a :class:`TunewizError`: one ``error:`` line naming the culprit (the key, the
file, the value) and what was expected, and a ``hint:`` with the next thing to run. The CLI prints
it to stderr and exits with ``exit_code``; it never shows a traceback for it. Unknown failures keep
their traceback, which ``TUNEWIZ_DEBUG=1`` shows in full.
"""

from __future__ import annotations


class TunewizError(Exception):
    """A failure the user can fix.

    Args:
        message: what went wrong, naming the culprit (the key, the file and line, the value).
        hint: the fix or the next command to run; commands and paths in backticks.
        exit_code: process exit code the CLI uses (2 for bad input, 1 otherwise).
    """

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\nhint: {self.hint}"


def did_you_mean(word: str, choices: list[str] | tuple[str, ...] | set[str]) -> str:
    """Return `` (did you mean `x`?)`` for the closest choice, or an empty string."""
    import difflib

    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def set_argument(key: str, value: object) -> str:
    """The ``--set`` argument, shell-quoted, that sets ``key`` to ``value`` written in YAML flow style, as
    ``tunewiz.preset.files.apply_overrides`` reads it back: ``'data.path=[a.jsonl, {path: b.csv,
    weight: 2.0}]'``.

    Args:
        key: a dotted preset key.
        value: plain data (strings, numbers, lists, mappings).
    """
    import re
    import shlex

    import yaml

    flow = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False, allow_unicode=True)
    text = f"{key}={flow.removesuffix(chr(10) + '...').strip()}"
    # YAML quotes `tunewiz:story-qa` with '...': double quotes read better than shlex's '"'"'.
    return f'"{text}"' if "'" in text and not re.search(r'[\\"$`!]', text) else shlex.quote(text)
