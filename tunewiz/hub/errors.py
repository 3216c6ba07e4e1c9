"""Every huggingface_hub failure as a TunewizError, through one ordered table.

:func:`explain_hub_error` walks the table, first match wins, so a subclass (``GatedRepoError``) is
listed before its parent (``RepositoryNotFoundError``). The token in use is redacted from every
message before it is raised. huggingface_hub is imported inside the functions.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from tunewiz.errors import TunewizError
from tunewiz.hub.auth import LOGIN_HINT

HUB_URL = "https://huggingface.co"


@dataclass(frozen=True)
class HubContext:
    """What tunewiz was doing when the Hub failed, to word the error.

    Args:
        action: ``download`` (reading a model) or ``push`` (creating a repo and uploading).
        repo_id: the repository involved.
        revision: the revision asked for, if any.
        token: the token in use, redacted from every message.
    """

    action: Literal["download", "push"]
    repo_id: str
    revision: str | None = None
    token: str | None = field(default=None, repr=False)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _server_says(exc: BaseException) -> str:
    message = getattr(exc, "server_message", None)
    return f" (the Hub says: {message.strip()})" if message and message.strip() else ""


def _offline(exc: BaseException, ctx: HubContext) -> TunewizError:
    if ctx.action == "download" and isinstance(exc, FileNotFoundError):
        message = (
            f"offline mode is on (`HF_HUB_OFFLINE=1`) and `{ctx.repo_id}` is not in the local "
            "Hugging Face cache"
        )
    else:
        message = (
            "offline mode is on (`HF_HUB_OFFLINE=1`): cannot reach the Hugging Face Hub to "
            f"{ctx.action} `{ctx.repo_id}`"
        )
    return TunewizError(
        message,
        hint="unset it (`unset HF_HUB_OFFLINE`) and run again; models already in the cache work offline",
        exit_code=1,
    )


def _gated(exc: BaseException, ctx: HubContext) -> TunewizError:
    return TunewizError(
        f"`{ctx.repo_id}` is a gated model: its license must be accepted before downloading",
        hint=f"accept it on {HUB_URL}/{ctx.repo_id} with your account, then log in with {LOGIN_HINT} "
        f"and run `tunewiz download {ctx.repo_id}` again (approval can take a while for some repos)",
        exit_code=1,
    )


def _not_found(exc: BaseException, ctx: HubContext) -> TunewizError:
    if ctx.action == "push":
        return TunewizError(
            f"cannot write to `{ctx.repo_id}`: the Hub does not show it to your token{_server_says(exc)}",
            hint=f"check the namespace (`hf auth whoami` shows yours and your orgs), and log in with a "
            f"token that has write access: {LOGIN_HINT}",
            exit_code=1,
        )
    return TunewizError(
        f"model `{ctx.repo_id}` not found on the Hugging Face Hub{_catalog_suggestion(ctx.repo_id)}",
        hint="check the repo id (`org/name`, as in the model page's URL); if it is private, log in with "
        + LOGIN_HINT,
        exit_code=1,
    )


def _no_revision(exc: BaseException, ctx: HubContext) -> TunewizError:
    return TunewizError(
        f"revision `{ctx.revision or 'main'}` not found in `{ctx.repo_id}`",
        hint=f"give a branch, tag or commit that exists ({HUB_URL}/{ctx.repo_id}/tree/main lists them), "
        "or drop `--revision`",
        exit_code=1,
    )


def _invalid_id(exc: BaseException, ctx: HubContext) -> TunewizError:
    return TunewizError(
        f"`{ctx.repo_id}` is not a valid Hugging Face repo id{_catalog_suggestion(ctx.repo_id)}",
        hint="write it as on the model page's URL: `org/name`, letters, digits, `-`, `_` and `.`",
    )


def _disabled(exc: BaseException, ctx: HubContext) -> TunewizError:
    return TunewizError(
        f"`{ctx.repo_id}` has been disabled on the Hub and cannot be used",
        hint="pick another model (`tunewiz plan --list-models` lists the catalog)",
        exit_code=1,
    )


def _not_cached(exc: BaseException, ctx: HubContext) -> TunewizError:
    return TunewizError(
        f"cannot reach the Hugging Face Hub, and `{ctx.repo_id}` is not in the local cache",
        hint="check your internet connection (or `HF_ENDPOINT`), then run the command again",
        exit_code=1,
    )


def _no_token(exc: BaseException, ctx: HubContext) -> TunewizError:
    return TunewizError(
        f"no Hugging Face token found: {ctx.action} of `{ctx.repo_id}` needs one",
        hint=LOGIN_HINT,
        exit_code=1,
    )


def _unauthorized(exc: BaseException, ctx: HubContext) -> TunewizError:
    return TunewizError(
        f"the Hugging Face Hub rejected your token (HTTP 401) for `{ctx.repo_id}`{_server_says(exc)}",
        hint=f"the token is invalid or expired: log in again with {LOGIN_HINT}",
        exit_code=1,
    )


def _forbidden(exc: BaseException, ctx: HubContext) -> TunewizError:
    if ctx.action == "push":
        return TunewizError(
            f"your token may not write to `{ctx.repo_id}` (HTTP 403){_server_says(exc)}",
            hint="use a token with the `write` role (or a fine-grained one with write access to that "
            f"namespace): {LOGIN_HINT}; `hf auth whoami` shows who you are",
            exit_code=1,
        )
    return TunewizError(
        f"access to `{ctx.repo_id}` denied (HTTP 403){_server_says(exc)}",
        hint=f"accept the model's terms on {HUB_URL}/{ctx.repo_id} if it asks for it, and log in "
        f"with {LOGIN_HINT}",
        exit_code=1,
    )


def _unreachable(exc: BaseException, ctx: HubContext) -> TunewizError:
    return TunewizError(
        f"cannot reach the Hugging Face Hub ({type(exc).__name__}: {exc})",
        hint="check your internet connection (or `HF_ENDPOINT`); models already in the cache work offline "
        "with `HF_HUB_OFFLINE=1`",
        exit_code=1,
    )


def _transport_errors() -> tuple[type[BaseException], ...]:
    # huggingface_hub 0.x speaks requests, 1.x httpx, 2.x httpx2: whichever is installed fails the same way.
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests", ("ConnectionError", "Timeout")),
    ):
        try:
            imported = __import__(module)
        except ImportError:
            continue
        found += [getattr(imported, name) for name in names if hasattr(imported, name)]
    return tuple(found)


Explain = Callable[[BaseException, HubContext], TunewizError]


def _error_table() -> list[tuple[tuple[type[BaseException], ...], int | None, Explain]]:
    """(exception classes, HTTP status or None for any, explanation); ordered, first match wins."""
    from huggingface_hub import errors as e

    return [
        ((e.OfflineModeIsEnabled,), None, _offline),
        ((e.HFValidationError,), None, _invalid_id),
        ((e.GatedRepoError,), None, _gated),  # a RepositoryNotFoundError: before it
        ((e.RepositoryNotFoundError,), None, _not_found),
        ((e.RevisionNotFoundError,), None, _no_revision),
        ((e.DisabledRepoError,), None, _disabled),
        ((e.LocalTokenNotFoundError,), None, _no_token),
        ((e.LocalEntryNotFoundError,), None, _not_cached),  # the Hub was unreachable and the cache empty
        ((e.HfHubHTTPError,), 401, _unauthorized),
        ((e.HfHubHTTPError,), 403, _forbidden),
        (_transport_errors(), None, _unreachable),
    ]


def explain_hub_error(exc: BaseException, ctx: HubContext) -> TunewizError | None:
    """Turn a huggingface_hub (or network) exception into a TunewizError, or None when unknown.

    Args:
        exc: the exception raised by huggingface_hub.
        ctx: what was being done, to which repository, with which token (redacted from the message).
    """
    from huggingface_hub import constants

    for types, status, explain in _error_table():
        if isinstance(exc, types) and (status is None or _status(exc) == status):
            if explain is _not_cached and constants.HF_HUB_OFFLINE:
                explain = _offline
            error = explain(exc, ctx)
            return _redacted(error, ctx.token)
    return None


def _redacted(error: TunewizError, token: str | None) -> TunewizError:
    if not token:
        return error
    error.message = error.message.replace(token, "hf_***")
    error.hint = error.hint.replace(token, "hf_***") if error.hint else error.hint
    error.args = (error.message,)
    return error


def _catalog_suggestion(repo_id: str) -> str:
    from tunewiz.models.catalog import CATALOG

    by_lower = {m.repo_id.lower(): m.repo_id for m in CATALOG} | {m.name: m.repo_id for m in CATALOG}
    close = difflib.get_close_matches(repo_id.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean `{by_lower[close[0]]}`?)" if close else ""
