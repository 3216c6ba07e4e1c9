"""The preset schema: typed, validated, every field documented.

A preset is a YAML file of values (never class names). ``tunewiz train`` resolves it (defaults
filled in, ``--set key=value`` overrides applied: see ``tunewiz.preset.files``) and saves the result as
the run's ``config.yaml``. Each function that needs settings takes the sub-config it needs
(``ModelConfig``, ``DataConfig``, ...), not the whole preset.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TRACKERS = ("tensorboard", "mlflow", "wandb")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(_Section):
    """Which model to fine-tune and in what precision."""

    path: str = Field(
        description="The base model: `tunewiz:tiny` (shipped), a local directory with config.json and "
        "*.safetensors, or a Hugging Face repo id resolved through the local HF cache "
        "(`tunewiz download REPO_ID` puts it there)."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of a repo id.")
    dtype: Literal["fp32", "bf16"] = Field(
        "bf16",
        description="Storage and compute dtype of every parameter, gradient and AdamW state (as torchtune "
        "does: no fp32 master copy); norms, softmax and the loss are computed in fp32 either way. "
        "bf16 halves "
        "memory; fp32 is exact and the choice for CPU reproducibility.",
    )


class LoraSection(_Section):
    """LoRA adapter settings (used when `method` is `lora` or `qlora`)."""

    rank: int = Field(8, gt=0, description="Rank r of the low-rank update B·A.")
    alpha: float = Field(16.0, gt=0, description="Scale: the update is multiplied by alpha / rank.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    targets: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        description="Linear layers that get an adapter, by Hugging Face module name: "
        + ", ".join(LORA_TARGETS)
        + ". `all-linear` means every projection except lm_head.",
    )

    @field_validator("targets", mode="before")
    @classmethod
    def _all_linear_string(cls, value: object) -> object:
        return [value] if value == "all-linear" else value

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, value: list[str]) -> list[str]:
        if value == ["all-linear"]:
            return list(LORA_TARGETS[:-1])
        unknown = [t for t in value if t not in LORA_TARGETS]
        if unknown:
            raise ValueError(
                f"unknown LoRA target(s) {unknown}; choose from {list(LORA_TARGETS)} or `all-linear`"
            )
        if not value:
            raise ValueError("at least one LoRA target is needed")
        return value


class DatasetEntry(_Section):
    """One dataset of a list in ``data.path``; unset fields take the data section's value."""

    path: str = Field(description="A shipped sample, a local data file, or a Hugging Face dataset id.")
    split: str | None = Field(None, description="Split to read from a Hub dataset (default: data.split).")
    format: Literal["auto", "alpaca", "chat", "text"] | None = Field(
        None, description="This dataset's format (default: data.format)."
    )
    columns: dict[str, str] | None = Field(
        None, description="This dataset's column mapping by role (default: data.columns)."
    )
    weight: float = Field(
        1.0,
        gt=0,
        description="Mixing weight: the share of this dataset's training rows used per epoch (validation "
        "rows are held out first and counted once). 0.5 takes a seeded half, 2 repeats every row twice "
        "(1.5: every row once and a seeded half again).",
    )

    @field_validator("columns")
    @classmethod
    def _known_roles(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else _check_roles(value)


def _check_roles(value: dict[str, str]) -> dict[str, str]:
    from tunewiz.data.formats import COLUMN_KEYS, ROLES

    unknown = [k for k in value if k not in COLUMN_KEYS]
    if unknown:
        raise ValueError(f"unknown role(s) {unknown}; map one of {list(ROLES)} to a dataset column")
    return value


class DataSection(_Section):
    """The training data and how samples become token sequences."""

    path: str | list[str | DatasetEntry] = Field(
        description="A shipped sample (`tunewiz:story-qa`, ...), a local .json/.jsonl/.csv/.tsv/.parquet "
        "file, or a Hugging Face dataset id; or a list of them, each a path or {path, format, columns, "
        "split, weight}, mixed into one training set."
    )
    split: str = Field("train", description="Split to train on, for Hub datasets.")
    format: Literal["auto", "alpaca", "chat", "text"] = Field(
        "auto",
        description="alpaca: a prompt/response pair (prompt, instruction, question, query or input; "
        "response, completion, output or answer; optional input and system); chat: `messages` or "
        "`conversations`, turns as role/content or from/value; text: plain `text`. auto detects it from "
        "the columns.",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Which dataset column plays which role: {prompt: question, response: answer, system: "
        "persona}; roles are prompt, response, system, input (context after the prompt), messages, text. "
        "The format's own names work too ({instruction: question, output: answer}).",
    )

    @field_validator("columns")
    @classmethod
    def _known_roles(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_roles(value)

    @field_validator("path")
    @classmethod
    def _some_dataset(cls, value: str | list[str | DatasetEntry]) -> str | list[str | DatasetEntry]:
        if isinstance(value, list) and not value:
            raise ValueError("an empty list names no dataset")
        return value

    def datasets(self) -> list[DatasetEntry]:
        """Every dataset of ``path`` with its own settings filled in from this section's."""
        entries = self.path if isinstance(self.path, list) else [self.path]
        resolved = []
        for entry in entries:
            e = DatasetEntry(path=entry) if isinstance(entry, str) else entry
            resolved.append(
                e.model_copy(
                    update={
                        "split": e.split or self.split,
                        "format": e.format or self.format,
                        "columns": self.columns if e.columns is None else e.columns,
                    }
                )
            )
        return resolved

    @property
    def path_text(self) -> str:
        """``path`` as one line: the path, or the paths joined with ``+``."""
        return self.path if isinstance(self.path, str) else " + ".join(e.path for e in self.datasets())

    template: Literal["auto", "model", "alpaca", "llama2", "llama3", "chatml"] = Field(
        "auto",
        description="Prompt template. model: the model's chat template; auto: the model's when it has "
        "one, else alpaca for alpaca data and chatml for chat data.",
    )
    thinking: bool | None = Field(
        None,
        description="Qwen3-style templates' `enable_thinking`, fixed into the run's template (so chat, "
        "eval and the export render the same). false: the prompt ends with an empty <think></think> block "
        "and the model learns to answer directly; true or null: the template's default (the reply "
        "starts with its <think> block, which is trained).",
    )
    max_seq_len: int = Field(
        512,
        gt=0,
        description="Longest sample in tokens. Longer ones are cut or dropped as `truncation` says, and "
        "counted (start event, dashboard, run summary).",
    )
    truncation: Literal["right", "left", "drop"] = Field(
        "right",
        description="What happens to a sample longer than max_seq_len. right: keep its first max_seq_len "
        "tokens (the prompt stays whole; a long reply loses its end); left: keep its last ones after bos "
        "(the reply stays whole; a long prompt loses its beginning, as LLaMA-Factory and axolotl users "
        "expect); drop: leave it out. Default right: the model never trains on a reply whose question it "
        "cannot see, it is what torchtune and TRL do, and a sample whose reply is cut away entirely is "
        "dropped and counted. Choose left for long prompts with short answers (RAG, summaries).",
    )
    train_on_inputs: bool = Field(
        False, description="Also compute the loss on prompts, not only on responses."
    )
    packing: bool = Field(
        False, description="Pack several samples into each max_seq_len row (attention stays within a sample)."
    )
    val_fraction: float = Field(
        0.05, ge=0.0, lt=1.0, description="Share of samples held out for validation loss."
    )
    val_path: str | None = Field(None, description="A separate validation file instead of val_fraction.")
    shuffle: bool = Field(
        True, description="Shuffle samples each epoch (seeded by train.seed and the epoch)."
    )
    max_samples: int | None = Field(
        None, gt=0, description="Use only the first N samples (quick experiments)."
    )
    cache_dir: str | None = Field(
        None,
        description="Where prepared (tokenized, packed) data is kept and found again; default: the "
        "TUNEWIZ_CACHE environment variable, else ~/.cache/tunewiz/prepared. See `tunewiz cache list`.",
    )


class TrainSection(_Section):
    """The optimisation loop."""

    epochs: int = Field(1, gt=0, description="Passes over the training data.")
    max_steps: int | None = Field(
        None, gt=0, description="Stop after this many optimizer steps (overrides epochs)."
    )
    micro_batch_size: int = Field(4, gt=0, description="Samples per rank per forward/backward.")
    grad_accum: int = Field(1, gt=0, description="Micro-batches accumulated per optimizer step.")
    lr: float = Field(3e-4, gt=0, description="Peak learning rate.")
    min_lr_ratio: float = Field(
        0.0, ge=0.0, le=1.0, description="Final LR as a fraction of the peak (cosine/linear)."
    )
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    schedule: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="LR schedule after warm-up."
    )
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="Clip the gradient norm to this (null: no clipping)."
    )
    seed: int = Field(0, description="Seed for initialisation, data order and dropout.")
    activation_checkpointing: bool = Field(
        False, description="Recompute each block's activations in backward (less memory, ~30% slower)."
    )
    activation_offloading: bool = Field(
        False,
        description="Keep the activations saved for backward in CPU memory (pinned) instead of on the GPU; "
        "they are copied back in backward (less GPU memory, slower by the copies; no effect on CPU).",
    )
    optimizer: Literal["adamw", "adamw8bit"] = Field(
        "adamw",
        description="adamw: torch AdamW, states in model.dtype. adamw8bit: torchao's AdamW8bit, both "
        "states in 8 bits with a scale per 256 values (about 2 B instead of 4-8 B per trained parameter; "
        "`pip install 'tunewiz[qlora]'` brings torchao).",
    )
    optimizer_in_backward: bool = Field(
        False,
        description="Step each parameter as soon as its gradient is complete and free the gradient "
        "(torchtune's optimizer_in_bwd): no moment where all gradients exist. Needs grad_accum 1 and "
        "max_grad_norm null (accumulation and global-norm clipping need every gradient at once).",
    )
    eval_every_n_steps: int | None = Field(
        None, gt=0, description="Validation loss every N steps (null: at the end of each epoch only)."
    )
    log_every_n_steps: int = Field(1, gt=0, description="Write a step event every N steps.")
    sample_generations: int = Field(
        3,
        ge=0,
        description="At each validation, greedy replies to the first N validation prompts (built as chat "
        "builds them) go into the events; the dashboard and `tunewiz watch` show the latest. 0: off. "
        "No random number is drawn, so losses and resumes are unchanged.",
    )
    sample_max_new_tokens: int = Field(
        64, gt=0, description="Longest reply of `sample_generations`, in tokens."
    )

    @model_validator(mode="after")
    def _in_backward_alone(self) -> TrainSection:
        if self.optimizer_in_backward and (self.grad_accum > 1 or self.max_grad_norm is not None):
            raise ValueError(
                "optimizer_in_backward needs grad_accum 1 and max_grad_norm null (accumulation and "
                "global-norm clipping need every gradient at once); got grad_accum "
                f"{self.grad_accum}, max_grad_norm {self.max_grad_norm}"
            )
        return self


class CheckpointSection(_Section):
    """Step checkpoints, for resume."""

    every_n_steps: int | None = Field(
        None, gt=0, description="Save every N steps (null: only at the end of each epoch)."
    )
    keep_last: int = Field(
        2, ge=1, description="Complete checkpoints to keep; the newest complete one is never deleted."
    )


class OutputSection(_Section):
    """What `final/` holds at the end of a run, and where its metrics are reported."""

    adapter: bool = Field(True, description="Save the LoRA adapter in PEFT format (LoRA/QLoRA only).")
    merged: bool = Field(True, description="Save the merged model as safetensors, loadable by transformers.")
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list,
        description="Experiment trackers that get the dashboard's metrics, the preset and the plan: "
        "tensorboard (RUN_DIR/tensorboard), mlflow (MLFLOW_TRACKING_URI, default sqlite:///mlflow.db), "
        "wandb (WANDB_PROJECT, default tunewiz; WANDB_MODE=offline works without an account). "
        "Needs `pip install 'tunewiz[tracking]'`; a tracker that cannot start is a warning, not an error.",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if value is None:
            return []
        if isinstance(value, str):  # `--set output.report_to=tensorboard,wandb`
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("report_to")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class Preset(_Section):
    """A tunewiz preset: everything a run needs, and nothing about the machine it was planned on
    except the device choice."""

    name: str = Field(description="Run name; the run directory is runs/<name> unless --run-dir is given.")
    method: Literal["lora", "qlora", "full"] = Field(
        "lora", description="LoRA, QLoRA (4-bit NF4 base) or full fine-tuning."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available, else cpu.")
    model: ModelSection
    lora: LoraSection = Field(default_factory=LoraSection)
    data: DataSection
    train: TrainSection = Field(default_factory=TrainSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    output: OutputSection = Field(default_factory=OutputSection)

    @model_validator(mode="after")
    def _consistent(self) -> Preset:
        if self.method == "full" and not self.output.merged:
            raise ValueError("output.merged must be true for method `full` (there is no adapter to save)")
        return self
