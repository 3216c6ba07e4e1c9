"""The `tunewiz init` question flow: hardware → model → dataset → method → schedule → plan → preset file.

Each step is a plain function that takes the value of its flag (``WizardFlags``) and an ``Asker``: a
flag's value is used as given; otherwise the asker asks (questionary in a terminal, anything with the
same three methods in tests); with no asker the recommended or default value is taken, and the two
values that have none (``--model``, ``--dataset``) must be flags (:func:`missing_flags`).

The wizard writes a file and never trains: launching is ``tunewiz train PATH``, the one path that trains.
Heavy imports stay out of the steps before the dataset is chosen: the hardware summary and the model
question need no torch (the GPUs are read with ``nvidia-smi``, the RAM with psutil); torch may load
while the dataset's token lengths are sampled.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tunewiz.catalog import CatalogModel, catalog_models, lookup
from tunewiz.errors import TunewizError
from tunewiz.hardware import GiB, Machine, describe
from tunewiz.planner.recommend import PlanRequest, Recommendation, recommend

if TYPE_CHECKING:
    from rich.console import Console

    from tunewiz.config import Preset

METHODS = ("lora", "qlora", "full")
REQUIRED_FLAGS = ("model", "dataset")  # every other question has a recommended or default answer
EXAMPLE = ("tunewiz init --model tunewiz:tiny --dataset tunewiz:story-qa --epochs 1 "
           "--output tiny-story-qa.yaml --no-launch")
SAMPLED_ROWS = 1000  # rows tokenized to size max_seq_len: enough for a stable 99th percentile
CHARS_PER_TOKEN = 4  # English text with a 32k-150k BPE vocabulary, when the tokenizer is not local
TEMPLATE_TOKENS_PER_MESSAGE = 5  # role header + end marker: `<|im_start|>user\n … <|im_end|>\n` (chatml, llama3)
MATMUL_UTILISATION = 0.5  # a training step reaches about half of a bare matmul's FLOP/s
FULL_LR, LORA_LR = 2e-5, 2e-4  # the usual peak learning rates (torchtune, axolotl, LitGPT recipes)


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


@dataclass(frozen=True)
class WizardFlags:
    """The answers given on the command line (None: ask, or take the recommendation).

    Args:
        model: catalog name, Hub id or local model directory.
        dataset: ``tunewiz:<sample>``, a local data file, or a Hub dataset id.
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
    """

    model: str | None = None
    dataset: str | None = None
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


@dataclass(frozen=True)
class WizardResult:
    """What the wizard wrote and how to run it.

    Args:
        preset: the validated preset.
        path: the file written.
        command: ``tunewiz train PATH [...]`` as argv.
        recommendation: the plan the preset follows.
        launch: the user asked to start training now.
    """

    preset: Preset
    path: Path
    command: list[str]
    recommendation: Recommendation
    launch: bool


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
        raise TunewizError(f"{why}, and {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not given",
                           hint=f"give {' and '.join(f'`{m}`' for m in missing)} as flags, e.g. `{EXAMPLE}`")
    if flags.epochs is not None and flags.time_budget is not None:
        raise TunewizError("--epochs and --time-budget both given", hint="give one: `--epochs 2` or `--time-budget 2h`")
    if flags.method is not None and flags.method not in METHODS:
        raise TunewizError(f"--method `{flags.method}` is not a method", hint="use `lora`, `qlora` or `full`")
    if flags.output is not None:
        _check_output(flags.output, flags.force or asker is not None)
    machine, summary = detect_machine(flags.gpus, flags.gpu_memory)
    console.print(summary)
    fixed = PlanRequest(micro_batch=flags.micro_batch, seq_len=flags.seq_len, lora_rank=flags.lora_rank)
    model = choose_model(flags.model, asker, machine, fixed)
    dataset = choose_dataset(flags.dataset, asker, console)
    lengths, length_note, num_rows = sample_token_lengths(model, dataset, flags.seq_len)
    console.print(f"token lengths: {length_note}")
    method = choose_method(flags.method, asker, machine, model, lengths, fixed)
    rec = recommend(machine, model, lengths, fixed)
    if rec.plan.inputs.method != method:  # fixed only when it differs, so the reason says why it was chosen
        rec = recommend(machine, model, lengths, dataclasses.replace(fixed, method=method))
    epochs, max_steps, schedule_reason = choose_schedule(flags, asker, rec, lengths)
    _show_plan(console, rec, schedule_reason, num_rows)
    if not rec.fits and not _accept_misfit(asker, rec):
        raise TunewizError(f"{model.name} with {method} does not fit {machine.name}",
                           hint="; ".join(rec.alternatives) or "plan for a machine with more memory")
    name = flags.name or _ask_text(asker, "Run name:", default_name(model, method, dataset), _check_name)
    _check_name_or_raise(name)
    path = flags.output or Path(_ask_text(asker, "Write the preset to:", f"{name}.yaml", _check_suffix))
    preset = build_preset(name, machine, model, dataset, rec, epochs, max_steps)
    command = train_command(path, machine)
    write_preset(path, preset_text(preset, rec, command), _may_overwrite(path, flags.force, asker))
    launch = flags.launch if flags.launch is not None else (
        asker.confirm("Start training now?", default=True) if asker is not None else False)
    return WizardResult(preset, path, command, rec, launch)


# --- hardware ------------------------------------------------------------------------------------


def detect_machine(gpus: int | None, gpu_memory: str | None) -> tuple[Machine, str]:
    """The machine to plan for, and a one-paragraph summary of it, without importing torch.

    Args:
        gpus: describe a machine with this many GPUs (0: CPU) instead of looking at this one.
        gpu_memory: memory per GPU of the described machine.
    """
    if gpus is not None or gpu_memory is not None:
        if gpus is None:
            gpus = 1
        if gpus > 0 and gpu_memory is None:
            raise TunewizError(f"--gpus {gpus} needs --gpu-memory", hint="e.g. `--gpus 2 --gpu-memory 24GB`")
        machine = describe(gpus, gpu_memory or f"{_cpu_ram()[1] / GiB:.1f}GiB")
        return machine, f"planning for [bold]{machine.name}[/bold] (described with --gpus/--gpu-memory)"
    found = _nvidia_smi_gpus()
    if found:
        names = {name for name, _, _ in found}
        smallest = min(total for _, total, _ in found)
        machine = Machine("cuda", len(found), smallest, f"{len(found)} × {sorted(names)[0]}",
                          all(cc >= 8.0 for _, _, cc in found))
        lines = [f"  GPU {i}: {n}, {t / GiB:.1f} GiB, compute {cc}" for i, (n, t, cc) in enumerate(found)]
        return machine, "\n".join([f"found [bold]{len(found)} GPU(s)[/bold] (nvidia-smi):", *lines])
    cores, available = _cpu_ram()
    machine = Machine("cpu", 1, available, f"CPU ({available / GiB:.1f} GiB RAM available)")
    return machine, (f"[bold]no GPU found[/bold] (no `nvidia-smi`): planning for CPU training — {cores} cores, "
                     f"{available / GiB:.1f} GiB RAM available. Only small models train in reasonable time on CPU.")


def _nvidia_smi_gpus() -> list[tuple[str, int, float]]:
    # (name, total bytes, compute capability) per GPU. nvidia-smi ships with the driver; torch would
    # say the same but takes seconds to import, and the first question must appear at once.
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        name, total_mib, cc = (part.strip() for part in line.rsplit(",", 2))
        gpus.append((name, int(float(total_mib)) * 1024**2, float(cc)))
    return gpus


def _cpu_ram() -> tuple[int, int]:
    import psutil

    return os.cpu_count() or 1, int(psutil.virtual_memory().available)


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
    verdicts = {m.name: recommend(machine, m, request=fixed) for m in models}
    choices = [Choice(m.name, _model_title(m, verdicts[m.name]), m.repo_id) for m in models]
    choices.append(Choice(_OTHER, "another model: a local directory or a Hugging Face id…"))
    picked = asker.select(f"Model (fit verdicts for {machine.name}):", choices, _default_model(models, verdicts, machine))
    if picked != _OTHER:
        return lookup(picked)
    return lookup(asker.text("Model directory or Hugging Face id:", "", _check_model))


def _model_title(model: CatalogModel, rec: Recommendation) -> str:
    mark = {"fits": "✓ fits", "fits with activation checkpointing": "✓ fits with checkpointing",
            "does not fit": "✗ does not fit"}[rec.verdict]
    how = f" ({rec.plan.inputs.method}, {rec.plan.peak / GiB:.1f} GiB)" if rec.fits else ""
    gated = "  gated" if model.gated else ""
    size = f"{model.params / 1e9:.2f}B" if model.params >= 1e8 else f"{model.params / 1e6:.1f}M"
    return f"{model.name:28s} {size:>7s}  {mark}{how}{gated}"


def _default_model(models: list[CatalogModel], verdicts: dict[str, Recommendation], machine: Machine) -> str:
    # On CPU only the shipped tiny model trains in minutes; on GPUs the largest chat model that fits
    # without recomputation, else the smallest that fits at all.
    if machine.device == "cpu" or not any(r.fits for r in verdicts.values()):
        return models[0].name
    chat = [m for m in models if m.chat_template and verdicts[m.name].verdict == "fits"]
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

_LOCAL, _HUB = "__local__", "__hub__"


def choose_dataset(flag: str | None, asker: Asker | None, console: Console) -> str:
    """The dataset: the flag, a shipped sample, a local file (previewed, then confirmed) or a Hub id.

    Args:
        flag: ``--dataset``.
        asker: asks when the flag is missing.
        console: where a local file's preview is printed.
    """
    from tunewiz.data.sources import SHIPPED_PREFIX, shipped_datasets_dir

    if flag is not None:
        if Path(flag).expanduser().is_file():
            console.print(preview_dataset(flag))
        return flag
    assert asker is not None
    shipped = sorted(p.stem for p in shipped_datasets_dir().glob("*.jsonl") if not p.stem.endswith("-test"))
    choices = [Choice(SHIPPED_PREFIX + s, f"{SHIPPED_PREFIX}{s}  (shipped sample)") for s in shipped]
    choices += [Choice(_LOCAL, "a local file (.jsonl, .json, .csv, .parquet)…"),
                Choice(_HUB, "a Hugging Face dataset id…")]
    default = f"{SHIPPED_PREFIX}story-qa" if "story-qa" in shipped else None
    while True:
        picked = asker.select("Dataset:", choices, default)
        if picked == _HUB:
            return asker.text("Hugging Face dataset id (org/name):", "", _check_hub_id)
        if picked != _LOCAL:
            return picked
        path = asker.text("Data file:", "", _check_data_file)
        console.print(preview_dataset(path))
        if asker.confirm("Train on this file?", default=True):
            return path


def preview_dataset(path: str, rows: int = 3) -> Any:
    """A Rich table of the first ``rows`` rows of a data file, titled with its detected format.

    Args:
        path: a local data file or ``tunewiz:<sample>``.
        rows: rows to show.
    """
    from rich.table import Table

    from tunewiz.data import detect_format, load_rows

    data = load_rows(path, split="train", columns={})
    fmt = detect_format(data, source=path)
    table = Table(title=f"{path}: {len(data)} rows, format `{fmt}` (detected from the columns)", title_justify="left")
    columns = list(data[0])
    for column in columns:
        table.add_column(column, overflow="fold", max_width=50)
    for row in data[:rows]:
        table.add_row(*(_shorten(row.get(c)) for c in columns))
    return table


def _shorten(value: object, width: int = 120) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _check_data_file(text: str) -> str | None:
    from tunewiz.data.sources import LOCAL_SUFFIXES

    path = Path(text).expanduser()
    if not path.is_file():
        return f"`{text}` is not a file"
    if path.suffix.lower() not in LOCAL_SUFFIXES:
        return f"expected one of {', '.join(LOCAL_SUFFIXES)}"
    return None


def _check_hub_id(text: str) -> str | None:
    return None if re.fullmatch(r"[\w.-]+/[\w.-]+", text.strip()) else "expected `org/name`"


def sample_token_lengths(model: CatalogModel, dataset: str, seq_len: int | None
                         ) -> tuple[list[int] | None, str, int | None]:
    """Token lengths of up to ``SAMPLED_ROWS`` rows, for sizing ``max_seq_len``.

    With the model's tokenizer when it is local (the shipped model, a directory, the HF cache);
    otherwise estimated from the characters. A Hub dataset is not read here (it downloads when
    training starts), and a fixed ``--seq-len`` needs no sample.

    Args:
        model: the chosen model.
        dataset: the chosen dataset.
        seq_len: ``--seq-len``, when given.

    Returns:
        (lengths or None, how they were found, number of rows or None).
    """
    from tunewiz.data.sources import SHIPPED_PREFIX

    if not dataset.startswith(SHIPPED_PREFIX) and not Path(dataset).expanduser().is_file():
        return None, "not sampled: a Hub dataset is read when training starts (give --seq-len to size it)", None
    from tunewiz.config import DataSection
    from tunewiz.data import build_datasets, load_rows
    from tunewiz.models.loading import resolve_model_dir
    from tunewiz.tokenizer import load_tokenizer

    rows = load_rows(dataset, split="train", columns={})
    if seq_len is not None:
        return None, f"not sampled: --seq-len {seq_len} given", len(rows)
    try:
        tokenizer = load_tokenizer(resolve_model_dir(model.repo_id))
    except TunewizError:
        return _estimated_lengths(rows, dataset), (f"estimated at {CHARS_PER_TOKEN} characters per token "
                                                   f"+ {TEMPLATE_TOKENS_PER_MESSAGE} template tokens per message "
                                                   f"(the tokenizer of {model.name} is not downloaded)"), len(rows)
    cfg = DataSection(path=dataset, max_seq_len=model.max_context, val_fraction=0.0, max_samples=SAMPLED_ROWS)
    samples, _, _ = build_datasets(cfg, tokenizer, seed=0)
    lengths = [len(s.input_ids) for s in samples]
    return lengths, f"measured with the tokenizer of {model.name} on {len(lengths)} rows", len(rows)


def _estimated_lengths(rows: list[dict[str, Any]], source: str) -> list[int]:
    from tunewiz.data.formats import detect_format, row_to_messages, row_to_text

    fmt = detect_format(rows, source=source)
    lengths = []
    for index, row in enumerate(rows[:SAMPLED_ROWS], start=1):
        if fmt == "text":
            chars = len(row_to_text(row, index, source))
        else:
            messages = row_to_messages(row, fmt, index, source)
            chars = sum(len(m["content"]) + CHARS_PER_TOKEN * TEMPLATE_TOKENS_PER_MESSAGE for m in messages)
        lengths.append(max(1, math.ceil(chars / CHARS_PER_TOKEN)))
    return lengths


# --- method and schedule -------------------------------------------------------------------------


def choose_method(flag: str | None, asker: Asker | None, machine: Machine, model: CatalogModel,
                  lengths: list[int] | None, fixed: PlanRequest) -> str:
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
    why = next((r.split(": ", 1)[1] for r in best.reasons if r.startswith("method ")), "nothing fits; see the plan")
    choices = []
    for method in METHODS:
        rec = best if method == recommended else recommend(machine, model, lengths, dataclasses.replace(fixed, method=method))
        verdict = f"{rec.verdict}, {rec.plan.peak / GiB:.1f} GiB" if rec.fits else rec.verdict
        note = f"recommended: {why}" if method == recommended else None
        choices.append(Choice(method, f"{method:6s} {verdict}" + ("  (recommended)" if note else ""), note))
    return asker.select("Method:", choices, recommended)


def choose_schedule(flags: WizardFlags, asker: Asker | None, rec: Recommendation, lengths: list[int] | None
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
        how = asker.select("Train for:", [Choice("epochs", "a number of epochs"),
                                          Choice("budget", "a time budget (e.g. 30m, 2h)")], "epochs")
        if how == "epochs":
            epochs = int(asker.text("Epochs:", "1", _check_positive_int))
        else:
            budget = asker.text("Time budget:", "30m", lambda t: None if _try_seconds(t) else "e.g. 90m, 2h, 1h30m")
    if budget is None:
        epochs = epochs or 1
        return epochs, None, f"epochs {epochs}: " + ("given" if flags.epochs else "chosen" if asker else "default")
    seconds = parse_duration(budget)
    per_second = estimate_tokens_per_second(rec)
    mean = sum(lengths) / len(lengths) if lengths else rec.plan.inputs.seq_len
    tokens_per_step = rec.global_batch * min(mean, rec.plan.inputs.seq_len)
    steps = max(1, int(seconds * per_second / tokens_per_step))
    return 1, steps, (f"max_steps {steps}: a {budget} budget at an estimated {per_second:,.0f} tokens/s "
                      f"({MATMUL_UTILISATION:.0%} of this machine's measured matmul FLOP/s) and "
                      f"{tokens_per_step:,.0f} tokens per step; an estimate, not a measurement")


def parse_duration(text: str) -> float:
    """Seconds in ``90m``, ``2h``, ``1h30m``, ``45s``, or a bare number of minutes.

    Args:
        text: the value of ``--time-budget``.
    """
    seconds = _try_seconds(text)
    if seconds is None:
        raise TunewizError(f"--time-budget `{text}` is not a duration", hint="write it like `90m`, `2h` or `1h30m`")
    return seconds


def _try_seconds(text: str) -> float | None:
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text) * 60 or None
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?", text)
    if not text or parts is None:
        return None
    h, m, s = (float(p) if p else 0.0 for p in parts.groups())
    return h * 3600 + m * 60 + s or None


def estimate_tokens_per_second(rec: Recommendation) -> float:
    """Training tokens per second per machine, from a matmul measured on this machine's device.

    FLOPs per token: 6 × parameters for full fine-tuning (forward 2, backward 4), 4 × for LoRA (the
    frozen weights need no weight gradient), plus attention's 12 × layers × seq_len × hidden (PaLM's
    count). Utilisation ``MATMUL_UTILISATION`` of the measured matmul rate.

    Args:
        rec: the plan (model, method, dtype, sequence length, devices).
    """
    if rec.machine.device == "cuda" and not _nvidia_smi_gpus():
        raise TunewizError("--time-budget needs this machine's GPUs to measure their speed",
                           hint="give `--epochs N` when planning for another machine")
    i, arch = rec.plan.inputs, rec.model.arch
    per_token = (6 if i.method == "full" else 4) * rec.model.params + 12 * arch.num_hidden_layers * i.seq_len * arch.hidden_size
    return measure_matmul_flops(rec.machine.device, i.dtype) * MATMUL_UTILISATION * rec.machine.num_devices / per_token


def measure_matmul_flops(device: str, dtype: str, size: int = 1024, seconds: float = 0.3) -> float:
    """FLOP/s of a square matmul on ``device`` in ``dtype`` (``bf16``/``fp32``), timed for about ``seconds``.

    Args:
        device: ``cuda`` or ``cpu``.
        dtype: ``bf16`` or ``fp32``.
        size: the matrices are size × size.
        seconds: time spent measuring.
    """
    import time

    import torch

    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dt)  # [size, size]
    b = torch.randn(size, size, device=device, dtype=dt)
    a @ b  # warm-up: kernel selection and thread pools
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start, runs = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
        sync()
    return 2 * size**3 * runs / (time.perf_counter() - start)


def _check_positive_int(text: str) -> str | None:
    return None if text.strip().isdigit() and int(text) > 0 else "a whole number > 0"


# --- plan, preset, output ------------------------------------------------------------------------


def _show_plan(console: Console, rec: Recommendation, schedule_reason: str, num_rows: int | None) -> None:
    from tunewiz.planner.report import render_recommendation

    console.print()
    console.print(render_recommendation(rec))
    console.print(f"  • {schedule_reason}")
    if num_rows is not None and rec.fits:
        steps = num_rows // rec.global_batch
        console.print(f"  • {num_rows} rows → about {steps} optimizer steps per epoch (before the validation split)")


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
    return None if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", text) else "letters, digits, `.`, `_`, `-` only"


def _check_name_or_raise(name: str) -> None:
    problem = _check_name(name)
    if problem:
        raise TunewizError(f"--name `{name}`: {problem} (it names the run directory)", hint="e.g. `--name my-run`")


def _check_suffix(text: str) -> str | None:
    return None if Path(text).suffix in (".yaml", ".yml") else "a .yaml file"


def _ask_text(asker: Asker | None, message: str, default: str, validate: Callable[[str], str | None]) -> str:
    return default if asker is None else asker.text(message, default, validate)


def build_preset(name: str, machine: Machine, model: CatalogModel, dataset: str, rec: Recommendation,
                 epochs: int, max_steps: int | None) -> Preset:
    """The preset the plan describes.

    Args:
        name: run name.
        machine: the machine planned for (CPU plans pin ``device: cpu``).
        model: the chosen model.
        dataset: the chosen dataset.
        rec: the recommendation (method, dtype, micro-batch, accumulation, checkpointing, seq_len, rank).
        epochs: passes over the data.
        max_steps: a step limit from a time budget, or None.
    """
    from tunewiz.config import Preset

    i = rec.plan.inputs
    lora = {} if i.method == "full" else {"rank": i.lora_rank, "alpha": 2.0 * i.lora_rank, "targets": list(i.lora_targets)}
    return Preset.model_validate({
        "name": name, "method": i.method, "device": "cpu" if machine.device == "cpu" else "auto",
        "model": {"path": model.repo_id, "dtype": i.dtype},
        **({"lora": lora} if lora else {}),
        "data": {"path": dataset, "max_seq_len": i.seq_len},
        "train": {"epochs": epochs, "max_steps": max_steps, "micro_batch_size": i.micro_batch,
                  "grad_accum": rec.grad_accum, "activation_checkpointing": i.activation_checkpointing,
                  "lr": FULL_LR if i.method == "full" else LORA_LR},
        "output": {"adapter": i.method != "full", "merged": True},
    })


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
    from tunewiz.presets import dump_preset

    i = rec.plan.inputs
    header = [
        f"# {rec.model.name} {i.method} on {preset.data.path}, planned by `tunewiz init` for {rec.machine.name} "
        f"({date.today().isoformat()}).",
        f"# Launch: {shlex.join(command)}",
        f"# Planner's predicted peak: {rec.plan.peak / GiB:.2f} GiB ± {rec.plan.error_band:.0%} per device "
        f"({rec.verdict}; capacity after margin {rec.capacity / GiB:.2f} GiB).",
        "# Not measured yet: `tunewiz train` records the measured peak next to this prediction in events.jsonl.",
    ]
    return "\n".join(header) + "\n" + dump_preset(preset)


def _check_output(path: Path, may_ask: bool) -> None:
    if path.suffix not in (".yaml", ".yml"):
        raise TunewizError(f"--output `{path}` is not a .yaml file", hint="e.g. `--output my-run.yaml`")
    if path.exists() and not may_ask:
        raise TunewizError(f"`{path}` already exists; not overwriting it",
                           hint="add `--force` to overwrite it, or choose another `--output`")


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
    from tunewiz.config import Preset

    Preset.model_validate(yaml.safe_load(text))  # what `tunewiz train` reads back; checked before writing
    if path.exists() and not overwrite:
        raise TunewizError(f"`{path}` already exists; not overwriting it",
                           hint="add `--force` to overwrite it, or choose another `--output`")
    if path.is_dir():
        raise TunewizError(f"`{path}` is a directory", hint="give a file name such as `my-run.yaml`")
    atomic_write_text(path, text)
