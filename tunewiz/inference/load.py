"""Load a model to talk to, and hold a chat conversation with it.

``load_for_inference`` accepts what a user points at: a run directory (its base model plus the LoRA
adapter from ``final/adapter``, kept unmerged so :func:`base_model_only` can switch it off), a model
directory, a shipped ``tunewiz:`` name, or a Hub id already in the local cache. ``ChatSession`` keeps
the messages, renders them with the chat template and streams the reply as text pieces.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from tunewiz.atomic import atomic_write_text
from tunewiz.errors import TunewizError
from tunewiz.inference.generate import SamplingParams, StreamDecoder, stream
from tunewiz.run.directory import RunDir

if TYPE_CHECKING:
    import torch

    from tunewiz.models.llama import LlamaForCausalLM
    from tunewiz.preset.schema import Preset
    from tunewiz.text.prompt import PromptBuilder
    from tunewiz.text.tokenizer import Tokenizer

log = logging.getLogger(__name__)
_DTYPES = {
    "fp32": "float32",
    "float32": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
}


@dataclass
class LoadedModel:
    """A model ready for generation.

    Args:
        model: the native model in eval mode, LoRA layers (if any) unmerged.
        tokenizer: its tokenizer (the run's ``final/`` copy for a run directory).
        device: where the weights are.
        dtype: the weights' floating-point dtype.
        description: what was loaded, e.g. ``runs/x: tunewiz:tiny + LoRA adapter (rank 16)``.
        has_adapter: a LoRA adapter is applied (so :func:`base_model_only` can switch it off).
        base_name: the base model's name (``tunewiz:tiny``, a Hub id or a directory).
    """

    model: LlamaForCausalLM
    tokenizer: Tokenizer
    device: torch.device
    dtype: torch.dtype
    description: str
    has_adapter: bool
    base_name: str


def _resolve_device_dtype(device: str, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    import torch

    from tunewiz.train.distributed import resolve_device

    if device not in ("auto", "cpu", "cuda"):
        raise TunewizError(f"--device is `{device}`; expected auto, cpu or cuda", hint="pass `--device auto`")
    kind = resolve_device(device)  # type: ignore[arg-type]
    if dtype is None:
        return torch.device(kind), torch.bfloat16 if kind == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise TunewizError(f"dtype `{dtype}` is not one of {', '.join(_DTYPES)}", hint="use `fp32` or `bf16`")
    return torch.device(kind), getattr(torch, _DTYPES[dtype])


def _has_weights(model_dir: Path) -> bool:
    return (model_dir / "model.safetensors").is_file() or (
        model_dir / "model.safetensors.index.json"
    ).is_file()


def _unfinished_run_error(run: RunDir) -> TunewizError:
    from tunewiz.run.lock import probe, refusal

    status = probe(run)
    if status.running or status.state == "stale":  # never hint at `--overwrite` or `resume` of a live run
        error = refusal(run, status, doing="load its final weights")
        error.message += "; `final/` is written when it finishes"
        return error
    latest = run.latest_checkpoint()
    if latest is None:
        return TunewizError(
            f"run `{run.path}` has no final weights and no complete checkpoint: it stopped before "
            "its first save",
            hint=f"train it again: `tunewiz train {run.config} --run-dir {run.path} --overwrite`",
        )
    return TunewizError(
        f"run `{run.path}` has no final weights (`{run.final}` is missing): it is not finished; "
        f"its newest complete checkpoint is `{latest.name}`",
        hint=f"finish it with `tunewiz resume {run.path}`, which continues from `{latest.name}` and writes "
        "`final/` at the end (add `--set train.max_steps=N` to stop sooner)",
    )


def load_for_inference(
    target: str,
    *,
    adapter: Path | None = None,
    device: str = "auto",
    dtype: str | None = None,
    merged: bool = False,
    checkpoint: StepCheckpoint | None = None,
) -> LoadedModel:
    """Load a run, a model directory, a shipped model or a cached Hub model for generation.

    Args:
        target: a run directory (the base model named in its ``config.yaml`` plus ``final/adapter``
            applied unmerged; ``final/`` itself for full fine-tuning), a model directory, a
            ``tunewiz:NAME`` shipped model, or a Hub id in the local HF cache.
        adapter: a PEFT LoRA adapter directory to apply instead of (or, for a model, on top of) the
            run's own.
        device: ``auto`` (cuda when available, else cpu), ``cpu`` or ``cuda``.
        dtype: ``fp32``, ``bf16`` or ``fp16``; default bf16 on GPU and fp32 on CPU.
        merged: for a run directory, load the merged weights in ``final/`` instead of base + adapter.
        checkpoint: a step checkpoint of the run ``target`` (from :func:`resolve_from`) to load instead
            of ``final/``: built as ``final/`` is loaded (LoRA unmerged on the base model).

    Returns:
        The model in eval mode with its tokenizer.
    """
    from tunewiz.lora.peft_files import load_peft_adapter
    from tunewiz.models.loading import load_model, resolve_model_dir
    from tunewiz.preset.files import load_preset
    from tunewiz.text.tokenizer import load_tokenizer

    if merged and adapter is not None:
        raise TunewizError(
            "`--merged` and `--adapter` exclude each other: merged weights already hold an adapter",
            hint="drop one of them",
        )
    dev, dt = _resolve_device_dtype(device, dtype)
    run = RunDir(Path(target).expanduser())
    if checkpoint is not None:
        return _load_step(checkpoint, dev, dt, adapter=adapter, merged=merged)
    if run.config.is_file():
        if not run.final.is_dir():
            raise _unfinished_run_error(run)
        preset, _ = load_preset(str(run.config))
        base_name = preset.model.path
        use_merged = merged or preset.method == "full" or (adapter is None and not run.adapter.is_dir())
        if use_merged:
            if not _has_weights(run.final):
                raise TunewizError(
                    f"`{run.final}` has no merged model.safetensors (the run saved only an adapter)",
                    hint=f"drop `--merged`, or re-export with `tunewiz resume {run.path} --set "
                    "output.merged=true`",
                )
            model_dir, adapter_dir = run.final, adapter
            what = "full fine-tune" if preset.method == "full" else "merged LoRA weights"
        else:
            model_dir = resolve_model_dir(base_name, preset.model.revision)
            adapter_dir = adapter or run.adapter
            what = None
        tokenizer_dir = run.final if (run.final / "tokenizer_config.json").is_file() else model_dir
        label = f"{run.path}: {base_name}"
    else:
        if merged:
            raise TunewizError(
                f"`--merged` needs a run directory; `{target}` is a model", hint="drop `--merged`"
            )
        model_dir = resolve_model_dir(target)
        base_name, adapter_dir, what, tokenizer_dir, label = target, adapter, None, model_dir, target

    model = load_model(model_dir, dtype=dt, device=dev)
    rank = None
    if adapter_dir is not None:
        load_peft_adapter(model, adapter_dir)  # adapters are created on the base weights' device
        rank = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))["r"]
    model.eval()  # new LoRA layers start in training mode (dropout on)
    description = label + (
        f" + LoRA adapter (rank {rank})" if rank is not None else f" ({what})" if what else ""
    )
    return LoadedModel(
        model=model,
        tokenizer=load_tokenizer(tokenizer_dir),
        device=dev,
        dtype=dt,
        description=description,
        has_adapter=rank is not None,
        base_name=base_name,
    )


@dataclass(frozen=True)
class StepCheckpoint:
    """A complete step checkpoint of a run, as ``--from`` names it.

    Args:
        run: the run directory.
        step: the optimizer step it was saved after.
        path: its folder, ``RUN/checkpoints/step-N``.
    """

    run: RunDir
    step: int
    path: Path

    @property
    def name(self) -> str:
        """``step-N``."""
        return self.path.name


def resolve_from(target: str | Path, value: str | None, *, command: str) -> StepCheckpoint | None:
    """What ``--from`` names, for every command that reads a run's weights (chat, eval, push, export).

    ``final`` (or no ``--from``) is the run's ``final/`` and gives None; ``step-N`` (or ``N``) is the
    complete checkpoint of step N; ``latest`` is the newest complete one.

    Args:
        target: what the command was pointed at.
        value: the ``--from`` value, or None.
        command: the command as typed, every option kept but ``--from`` (``tunewiz chat runs/x
            --prompt Hi``; :func:`tunewiz.cli.options.typed_command` builds it); hints complete it into a
            command that works.

    Raises:
        TunewizError: ``target`` is not a run directory, the value is not a checkpoint name, the run
            has no complete step checkpoint, or none of that step (the message lists the ones there are).
    """
    if value is None or value == "final":
        return None
    run = RunDir(Path(target).expanduser())
    if not run.config.is_file():
        raise TunewizError(
            f"--from {value} names a checkpoint of a run directory; `{target}` is not one (no config.yaml)",
            hint=f"drop `--from`: `{command}`",
        )
    complete = run.complete_checkpoints()
    number = value.removeprefix("step-")
    if value != "latest" and not number.isdigit():
        raise TunewizError(
            f"--from `{value}` is not a checkpoint name; expected `step-N`, `latest` or `final`",
            hint=f"`{command} --from {complete[-1][1].name if complete else 'final'}`",
        )
    if not complete:
        raise _no_checkpoints(run, value, command)
    steps = dict(complete)
    step = complete[-1][0] if value == "latest" else int(number)
    if step not in steps:
        half = run.checkpoint(step).is_dir()
        raise TunewizError(
            f"`{run.path}` has no complete checkpoint `step-{step}`"
            + (" (it is half-written: the run stopped while saving it)" if half else "")
            + f"; complete ones: {', '.join(p.name for _, p in complete)}",
            hint=f"`{command} --from {complete[-1][1].name}`",
        )
    return StepCheckpoint(run, step, steps[step])


def _no_checkpoints(run: RunDir, value: str, command: str) -> TunewizError:
    """The error for ``--from`` on a run without a complete step checkpoint."""
    return TunewizError(
        f"--from {value}: run `{run.path}` has no complete step checkpoint (`{run.checkpoints}` is empty "
        "or missing: it stopped before its first save, or they were deleted)",
        hint=f"use its final weights: `{command}`"
        if run.final.is_dir()
        else f"train it again: `tunewiz train {run.config} --run-dir {run.path} --overwrite`",
    )


def build_step_model(
    checkpoint: StepCheckpoint, *, dtype: torch.dtype | None, device: torch.device | str, nf4: bool
) -> tuple[LlamaForCausalLM, Preset, Path]:
    """The run's model with a step checkpoint's trained weights, on one process, in eval mode.

    The model is built as training built it (LoRA with the run's targets, rank and alpha in ``dtype``,
    or every parameter for a full fine-tune) and the checkpoint's trainable weights are loaded into it;
    the optimizer state is not read.

    Args:
        checkpoint: from :func:`resolve_from`.
        dtype: the weights' dtype; None: the run's ``model.dtype``, which gives training's weights exactly.
        device: where to build it.
        nf4: for a QLoRA run, quantize the base's decoder linears to NF4 as training did (what
            ``final/``'s merged weights fold the adapter into); False keeps the base in ``dtype``, as
            ``final/adapter`` is loaded for chat and eval.

    Returns:
        The model, the run's preset, and the base model's directory.
    """
    import torch

    from tunewiz.lora.layer import apply_lora
    from tunewiz.models.loading import load_model, resolve_model_dir
    from tunewiz.models.nf4 import load_nf4_model
    from tunewiz.preset.files import load_preset
    from tunewiz.train.checkpoint import load_trained_weights

    preset, _ = load_preset(str(checkpoint.run.config))
    model_dir = resolve_model_dir(preset.model.path, preset.model.revision)
    if dtype is None:  # as the recipe builds it
        dtype = torch.float32 if preset.model.dtype == "fp32" else torch.bfloat16
    if nf4 and preset.method == "qlora":
        model = load_nf4_model(model_dir, dtype=dtype, device=device)
    else:
        model = load_model(model_dir, dtype=dtype, device=device)
    if preset.method == "full":
        model.requires_grad_(True)
    else:
        lora = preset.lora
        apply_lora(model, targets=lora.targets, rank=lora.rank, alpha=lora.alpha, dropout=0.0, seed=0)
        for param in model.parameters():
            if param.requires_grad:
                param.data = param.data.to(dtype)
    load_trained_weights(checkpoint.path, model)
    model.requires_grad_(False)
    model.eval()
    return model, preset, model_dir


def _load_step(
    checkpoint: StepCheckpoint, dev: torch.device, dt: torch.dtype, *, adapter: Path | None, merged: bool
) -> LoadedModel:
    from tunewiz.text.tokenizer import load_tokenizer

    if merged or adapter is not None:
        raise TunewizError(
            f"--from {checkpoint.name} loads the checkpoint's own weights; `--merged`/`--adapter` do not "
            "apply",
            hint="drop one of them",
        )
    model, preset, model_dir = build_step_model(checkpoint, dtype=dt, device=dev, nf4=False)
    run = checkpoint.run
    tokenizer_dir = run.final if (run.final / "tokenizer_config.json").is_file() else model_dir
    kind = "full fine-tune" if preset.method == "full" else f"LoRA rank {preset.lora.rank}"
    return LoadedModel(
        model=model,
        tokenizer=load_tokenizer(tokenizer_dir),
        device=dev,
        dtype=dt,
        description=f"{run.path}: {preset.model.path} + {checkpoint.name} ({kind})",
        has_adapter=preset.method != "full",
        base_name=preset.model.path,
    )


@contextmanager
def base_model_only(loaded: LoadedModel) -> Iterator[None]:
    """Switch the LoRA adapter off inside the block, so the model computes as its base model.

    Args:
        loaded: a model loaded with an adapter.

    Raises:
        TunewizError: the model has no adapter (a model directory, or a full fine-tune).
    """
    from tunewiz.lora.layer import lora_disabled

    if not loaded.has_adapter:
        raise TunewizError(
            f"{loaded.description} has no LoRA adapter to switch off, so there is no base model to compare",
            hint="use a LoRA run directory, or pass `--adapter DIR` with a base model",
        )
    with lora_disabled(loaded.model):
        yield


def prompt_builder_for(target: str, tokenizer: Tokenizer) -> tuple[PromptBuilder, str | None]:
    """The prompt builder to talk to ``target`` with, and a warning to show once when it is a guess.

    A run directory's ``prompt.json`` is the only source for a run (the template and bos/eos rule it
    trained with). A run made before that record existed falls back to what its training did then:
    the template from its ``config.yaml`` (``data.template``, or the template ``final/`` carries) with
    bos put before every prompt. A model directory uses its own template (else the plain alpaca one,
    with a warning) and its tokenizer's bos rule, as a new run on it would.

    Args:
        target: what the user pointed at (a run directory is recognised by its ``config.yaml``).
        tokenizer: the loaded tokenizer (a run's ``final/`` copy).
    """
    from tunewiz.preset.files import load_preset
    from tunewiz.text.prompt import (
        PromptBuilder,
        legacy_prompt_format,
        new_prompt_format,
        read_prompt_record,
    )
    from tunewiz.text.templates import builtin_template

    run = RunDir(Path(target).expanduser())
    if run.config.is_file():
        recorded = read_prompt_record(run.path)
        if recorded is not None and recorded.template is not None:
            return PromptBuilder(tokenizer, recorded), None
        if recorded is None:
            preset: Preset = load_preset(str(run.config))[0]
            name = preset.data.template
            if name in ("auto", "model") and tokenizer.chat_template is not None:
                template = tokenizer.chat_template
            else:
                if name in ("auto", "model"):
                    name = {"chat": "chatml"}.get(preset.data.format, "alpaca")
                specials = tokenizer.special_tokens
                template = builtin_template(name, special_tokens=specials)  # type: ignore[arg-type]
            fmt = legacy_prompt_format(template, tokenizer)
            return PromptBuilder(tokenizer, fmt), (
                f"`{run.path}` has no prompt.json (it was trained by an older tunewiz): prompting with "
                f"template `{template.name}` ({template.source}) and bos before every prompt, as its "
                "training did"
            )
    if tokenizer.chat_template is not None:
        return PromptBuilder(tokenizer, new_prompt_format(tokenizer.chat_template, tokenizer)), None
    alpaca = builtin_template("alpaca", special_tokens=tokenizer.special_tokens)
    return PromptBuilder(tokenizer, new_prompt_format(alpaca, tokenizer)), (
        f"`{tokenizer.source_dir}` has no chat template (no chat_template.jinja, no `chat_template` in "
        "tokenizer_config.json); using the plain alpaca template (### Instruction / ### Response)"
    )


class ChatSession:
    """A multi-turn conversation: messages, the template, and streaming replies.

    Args:
        loaded: the model to talk to.
        prompts: the prompt builder (see :func:`prompt_builder_for`): the run's template and bos rule.
        params: sampling settings for every reply.
        system: an optional system prompt.
    """

    def __init__(
        self, loaded: LoadedModel, prompts: PromptBuilder, params: SamplingParams, system: str | None = None
    ) -> None:
        self.loaded = loaded
        self.prompts = prompts
        self.params = params
        self.system = system
        self.messages: list[dict[str, str]] = []

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self.messages.clear()

    def conversation(self, user_text: str | None = None) -> list[dict[str, str]]:
        """The messages as the template sees them: system prompt first, then the turns (and ``user_text``)."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        user = [{"role": "user", "content": user_text}] if user_text is not None else []
        return [*system, *self.messages, *user]

    def prompt_ids(self, user_text: str) -> list[int]:
        """Token ids of the conversation plus ``user_text``, ending with the assistant header."""
        return self.prompts.prompt_ids(self.conversation(user_text))

    def reply(self, user_text: str, *, record: bool = True) -> Iterator[str]:
        """Stream the model's answer to ``user_text`` as text pieces.

        Args:
            user_text: the user's message (not empty).
            record: append the exchange to the conversation once the reply is complete.
        """
        if not user_text.strip():
            raise TunewizError("the prompt is empty", hint="type a message, or pass `--prompt TEXT`")
        ids = self.prompt_ids(user_text)
        limit = self.loaded.model.config.max_position_embeddings
        if len(ids) >= limit:
            raise TunewizError(
                f"the conversation is {len(ids)} tokens; the model's context holds {limit}",
                hint="start over with `/reset`, or send a shorter message",
            )
        params = replace(self.params, max_new_tokens=min(self.params.max_new_tokens, limit - len(ids)))
        decoder = StreamDecoder(self.loaded.tokenizer)
        pieces = []
        for token in stream(self.loaded.model, ids, params, stop_ids=self.loaded.tokenizer.stop_ids):
            if piece := decoder.push(token):
                pieces.append(piece)
                yield piece
        if tail := decoder.flush():
            pieces.append(tail)
            yield tail
        if record:
            self.messages += [
                {"role": "user", "content": user_text},
                {"role": "assistant", "content": "".join(pieces)},
            ]

    def save(self, path: Path) -> None:
        """Write the conversation as JSON: the model, the sampling settings and the messages.

        Args:
            path: the JSON file (written atomically).
        """
        data = {
            "model": self.loaded.description,
            "sampling": asdict(self.params),
            "messages": self.conversation(),
        }
        atomic_write_text(Path(path), json.dumps(data, indent=2, ensure_ascii=False) + "\n")
