"""What `tunewiz resume` continues from: the run's preset with any overrides, and the checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunewiz.errors import TunewizError
from tunewiz.preset.schema import Preset
from tunewiz.run.directory import RunDir
from tunewiz.run.status import last_launch

# Sections a resume may change. Everything else (model, method, LoRA shape, data) defines the
# trained weights and the data order: changing it would not be a continuation.
RESUMABLE_PREFIXES = ("train.", "checkpoint.", "output.", "device")
# Inside `train`, these define the data order and the schedule the checkpoint was made under.
_FIXED_TRAIN_KEYS = ("train.seed",)
# Where the data files are: a resume may point at them elsewhere when their content is the same.
_MOVABLE_DATA_KEYS = ("data.path", "data.val_path")


@dataclass(frozen=True)
class ResumePlan:
    """The preset to continue with, the checkpoint to load, and what `--set` changed."""

    preset: Preset
    checkpoint: Path
    changes: list[str]  # "train.micro_batch_size: 4 → 2"
    step: int
    total_hint: str  # "step 40, epoch 2" (the epoch of that step, as the dashboard shows it)


def _flatten(data: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "columns":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def plan_resume(run: RunDir, *, from_step: str | None, overrides: list[str]) -> ResumePlan:
    """Check the run directory and pick the checkpoint; apply and vet the overrides.

    Args:
        run: the run directory to continue.
        from_step: `step-N` (or `N`) to resume from instead of the newest complete checkpoint.
        overrides: `--set key=value` strings, limited to the train/checkpoint/output sections.
    """
    from tunewiz.preset.files import load_preset
    from tunewiz.run.events import read_events
    from tunewiz.train.checkpoint import read_progress
    from tunewiz.train.launcher import recorded_data_contents, with_absolute_data_paths

    if not run.config.is_file():
        raise TunewizError(
            f"`{run.path}` is not a tunewiz run directory (no config.yaml)",
            hint="pass the directory `tunewiz train` created, e.g. `tunewiz resume runs/tiny-lora`",
        )
    old, _ = load_preset(str(run.config))
    new = with_absolute_data_paths(load_preset(str(run.config), overrides)[0])  # as `train` records them
    before, after = _flatten(old.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    # A run that recorded its data's content (start event `data_contents`) may be pointed at its moved
    # data files: the launcher then refuses any other content (tunewiz.train.launcher.check_same_data).
    movable = _MOVABLE_DATA_KEYS if recorded_data_contents(run) else ()
    changes = []
    for key in after:
        if before.get(key) != after[key]:
            if key in movable:
                changes.append(f"{key}: {before.get(key)} → {after[key]}")
                continue
            if not key.startswith(RESUMABLE_PREFIXES) or key in _FIXED_TRAIN_KEYS:
                raise TunewizError(
                    f"`{key}` cannot change on resume: it defines the weights or the data order of this run",
                    hint="start a new run with `tunewiz train` for that; a resume may change train.*, "
                    "checkpoint.*, output.* and device",
                )
            changes.append(f"{key}: {before.get(key)} → {after[key]}")

    if from_step is not None:
        name = from_step if from_step.startswith("step-") else f"step-{from_step}"
        checkpoint = run.checkpoints / name
        if not checkpoint.is_dir():
            have = ", ".join(p.name for _, p in run.complete_checkpoints()) or "none"
            raise TunewizError(
                f"checkpoint `{checkpoint}` does not exist (complete checkpoints: {have})",
                hint="pick one of those with `--from`",
            )
    else:
        checkpoint = run.latest_checkpoint()
        if checkpoint is None:
            raise TunewizError(
                f"`{run.path}` has no complete checkpoint to resume from",
                hint=f"start it again with `tunewiz train {run.config} --run-dir {run.path} --overwrite`",
            )
    progress = read_progress(checkpoint)
    # Finished: the last launch ended (one that failed after it, e.g. a resume asked to train further,
    # leaves something to resume).
    launch = last_launch(read_events(run.events))
    ended = [e for e in launch if e.get("event") == "end"]
    if ended and run.final.is_dir() and progress.step >= ended[-1].get("step", 0) and not changes:
        raise TunewizError(
            f"run `{run.path}` is finished (step {progress.step}); there is nothing to resume",
            hint=f"use it: `tunewiz chat {run.path}`, `tunewiz eval {run.path}`; or train longer with "
            "`--set train.epochs=N` / `--set train.max_steps=N`",
            exit_code=0,
        )
    where = f"step {progress.step}, epoch {progress.trained_epoch}"
    return ResumePlan(
        preset=new, checkpoint=checkpoint, changes=changes, step=progress.step, total_hint=where
    )
