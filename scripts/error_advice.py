"""The hand-reviewed parts of the user error page (`docs/tutorials/common-errors.md`), kept apart from
the extractor in `gen_error_reference.py`:

- `ORDER`: per situation, the order a user meets its messages (the most common first);
- `STAND_INS`: what a run-time value reads as on the user page (`data.csv`, `3`, `COLUMN`);
- `ADVICE`: a one-line "what it means / what to do" for messages whose hint is computed at run time,
  absent, or too terse to stand alone;
- `PRINTED`: messages users meet that are not `TunewizError`s (Typer usage errors, a failed rank, a run
  that wrote no events), with the source file that prints them.

Every table is keyed by a fragment of the message template (its raw text, placeholders included), so a
reworded message falls back to the defaults instead of breaking the page.
"""

from __future__ import annotations

from dataclasses import dataclass

REST = "..."  # in an ORDER: where the messages no fragment names go, in source order

# Situation key -> message fragments in the order a user meets them. A message takes the place of the
# first fragment it contains; a message with none goes where REST is (new messages land there).
ORDER: dict[str, tuple[str, ...]] = {
    "command": (
        "missing option",
        "missing argument",
        "no such command",
        "no such option",
        "is a flag and takes no value",
        "invalid value for",
        "unexpected extra argument",
        REST,
    ),
    "preset": (
        "preset `‹path_or_name›` not found",
        "--set ‹override›` must have the form",
        "unknown key",
        "expected a list of strings",
        ": expected ‹expected›",
        "must be one of",
        "missing required",
        "YAML syntax error",
        REST,
    ),
    "data": (
        "does not exist",
        "no shipped dataset",
        "unsupported data file type",
        "is empty",
        "has no rows",
        "is not UTF-8",
        "is not valid CSV",
        "fields; the header line",
        "has a header line",
        "line ‹lineno› is not valid JSON",
        "is a JSON",
        "holds a JSON",
        "cannot tell the format",
        "has no column",
        "has one column",
        "has no `messages` field",
        "has no `‹name›` field",
        "expected text",
        "turn",
        "no training sample has a trained token",
        "fewer than one global batch",
        "could not load Hugging Face dataset",
        REST,
        "cannot write the prepared-data cache",
        "cannot identify the data",
        "prepared entr",
        "--older-than",
        "prompt record",
        "bos/eos",
        "is not valid JSON (line",
    ),
    "model": (
        "unknown model",
        "model directory `‹path›` does not exist",
        "is not a directory and is not in the Hugging Face cache",
        "has no config.json",
        "has no model.safetensors",
        "is not supported",
        "unsupported rope_scaling",
        "has no tokenizer.json",
        REST,
    ),
    "memory": ("out of memory", "torch sees no CUDA GPU", "GPU(s) are visible", REST),
    "run": (
        "run directory `‹path›` already exists",
        "rank 0 failed",
        "wrote no events",
        "torchrun exited",
        "is in use",
        "run directory `‹path›` does not exist",
        "is not a run directory",
        REST,
    ),
    "resume": ("is finished", "has no complete checkpoint", "does not exist", "is not a tunewiz run", REST),
    "hub": (
        "no Hugging Face token",
        "is a gated model",
        "access to",
        "rejected your token",
        "not found on the Hugging Face Hub",
        "cannot reach the Hugging Face Hub",
        "has no `final/`",
        "--repo-id ‹repo_id›` must be",
        REST,
    ),
}

# Placeholder name -> what it reads as on the user page. A name not here reads as itself in capitals
# (`‹nproc_per_node›` -> `NPROC_PER_NODE`); module constants (`‹LOGIN_HINT›`) read as their value.
STAND_INS: dict[str, str] = {
    "…": "…",
    "path": "PATH",
    "path_or_name": "my.yaml",
    "target": "my.yaml",
    "source": "data.csv",
    "label": "data.csv",
    "name__": "TYPE",
    "index": "3",
    "i": "3",
    "line": "3",
    "lineno": "3",
    "line_num": "3",
    "turn_no": "2",
    "seen": "3",
    "step": "120",
    "len": "2",
    "sorted": "[question, answer]",
    "columns": "question",
    "next": "question",
    "list": "answer",
    "close": "data.csv",
    "guess": "story-qa",
    "quote": "data.csv",
    "encoding": "CP1252",
    "offset": "17",
    "hex": "0xe9",
    "delimiter": ",",
    "exc": "DETAILS",
    "e": "DETAILS",
    "err": "DETAILS",
    "msg": "DETAILS",
    "reason": "DETAILS",
    "problem": "DETAILS",
    "tail": "DETAILS",
    "server_says": "",
    "did_you_mean": " (did you mean `NAME`?)",
    "suggest_key": " (did you mean `KEY`?)",
    "catalog_suggestion": " (did you mean `NAME`?)",
    "suggestion": " (did you mean `VALUE`?)",
    "where": "",
    "given": "",
    "found": "",
    "at": "",
    "here": "node 1",
    "repo_id": "org/model",
    "run_dir": "runs/my-run",
    "final": "runs/my-run/final",
    "model_dir": "models/my-model",
    "source_dir": "models/my-model",
    "config_path": "adapter/adapter_config.json",
    "weights_path": "adapter/adapter_model.safetensors",
    "adapter_dir": "adapter",
    "log_path": "runs/my-run/logs/torchrun.log",
    "holder_path": "runs/my-run/lock",
    "dotted": "train.lr",
    "override": "train.lr=1e-4",
    "got": "VALUE",
    "text": "VALUE",
    "value": "data.csv",
    "key": "KEY",
    "code": "1",
    "rank": "0",
    "gpus": "2",
    "nnodes": "2",
    "node_rank": "1",
    "endpoint": "node0:29500",
    "rdzv_id": "my-run",
    "default_rdzv_id": "my-run",
    "timeout_s": "600",
    "micro_batch_size": "4",
    "method": "lora",
    "quant": "q4_k_m",
    "command": "watch",
    "doing": "train",
    "who": "pid 4242 on this host",
    "describe": "pid 4242 on node0",
}

# Message fragment -> the line shown under it, for messages whose hint is computed at run time, absent,
# or needs words around it. Consecutive messages with the same advice share one block.
_PRESET_VALUE = (
    "The key exists but the value does not fit it. The hint says what the key takes; "
    "`tunewiz presets show NAME --resolved` prints the whole preset as tunewiz read it."
)
ADVICE: dict[str, str] = {
    "cannot tell the format": (
        "tunewiz did not recognise the column names. The hint is a ready `--set 'data.columns={prompt: "
        "QUESTION, response: ANSWER}'` built from your file's real columns: add it to the command, or "
        "rename the columns to `instruction`/`output`."
    ),
    "has no `‹name›` field; columns are": (
        "One row lacks a column the others have. The hint is a `--set 'data.columns={...}'` built from "
        "that row's columns; or fill in the row."
    ),
    "`‹dotted›`‹where›: ‹strip_value_error›": _PRESET_VALUE,
    "must be one of": _PRESET_VALUE,
    ": expected ‹expected›": _PRESET_VALUE,
    "must be a section (a mapping of keys)": (
        "A key that holds other keys was given one value. The hint lists the keys it holds."
    ),
    "unknown key": (
        "The key is misspelt or is not in this section. The hint lists the valid keys; "
        "[Preset fields](../reference/preset-fields.md) documents them."
    ),
    "with ‹method› does not fit": (
        "The wizard found no setting that fits this GPU. The hint names the smaller model, the method "
        "(`qlora`) or the memory that would fit; `tunewiz plan --model NAME` compares them."
    ),
    "out of memory at micro-batch": (
        "Even one sample per step does not fit. The hint names the saver to turn on (activation "
        "checkpointing, `qlora`, a shorter `data.max_seq_len`); see [Out of memory](out-of-memory.md)."
    ),
    "needs llama.cpp's quantizer": (
        "The hint gives the command that builds or installs llama.cpp's `llama-quantize` on this system; "
        "or export without `--quant` (an f16 GGUF)."
    ),
    "no Hugging Face token found": (
        "Downloading a gated model or pushing needs a token: run `hf auth login` (or set `HF_TOKEN`); "
        "the hint says which access the action needs."
    ),
    "vanished while the run was handed over": (
        "Another command removed the run's lock while this one took it over. Run the command again; "
        "`tunewiz watch runs/NAME` shows the run's state."
    ),
    "hidden_act": "The model uses an activation tunewiz does not implement: pick a supported model.",
    "RoPE scaling on the sliding layers": "This model's position scheme is not supported: pick another model.",
    "sliding_window must be": "The model's `config.json` is malformed: fix `sliding_window` or download it again.",
    "layer type `‹unknown›`": "The model uses a layer type tunewiz does not implement: pick a supported model.",
    "model `‹path›` is a file": "Pass the directory that holds `config.json`, not a file inside it.",
    "`‹path›` is not valid JSON: ‹e›": "The model's `config.json` is damaged: download the model again.",
    "was saved by several nodes": (
        "Each node wrote its shards into its own run directory. Put the run directory on storage every "
        "node mounts, copy the shards together, and resume."
    ),
}


@dataclass(frozen=True)
class Printed:
    """A message users meet that is not a `TunewizError` (a usage error, a failed rank).

    Args:
        situation: the situation key it is listed under.
        file: the source file that prints it.
        source: text that must occur in that file (tests/test_docs.py checks, so a rewording is noticed).
        shown: the lines as the terminal shows them, with realistic values.
        advice: what it means and what to do, in one line.
    """

    situation: str
    file: str
    source: str
    shown: str
    advice: str


PRINTED: tuple[Printed, ...] = (
    Printed(
        "command",
        "tunewiz/cli/__init__.py",
        'message.startswith("Missing argument")',
        "error: missing option `--repo-id`\nhint: see `tunewiz push --help`\n\n"
        "error: missing argument `RUN_DIR`\nhint: see `tunewiz push --help`",
        "The command needs that option or argument: add it. `--help` shows each one with an example.",
    ),
    Printed(
        "command",
        "tunewiz/cli/__init__.py",
        '" Did you mean "',
        "error: no such command `pla`\nhint: did you mean `tunewiz plan`? See `tunewiz --help`\n\n"
        "error: no such option: --micro\nhint: did you mean `--micro-batch`? See `tunewiz plan --help`",
        "A misspelt command or option: use the one the hint suggests. Options are written in full.",
    ),
    Printed(
        "command",
        "tunewiz/cli/__init__.py",
        "is a flag and takes no value",
        "error: `--overwrite` is a flag and takes no value (got `true`)",
        "Write the flag alone to turn it on (`--overwrite`), and leave it out to keep it off.",
    ),
    Printed(
        "command",
        "tunewiz/cli/__init__.py",
        "Got unexpected extra argument",
        "error: invalid value for `--gpus`: `two` is not a valid integer\n"
        "hint: see `tunewiz plan --help`\n\n"
        "error: unexpected extra argument `my`\nhint: see `tunewiz train --help`",
        "An option got a value of the wrong kind, or a word has no option before it (quote values with "
        "spaces: `--name 'my run'`). `--help` shows what each option takes.",
    ),
    Printed(
        "preset",
        "tunewiz/preset/explain.py",
        "a list of strings",
        "error: `lora.targets` (from `--set lora.targets=q_proj`): expected a list of strings, got "
        "`q_proj`",
        "A list-valued key got one word. Write the list in brackets, quoted for the shell: "
        "`--set 'lora.targets=[q_proj,v_proj]'`.",
    ),
    Printed(
        "run",
        "tunewiz/ui/render.py",
        'f"error: rank {err.rank} failed{at}: {err.message}"',
        "error: rank 0 failed at step 120: MESSAGE",
        "A training process stopped with an error; MESSAGE says why, and is often one of the errors on "
        "this page (data, model, memory): do what its entry says. The traceback is in "
        "`runs/NAME/logs/torchrun.log`. Then `tunewiz resume runs/NAME` continues from the last "
        "checkpoint, or `tunewiz train PRESET --overwrite` starts over.",
    ),
    Printed(
        "run",
        "tunewiz/ui/summary.py",
        "wrote no events",
        "✗ run my-run wrote no events (exit code 1): it failed before training started\n"
        "  look at the output above, or at runs/my-run/events.jsonl",
        "The training processes stopped before their first event, so `tunewiz watch` has nothing to "
        "show: the reason is in the terminal output above it, or in `runs/NAME/logs/torchrun.log`.",
    ),
)
