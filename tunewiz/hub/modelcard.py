"""The model card (``README.md``) pushed with a run: Hub metadata up top, then a page a person reads.

The facts come from the run directory alone: ``config.yaml`` (what was trained, how),
``events.jsonl`` (hardware, steps, tokens, throughput, peak memory, wall time, losses),
``eval/results.json`` (the lm-eval table and ``model-index``) and ``final/`` (architecture, chat
template). :func:`read_card_facts` gathers them; :func:`render_model_card` writes the card. The
YAML header is built by huggingface_hub's ``ModelCardData``, so ``ModelCard.load`` reads it back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tunewiz.errors import TunewizError
from tunewiz.preset.schema import Preset
from tunewiz.run.directory import RunDir
from tunewiz.units import fmt_bytes, fmt_count, fmt_duration

if TYPE_CHECKING:
    from tunewiz.inference.load import StepCheckpoint

HUB_URL = "https://huggingface.co"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DATASET_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Catalog licenses the Hub knows by id; any other one is written as `other` with its name and link.
_HUB_LICENSES = {
    "apache-2.0",
    "mit",
    "bsd-3-clause",
    "llama2",
    "llama3",
    "llama3.1",
    "llama3.2",
    "llama3.3",
    "gemma",
    "cc-by-4.0",
    "cc-by-sa-4.0",
    "cc-by-nc-4.0",
    "openrail",
    "creativeml-openrail-m",
    "gpl-3.0",
}
_METHOD_TEXT = {"lora": "LoRA", "qlora": "QLoRA (4-bit NF4 base weights)", "full": "full fine-tuning"}


@dataclass(frozen=True)
class TrainingStats:
    """What the event log says about a run (None where it has no record).

    Args:
        hardware: e.g. ``1 × NVIDIA GeForce RTX 4090`` or ``CPU (2 cores)``.
        device: ``cuda`` or ``cpu``.
        world_size: ranks of the last launch.
        steps: optimizer steps done.
        epochs: epochs the run touches (:func:`tunewiz.run.events.total_epochs`).
        train_samples: training samples after the validation split.
        tokens_total: trained (non-masked) tokens.
        wall_s: training time (:attr:`tunewiz.ui.state.DashboardState.elapsed`), summed over launches.
        tokens_per_s: the run's throughput (:attr:`tunewiz.ui.state.DashboardState.run_tokens_per_s`).
        peak_memory_bytes: the highest per-rank peak (CUDA max allocated; process RSS on CPU).
        final_loss: training loss of the last logged step.
        val_loss: the last validation loss.
        trainable_params: parameters that were trained.
        total_params: all parameters of the model (adapters included).
        launches: 1 plus the number of resumes.
    """

    hardware: str | None = None
    device: str | None = None
    world_size: int | None = None
    steps: int | None = None
    epochs: int | None = None
    train_samples: int | None = None
    tokens_total: int | None = None
    wall_s: float | None = None
    tokens_per_s: float | None = None
    peak_memory_bytes: int | None = None
    final_loss: float | None = None
    val_loss: float | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    launches: int = 0


@dataclass(frozen=True)
class CardFacts:
    """Everything the card says, read from one run directory.

    Args:
        preset: the resolved preset (``config.yaml``).
        stats: from ``events.jsonl``.
        eval: ``eval/results.json``, or None when the run was not evaluated.
        model_type: ``llama``, ``mistral``, ``qwen2`` (``final/config.json``), or None.
        has_chat_template: the tokenizer in ``final/`` carries the chat template the run trained with
            (its ``prompt.json``; for older runs: final/ has one and ``data.template`` was the model's).
        checkpoint: ``step-N`` when the card is for a step checkpoint (``push --from``); ``stats`` and
            ``eval`` then stop at that step.
        run_steps: the optimizer steps of the whole run, for a step checkpoint's card.
    """

    preset: Preset
    stats: TrainingStats
    eval: dict[str, Any] | None
    model_type: str | None
    has_chat_template: bool
    checkpoint: str | None = None
    run_steps: int | None = None


def read_training_stats(events: list[dict[str, Any]], *, up_to: int | None = None) -> TrainingStats:
    """Fold the events of a run (all launches) into the numbers the card shows.

    The fold is the dashboard's (:func:`tunewiz.ui.state.fold_events`), so each number is the one the
    run summary, the dashboard and ``tunewiz watch`` show (definitions in docs/concepts/events.md).

    Args:
        events: as :func:`tunewiz.run.events.read_events` returns them.
        up_to: fold only the events up to this step (a step checkpoint's card).
    """
    from tunewiz.ui.state import fold_events

    if up_to is not None:  # a resume's start carries its checkpoint's step; steps after it are left out
        events = [e for e in events if (e.get("step") or 0) <= up_to]
    state = fold_events(events)
    if not state.launches:
        return TrainingStats()
    val = state.val_losses[-1][1] if state.val_losses else None
    return TrainingStats(
        hardware=state.hardware,
        device=state.device,
        world_size=state.world_size,
        steps=state.step,
        epochs=state.epochs,
        train_samples=state.num_train_samples,
        tokens_total=state.tokens_total,
        wall_s=state.elapsed,
        tokens_per_s=state.run_tokens_per_s,
        peak_memory_bytes=state.peak_memory_max,
        final_loss=state.loss,
        val_loss=val,
        trainable_params=state.trainable_params,
        total_params=state.total_params,
        launches=state.launches,
    )


def read_card_facts(run: RunDir, checkpoint: StepCheckpoint | None = None) -> CardFacts:
    """Gather the card's facts from a finished run directory.

    Args:
        run: the run directory (``config.yaml`` and ``final/`` must exist).
        checkpoint: a step checkpoint the card is for: training up to its step, and its own
            evaluation (``eval/results-step-N.json``) instead of the final weights'.
    """
    from tunewiz.preset.files import load_preset
    from tunewiz.run.events import read_events

    preset, _ = load_preset(str(run.config))
    step = checkpoint.step if checkpoint is not None else None
    results_path = run.eval_results_for(step=step)
    results = None
    if results_path.is_file():
        try:
            results = json.loads(results_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise TunewizError(
                f"`{results_path}` is not valid JSON: {exc}",
                hint=f"run `tunewiz eval {run.path}"
                + (f" --from {checkpoint.name}" if checkpoint else "")
                + "` again, or delete the file",
            ) from None
    events = read_events(run.events)
    config = run.final / "config.json"
    model_type = (
        json.loads(config.read_text(encoding="utf-8")).get("model_type") if config.is_file() else None
    )
    return CardFacts(
        preset,
        read_training_stats(events, up_to=step),
        results,
        model_type,
        _trained_template_in_final(run, preset.data.template),
        checkpoint=checkpoint.name if checkpoint else None,
        run_steps=read_training_stats(events).steps if checkpoint else None,
    )


def _trained_template_in_final(run: RunDir, data_template: str) -> bool:
    from tunewiz.text.prompt import read_prompt_record

    record = read_prompt_record(run.path)
    if record is not None:  # final/ was exported with the recorded template
        return record.template is not None
    return _has_chat_template(run.final) and data_template in ("auto", "model")


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file():
        return True
    config = folder / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))


def hub_model_id(path: str) -> str | None:
    """``path`` if it names a Hub model (``org/name``), None for ``tunewiz:`` and local directories."""
    if path.startswith(("tunewiz:", ".", "/", "~")) or Path(path).expanduser().is_dir():
        return None
    return path if _HUB_ID.match(path) else None


def hub_dataset_id(path: str) -> str | None:
    """``path`` if it names a Hub dataset, None for shipped samples and local files."""
    from tunewiz.data.sources import is_data_file

    if path.startswith(("tunewiz:", ".", "/", "~")) or is_data_file(path):
        return None
    return path if _DATASET_ID.match(path) else None


def _license(base_id: str | None, base_path: str, given: str | None) -> tuple[dict[str, str], str | None]:
    """(license metadata, warning): the given id, else the base model's license from the catalog."""
    if given:
        return {"license": given}, None
    from tunewiz.models.catalog import lookup

    try:
        known = lookup(base_id or base_path).license
    except TunewizError:
        known = "unknown"
    if known == "unknown":
        return (
            {},
            f"the base model's license is unknown; pass `--license ID` (e.g. `--license {'apache-2.0'}`)",
        )
    if known in _HUB_LICENSES:
        return {"license": known}, None
    link = f"{HUB_URL}/{base_id}/blob/main/LICENSE" if base_id else None
    return {"license": "other", "license_name": known, **({"license_link": link} if link else {})}, None


def _metric_rows(tasks: dict[str, Any]) -> list[tuple[str, str, float, float | None]]:
    """(task, metric, value, stderr) for every numeric metric; lm-eval's ``acc,none`` becomes ``acc``."""
    rows = []
    for task, metrics in sorted(tasks.items()):
        for key, value in metrics.items():
            if (
                key.partition(",")[0].endswith("_stderr")
                or isinstance(value, bool)
                or not isinstance(value, (int, float))
            ):
                continue
            stderr = metrics.get(f"{key}_stderr")
            if stderr is None and "," in key:  # lm-eval writes `acc_stderr,none` for `acc,none`
                name, _, flt = key.partition(",")
                stderr = metrics.get(f"{name}_stderr,{flt}")
            rows.append(
                (task, _metric_name(key), float(value), stderr if isinstance(stderr, (int, float)) else None)
            )
    return rows


def _metric_name(key: str) -> str:
    name, _, flt = key.partition(",")
    return name if flt in ("", "none") else f"{name} ({flt})"


def _eval_results(results: dict[str, Any]) -> list[Any]:
    from huggingface_hub import EvalResult

    return [
        EvalResult(
            task_type="text-generation",
            task_name="Text Generation",
            dataset_type=task,
            dataset_name=task,
            metric_type=metric.split(" ")[0],
            metric_name=metric,
            metric_value=round(value, 4),
        )
        for task, metric, value, _ in _metric_rows(results.get("tasks") or {})
    ]


def render_model_card(
    facts: CardFacts,
    *,
    repo_id: str,
    kind: Literal["adapter", "merged"],
    license: str | None = None,
    badge: str | None = None,
    loss_plot: str | None = None,
    gguf_files: list[str] | None = None,
) -> tuple[str, list[str]]:
    """Write the model card.

    Args:
        facts: from :func:`read_card_facts`.
        repo_id: the repository the card is for (the usage snippets load it).
        kind: ``adapter`` (a PEFT adapter; library peft) or ``merged`` (library transformers).
        license: license id; None takes the base model's from the catalog.
        badge: file name of the badge image in the repository, or None.
        loss_plot: file name of the loss curve image in the repository, or None.
        gguf_files: GGUF file names in the repository (`tunewiz export`); the card says how to run them.

    Returns:
        The ``README.md`` text, and warnings for the user (missing license, local base model).
    """
    from huggingface_hub import ModelCardData

    preset = facts.preset
    base_id = hub_model_id(preset.model.path)
    entries = preset.data.datasets()
    dataset_ids = [i for i in (hub_dataset_id(e.path) for e in entries) if i]
    dataset_id = dataset_ids[0] if len(entries) == 1 and dataset_ids else None
    license_meta, license_warning = _license(base_id, preset.model.path, license)
    warnings = [license_warning] if license_warning else []
    if base_id is None:
        warnings.append(
            f"the base model `{preset.model.path}` is not on the Hub; the card says where it came "
            "from, but the Hub cannot link to it"
        )
    results = _eval_results(facts.eval) if facts.eval else []
    tags = ["tunewiz", preset.method, *([facts.model_type] if facts.model_type else [])]
    if kind == "adapter":
        tags.append("peft")
    if gguf_files:
        tags.append("gguf")
    data = ModelCardData(
        base_model=base_id,
        datasets=dataset_ids or None,
        library_name="peft" if kind == "adapter" else "transformers",
        pipeline_tag="text-generation",
        tags=tags,
        model_name=repo_id.split("/")[-1] if results else None,
        eval_results=results or None,
        **({"base_model_relation": "adapter" if kind == "adapter" else "finetune"} if base_id else {}),
        **license_meta,
    )
    body = "\n\n".join(
        part
        for part in (
            _intro(facts, repo_id, kind, base_id, dataset_id, badge),
            _results_section(facts),
            _usage_section(facts, repo_id, kind, base_id),
            _gguf_section(repo_id, gguf_files or []),
            _training_section(facts, loss_plot),
            _hyperparameters_section(facts),
            _footer(),
        )
        if part
    )
    return f"---\n{data.to_yaml()}\n---\n\n{body}\n", warnings


def _link_model(base_id: str | None, path: str) -> str:
    return f"[{base_id}]({HUB_URL}/{base_id})" if base_id else f"`{path}`"


def _link_data(dataset_id: str | None, path: str) -> str:
    """The dataset as the card names it: a Hub link, else its name (a local file's name, not where it
    is on the author's disk)."""
    return f"[{dataset_id}]({HUB_URL}/datasets/{dataset_id})" if dataset_id else f"`{path}`"


def _intro(
    facts: CardFacts, repo_id: str, kind: str, base_id: str | None, dataset_id: str | None, badge: str | None
) -> str:
    from tunewiz.data import source_name

    p, s = facts.preset, facts.stats
    base = _link_model(base_id, p.model.path)
    data = _link_data(dataset_id, " + ".join(source_name(e.path) for e in p.data.datasets()))
    method = _METHOD_TEXT[p.method]
    if kind == "adapter":
        what = f"A {method} adapter for {base}, fine-tuned on {data}"
    elif p.method == "full":
        what = f"{base}, fine-tuned on {data} with full fine-tuning"
    else:
        what = f"{base}, fine-tuned on {data} with {method}, the adapter merged into the weights"
    how = []
    if s.steps is not None:
        how.append(f"{s.steps:,} optimizer steps")
    if s.tokens_total is not None:
        how.append(f"{fmt_count(s.tokens_total, thousand='k')} trained tokens")
    if s.wall_s is not None:
        how.append(f"{fmt_duration(s.wall_s, long=True)}")
    if s.hardware:
        how.append(f"on {s.hardware}")
    line = f"{what}, with tunewiz" + (f": {', '.join(how)}." if how else ".")
    if facts.checkpoint:
        of = f" of the run's {facts.run_steps:,}" if facts.run_steps is not None else ""
        line += (
            f" These are the weights of step checkpoint `{facts.checkpoint}` (after {s.steps or '?'}{of} "
            "optimizer steps), not the run's final weights."
        )
    head = f"# {repo_id.split('/')[-1]}\n\n" + (f"![Trained with tunewiz]({badge})\n\n" if badge else "")
    if kind == "adapter":
        line += (
            f" It is small (rank {p.lora.rank}, on {', '.join(f'`{t}`' for t in p.lora.targets)}) and "
            "loads on top of the base model."
        )
    return head + line


def _results_section(facts: CardFacts) -> str:
    if not facts.eval:
        return ""
    own = _own_data_section(facts.eval.get("own_data"))
    tasks = _tasks_section(facts.eval)
    return "\n\n".join(part for part in (tasks, own) if part)


def _own_data_section(own: Any) -> str:
    """The base vs fine-tuned table of ``tunewiz eval RUN`` on the run's own data, with one example."""
    if (
        not isinstance(own, dict)
        or not isinstance(own.get("base"), dict)
        or not isinstance(own.get("tuned"), dict)
    ):
        return ""
    lines = [
        "## On its own data",
        "",
        f"Scored by `tunewiz eval` on {own.get('data')} ({own.get('samples')} samples; greedy replies of at "
        f"most {own.get('max_new_tokens')} tokens).",
        "",
        "| Measure | Base model | This model | Change |",
        "|---|---:|---:|---:|",
    ]
    for label, key in (
        ("Loss on trained tokens", "loss"),
        ("Perplexity", "perplexity"),
        ("Exact match", "exact_match"),
        ("chrF", "chrf"),
    ):
        b, t = own["base"].get(key), own["tuned"].get(key)
        if isinstance(b, (int, float)) and isinstance(t, (int, float)):
            lines.append(f"| {label} | {b:.4f} | {t:.4f} | {t - b:+.4f} |")
    return "\n".join(lines)


def _tasks_section(ev: dict[str, Any]) -> str:
    rows = _metric_rows(ev.get("tasks") or {})
    if not rows:
        return ""
    base = (
        {(t, m): (v, e) for t, m, v, e in _metric_rows((ev.get("base") or {}).get("tasks") or {})}
        if isinstance(ev.get("base"), dict)
        else {}
    )
    header = "| Task | Metric | This model |" + (" Base model | Change |" if base else "")
    rule = "|---|---|---:|" + ("---:|---:|" if base else "")
    lines = ["## Evaluation", "", header, rule]
    for task, metric, value, stderr in rows:
        cells = f"| {task} | {metric} | {_value(value, stderr)} |"
        if base:
            b = base.get((task, metric))
            cells += f" {_value(*b)} | {value - b[0]:+.4f} |" if b else " – | – |"
        lines.append(cells)
    notes = []
    shots = ev.get("num_fewshot")
    notes.append(f"{shots}-shot" if shots is not None else "default few-shot settings")
    if ev.get("limit"):
        notes.append(
            f"first {ev['limit']} examples per task only, so not comparable to full leaderboard numbers"
        )
    if ev.get("lm_eval_version"):
        notes.append(f"lm-evaluation-harness {ev['lm_eval_version']}")
    if ev.get("date"):
        notes.append(str(ev["date"]))
    lines += ["", f"Measured with `tunewiz eval` ({'; '.join(notes)}). ± is the standard error."]
    return "\n".join(lines)


def _usage_section(facts: CardFacts, repo_id: str, kind: str, base_id: str | None) -> str:
    base_ref = base_id or "path/to/base-model"
    local = repo_id.split("/")[-1]
    prompt = _prompt_snippet(facts)
    if kind == "adapter":
        if base_id:
            load = (
                f"from peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n\n"
                f'model = AutoPeftModelForCausalLM.from_pretrained("{repo_id}")  # fetches {base_id} too\n'
                f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")'
            )
        else:
            load = (
                "from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                f'base = AutoModelForCausalLM.from_pretrained("{base_ref}")  # the base model it '
                "was trained on\n"
                f'model = PeftModel.from_pretrained(base, "{repo_id}")\n'
                f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")'
            )
        merge = (
            "\n\nTo ship one model instead of two, fold the adapter in: `model = model.merge_and_unload()`."
        )
        cli = f"hf download {repo_id} --local-dir {local}\ntunewiz chat {base_ref} --adapter {local}"
    else:
        load = (
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")'
        )
        merge = ""
        cli = f"tunewiz download {repo_id}\ntunewiz chat {repo_id}"
    return (
        f"## Use it\n\nWith transformers{' and peft' if kind == 'adapter' else ''}:\n\n"
        f"```python\n{load}\n\n{prompt}\n```{merge}\n\n"
        f"In the terminal, with tunewiz:\n\n```bash\n{cli}\n```"
    )


def _gguf_section(repo_id: str, files: list[str]) -> str:
    """How to run the repository's GGUF files with Ollama and llama.cpp (empty without any)."""
    if not files:
        return ""
    local = repo_id.split("/")[-1]
    name = local.lower()
    listing = "\n".join(f"- `{f}`" for f in files)
    first = files[0]
    return (
        "## Run it with llama.cpp or Ollama\n\nGGUF files, written by `tunewiz export --format gguf` "
        f"from the merged weights, with the tokenizer and the chat template this model was trained with "
        f"(`tokenizer.chat_template`):\n\n{listing}\n\n"
        f"```bash\nhf download {repo_id} {first} Modelfile --local-dir {local}\n"
        f"cd {local} && ollama create {name} -f Modelfile && ollama run {name}   # Ollama\n"
        f"llama-cli -m {first} --jinja -cnv   # llama.cpp\n```\n\n"
        "The `Modelfile` sets the stop tokens and sampling defaults; Ollama reads the chat template "
        "from the GGUF."
    )


def _prompt_snippet(facts: CardFacts) -> str:
    template = facts.preset.data.template
    if facts.has_chat_template:
        return (
            'messages = [{"role": "user", "content": "Explain LoRA in one sentence."}]\n'
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, "
            'return_tensors="pt", '
            "return_dict=True)\n"
            "output = model.generate(**inputs, max_new_tokens=128)\n"
            'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))'
        )
    return (
        f"# Trained with the `{template}` prompt template: format prompts the same way.\n"
        'inputs = tokenizer("Explain LoRA in one sentence.", return_tensors="pt")\n'
        "output = model.generate(**inputs, max_new_tokens=128)\n"
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))'
    )


def _training_section(facts: CardFacts, loss_plot: str | None) -> str:
    s, p = facts.stats, facts.preset
    memory_kind = "process RSS" if s.device == "cpu" else "max allocated per GPU"
    last, at = ("Last", f" by `{facts.checkpoint}`") if facts.checkpoint else ("Final", "")
    rows = [
        ("Hardware", s.hardware),
        ("Precision", p.model.dtype),
        ("Optimizer steps", f"{s.steps:,}" if s.steps is not None else None),
        ("Training samples", f"{s.train_samples:,}" if s.train_samples is not None else None),
        ("Trained tokens", fmt_count(s.tokens_total, thousand="k") if s.tokens_total is not None else None),
        (
            "Training time",
            fmt_duration(s.wall_s, long=True)
            + (f" over {s.launches} launches (resumed)" if s.launches > 1 else "")
            if s.wall_s is not None
            else None,
        ),
        (
            "Throughput",
            f"{s.tokens_per_s:,.0f} input tokens/s (median over steps, all ranks)"
            if s.tokens_per_s
            else None,
        ),
        ("Peak memory", f"{fmt_bytes(s.peak_memory_bytes)} ({memory_kind})" if s.peak_memory_bytes else None),
        ("Trainable parameters", _params(s.trainable_params, s.total_params)),
        (f"{last} training loss{at}", f"{s.final_loss:.4f}" if s.final_loss is not None else None),
        (f"{last} validation loss{at}", f"{s.val_loss:.4f}" if s.val_loss is not None else None),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows if v is not None)
    text = "## Training\n\n| | |\n|---|---|\n" + table if table else "## Training"
    if loss_plot:
        text += f"\n\n![Training and validation loss]({loss_plot})"
    return text


def _hyperparameters_section(facts: CardFacts) -> str:
    p = facts.preset
    t, d = p.train, p.data
    batch = f"{t.micro_batch_size} per rank × {t.grad_accum} accumulation"
    if facts.stats.world_size:
        batch += (
            f" × {facts.stats.world_size} rank(s) = "
            f"{t.micro_batch_size * t.grad_accum * facts.stats.world_size}"
        )
    rows = [
        ("Method", _METHOD_TEXT[p.method]),
        *(
            [
                ("LoRA rank / alpha / dropout", f"{p.lora.rank} / {p.lora.alpha:g} / {p.lora.dropout:g}"),
                ("LoRA targets", ", ".join(f"`{x}`" for x in p.lora.targets)),
            ]
            if p.method != "full"
            else []
        ),
        ("Epochs", _epochs_text(facts)),
        ("Batch size (samples)", batch),
        (
            "Learning rate",
            f"{t.lr:g}, {t.schedule} schedule, {t.warmup_steps} warm-up steps"
            + (f", floor {t.min_lr_ratio:g}× peak" if t.min_lr_ratio else ""),
        ),
        ("Optimizer", f"AdamW, betas {tuple(t.betas)}, weight decay {t.weight_decay:g}"),
        ("Gradient clipping", f"{t.max_grad_norm:g}" if t.max_grad_norm else "none"),
        ("Sequence length", f"{d.max_seq_len}" + (", packed" if d.packing else "")),
        (
            "Prompt template",
            f"`{d.template}`, loss on "
            + ("prompts and responses" if d.train_on_inputs else "responses only"),
        ),
        (
            "Data",
            f"`{d.path_text}`"
            + (f" (split `{d.split}`)" if isinstance(d.path, str) and hub_dataset_id(d.path) else "")
            + (f", first {d.max_samples} samples" if d.max_samples else "")
            + (f", {d.val_fraction:g} held out for validation" if d.val_fraction else ""),
        ),
        ("Activation checkpointing", "on" if t.activation_checkpointing else "off"),
        ("Seed", str(t.seed)),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (
        f"## Hyperparameters\n\nFrom the run's resolved preset (`config.yaml`).\n\n| | |\n|---|---|\n{table}"
    )


def _epochs_text(facts: CardFacts) -> str:
    t, trained = facts.preset.train, facts.stats.epochs
    if t.max_steps:  # bounded by steps: the epochs it touched (the last may be partial)
        return (f"{trained} " if trained else "") + f"(`max_steps` {t.max_steps})"
    return str(t.epochs)


def _footer() -> str:
    return "---\n\nTrained and published with tunewiz: `tunewiz train`, `tunewiz eval`, `tunewiz push`."


def _value(value: float, stderr: float | None) -> str:
    return f"{value:.4f} ± {stderr:.4f}" if stderr is not None else f"{value:.4f}"


def _params(trainable: int | None, total: int | None) -> str | None:
    if trainable is None:
        return None
    if not total:
        return fmt_count(trainable, thousand="k")
    share = f"{100 * trainable / total:.2f}%"
    return f"{fmt_count(trainable, thousand='k')} of {fmt_count(total, thousand='k')} ({share})"
