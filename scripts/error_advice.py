"""The hand-reviewed parts of the user error page (`docs/tutorials/common-errors.md`), kept apart from
the extractor in `gen_error_reference.py`:

- `ORDER`: per situation, the order a user meets its messages (the most common first);
- `STAND_INS`: what a run-time value reads as on the user page (`data.csv`, `3`, `COLUMN`);
- `ADVICE`: a one-line "what it means / what to do" for messages whose hint is computed at run time,
  absent, or too terse to stand alone;
- `PRINTED`: messages users meet that are not `TunewizError`s (Typer usage errors, a failed rank, a run
  that wrote no events), with the source file that prints them.

Every table is keyed by a fragment of the message template (its raw text, placeholders included), looked
up in `"SITUATION: message"` so that a fragment can start with the situation key where one template has
two meanings. A reworded message falls back to the defaults, and tests/test_docs.py names the fragment
that no longer matches.
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
        "is a directory",
        "no shipped dataset",
        "unsupported data file type",
        "is empty",
        "has no rows",
        "is not compressed with",
        "its compressed data",
        "Parquet file",
        "is not UTF-8",
        "is UTF-8 except for",
        "is not valid CSV",
        "fields; the header line",
        "opens a quoted field",
        "the header line names ‹len›",
        "has a header line",
        "line ‹lineno› is not valid JSON",
        "is a JSON",
        "holds a JSON",
        "lists of rows under several keys",
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
    "rdzv_timeout": "0",
    "nproc_per_node": "4",
    "max": "2",
    "expected": "a number",
    "scope": "`my.yaml`",
    "strip_value_error": "DETAILS",
    "kind": "a list",
    "raw": "[q_proj",
    "section": "lora.targets",
    "parent": "train.lr",
    "item": "question",
    "role": "question",
    "names": "tiny-lora, …",
    "model_type": "llama",
    "num_hidden_layers": "28",
    "rope_type": "yarn",
    "host": "node1",
    "port": "29500",
    "results_path": "runs/my-run/eval/results.json",
    "checkpoint": "step-130",
    "have": "step-100, step-120",
    "poll": "1",
    "action": "download",
    "size": "15.0 GiB",
    "free_size": "9.2 GiB",
    "counts": "N",
    "max_seq_len": "512",
    "truncation": "right",
    "global_batch": "8",
    "grad_accum": "2",
    "world_size": "1",
    "dataset_id": "org/dataset",
    "split": "train",
    "weight": "0.01",
    "act": "relu",
    "supported": "llama, mistral, qwen2, qwen3, gemma3",
    "dropout": "1.0",
    "unmatched": "…",
    "misshapen": "…",
    "missing": "…",
    "foreign": "…",
    "shown": "…",
    "unexpected": "lm_head.bias",
    "file": "model-00001-of-00004.safetensors",
    "tuple": "SHAPE",
    "wire": "6",
    "window": "0",
    "local_rank": "1",
    "device_count": "1",
    "TINY_CONFIG": "tunewiz/assets/tiny/config.json",
    "format": "onnx",
    "what": "the GGUF file",
    "folder": "runs/my-run/export",
    "n_tokens": "32002",
    "vocab_size": "32000",
    "status": "1",
    "program": "llama-quantize",
    "returncode": "1",
    "hub_names": "arc_easy",
    "dataset": "allenai/ai2_arc",
    "include_path": "tasks",
    "device": "gpu",
    "dtype": "fp8",
    "checkpoints": "runs/my-run/checkpoints",
    "limit": "2048",
    "max_len": "2048",
    "end": "2100",
    "compare_refusal": "DETAILS",
    "snapshot_path": "~/.cache/huggingface/hub/models--org--model/snapshots/…",
    "config": "runs/my-run/config.yaml",
    "out_dir": "staged",
    "why": "DETAILS",
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
}

# Situation key -> stand-ins that read better there than the general ones (a `‹path›` of a run is a run
# directory, of a dataset a data file).
SITUATION_STAND_INS: dict[str, dict[str, str]] = {
    "preset": {"path": "my.yaml", "name": "data.csv"},
    "data": {
        "path": "data.csv",
        "name": "data.csv",
        "key": "data.path",
        "setting": "data.path",
        "close": "data/data.csv",
        "guesses": "`data/data.csv`",
        "shown": "qa.jsonl, test.csv",
        "parent": "~/.cache/tunewiz/data",
        "splitlines": "DETAILS",
    },
    "model": {
        "path": "models/my-model",
        "source": "models/my-model/config.json",
        "where": "models/my-model",
        "name": "model.layers.0.mlp.down_proj.weight",
        "key": "model.layers.0.mlp.down_proj.weight",
        "describe": "models/my-model",
        "name__": "LlamaForCausalLM",
    },
    "run": {"path": "runs/my-run", "describe": "pid 4242 on node0", "tail": "DETAILS"},
    "resume": {"path": "runs/my-run", "key": "model.name", "parent": "runs/my-run/checkpoints"},
    "use": {
        "path": "runs/my-run",
        "name": "step-120",
        "source": "runs/my-run/export/model-f16.gguf",
        "target": "runs/my-run",
        "value": "last",
        "description": "`models/my-model`",
        "run_path": "runs/my-run",
        "command": "tunewiz chat runs/my-run",
        "name__": "ConnectionError",
    },
    "hub": {
        "path": "runs/my-run",
        "name": "step-120",
        "target": "/data/hf-cache",
        "name__": "ConnectionError",
    },
}

# Message fragment -> stand-ins for that message only, where one name stands for different things.
CONTEXT_STAND_INS: dict[str, dict[str, str]] = {
    "YAML syntax error": {"where": "my.yaml:3:5"},
    "has no column that `format:": {"fmt": "chat", "reads": "`messages` or `conversations`"},
    "is not valid JSON (column": {"colno": "17", "reason": "Expecting ',' delimiter"},
    "the file ends inside it": {"colno": "12", "reason": "Unterminated string"},
    "preset `‹path_or_name›` not found": {
        "path_or_name": "tiny-lorra",
        "did_you_mean": " (did you mean `tiny-lora`?)",
    },
    ": expected ‹expected›, got": {"got": "fast", "entry_of": ""},
    "must be one of": {
        "dotted": "method",
        "…": "`lora`, `qlora`, `full`",
        "got": "lroa",
        "suggestion": " (did you mean `lora`?)",
    },
    "must be a section": {"dotted": "train", "got": "1"},
    "appears twice": {"seen": "3", "line": "9"},
    "is not a valid YAML value": {"override": "lora.targets=[q_proj"},
    "in the preset, not a section": {"override": "lora.targets.x=1"},
    "is a single value, not a section": {"override": "train.lr.max=1"},
    "must have the form KEY=VALUE": {"override": "train.lr"},
    "type `.txt`": {
        "name": "notes.txt",
        "quoted": "notes.txt",
        "jsonl": "notes.jsonl",
        "path_argument": "data.path=notes.jsonl",
    },
    "`.txt`; its first line is tab-separated": {
        "name": "Sheet1.txt",
        "quoted": "Sheet1.txt",
        "tsv": "Sheet1.tsv",
        "path_argument": "data.path=Sheet1.tsv",
    },
    "is not compressed with": {
        "name": "rows.jsonl.gz",
        "quoted": "rows.jsonl.gz",
        "tool": "gzip",
        "suffix": ".gz",
        "inner": "rows.jsonl",
        "path_argument": "data.path=rows.jsonl",
        "hex": "50 4b 03 04 14 00 00 00",
    },
    "its compressed data": {"name": "rows.jsonl.gz", "quoted": "rows.jsonl.gz", "tool": "gzip"},
    "Parquet file": {
        "name": "data.parquet",
        "quoted": "data.parquet",
        "renamed": "data.csv",
        "path_argument": "data.path=data.csv",
        "hex": "89 50 4e 47 0d 0a 1a 0a",
    },
    "is UTF-8 except for": {
        "invalid": "2",
        "line": "62",
        "offset": "1270",
        "hex": "92",
        "meant": " (`’` in Windows-1252)",
        "…": "70",
        "command": "iconv -f UTF-8 -t UTF-8 -c data.csv",
        "fixed": "data-utf8.csv",
        "use": "data.path=data-utf8.csv",
    },
    "is not UTF-8": {"likely": "Windows-1252", "use": "data.path=data-utf8.csv"},
    "with no value (YAML needs a space": {
        "override": "data.columns={prompt:question}",
        "glued": "`prompt:question` reads as one key",
        "fixed": "data.columns={prompt: question}",
    },
    "does not fit ‹name›": {"name": "NAME"},  # a model's name, then a machine's: one placeholder
    "prepared entr": {"root": "~/.cache/tunewiz/data", "key": "3f9a"},
    "cannot identify the data": {"path_text": "org/dataset"},
    "unsupported data file type": {"suffix": ".xlsx"},
    "turn ‹turn_no›": {"role_key": "role", "turn": "bot", "content_key": "content"},
    "--older-than": {"text": "30"},
    "is not a memory size": {"text": "lots"},
    "changed since it started": {"…": "`qa.jsonl`", "rows": "1,200"},
    "is not a duration": {"text": "2 hours"},
    "unknown tracker": {"text": "wandbb", "…": "`wandbb`"},
    "data file `‹path›` does not exist": {"path_argument": "data.path=data/data.csv"},
    "‹path› is a directory⟦": {"path": "data", "path_argument": "data.path=data/qa.jsonl"},
    "turn ‹turn_no› of `‹name›`": {"name": "messages", "sorted": "[from, text]"},
    "could not load Hugging Face dataset": {"name__": "DatasetNotFoundError"},
    "use: ‹path› is not valid JSON": {"path": "runs/my-run/prompt.json"},
    "model: `‹path›` does not exist": {"path": "models/my-model/config.json"},
    "model: `‹path›` is not valid JSON": {"path": "models/my-model/config.json"},
    "model: ‹path› is not valid JSON": {"path": "models/my-model/tokenizer_config.json"},
    "layer_types lists": {"len": "26"},
    "has peft_type": {"get": "IA3"},
    "use_sliding_window": {"model_type": "qwen2"},
    "ranks cannot share evenly": {"world_size": "3"},
    "GGUF export does not know": {"model_type": "phi3"},
    "query_pre_attn_scalar=": {
        "model_type": "gemma2",
        "query_pre_attn_scalar": "224",
        "expected": "256",
        "num_hidden_layers": "42",
    },
    "has no GGUF name": {"key": "model.layers.0.mlp.gate.weight", "lower": "llama"},
    "is not a GGUF type": {"quant": "q4km", "did_you_mean": " (did you mean `q4_k_m`?)"},
    "the disk filled up while writing": {"path": "runs/my-run/export/model.gguf"},
    "to write into the GGUF": {"source": "runs/my-run/final"},
    "tokenizer without a byte-level": {"path": "runs/my-run/final/tokenizer.json", "get": "WordPiece"},
    "no pre-tokenizer known": {"path": "runs/my-run/final/tokenizer.json"},
    "tokens but the model's embedding": {"path": "runs/my-run/final/tokenizer.json"},
    "uses rsLoRA/DoRA": {"…": "adapter/adapter_config.json"},
    "prompt ‹empty› has no tokens": {"empty": "''"},
    "cannot listen on": {"host": "127.0.0.1", "port": "7860"},
    "on another host": {"who": "pid 4242 on node1"},
    "only ‹len› of": {"len": "1"},
    "--method `‹method›` is not a method": {"method": "lorra"},
    "(‹UNSUPPORTED›)": {"model_type": "mixtral", "UNSUPPORTED": "mixture of experts"},
    "(architectures ‹get›)": {"get": "['GPT2LMHeadModel']"},
    "layer type `‹unknown›`": {"unknown": "chunked_attention"},
    "already has a LoRA adapter": {"path": "model.layers.0.self_attn.q_proj"},
    "`‹path›` is missing": {"path": "adapter/adapter_model.safetensors"},
    "sets ‹option›=": {"option": "use_dora", "config": "True", "plain": "use_dora=False"},
    "has rank ‹shape›": {
        "shape": "16",
        "wrong_rank": "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        "…": "adapter_config.json",
        "rank": "8",
    },
    "is not a multiple of num_key_value_heads": {"num_attention_heads": "32", "num_key_value_heads": "6"},
    "has no `‹args›`": {"args": "hidden_size"},
    "checkpoint `‹path›`": {"path": "runs/my-run/checkpoints/step-120"},
    "unknown task": {"unknown": "hellaswg", "did_you_mean": " (did you mean `hellaswag`?)"},
    "has weights for `‹unknown›`": {"unknown": "lm_head"},
    "not found on the Hugging Face Hub": {"catalog_suggestion": ""},
    "is not a valid Hugging Face repo id": {"repo_id": "meta-llama Llama-3.2-1B", "catalog_suggestion": ""},
    "--name `‹name›`": {"name": "my run"},
    "unknown key": {
        "dotted": "train.lrr",
        "…": "train.lrr",
        "override": "train.lrr=1e-4",
        "suggest_key": " (did you mean `train.lr`?)",
        "suggestion": " (did you mean `train.lr`?)",
        "entry_of": "",
    },
    "has no `‹name›` field": {"name": "answer", "sorted": "[question]"},
    "(named in `data.columns`)": {"…": "`answr`", "suggestion": " (did you mean `answer`?)"},
    "expected text": {
        "name": "answer",
        "column": "`answer` (the response)",
        "kind": "a list",
        "role": "response",
        "mapping": "data.columns.response=reply",
    },
    "must be a non-empty list of turns": {"name": "messages"},
    "is a JSON ‹name__›": {"name__": "list"},
    "holds a JSON ‹name__›": {"name__": "dict"},
    "chat template `‹name›`": {"name": "model"},
    "built-in template": {"name": "chatml2", "did_you_mean": " (did you mean `chatml`?)"},
    "opens a quoted field": {"start": "12", "end": "101"},
    "the header line names ‹len›": {"start": "3", "given": "2", "len": "3"},
    "no shipped dataset": {
        "name": "story-q",
        "guess": "tunewiz:story-qa",
        "path_argument": "data.path=tunewiz:story-qa",
    },
    "prompt record": {"where": "runs/my-run/prompt.json"},
    "bos/eos rule": {"where": "runs/my-run/prompt.json"},
    "unknown model": {"key": "llama-3-8", "did_you_mean": " (did you mean `llama-3.1-8b`?)"},
    "lists `‹absent›`": {
        "index": "model.safetensors.index.json",
        "absent": "model-00002-of-00004.safetensors",
    },
    "it must be ‹expected›": {"flag": "--top-p", "value": "1.5", "expected": "in (0, 1] (1 = off)"},
    "not given": {"why": "no terminal to ask on (stdin is not a TTY)", "…": "--model"},
}

# Message fragment -> the line shown under it, for messages whose hint is computed at run time, absent,
# or needs words around it. Consecutive messages with the same advice share one block.
_PRESET_VALUE = (
    "The key exists but the value does not fit it. The hint says what the key takes; "
    "`tunewiz presets show NAME --resolved` prints the whole preset as tunewiz read it."
)
_UNSUPPORTED_MODEL = (
    "The model uses a part tunewiz does not implement. Pick a model of a supported family "
    "([Supported models](../reference/models.md))."
)
ADVICE: dict[str, str] = {
    "could not load Hugging Face dataset": (
        "A name that is not a local file is read as a Hugging Face dataset id, and the Hub did not give it "
        "(offline, a wrong id or split, a gated set). Check the id and `data.split`; offline, only datasets "
        "already in the HF cache load. A shipped sample's name without its prefix gets "
        "`--set data.path=tunewiz:story-qa` as the hint."
    ),
    "lists of rows under several keys": (
        'The file is one JSON object holding several lists of rows (`{"train": [...], "test": [...]}`). '
        "Write the rows of one as JSONL: `jq -c '.train[]' data.json > train.jsonl`, then "
        "`--set data.path=train.jsonl` (the hint prints this for your file)."
    ),
    "is not UTF-8": (
        "The file was saved in another encoding (the message names the likely one, here Windows-1252). "
        "Convert it: `iconv -f CP1252 -t UTF-8 data.csv > data-utf8.csv`, then "
        "`--set data.path=data-utf8.csv`; the hint prints this command for your file."
    ),
    "missing required": (
        "The preset lacks a key or section every preset needs. The hint names it and what it holds; "
        "start from a shipped preset (`tunewiz presets copy tiny-lora my.yaml`) to get them all."
    ),
    "cannot tell the format": (
        "tunewiz did not recognise the column names. The hint is a ready `--set 'data.columns={prompt: "
        "QUESTION, response: ANSWER}'` built from your file's real columns: add it to the command, or "
        "rename the columns to `instruction`/`output`."
    ),
    "is not valid JSON (column": (
        "A line is not valid JSON; the message gives its line, column and what `json` expected there (a "
        "missing comma or quote, a raw tab or line break inside a string). Fix that line: each line of a "
        "`.jsonl` file is one object, a `.json` file one list of objects."
    ),
    "no training sample has a trained token": (
        "No row made a sample with a token to learn. Empty responses: fill them in, or map the column that "
        "holds them (`--set 'data.columns={response: COLUMN}'`). Too long for `data.max_seq_len`: "
        "`--set data.truncation=left` keeps the replies and cuts the prompts; when it is already `left`, "
        "the replies alone are longer, so raise `data.max_seq_len`. The hint says which for your data."
    ),
    "has no column that `format:": (
        "The dataset's `format` is set (`data.format`, or `format:` on its entry of a list), and its "
        "first row lacks the columns that format reads. The hint maps the file's own columns by role, "
        "and sets the format back to `auto` when the columns are another format's."
    ),
    "has no `‹name›` field; columns are": (
        "One row lacks a column the others have (the message names the column by its role). Add it to "
        "that row, or delete the row. A column that is there but empty or null is not this error: such a "
        "row is dropped and counted (`1 row dropped: empty response`)."
    ),
    "(named in `data.columns`)": (
        "`data.columns` names a column the file does not have (a did-you-mean follows when one is close). "
        "The hint is a ready `--set 'data.columns={...}'` built from the file's real columns."
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
    "hidden_act": _UNSUPPORTED_MODEL,
    "RoPE scaling on the sliding layers": _UNSUPPORTED_MODEL,
    "layer type `‹unknown›`": _UNSUPPORTED_MODEL,
    "sliding_window must be": (
        "The model's `config.json` is malformed: fix `sliding_window` or download the model again."
    ),
    "model `‹path›` is a file": "Pass the directory that holds `config.json`, not a file inside it.",
    "`‹path›` is not valid JSON: ‹e›": "The model's `config.json` is damaged: download the model again.",
    "could not save checkpoint": (
        "The disk is full or the run directory is not writable: free space or fix the permissions, then "
        "`tunewiz resume runs/my-run` continues from the last complete checkpoint."
    ),
    "compare mode is unavailable": (
        "The chat cannot answer with the base model beside the tuned one here (the message says why): "
        "chat without comparing."
    ),
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
        argv: command lines (after `tunewiz`) that print `shown`; tests/test_docs.py runs them and checks
            every line. Empty for messages only a training run prints.
    """

    situation: str
    file: str
    source: str
    shown: str
    advice: str
    argv: tuple[tuple[str, ...], ...] = ()


PRINTED: tuple[Printed, ...] = (
    Printed(
        "command",
        "tunewiz/cli/__init__.py",
        'message.startswith("Missing argument")',
        "error: missing option `--repo-id`\nhint: see `tunewiz push --help`\n\n"
        "error: missing argument `RUN_DIR`\nhint: see `tunewiz push --help`",
        "The command needs that option or argument: add it. `--help` shows each one with an example.",
        (("push", "runs/my-run"), ("push",)),
    ),
    Printed(
        "command",
        "tunewiz/cli/__init__.py",
        '" Did you mean "',
        "error: no such command `pla`\nhint: did you mean `tunewiz plan`? See `tunewiz --help`\n\n"
        "error: no such option: --micro\nhint: did you mean `--micro-batch`? See `tunewiz plan --help`",
        "A misspelt command or option: use the one the hint suggests. Options are written in full.",
        (("pla",), ("plan", "tiny-lora", "--micro", "2")),
    ),
    Printed(
        "command",
        "tunewiz/cli/__init__.py",
        "is a flag and takes no value",
        "error: `--overwrite` is a flag and takes no value (got `true`)\n"
        "hint: write `--overwrite` alone to turn it on, and leave it out to keep it off",
        "Flags take no value: write the flag alone to turn it on, and leave it out to keep it off.",
        (("train", "tiny-lora", "--overwrite", "true"),),
    ),
    Printed(
        "command",
        "tunewiz/cli/__init__.py",
        "Got unexpected extra argument",
        "error: invalid value for `--gpus`: Input should be a valid integer, unable to parse string as an "
        "integer\nhint: see `tunewiz plan --help`\n\n"
        "error: unexpected extra argument `my`\nhint: see `tunewiz train --help`",
        "An option got a value of the wrong kind, or a word has no option before it (quote values with "
        "spaces: `--name 'my run'`). `--help` shows what each option takes.",
        (("plan", "--gpus", "two"), ("train", "tiny-lora", "my")),
    ),
    Printed(
        "preset",
        "tunewiz/preset/explain.py",
        "a list of strings",
        "error: `lora.targets` (from `--set lora.targets=5`): expected a list of strings, got `5`",
        "A key that takes a list got something else. Write the list in brackets, quoted for the shell: "
        "`--set 'lora.targets=[q_proj,v_proj]'`; names separated by commas, or one name, also work.",
        (("presets", "show", "tiny-lora", "--resolved", "--set", "lora.targets=5"),),
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
