"""The Hugging Face Hub: download a base model into the HF cache, and push a run's adapter or merged
model with its model card.

``download_model`` fetches only what :func:`tunewiz.models.loading.resolve_model_dir` reads
(:data:`HUB_PATTERNS`: safetensors, config, generation config, tokenizer), at the repository's top
level (never ``original/`` pickles), after checking the free disk against the files' sizes. It puts
them in the standard HF cache (or ``--output-dir``), where a preset's ``model.path: org/name``
finds them offline. ``push_run`` stages a folder (the adapter or the merged weights, the tokenizer,
``README.md``, ``loss.png``, the badge) and uploads it with ``create_repo`` + ``upload_folder``.

Every huggingface_hub failure goes through one ordered table (:func:`explain_hub_error`), first
match wins, so a subclass (``GatedRepoError``) is listed before its parent
(``RepositoryNotFoundError``). The token is read by huggingface_hub (``HF_TOKEN`` or the login
cache), passed to ``HfApi`` and never printed: messages are redacted before they are raised.
huggingface_hub is imported inside the functions; importing this module is cheap.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunewiz.errors import TunewizError
from tunewiz.models.loading import HUB_IGNORE_PATTERNS, HUB_PATTERNS, INDEX_FILE
from tunewiz.rundir import RunDir

__all__ = [
    "HUB_IGNORE_PATTERNS", "HUB_PATTERNS", "DownloadPlan", "DownloadResult", "HubContext", "StagedFolder", "download_model",
    "explain_hub_error", "plan_download", "push_run", "resolve_repo_alias", "stage_push", "write_token",
]

PushKind = Literal["adapter", "merged"]
HUB_URL = "https://huggingface.co"
LOGIN_HINT = "`hf auth login` (or set `HF_TOKEN`)"
# How long to wait for the Hub's first answer: a dead network fails in seconds, not minutes.
METADATA_TIMEOUT_S = 10.0
BADGE_FILE = "tunewiz-badge.svg"
BADGE_ASSET = Path(__file__).resolve().parent / "assets" / "badge.svg"
# Files a tokenizer may consist of; the adapter repo carries them too, so
# `AutoTokenizer.from_pretrained(adapter_repo)` works and the chat template travels with the adapter.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
    "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja",
)
_PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl")


# --- errors ---------------------------------------------------------------------------------------


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
        message = f"offline mode is on (`HF_HUB_OFFLINE=1`) and `{ctx.repo_id}` is not in the local Hugging Face cache"
    else:
        message = f"offline mode is on (`HF_HUB_OFFLINE=1`): cannot reach the Hugging Face Hub to {ctx.action} `{ctx.repo_id}`"
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
        f"no Hugging Face token found: {ctx.action} of `{ctx.repo_id}` needs one", hint=LOGIN_HINT, exit_code=1
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
        hint=f"accept the model's terms on {HUB_URL}/{ctx.repo_id} if it asks for it, and log in with {LOGIN_HINT}",
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
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout"))):
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
    from tunewiz.catalog import CATALOG

    by_lower = {m.repo_id.lower(): m.repo_id for m in CATALOG} | {m.name: m.repo_id for m in CATALOG}
    close = difflib.get_close_matches(repo_id.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean `{by_lower[close[0]]}`?)" if close else ""


def resolve_repo_alias(name: str) -> str:
    """A catalog short name (``smollm2-135m``) becomes its repo id; anything else is returned as given.

    Args:
        name: a Hub repo id or a catalog short name.
    """
    from tunewiz.catalog import CATALOG

    if "/" in name:
        return name
    return next((m.repo_id for m in CATALOG if m.name == name.lower()), name)


# --- download -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadPlan:
    """The files to fetch from a repository and their sizes.

    Args:
        repo_id: the repository.
        commit: the commit the revision resolved to.
        files: file name -> size in bytes, for the files tunewiz uses.
        missing_bytes: bytes of those files not yet on disk where they will go.
    """

    repo_id: str
    commit: str
    files: dict[str, int]
    missing_bytes: int

    @property
    def total_bytes(self) -> int:
        """Size of every file to fetch, in bytes."""
        return sum(self.files.values())


@dataclass(frozen=True)
class DownloadResult:
    """Where a model ended up.

    Args:
        repo_id: the repository.
        path: the directory holding its files (an HF cache snapshot, or ``--output-dir``).
        files: the file names it holds that tunewiz uses.
        downloaded_bytes: bytes fetched now (0 when everything was already there).
        offline: the Hub was not asked (``HF_HUB_OFFLINE``); the files come from the cache.
    """

    repo_id: str
    path: Path
    files: tuple[str, ...]
    downloaded_bytes: int
    offline: bool = False


def select_files(sizes: dict[str, int | None], repo_id: str) -> dict[str, int]:
    """The files of a repository tunewiz uses: top-level files matching :data:`HUB_PATTERNS`.

    Sub-folders (``original/``, ``onnx/``) hold other formats of the same weights; pickled
    ``.bin``/``.pth`` files are never fetched.

    Args:
        sizes: every file of the repository (path relative to its root) -> size in bytes.
        repo_id: the repository, for the error message.

    Raises:
        TunewizError: the repository has no safetensors weights at its top level.
    """
    chosen = {
        name: size or 0
        for name, size in sizes.items()
        if "/" not in name and any(fnmatch.fnmatchcase(name, pattern) for pattern in HUB_PATTERNS)
    }
    if not any(name.endswith(".safetensors") for name in chosen):
        pickles = sorted(name for name in sizes if name.endswith(_PICKLE_SUFFIXES))
        found = f" (it has {', '.join(pickles[:3])}{', ...' if len(pickles) > 3 else ''})" if pickles else ""
        raise TunewizError(
            f"`{repo_id}` has no safetensors weights{found}; tunewiz loads safetensors only, never pickled "
            "checkpoints (they can run code when loaded)",
            hint="look for a safetensors version of this model on the Hub (many repos have a "
            "`refs/pr/N` conversion: pass it with `--revision`)",
            exit_code=1,
        )
    if "config.json" not in chosen:
        raise TunewizError(f"`{repo_id}` has no config.json at its top level; it is not a transformers model",
                           hint="pick a repo whose files include config.json and *.safetensors", exit_code=1)
    return chosen


def plan_download(repo_id: str, *, revision: str | None = None, output_dir: Path | None = None,
                  token: str | None = None) -> DownloadPlan:
    """Ask the Hub which files a download needs and how many bytes are missing locally.

    Args:
        repo_id: the model repository.
        revision: branch, tag or commit (default ``main``).
        output_dir: the download target instead of the HF cache.
        token: Hub token, or None for huggingface_hub's own (``HF_TOKEN`` or the login cache).

    Raises:
        TunewizError: the repo is gated, unknown, has no safetensors, or the Hub is unreachable.
    """
    from huggingface_hub import HfApi

    try:
        info = HfApi(token=token).model_info(repo_id, revision=revision, files_metadata=True,
                                             timeout=METADATA_TIMEOUT_S)
    except Exception as exc:
        error = explain_hub_error(exc, HubContext("download", repo_id, revision, token))
        if error is None:
            raise
        raise error from None
    siblings = {s.rfilename: s for s in info.siblings or []}
    files = select_files({name: s.size for name, s in siblings.items()}, repo_id)
    missing = sum(size for name, size in files.items() if not _present(siblings[name], name, size, repo_id, output_dir))
    return DownloadPlan(repo_id, info.sha or revision or "main", files, missing)


def _present(sibling: Any, name: str, size: int, repo_id: str, output_dir: Path | None) -> bool:
    """Whether a file is already on disk where the download would put it (so it costs no space)."""
    if output_dir is not None:
        path = output_dir / name
        return path.is_file() and path.stat().st_size == size
    from huggingface_hub import constants

    # The cache stores each file once as blobs/<etag>: the sha256 for LFS files, the git oid otherwise.
    etag = sibling.lfs.sha256 if sibling.lfs else sibling.blob_id
    folder = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
    return bool(etag) and (folder / "blobs" / etag).is_file()


def download_target(output_dir: Path | None) -> Path:
    """The directory a download writes to: ``output_dir``, else the HF hub cache."""
    from huggingface_hub import constants

    return output_dir if output_dir is not None else Path(constants.HF_HUB_CACHE)


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem of ``path`` (or of its nearest existing parent)."""
    existing = path.expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def check_disk(plan: DownloadPlan, target: Path) -> None:
    """Refuse to start a download that cannot fit.

    Args:
        plan: from :func:`plan_download`.
        target: where the files go.

    Raises:
        TunewizError: fewer free bytes than the missing files need.
    """
    free = free_bytes(target)
    if plan.missing_bytes > free:
        raise TunewizError(
            f"not enough disk space for `{plan.repo_id}`: it needs {_gb(plan.missing_bytes)}, "
            f"`{target}` has {_gb(free)} free",
            hint="free some space, or download elsewhere: `--output-dir DIR` on a larger disk "
            "(or move the whole cache there with `HF_HOME=DIR`)",
            exit_code=1,
        )


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def download_model(repo_id: str, *, revision: str | None = None, output_dir: Path | None = None,
                   on_plan: Callable[[DownloadPlan], None] | None = None) -> DownloadResult:
    """Download the files tunewiz uses from a model repository, with huggingface_hub's progress bars.

    With ``HF_HUB_OFFLINE=1`` nothing is asked of the Hub: a model already in the cache is returned
    as it is, anything else fails at once.

    Args:
        repo_id: ``org/name`` (a catalog short name such as ``smollm2-135m`` works too).
        revision: branch, tag or commit (default ``main``).
        output_dir: a plain directory instead of the HF cache (then name that directory in presets).
        on_plan: called with the plan once the Hub answered, before any byte is fetched.

    Raises:
        TunewizError: gated, unknown, no safetensors, not enough disk, offline or unreachable.
    """
    from huggingface_hub import constants, snapshot_download

    repo_id = resolve_repo_alias(repo_id)
    ctx = HubContext("download", repo_id, revision)
    if constants.HF_HUB_OFFLINE:
        return _from_cache(repo_id, revision, output_dir, ctx)
    plan = plan_download(repo_id, revision=revision, output_dir=output_dir)
    target = download_target(output_dir)
    check_disk(plan, target)
    if on_plan is not None:
        on_plan(plan)
    try:
        path = snapshot_download(
            repo_id, revision=revision, local_dir=output_dir, allow_patterns=sorted(plan.files),
            etag_timeout=METADATA_TIMEOUT_S,
        )
    except Exception as exc:
        error = explain_hub_error(exc, ctx)
        if error is None:
            raise
        raise error from None
    return DownloadResult(repo_id, Path(path), tuple(sorted(plan.files)), plan.missing_bytes)


def _from_cache(repo_id: str, revision: str | None, output_dir: Path | None, ctx: HubContext) -> DownloadResult:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from tunewiz.models.loading import check_model_dir

    try:
        path = Path(snapshot_download(repo_id, revision=revision, local_dir=output_dir, local_files_only=True,
                                      allow_patterns=HUB_PATTERNS, ignore_patterns=HUB_IGNORE_PATTERNS))
    except LocalEntryNotFoundError as exc:
        if getattr(exc, "snapshot_path", None):  # IncompleteSnapshotError: an interrupted download
            raise TunewizError(
                f"the cached copy of `{repo_id}` is incomplete (`{exc.snapshot_path}`), and offline mode is on",
                hint=f"run `tunewiz download {repo_id}` once with network access to finish it",
                exit_code=1,
            ) from None
        raise _offline(exc, ctx) from None
    check_model_dir(path)
    files = tuple(sorted(p.name for p in path.iterdir() if any(fnmatch.fnmatchcase(p.name, pat) for pat in HUB_PATTERNS)))
    return DownloadResult(repo_id, path, files, 0, offline=True)


# --- push -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedFolder:
    """A folder ready to upload.

    Args:
        path: the folder.
        kind: ``adapter`` or ``merged``.
        files: its file names, sorted.
        warnings: things the user should know (no license, a local base model, ...).
    """

    path: Path
    kind: PushKind
    files: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def check_run_dir(run_dir: Path) -> RunDir:
    """The run directory, if it has a config and a finished ``final/``.

    Args:
        run_dir: the directory ``tunewiz train`` wrote.

    Raises:
        TunewizError: not a run directory, or the run has not finished (with the resume command).
    """
    run = RunDir(Path(run_dir))
    if not run.config.is_file():
        raise TunewizError(f"`{run_dir}` is not a run directory: `{run.config}` does not exist",
                           hint="pass the directory `tunewiz train` created, e.g. `runs/<name>`")
    if not run.final.is_dir():
        latest = run.latest_checkpoint()
        where = f" (its newest checkpoint is `{latest.name}`)" if latest else ""
        raise TunewizError(
            f"`{run_dir}` has no `final/`: the run has not finished{where}",
            hint=f"finish it with `tunewiz resume {run_dir}`, then push again",
        )
    return run


def _choose_kind(run: RunDir, kind: PushKind | None) -> PushKind:
    has_adapter = (run.adapter / "adapter_model.safetensors").is_file()
    has_merged = (run.final / "model.safetensors").is_file() or (run.final / INDEX_FILE).is_file()
    if kind is None:
        kind = "adapter" if has_adapter else "merged"
    if kind == "adapter" and not has_adapter:
        raise TunewizError(
            f"`{run.final}` has no LoRA adapter (`adapter/adapter_model.safetensors`)",
            hint="push the merged model with `--merged`" if has_merged else
            "the run saved no adapter: set `output.adapter: true` (LoRA runs only) and train again",
        )
    if kind == "merged" and not has_merged:
        raise TunewizError(
            f"`{run.final}` has no merged model (`model.safetensors`): the run had `output.merged: false`",
            hint="push the adapter with `--adapter`" if has_adapter else "train with `output.merged: true`",
        )
    return kind


def _files_to_stage(run: RunDir, kind: PushKind) -> dict[str, Path]:
    """Staged name -> source file."""
    tokenizer = {name: run.final / name for name in TOKENIZER_FILES if (run.final / name).is_file()}
    if kind == "adapter":
        weights = {p.name: p for p in sorted(run.adapter.iterdir()) if p.is_file()}
        return {**weights, **tokenizer}
    weights = {
        p.name: p for p in sorted(run.final.iterdir())
        if p.is_file() and any(fnmatch.fnmatchcase(p.name, pat) for pat in HUB_PATTERNS)
    }
    return {**weights, **tokenizer}


def _place(source: Path, dest: Path) -> None:
    # Weights can be gigabytes: a hard link costs nothing; exports replace files by rename, never in place.
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def stage_push(run_dir: Path, out_dir: Path, *, repo_id: str, kind: PushKind | None = None,
               license: str | None = None) -> StagedFolder:
    """Write the folder that ``tunewiz push`` uploads: weights, tokenizer, ``README.md``, ``loss.png``, badge.

    The folder is built beside ``out_dir`` and renamed into place, so ``out_dir`` is complete or absent.

    Args:
        run_dir: a finished run directory.
        out_dir: the folder to create; must not exist or be empty.
        repo_id: ``user/name`` the card's usage snippets name.
        kind: ``adapter`` (the PEFT adapter) or ``merged``; None picks the adapter when there is one.
        license: license id for the card; None takes the base model's from the catalog.

    Raises:
        TunewizError: the run is unfinished, lacks the asked-for weights, or ``out_dir`` is not empty.
    """
    from tunewiz.modelcard import read_card_facts, render_model_card

    check_repo_id(repo_id)
    run = check_run_dir(run_dir)
    kind = _choose_kind(run, kind)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise TunewizError(f"`{out_dir}` already exists and is not empty; the staged folder would mix with it",
                           hint="pass a new or empty directory to `--dry-run`")
    files = _files_to_stage(run, kind)
    has_loss_plot = run.loss_plot.is_file()
    facts = read_card_facts(run)
    card, warnings = render_model_card(facts, repo_id=repo_id, kind=kind, license=license,
                                       badge=BADGE_FILE, loss_plot="loss.png" if has_loss_plot else None)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for name, source in files.items():
            _place(source, staging / name)
        if has_loss_plot:
            _place(run.loss_plot, staging / "loss.png")
        shutil.copy2(BADGE_ASSET, staging / BADGE_FILE)
        (staging / "README.md").write_text(card, encoding="utf-8")
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return StagedFolder(out_dir, kind, tuple(sorted(p.name for p in out_dir.iterdir())), tuple(warnings))


def check_repo_id(repo_id: str) -> None:
    """Require ``user/name`` with Hub-valid characters.

    Args:
        repo_id: the repository to push to.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise TunewizError(f"`{repo_id}` is not a valid repo id: {exc}",
                           hint="use `USER/NAME` with letters, digits, `-`, `_` and `.`") from None
    if repo_id.count("/") != 1:
        raise TunewizError(f"`--repo-id {repo_id}` must be `USER/NAME` (or `ORG/NAME`)",
                           hint="`hf auth whoami` shows your user name and organisations")


def write_token() -> str:
    """The Hub token huggingface_hub would use (``HF_TOKEN``, else the login cache).

    Raises:
        TunewizError: there is none.
    """
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise TunewizError("no Hugging Face token: pushing needs one with write access",
                           hint=f"{LOGIN_HINT}; `tunewiz push --dry-run DIR` writes the folder without one",
                           exit_code=1)
    return token


def push_run(run_dir: Path, *, repo_id: str, kind: PushKind | None = None, private: bool = False,
             license: str | None = None,
             on_staged: Callable[[StagedFolder], None] | None = None) -> str:
    """Stage a run's adapter or merged model with its card, create the repo if needed, and upload it.

    Args:
        run_dir: a finished run directory.
        repo_id: ``user/name`` on the Hub.
        kind: ``adapter`` or ``merged``; None picks the adapter when there is one.
        private: create the repository private (an existing repo keeps its visibility).
        license: license id for the card; None takes the base model's.
        on_staged: called with the staged folder before the upload starts.

    Returns:
        The repository's URL.

    Raises:
        TunewizError: no token, no write access, offline, or an unfinished run.
    """
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    check_run_dir(run_dir)
    token = write_token()
    with tempfile.TemporaryDirectory(prefix="tunewiz-push-") as tmp:
        staged = stage_push(run_dir, Path(tmp) / "repo", repo_id=repo_id, kind=kind, license=license)
        if on_staged is not None:
            on_staged(staged)
        api = HfApi(token=token)
        try:
            url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=staged.path,
                              commit_message=f"Upload {staged.kind} trained with tunewiz")
        except Exception as exc:
            error = explain_hub_error(exc, HubContext("push", repo_id, None, token))
            if error is None:
                raise
            raise error from None
    return str(url)
