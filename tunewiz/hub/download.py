"""`tunewiz download`: fetch the files tunewiz loads from a model repository into the HF cache.

``download_model`` fetches only what :func:`tunewiz.models.loading.resolve_model_dir` reads
(:data:`HUB_PATTERNS`: safetensors, config, generation config, tokenizer), at the repository's top
level (never ``original/`` pickles), after checking the free disk against the files' sizes. It puts
them in the standard HF cache (or ``--output-dir``), where a preset's ``model.path: org/name``
finds them offline.
"""

from __future__ import annotations

import fnmatch
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewiz.errors import TunewizError
from tunewiz.hub.errors import HubContext, _offline, explain_hub_error
from tunewiz.models.loading import HUB_IGNORE_PATTERNS, HUB_PATTERNS
from tunewiz.units import fmt_disk_bytes

# How long to wait for the Hub's first answer: a dead network fails in seconds, not minutes.
METADATA_TIMEOUT_S = 10.0
_PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl")


def resolve_repo_alias(name: str) -> str:
    """A catalog short name (``smollm2-135m``) becomes its repo id; anything else is returned as given.

    Args:
        name: a Hub repo id or a catalog short name.
    """
    from tunewiz.models.catalog import CATALOG

    if "/" in name:
        return name
    return next((m.repo_id for m in CATALOG if m.name == name.lower()), name)


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
        raise TunewizError(
            f"`{repo_id}` has no config.json at its top level; it is not a transformers model",
            hint="pick a repo whose files include config.json and *.safetensors",
            exit_code=1,
        )
    return chosen


def plan_download(
    repo_id: str, *, revision: str | None = None, output_dir: Path | None = None, token: str | None = None
) -> DownloadPlan:
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
        info = HfApi(token=token).model_info(
            repo_id, revision=revision, files_metadata=True, timeout=METADATA_TIMEOUT_S
        )
    except Exception as exc:
        error = explain_hub_error(exc, HubContext("download", repo_id, revision, token))
        if error is None:
            raise
        raise error from None
    siblings = {s.rfilename: s for s in info.siblings or []}
    files = select_files({name: s.size for name, s in siblings.items()}, repo_id)
    missing = sum(
        size for name, size in files.items() if not _present(siblings[name], name, size, repo_id, output_dir)
    )
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
        size, free_size = fmt_disk_bytes(plan.missing_bytes), fmt_disk_bytes(free)
        raise TunewizError(
            f"not enough disk space for `{plan.repo_id}`: it needs {size}, `{target}` has {free_size} free",
            hint="free some space, or download elsewhere: `--output-dir DIR` on a larger disk "
            "(or move the whole cache there with `HF_HOME=DIR`)",
            exit_code=1,
        )


def download_model(
    repo_id: str,
    *,
    revision: str | None = None,
    output_dir: Path | None = None,
    on_plan: Callable[[DownloadPlan], None] | None = None,
) -> DownloadResult:
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
            repo_id,
            revision=revision,
            local_dir=output_dir,
            allow_patterns=sorted(plan.files),
            etag_timeout=METADATA_TIMEOUT_S,
        )
    except Exception as exc:
        error = explain_hub_error(exc, ctx)
        if error is None:
            raise
        raise error from None
    return DownloadResult(repo_id, Path(path), tuple(sorted(plan.files)), plan.missing_bytes)


def _from_cache(
    repo_id: str, revision: str | None, output_dir: Path | None, ctx: HubContext
) -> DownloadResult:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from tunewiz.models.loading import check_model_dir

    try:
        path = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                local_dir=output_dir,
                local_files_only=True,
                allow_patterns=HUB_PATTERNS,
                ignore_patterns=HUB_IGNORE_PATTERNS,
            )
        )
    except LocalEntryNotFoundError as exc:
        if getattr(exc, "snapshot_path", None):  # IncompleteSnapshotError: an interrupted download
            raise TunewizError(
                f"the cached copy of `{repo_id}` is incomplete (`{exc.snapshot_path}`), and offline "
                "mode is on",
                hint=f"run `tunewiz download {repo_id}` once with network access to finish it",
                exit_code=1,
            ) from None
        raise _offline(exc, ctx) from None
    check_model_dir(path)
    files = tuple(
        sorted(
            p.name for p in path.iterdir() if any(fnmatch.fnmatchcase(p.name, pat) for pat in HUB_PATTERNS)
        )
    )
    return DownloadResult(repo_id, path, files, 0, offline=True)
