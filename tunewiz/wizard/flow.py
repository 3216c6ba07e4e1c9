"""The `tunewiz init` question flow: hardware → model → dataset → method → schedule → plan → preset file.

Each step is a plain function that takes the value of its flag (``WizardFlags``) and an ``Asker``: a
flag's value is used as given; otherwise the asker asks (questionary in a terminal, anything with the
same four methods in tests); with no asker the recommended or default value is taken, and the two
values that have none (``--model``, ``--dataset``) must be flags (:func:`missing_flags`).

The wizard writes a file and never trains: launching is ``tunewiz train PATH``, the one path that trains.
Heavy imports stay out of the steps before the dataset is chosen: the hardware summary and the model
question need no torch (the GPUs are read with ``nvidia-smi``, the RAM with psutil); torch may load
while the dataset's token lengths are sampled.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from tunewiz.errors import TunewizError
from tunewiz.models.catalog import CatalogModel, catalog_models, lookup
from tunewiz.plan.fit_table import MEMORY_COLUMN, fit_line, model_fits
from tunewiz.plan.hardware import Machine, describe, hf_cache_dir, probe
from tunewiz.plan.recommend import PlanRequest, Recommendation, recommend
from tunewiz.plan.time_budget import steps_for_budget, try_seconds
from tunewiz.units import GiB
from tunewiz.wizard.asker import Asker, Choice
from tunewiz.wizard.dataset_step import choose_dataset, sample_token_lengths
from tunewiz.wizard.model_step import Readiness, readiness
from tunewiz.wizard.trackers_step import choose_trackers, parse_trackers

if TYPE_CHECKING:
    from rich.console import Console

    from tunewiz.preset.schema import Preset

METHODS = ("lora", "qlora", "full")
REQUIRED_FLAGS = ("model", "dataset")  # every other question has a recommended or default answer
EXAMPLE = (
    "tunewiz init --model tunewiz:tiny --dataset tunewiz:story-qa --epochs 1 "
    "--output tiny-story-qa.yaml --no-launch"
)
FULL_LR, LORA_LR = 2e-5, 2e-4  # the usual peak learning rates (torchtune, axolotl, LitGPT recipes)


@dataclass(frozen=True)
class WizardFlags:
    """The answers given on the command line (None: ask, or take the recommendation).

    Args:
        model: catalog name, Hub id or local model directory.
        dataset: ``tunewiz:<sample>``, a local data file, or a Hub dataset id.
        columns: ``data.columns`` (``--columns prompt=question,response=answer``); None: ask when the
            file's format cannot be told from its columns.
        method: ``lora``, ``qlora`` or ``full``.
        epochs: passes over the data.
        time_budget: wall-clock budget (``90m``, ``2h``, ``1h30m``); sets ``train.max_steps``.
        gpus: plan for this many GPUs (0: CPU) instead of the detected ones.
        gpu_memory: memory per GPU of the described machine (``24GB``).
        micro_batch: sequences per device per step.
        lora_rank: LoRA rank.
        seq_len: ``data.max_seq_len``.
        output: the preset file to write.
        name: the run name.
        yes: take every default without asking.
        force: overwrite ``output`` without asking.
        launch: start ``tunewiz train`` after writing (None: ask; without a terminal: no).
        report_to: experiment trackers, comma-separated (``tensorboard,wandb``; ``none``).
    """

    model: str | None = None
    dataset: str | None = None
    columns: dict[str, str] | None = None
    method: str | None = None
    epochs: int | None = None
    time_budget: str | None = None
    gpus: int | None = None
    gpu_memory: str | None = None
    micro_batch: int | None = None
    lora_rank: int | None = None
    seq_len: int | None = None
    output: Path | None = None
    name: str | None = None
    yes: bool = False
    force: bool = False
    launch: bool | None = None
    report_to: str | None = None


@dataclass(frozen=True)
class WizardResult:
    """What the wizard wrote and how to run it.

    Args:
        preset: the validated preset.
        path: the file written.
        command: ``tunewiz train PATH [...]`` as argv.
        recommendation: the plan the preset follows.
        launch: the user asked to start training now.
        download: the command that must fetch the model before the launch, or None when it is on disk
            (or when it was not asked for).
    """

    preset: Preset
    path: Path
    command: list[str]
    recommendation: Recommendation
    launch: bool
    download: list[str] | None = None


def missing_flags(flags: WizardFlags) -> list[str]:
    """The flags that must be given when nobody can be asked: ``["--model", "--dataset"]`` or fewer.

    Args:
        flags: the command-line answers.
    """
    return [f"--{name}" for name in REQUIRED_FLAGS if getattr(flags, name) is None]


def run_wizard(flags: WizardFlags, asker: Asker | None, console: Console) -> WizardResult:
    """Ask the questions (or take the flags), plan, and write the preset.

    Args:
        flags: the command-line answers.
        asker: asks what the flags leave open; None when there is no terminal (or ``--yes``).
        console: where the summary, previews and plan are printed.

    Returns:
        What was written; the caller prints the command and launches it when ``launch`` is true.
    """
    if flags.yes:
        asker = None  # --yes: every default, nothing asked
    missing = missing_flags(flags)
    if asker is None and missing:
        why = "--yes asks nothing" if flags.yes else "no terminal to ask on (stdin is not a TTY)"
        raise TunewizError(
            f"{why}, and {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not given",
            hint=f"give {' and '.join(f'`{m}`' for m in missing)} as flags, e.g. `{EXAMPLE}`",
        )
    if flags.epochs is not None and flags.time_budget is not None:
        raise TunewizError(
            "--epochs and --time-budget both given", hint="give one: `--epochs 2` or `--time-budget 2h`"
        )
    if flags.method is not None and flags.method not in METHODS:
        raise TunewizError(f"--method `{flags.method}` is not a method", hint="use `lora`, `qlora` or `full`")
    if flags.report_to is not None:
        parse_trackers(flags.report_to)  # a misspelt tracker fails before any question
    if flags.output is not None:
        _check_output(flags.output, flags.force or asker is not None)
    machine, summary = detect_machine(flags.gpus, flags.gpu_memory)
    console.print(summary)
    fixed = PlanRequest(micro_batch=flags.micro_batch, seq_len=flags.seq_len, lora_rank=flags.lora_rank)
    model = choose_model(flags.model, asker, machine, fixed)
    dataset, columns = choose_dataset(flags.dataset, asker, console, flags.columns)
    lengths, length_note, num_rows = sample_token_lengths(model, dataset, flags.seq_len, columns)
    console.print(f"token lengths: {length_note}")
    method = choose_method(flags.method, asker, machine, model, lengths, fixed)
    rec = recommend(machine, model, lengths, fixed)
    if rec.plan.inputs.method != method:  # fixed only when it differs, so the reason says why it was chosen
        rec = recommend(machine, model, lengths, dataclasses.replace(fixed, method=method))
    epochs, max_steps, schedule_reason = choose_schedule(flags, asker, rec, lengths)
    _show_plan(console, rec, schedule_reason, num_rows, lengths)
    if not rec.fits and not _accept_misfit(asker, rec):
        raise TunewizError(
            f"{model.name} with {method} does not fit {machine.name}",
            hint="; ".join(rec.alternatives) or "plan for a machine with more memory",
        )
    name = flags.name or _ask_text(asker, "Run name:", default_name(model, method, dataset), _check_name)
    _check_name_or_raise(name)
    path = flags.output or Path(_ask_text(asker, "Write the preset to:", f"{name}.yaml", _check_suffix))
    report_to = choose_trackers(flags.report_to, asker)
    preset = build_preset(name, machine, model, dataset, rec, epochs, max_steps, columns, report_to)
    command = train_command(path, machine)
    write_preset(path, preset_text(preset, rec, command), _may_overwrite(path, flags.force, asker))
    ready = _model_readiness(model)
    if ready.on_disk:
        launch = (
            flags.launch
            if flags.launch is not None
            else (asker.confirm("Start training now?", default=True) if asker is not None else False)
        )
        return WizardResult(preset, path, command, rec, launch)
    console.print(f"\n[bold]before training can start[/bold], {model.name} must be on disk:")
    for number, step in enumerate(ready.steps, 1):
        console.print(f"  {number}. {step}")
    if not ready.can_download:
        if flags.launch:
            console.print("not launching: the steps above come first; then run the command below")
        return WizardResult(preset, path, command, rec, False)
    launch = (
        flags.launch
        if flags.launch is not None
        else (
            asker.confirm(f"Download {model.repo_id} now, then start training?", default=True)
            if asker is not None
            else False
        )
    )
    return WizardResult(preset, path, command, rec, launch, ready.download_command if launch else None)


def _model_readiness(model: CatalogModel) -> Readiness:
    hw = probe(quick=True)
    free = hw.disks.get(str(hf_cache_dir()), min(hw.disks.values(), default=0))
    return readiness(model, hw.hub_token, free)


# --- hardware ------------------------------------------------------------------------------------


def detect_machine(gpus: int | None, gpu_memory: str | None) -> tuple[Machine, str]:
    """The machine to plan for, and a one-paragraph summary of it, without importing torch.

    Args:
        gpus: describe a machine with this many GPUs (0: CPU) instead of looking at this one.
        gpu_memory: memory per GPU of the described machine.
    """
    hw = probe(quick=True)  # nvidia-smi + psutil: the first question must appear at once
    if gpus is not None or gpu_memory is not None:
        if gpus is None:
            gpus = 1
        if gpus > 0 and gpu_memory is None:
            raise TunewizError(f"--gpus {gpus} needs --gpu-memory", hint="e.g. `--gpus 2 --gpu-memory 24GB`")
        machine = describe(gpus, gpu_memory or f"{hw.ram_available / GiB:.1f}GiB")
        return machine, f"planning for [bold]{machine.name}[/bold] (described with --gpus/--gpu-memory)"
    machine = hw.machine()
    if hw.gpus:
        lines = [
            f"  GPU {g.index}: {g.name}, {g.total_memory / GiB:.1f} GiB, compute {g.compute_capability}"
            for g in hw.gpus
        ]
        return machine, "\n".join([f"found [bold]{len(hw.gpus)} GPU(s)[/bold] (nvidia-smi):", *lines])
    return machine, (
        f"[bold]no GPU found[/bold] (no `nvidia-smi`): planning for CPU training — {hw.cpu_count} "
        f"cores, {hw.ram_available / GiB:.1f} GiB RAM available. Only small models train in "
        "reasonable time on CPU."
    )


# --- model ---------------------------------------------------------------------------------------

_OTHER = "__other__"


def choose_model(flag: str | None, asker: Asker | None, machine: Machine, fixed: PlanRequest) -> CatalogModel:
    """The model: the flag, or a pick from the catalog marked with each model's fit on ``machine``.

    Args:
        flag: ``--model``.
        asker: asks when the flag is missing.
        machine: the machine planned for.
        fixed: values the user fixed (micro-batch, sequence length, rank) that the verdicts respect.
    """
    if flag is not None:
        return lookup(flag)
    assert asker is not None  # missing_flags() stops a run without an asker and without --model
    models = catalog_models()
    listed = model_fits(machine, models, fixed)
    verdicts = {m.name: rec for m, rec in listed}
    choices = [Choice(m.name, fit_line(m, rec), m.repo_id) for m, rec in listed]
    choices.append(Choice(_OTHER, "another model: a local directory or a Hugging Face id…"))
    picked = asker.select(
        f"Model (fit verdicts for {machine.name}; {MEMORY_COLUMN}):",
        choices,
        _default_model(models, verdicts, machine),
    )
    if picked != _OTHER:
        return lookup(picked)
    return lookup(asker.text("Model directory or Hugging Face id:", "", _check_model))


def _default_model(models: list[CatalogModel], verdicts: dict[str, Recommendation], machine: Machine) -> str:
    # On CPU only the shipped tiny model trains in minutes; on GPUs the largest chat model that fits
    # without recomputation, else the smallest that fits at all.
    if machine.device == "cpu" or not any(r.fits for r in verdicts.values()):
        return models[0].name
    chat = [m for m in models if m.chat_template and verdicts[m.name].verdict.kind == "fits"]
    if chat:
        return max(chat, key=lambda m: m.params).name
    return next(m.name for m in models if verdicts[m.name].fits)


def _check_model(text: str) -> str | None:
    try:
        lookup(text)
    except TunewizError as exc:
        return exc.message
    return None


# --- dataset -------------------------------------------------------------------------------------

# --- method and schedule -------------------------------------------------------------------------


def choose_method(
    flag: str | None,
    asker: Asker | None,
    machine: Machine,
    model: CatalogModel,
    lengths: list[int] | None,
    fixed: PlanRequest,
) -> str:
    """The method: the flag, else the recommended one (pre-selected, with its reason, when asking).

    Args:
        flag: ``--method``.
        asker: asks when the flag is missing.
        machine: the machine planned for.
        model: the chosen model.
        lengths: sampled token lengths.
        fixed: values the user fixed.
    """
    if flag is not None:
        return flag
    best = recommend(machine, model, lengths, fixed)
    recommended = best.plan.inputs.method if best.fits else "lora"
    if asker is None:
        return recommended
    why = next(
        (r.split(": ", 1)[1] for r in best.reasons if r.startswith("method ")), "nothing fits; see the plan"
    )
    choices = []
    for method in METHODS:
        rec = (
            best
            if method == recommended
            else recommend(machine, model, lengths, dataclasses.replace(fixed, method=method))
        )
        verdict = f"{rec.verdict.label}, {rec.plan.peak / GiB:.1f} GiB" if rec.fits else rec.verdict.label
        note = f"recommended: {why}" if method == recommended else None
        choices.append(Choice(method, f"{method:6s} {verdict}" + ("  (recommended)" if note else ""), note))
    return asker.select("Method:", choices, recommended)


def choose_schedule(
    flags: WizardFlags, asker: Asker | None, rec: Recommendation, lengths: list[int] | None
) -> tuple[int, int | None, str]:
    """How long to train: epochs, or a time budget turned into ``max_steps``.

    Args:
        flags: ``--epochs`` / ``--time-budget``.
        asker: asks when both are missing.
        rec: the plan (its global batch and sequence length size a step).
        lengths: sampled token lengths (the mean sizes a step's tokens when not packed).

    Returns:
        (epochs, max_steps or None, the reason).
    """
    budget, epochs = flags.time_budget, flags.epochs
    if budget is None and epochs is None and asker is not None:
        how = asker.select(
            "Train for:",
            [Choice("epochs", "a number of epochs"), Choice("budget", "a time budget (e.g. 30m, 2h)")],
            "epochs",
        )
        if how == "epochs":
            epochs = int(asker.text("Epochs:", "1", _check_positive_int))
        else:
            budget = asker.text(
                "Time budget:", "30m", lambda t: None if try_seconds(t) else "e.g. 90m, 2h, 1h30m"
            )
    if budget is None:
        epochs = epochs or 1
        return (
            epochs,
            None,
            f"epochs {epochs}: " + ("given" if flags.epochs else "chosen" if asker else "default"),
        )
    steps, reason = steps_for_budget(budget, rec, lengths)
    return 1, steps, reason


def _check_positive_int(text: str) -> str | None:
    return None if text.strip().isdigit() and int(text) > 0 else "a whole number > 0"


# --- plan, preset, output ------------------------------------------------------------------------


def _show_plan(
    console: Console,
    rec: Recommendation,
    schedule_reason: str,
    num_rows: int | None,
    lengths: list[int] | None,
) -> None:
    from tunewiz.plan.report import render_recommendation

    console.print()
    console.print(render_recommendation(rec))
    console.print(f"  • {schedule_reason}")
    if num_rows is not None and rec.fits:
        steps = num_rows // rec.global_batch
        console.print(
            f"  • {num_rows} rows → about {steps} optimizer steps per epoch (before the validation split)"
        )
        if rec.machine.device == "cpu":
            console.print(f"  • {_cpu_epoch_time(rec, num_rows, lengths)}")


def _cpu_epoch_time(rec: Recommendation, num_rows: int, lengths: list[int] | None) -> str:
    """One epoch's estimated wall-clock time on this CPU (a model from a timed matmul, not a measurement)."""
    from tunewiz.plan.time_budget import MATMUL_UTILISATION, estimate_tokens_per_second

    per_second = estimate_tokens_per_second(rec)
    mean = min(sum(lengths) / len(lengths) if lengths else rec.plan.inputs.seq_len, rec.plan.inputs.seq_len)
    seconds = num_rows * mean / per_second
    took = (
        f"{seconds / 3600:.1f} h"
        if seconds >= 3600
        else f"{seconds / 60:.0f} min"
        if seconds >= 60
        else "<1 min"
    )
    return (
        f"CPU: about {took} per epoch at an estimated {per_second:,.0f} tokens/s "
        f"({MATMUL_UTILISATION:.0%} of this machine's measured matmul rate; an estimate, not a measurement)"
    )


def _accept_misfit(asker: Asker | None, rec: Recommendation) -> bool:
    if asker is None:
        return False
    return asker.confirm("The plan does not fit. Write the preset anyway?", default=False)


def default_name(model: CatalogModel, method: str, dataset: str) -> str:
    """``<model>-<method>-<dataset>``, lower-case, safe as a file and directory name.

    Args:
        model: the chosen model.
        method: the chosen method.
        dataset: the chosen dataset.
    """
    data = Path(dataset.split(":", 1)[-1]).stem.split("/")[-1]
    raw = f"{model.name.split(':')[-1]}-{method}-{data}"
    return re.sub(r"[^a-z0-9._-]+", "-", raw.lower()).strip("-.")


def _check_name(text: str) -> str | None:
    return (
        None if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", text) else "letters, digits, `.`, `_`, `-` only"
    )


def _check_name_or_raise(name: str) -> None:
    problem = _check_name(name)
    if problem:
        raise TunewizError(
            f"--name `{name}`: {problem} (it names the run directory)", hint="e.g. `--name my-run`"
        )


def _check_suffix(text: str) -> str | None:
    return None if Path(text).suffix in (".yaml", ".yml") else "a .yaml file"


def _ask_text(asker: Asker | None, message: str, default: str, validate: Callable[[str], str | None]) -> str:
    return default if asker is None else asker.text(message, default, validate)


def build_preset(
    name: str,
    machine: Machine,
    model: CatalogModel,
    dataset: str,
    rec: Recommendation,
    epochs: int,
    max_steps: int | None,
    columns: dict[str, str] | None = None,
    report_to: list[str] | None = None,
) -> Preset:
    """The preset the plan describes.

    Args:
        name: run name.
        machine: the machine planned for (CPU plans pin ``device: cpu``).
        model: the chosen model.
        dataset: the chosen dataset.
        rec: the recommendation (method, dtype, micro-batch, accumulation, checkpointing, seq_len, rank).
        epochs: passes over the data.
        max_steps: a step limit from a time budget, or None.
        columns: ``data.columns``.
        report_to: experiment trackers (``output.report_to``).
    """
    from tunewiz.preset.schema import Preset

    i = rec.plan.inputs
    lora = (
        {}
        if i.method == "full"
        else {"rank": i.lora_rank, "alpha": 2.0 * i.lora_rank, "targets": list(i.lora_targets)}
    )
    return Preset.model_validate(
        {
            "name": name,
            "method": i.method,
            "device": "cpu" if machine.device == "cpu" else "auto",
            "model": {"path": model.repo_id, "dtype": i.dtype},
            **({"lora": lora} if lora else {}),
            "data": {"path": dataset, "max_seq_len": i.seq_len, **({"columns": columns} if columns else {})},
            "train": {
                "epochs": epochs,
                "max_steps": max_steps,
                "micro_batch_size": i.micro_batch,
                "grad_accum": rec.grad_accum,
                "activation_checkpointing": i.activation_checkpointing,
                "activation_offloading": i.activation_offloading,
                "optimizer": i.optimizer,
                "optimizer_in_backward": i.optimizer_in_backward,
                **({"max_grad_norm": None} if i.optimizer_in_backward else {}),
                "lr": FULL_LR if i.method == "full" else LORA_LR,
            },
            "output": {"adapter": i.method != "full", "merged": True, "report_to": report_to or []},
        }
    )


def train_command(path: Path, machine: Machine) -> list[str]:
    """``tunewiz train PATH``, with one process per GPU when the plan shards over several.

    Args:
        path: the preset file.
        machine: the machine planned for.
    """
    command = ["tunewiz", "train", str(path)]
    if machine.device == "cuda" and machine.num_devices > 1:
        command += ["--nproc-per-node", str(machine.num_devices)]
    return command


def preset_text(preset: Preset, rec: Recommendation, command: list[str]) -> str:
    """The preset's YAML under a header: what it is, the launch command, and the planner's prediction.

    Args:
        preset: the preset.
        rec: the plan it follows.
        command: the launch command.
    """
    from tunewiz.preset.files import dump_preset

    i = rec.plan.inputs
    header = [
        f"# {rec.model.name} {i.method} on {preset.data.path_text}, planned by `tunewiz init` for "
        f"{rec.machine.name} "
        f"({date.today().isoformat()}).",
        f"# Launch: {shlex.join(command)}",
        f"# Planner's predicted peak: {rec.plan.peak / GiB:.2f} GiB ± {rec.plan.error_band:.0%} per device; "
        f"{rec.verdict.label}: {rec.verdict.needed / GiB:.2f} GiB with the band, of "
        f"{rec.verdict.memory / GiB:.2f} GiB.",
        "# Not measured yet: `tunewiz train` records the measured peak next to this prediction in "
        "events.jsonl.",
    ]
    return "\n".join(header) + "\n" + dump_preset(preset)


def _check_output(path: Path, may_ask: bool) -> None:
    if path.suffix not in (".yaml", ".yml"):
        raise TunewizError(f"--output `{path}` is not a .yaml file", hint="e.g. `--output my-run.yaml`")
    if path.exists() and not may_ask:
        raise TunewizError(
            f"`{path}` already exists; not overwriting it",
            hint="add `--force` to overwrite it, or choose another `--output`",
        )


def _may_overwrite(path: Path, force: bool, asker: Asker | None) -> bool:
    if force or not path.exists():
        return True
    return asker is not None and asker.confirm(f"`{path}` exists. Overwrite it?", default=False)


def write_preset(path: Path, text: str, overwrite: bool) -> None:
    """Validate ``text`` as a preset and write it atomically (a reader sees the old file or the new one).

    Args:
        path: the file.
        text: the YAML.
        overwrite: replace an existing file.
    """
    import yaml

    from tunewiz.atomic import atomic_write_text
    from tunewiz.preset.schema import Preset

    Preset.model_validate(yaml.safe_load(text))  # what `tunewiz train` reads back; checked before writing
    if path.exists() and not overwrite:
        raise TunewizError(
            f"`{path}` already exists; not overwriting it",
            hint="add `--force` to overwrite it, or choose another `--output`",
        )
    if path.is_dir():
        raise TunewizError(f"`{path}` is a directory", hint="give a file name such as `my-run.yaml`")
    atomic_write_text(path, text)
