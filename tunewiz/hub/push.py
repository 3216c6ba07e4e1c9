"""`tunewiz push`: stage a run's adapter or merged model with its model card, and upload it.

``push_run`` stages a folder (the adapter or the merged weights, the tokenizer, ``README.md``,
``loss.png``, the badge) and uploads it with ``create_repo`` + ``upload_folder``. The token is
passed to ``HfApi`` and never printed.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tunewiz.errors import TunewizError
from tunewiz.hub.auth import write_token
from tunewiz.hub.errors import HubContext, explain_hub_error
from tunewiz.models.loading import HUB_PATTERNS, INDEX_FILE
from tunewiz.run.directory import RunDir, existing_run
from tunewiz.run.lock import probe, refusal

if TYPE_CHECKING:
    from tunewiz.inference.load import StepCheckpoint

PushKind = Literal["adapter", "merged"]
BADGE_FILE = "tunewiz-badge.svg"
BADGE_ASSET = Path(__file__).resolve().parent.parent / "assets" / "badge.svg"
# Files a tokenizer may consist of; the adapter repo carries them too, so
# `AutoTokenizer.from_pretrained(adapter_repo)` works and the chat template travels with the adapter.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)


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


def check_run_dir(run_dir: Path, *, needs_final: bool = True) -> RunDir:
    """The run directory, if it has a config, is not running, and has a finished ``final/``.

    Args:
        run_dir: the directory ``tunewiz train`` wrote.
        needs_final: require ``final/`` (False when a step checkpoint is pushed).

    Raises:
        TunewizError: not a run directory, or the run has not finished (with the resume command).
    """
    run = existing_run(run_dir, "push")
    if not run.config.is_file():
        raise TunewizError(
            f"`{run_dir}` is not a run directory: `{run.config}` does not exist",
            hint="pass the directory `tunewiz train` created, e.g. `runs/<name>`",
        )
    status = probe(run)
    if status.running or status.state == "stale":  # final/ is (re)written when the run ends
        raise refusal(run, status, doing="push it")
    if needs_final and not run.final.is_dir():
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
            hint="push the merged model with `--merged`"
            if has_merged
            else "the run saved no adapter: set `output.adapter: true` (LoRA runs only) and train again",
        )
    if kind == "merged" and not has_merged:
        raise TunewizError(
            f"`{run.final}` has no merged model (`model.safetensors`): the run had `output.merged: false`",
            hint="push the adapter with `--adapter`" if has_adapter else "train with `output.merged: true`",
        )
    return kind


def _step_kind(preset_method: str, kind: PushKind | None, checkpoint: StepCheckpoint) -> PushKind:
    """What a step checkpoint is pushed as: its adapter for LoRA/QLoRA, else (and with ``--merged``)
    the merged model; either is written from the checkpoint whatever ``output.*`` said."""
    if kind == "adapter" and preset_method == "full":
        raise TunewizError(
            f"--from {checkpoint.name}: a full fine-tune has no LoRA adapter to push",
            hint="push the model with `--merged` (or without `--adapter`)",
        )
    return kind or ("merged" if preset_method == "full" else "adapter")


def _files_to_stage(final: Path, kind: PushKind) -> dict[str, Path]:
    """Staged name -> source file, from ``final`` (a run's ``final/`` or a step checkpoint's export)."""
    tokenizer = {name: final / name for name in TOKENIZER_FILES if (final / name).is_file()}
    if kind == "adapter":
        weights = {p.name: p for p in sorted((final / "adapter").iterdir()) if p.is_file()}
        return {**weights, **tokenizer}
    weights = {
        p.name: p
        for p in sorted(final.iterdir())
        if p.is_file() and any(fnmatch.fnmatchcase(p.name, pat) for pat in HUB_PATTERNS)
    }
    return {**weights, **tokenizer}


def gguf_files(run: RunDir, checkpoint: StepCheckpoint | None = None) -> tuple[dict[str, Path], str | None]:
    """``RUN/export/``'s GGUF files and Ollama Modelfile (``RUN/export/step-N/``'s for a step
    checkpoint), exporting a q8_0 GGUF first when there is none.

    Args:
        run: the run directory.
        checkpoint: the step checkpoint pushed, or None for ``final/``.

    Returns:
        Staged name -> file, and a note when the GGUF was written now.
    """
    from tunewiz.export.gguf import export_dir

    export = export_dir(run.path, checkpoint)
    note = None
    if not (export.is_dir() and any(export.glob("*.gguf"))):
        from tunewiz.export.gguf import export_gguf

        made = export_gguf(run.path, checkpoint=checkpoint)
        step = f" --from {checkpoint.name}" if checkpoint else ""
        note = (
            f"`{export}` had no GGUF: wrote `{made.path.name}` ({made.quant}) with `tunewiz export`; "
            f"another type: `tunewiz export {run.path} --format gguf --quant q4_k_m{step}`"
        )
    found = {p.name: p for p in sorted(export.glob("*.gguf"))}
    if (export / "Modelfile").is_file():
        found["Modelfile"] = export / "Modelfile"
    return found, note


def _place(source: Path, dest: Path) -> None:
    # Weights can be gigabytes: a hard link costs nothing; exports replace files by rename, never in place.
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def stage_push(
    run_dir: Path,
    out_dir: Path,
    *,
    repo_id: str,
    kind: PushKind | None = None,
    license: str | None = None,
    gguf: bool = False,
    checkpoint: StepCheckpoint | None = None,
    replace: bool = False,
) -> StagedFolder:
    """Write the folder that ``tunewiz push`` uploads: weights, tokenizer, ``README.md``, ``loss.png``, badge.

    The folder is built beside ``out_dir`` and renamed into place, so ``out_dir`` is complete or absent.

    Args:
        run_dir: a finished run directory.
        out_dir: the folder to create; must not exist or be empty, unless ``replace``.
        repo_id: ``user/name`` the card's usage snippets name.
        kind: ``adapter`` (the PEFT adapter) or ``merged``; None picks the adapter when there is one.
        license: license id for the card; None takes the base model's from the catalog.
        gguf: also stage ``RUN/export/``'s GGUF files and Modelfile (a q8_0 one is exported first when
            there is none); the card says how to run them.
        checkpoint: a step checkpoint of the run to publish instead of ``final/``: its adapter or
            merged weights are exported as ``final/`` would hold them (:func:`export_step`), and the
            card names the step.
        replace: ``out_dir`` is tunewiz's own (``RUN/push-dry-run/``): a previous staged folder there
            is replaced once the new one is complete.

    Raises:
        TunewizError: the run is unfinished, lacks the asked-for weights (or GGUF), or ``out_dir`` is
            not empty (and not ``replace``).
    """
    from tunewiz.export.merged import export_step
    from tunewiz.preset.files import load_preset

    check_repo_id(repo_id)
    run = check_run_dir(run_dir, needs_final=checkpoint is None)
    if checkpoint is None:
        kind = _choose_kind(run, kind)
    else:
        kind = _step_kind(load_preset(str(run.config))[0].method, kind, checkpoint)
    out_dir = Path(out_dir)
    if not replace and out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise TunewizError(
            f"`{out_dir}` already exists and is not empty; the staged folder would mix with it",
            hint="pass a new or empty directory to `--dry-run-dir`, or leave it out (`--dry-run` alone "
            "writes RUN/push-dry-run/)",
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        if checkpoint is None:
            final = run.final
        else:  # beside the staged folder, so its files are hard-linked in
            final = export_step(
                checkpoint, staging / "export", adapter=kind == "adapter", merged=kind == "merged"
            )
        return _stage(run, final, staging, out_dir, repo_id, kind, license, gguf, checkpoint, replace)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _stage(
    run: RunDir,
    final: Path,
    staging: Path,
    out_dir: Path,
    repo_id: str,
    kind: PushKind,
    license: str | None,
    gguf: bool,
    checkpoint: StepCheckpoint | None,
    replace: bool,
) -> StagedFolder:
    """Fill ``staging/repo`` from ``final`` and the run, and rename it to ``out_dir`` (replacing a
    previous one there when ``replace``)."""
    from tunewiz.hub.modelcard import read_card_facts, render_model_card

    files = _files_to_stage(final, kind)
    gguf_names, gguf_note = gguf_files(run, checkpoint) if gguf else ({}, None)
    files.update(gguf_names)
    has_loss_plot = run.loss_plot.is_file()
    facts = read_card_facts(run, checkpoint)
    card, warnings = render_model_card(
        facts,
        repo_id=repo_id,
        kind=kind,
        license=license,
        badge=BADGE_FILE,
        loss_plot="loss.png" if has_loss_plot else None,
        gguf_files=[name for name in gguf_names if name.endswith(".gguf")],
    )
    repo = staging / "repo"
    repo.mkdir()
    for name, source in files.items():
        _place(source, repo / name)
    if has_loss_plot:
        _place(run.loss_plot, repo / "loss.png")
    shutil.copy2(BADGE_ASSET, repo / BADGE_FILE)
    (repo / "README.md").write_text(card, encoding="utf-8")
    if replace and out_dir.is_dir():
        shutil.rmtree(out_dir)
    elif out_dir.exists():
        out_dir.rmdir()
    repo.rename(out_dir)
    notes = (*warnings, *([gguf_note] if gguf_note else []))
    return StagedFolder(out_dir, kind, tuple(sorted(p.name for p in out_dir.iterdir())), notes)


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
        raise TunewizError(
            f"`{repo_id}` is not a valid repo id: {exc}",
            hint="use `USER/NAME` with letters, digits, `-`, `_` and `.`",
        ) from None
    if repo_id.count("/") != 1:
        raise TunewizError(
            f"`--repo-id {repo_id}` must be `USER/NAME` (or `ORG/NAME`)",
            hint="`hf auth whoami` shows your user name and organisations",
        )


def push_run(
    run_dir: Path,
    *,
    repo_id: str,
    kind: PushKind | None = None,
    private: bool = False,
    license: str | None = None,
    gguf: bool = False,
    checkpoint: StepCheckpoint | None = None,
    on_staged: Callable[[StagedFolder], None] | None = None,
) -> str:
    """Stage a run's adapter or merged model with its card, create the repo if needed, and upload it.

    Args:
        run_dir: a finished run directory.
        repo_id: ``user/name`` on the Hub.
        kind: ``adapter`` or ``merged``; None picks the adapter when there is one.
        private: create the repository private (an existing repo keeps its visibility).
        license: license id for the card; None takes the base model's.
        gguf: also upload ``RUN/export/``'s GGUF files and Modelfile.
        checkpoint: a step checkpoint to publish instead of ``final/`` (see :func:`stage_push`).
        on_staged: called with the staged folder before the upload starts.

    Returns:
        The repository's URL.

    Raises:
        TunewizError: no token, no write access, offline, or an unfinished run.
    """
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    check_run_dir(run_dir, needs_final=checkpoint is None)
    token = write_token()
    with tempfile.TemporaryDirectory(prefix="tunewiz-push-") as tmp:
        staged = stage_push(
            run_dir,
            Path(tmp) / "repo",
            repo_id=repo_id,
            kind=kind,
            license=license,
            gguf=gguf,
            checkpoint=checkpoint,
        )
        if on_staged is not None:
            on_staged(staged)
        api = HfApi(token=token)
        try:
            url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            api.upload_folder(
                repo_id=repo_id,
                repo_type="model",
                folder_path=staged.path,
                commit_message=f"Upload {staged.kind} trained with tunewiz",
            )
        except Exception as exc:
            error = explain_hub_error(exc, HubContext("push", repo_id, None, token))
            if error is None:
                raise
            raise error from None
    return str(url)
