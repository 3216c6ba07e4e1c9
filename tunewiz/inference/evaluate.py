"""`tunewiz eval`: EleutherAI lm-eval through a native ``LM`` adapter, offline local tasks, results.json.

The adapter (``tunewiz/inference/lm_eval_adapter.py``) scores with the native model and mirrors
lm-eval's own ``HFLM`` where numbers depend on it. Task start-up indexes only the local task
directories unless a requested name is not local, because indexing lm-eval's ~14,000 built-in tasks
takes seconds. A Hub task asked for without network fails at once with the dataset's name, instead of
lm-eval's retry loop.

torch and lm_eval (and the adapter module, which imports both) are imported inside functions, so
that importing this module stays cheap for the CLI.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from tunewiz.atomic import atomic_write_json
from tunewiz.errors import TunewizError, did_you_mean
from tunewiz.run.directory import RunDir

if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager

    from tunewiz.inference.load import StepCheckpoint


log = logging.getLogger(__name__)

SHIPPED_TASKS_DIR = Path(__file__).resolve().parents[1] / "assets" / "tasks"
# Tasks that evaluate a run trained on a shipped sample dataset, when `--tasks` is not given.
DATASET_TASKS = {"tunewiz:story-qa": ["story_qa", "story_qa_loglik"]}
HUB_PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class EvalResult:
    """What `tunewiz eval` shows and writes (``as_json`` is the results.json schema).

    Attributes:
        model: the base model's name.
        adapter: the adapter directory evaluated on top of it, or None.
        tasks: ``{task: {metric: value, metric + "_stderr": value}}``.
        base: the same for the base model alone (``--compare-base``), or None.
        limit: documents per task, or None for all.
        num_fewshot: few-shot examples, or None for each task's default.
        lm_eval_version: the harness version.
        date: ISO 8601 time the evaluation finished (UTC).
        index_seconds: time spent indexing tasks (local-only or with lm-eval's built-ins).
        index_included_builtins: whether lm-eval's built-in tasks had to be indexed.
        checkpoint: ``final`` or the step checkpoint evaluated (``step-N``); ``final`` for a model.
        path: the results file written (a run directory), else None.
    """

    model: str
    adapter: str | None
    tasks: dict[str, dict[str, float | None]]
    base: dict[str, dict[str, float | None]] | None
    limit: int | None
    num_fewshot: int | None
    lm_eval_version: str
    date: str
    index_seconds: float
    index_included_builtins: bool
    checkpoint: str = "final"
    path: Path | None = None

    def as_json(self) -> dict[str, Any]:
        """The results.json document (the Hub model card reads it)."""
        return {
            "model": self.model,
            "adapter": self.adapter,
            "checkpoint": self.checkpoint,
            "tasks": self.tasks,
            "base": self.base,
            "limit": self.limit,
            "num_fewshot": self.num_fewshot,
            "lm_eval_version": self.lm_eval_version,
            "date": self.date,
        }


# --- tasks ---------------------------------------------------------------------------------------------


def _hub_reachable() -> bool:
    """One TCP connect to the Hub endpoint with a short timeout (HF_HUB_OFFLINE=1 means no)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=HUB_PROBE_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def _go_offline() -> None:
    """Make huggingface_hub and datasets fail at once instead of retrying for ~20 s. The env vars
    cover later imports; the module constants cover libraries already imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:
        sys.modules["datasets"].config.HF_HUB_OFFLINE = True


def index_tasks(names: list[str], include_paths: list[Path]) -> tuple[TaskManager, float, bool]:
    """Index the local task directories, and lm-eval's built-ins only when a name is not local.

    Args:
        names: requested task (or group/tag) names.
        include_paths: local task directories (the shipped ones and ``--include-path``).

    Returns:
        The TaskManager, the seconds its indexing took, and whether built-ins were indexed.
    """
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    local = TaskManager(include_path=[str(p) for p in include_paths], include_defaults=False)
    if all(name in local.all_tasks for name in names):
        return local, time.perf_counter() - start, False
    full = TaskManager(include_path=[str(p) for p in include_paths], include_defaults=True)
    unknown = [name for name in names if name not in full.all_tasks]
    if unknown:
        raise TunewizError(
            f"unknown task `{unknown[0]}`{did_you_mean(unknown[0], full.all_tasks)}",
            hint="list tasks with `lm-eval ls tasks`, or point `--include-path` at your task YAMLs",
        )
    return full, time.perf_counter() - start, True


def _dataset_of(manager: TaskManager, name: str) -> str:
    entry = manager.task_index.get(name)
    cfg = (entry.cfg or {}) if entry is not None else {}
    return str(cfg.get("dataset_path") or f"the datasets of `{name}`")


def load_tasks(manager: TaskManager, names: list[str], *, builtins: bool) -> dict[str, Any]:
    """Build the tasks (this loads their datasets): ``{name: Task or group dict}``.

    Args:
        manager: from :func:`index_tasks`.
        names: requested names.
        builtins: some names are lm-eval built-ins (they may need the Hub).
    """
    from lm_eval.tasks import get_task_dict

    offline = builtins and not _hub_reachable()
    if offline:
        _go_offline()
    try:
        with warnings.catch_warnings():
            # TaskManager.load(), its replacement, flattens groups away; get_task_dict keeps them.
            warnings.simplefilter("ignore", DeprecationWarning)
            return get_task_dict(names, manager)
    except Exception as exc:
        if not offline:
            raise
        hub_names = [n for n in names if not _is_local(manager, n)] or names
        dataset = _dataset_of(manager, hub_names[0])
        raise TunewizError(
            f"task `{hub_names[0]}` needs the Hugging Face dataset `{dataset}`, which is not cached and "
            f"the Hub is unreachable ({type(exc).__name__})",
            hint="connect to the internet and run again, or evaluate a local task: "
            "`tunewiz eval TARGET --include-path DIR --tasks NAME`",
        ) from exc


def _is_local(manager: TaskManager, name: str) -> bool:
    entry = manager.task_index.get(name)
    path = getattr(entry, "yaml_path", None)
    import lm_eval.tasks

    return path is not None and Path(lm_eval.tasks.__file__).parent not in Path(path).parents


def default_tasks(target: str) -> list[str]:
    """The shipped tasks for a run trained on a shipped sample dataset (``data.path`` in config.yaml).

    Args:
        target: what `tunewiz eval` was given.
    """
    import yaml

    config = RunDir(Path(target)).config
    data_path = None
    if config.is_file():
        data_path = ((yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("data") or {}).get("path")
    if isinstance(data_path, str) and data_path in DATASET_TASKS:
        return DATASET_TASKS[data_path]
    raise TunewizError(
        f"no `--tasks` given, and `{target}` is not a run trained on a shipped sample dataset "
        f"({', '.join(DATASET_TASKS)}) whose task tunewiz ships",
        hint="name tasks with `--tasks`, e.g. `--tasks story_qa` or `--include-path DIR --tasks NAME`",
    )


# --- running ---------------------------------------------------------------------------------------------


def _metrics(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """lm-eval's ``{"acc,none": v, "acc_stderr,none": s, "alias": ...}`` -> ``{"acc": v, "acc_stderr": s}``.
    A metric behind a filter other than ``none`` keeps the filter: ``exact_match[strip]``."""
    table: dict[str, dict[str, float | None]] = {}
    for task, values in results.items():
        row: dict[str, float | None] = {}
        for key, value in values.items():
            if "," not in key:
                continue  # alias, sample counts
            metric, filt = key.split(",", 1)
            name = (
                metric
                if filt == "none"
                else f"{metric.removesuffix('_stderr')}[{filt}]"
                + ("_stderr" if metric.endswith("_stderr") else "")
            )
            row[name] = float(value) if isinstance(value, (int, float)) else None
        table[task] = row
    return table


def _wants_chat(task: Any) -> bool:
    metadata = getattr(getattr(task, "config", None), "metadata", None) or {}
    return bool(metadata.get("chat_template"))


@contextmanager
def _harness_quiet() -> Iterator[None]:
    """Run ``simple_evaluate`` without what it adds to the scores and tunewiz does not keep, and without
    its prints on the terminal.

    Besides the scores, it records its own git commit (``git describe`` in the working directory, whose
    ``fatal: not a git repository`` lands on the terminal outside a repository) and the machine's
    environment (torch's ``collect_env``: pip, conda and nvidia-smi subprocesses, seconds); results.json
    keeps neither, so both are skipped. Its bootstrap for a metric's stderr runs in one process: it is a
    single chunk of ``bootstrap_iters`` draws, which a pool of one process per core only delays. Its
    ``print`` notes (``bootstrapping for stddev: perplexity``) go to the ``lm_eval`` logger at INFO (shown
    with ``TUNEWIZ_DEBUG=1``); stdout carries only data. Exceptions pass through.
    """
    import lm_eval.evaluator

    skipped = {"get_git_commit_hash": lambda: None, "add_env_info": lambda storage: None}
    saved = {name: getattr(lm_eval.evaluator, name) for name in skipped if hasattr(lm_eval.evaluator, name)}
    multiproc = os.environ.get("DISABLE_MULTIPROC")
    printed = io.StringIO()
    try:
        for name in saved:
            setattr(lm_eval.evaluator, name, skipped[name])
        os.environ["DISABLE_MULTIPROC"] = "1"
        with redirect_stdout(printed):
            yield
    finally:
        for name, original in saved.items():
            setattr(lm_eval.evaluator, name, original)
        if multiproc is None:
            os.environ.pop("DISABLE_MULTIPROC", None)
        else:
            os.environ["DISABLE_MULTIPROC"] = multiproc
        for line in printed.getvalue().splitlines():
            logging.getLogger("lm_eval").info("%s", line)


def _run(
    lm: Any,
    task_dict: dict[str, Any],
    manager: TaskManager,
    *,
    limit: int | None,
    num_fewshot: int | None,
) -> dict[str, dict[str, float | None]]:
    """Evaluate; tasks whose metadata says ``chat_template: true`` get prompts through the model's chat
    template (as training formats samples), the others plain. ``manager`` (from :func:`index_tasks`) is
    handed on, or ``simple_evaluate`` would index lm-eval's ~14,000 built-in tasks again on every call."""
    from lm_eval import simple_evaluate

    chat = [t for t in task_dict.values() if _wants_chat(t)]
    plain = [t for t in task_dict.values() if not _wants_chat(t)]
    table: dict[str, dict[str, float | None]] = {}
    for tasks, use_chat in ((plain, False), (chat, True)):
        if not tasks:
            continue
        with _harness_quiet():
            out = simple_evaluate(
                model=lm,
                tasks=tasks,
                task_manager=manager,
                limit=limit,
                num_fewshot=num_fewshot,
                apply_chat_template=use_chat,
                fewshot_as_multiturn=use_chat,
                log_samples=False,
                bootstrap_iters=1000,
                random_seed=0,
                numpy_random_seed=0,
                torch_random_seed=0,
                fewshot_random_seed=0,
            )
        table.update(_metrics(out["results"]))
    return table


def run_eval(
    target: str,
    *,
    tasks: list[str] | None = None,
    include_path: Path | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
    batch_size: int | str = "auto",
    compare_base: bool = False,
    device: str = "auto",
    checkpoint: StepCheckpoint | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> EvalResult:
    """Evaluate a run directory, model directory, `tunewiz:NAME` or cached Hub model with lm-eval;
    write ``eval/results.json`` when the target is a run directory.

    Args:
        target: what to evaluate (a run directory evaluates base + final adapter, unmerged).
        tasks: task names; None = the shipped task of the run's sample dataset.
        include_path: a directory of local task YAMLs.
        limit: documents per task (None: all).
        num_fewshot: few-shot examples (None: each task's default).
        batch_size: rows per forward, or ``"auto"``.
        compare_base: also evaluate the base model with the adapter disabled.
        device: ``auto``, ``cpu``, ``cuda``, ...
        checkpoint: a step checkpoint of the run to evaluate instead of ``final/`` (from
            :func:`tunewiz.inference.load.resolve_from`); results go to ``eval/results-step-N.json``.
        progress: called as ``progress(phase, done, total)`` after each batch, phase
            ``MODEL, TASKS: WHAT`` (``tuned model, story_qa: generations``; ``base model`` with
            ``compare_base``; ``model`` when ``target`` is not a run directory).
    """
    import lm_eval

    from tunewiz.inference.lm_eval_adapter import TunewizLM
    from tunewiz.inference.load import base_model_only, load_for_inference, prompt_builder_for

    names = tasks or default_tasks(target)
    include = [SHIPPED_TASKS_DIR, *([Path(include_path)] if include_path else [])]
    if include_path and not Path(include_path).is_dir():
        raise TunewizError(
            f"--include-path `{include_path}` is not a directory",
            hint="point it at a directory of lm-eval task YAML files",
        )
    manager, index_seconds, builtins = index_tasks(names, include)
    log.info(
        "indexed tasks in %.2f s (%s)", index_seconds, "with lm-eval built-ins" if builtins else "local only"
    )
    task_dict = load_tasks(manager, names, builtins=builtins)

    loaded = load_for_inference(target, device=device, checkpoint=checkpoint)
    if compare_base and not loaded.has_adapter:
        raise TunewizError(
            f"--compare-base needs an adapter, and `{target}` evaluates {loaded.description} with none",
            hint="evaluate a LoRA run directory, or drop `--compare-base`",
        )
    # The run's recorded template and bos rule (the ones it trained with); both sides of --compare-base.
    prompts, warning = prompt_builder_for(target, loaded.tokenizer)
    if warning:
        log.warning("warning: %s", warning)

    run = RunDir(Path(target))
    is_run = run.config.is_file()

    def model_progress(model: str) -> Callable[[str, int, int], None] | None:
        if progress is None:
            return None
        return lambda phase, done, total: progress(f"{model}, {phase}", done, total)

    lm = TunewizLM(
        loaded,
        batch_size=batch_size,
        prompts=prompts,
        progress=model_progress("tuned model" if is_run else "model"),
    )
    scores = _run(lm, task_dict, manager, limit=limit, num_fewshot=num_fewshot)
    base_scores = None
    if compare_base:
        lm.progress = model_progress("base model")
        with base_model_only(loaded):
            base_scores = _run(lm, task_dict, manager, limit=limit, num_fewshot=num_fewshot)

    # own-data scores in the same file are kept; --limit and step checkpoints write beside the full results
    path = run.eval_results_for(step=checkpoint.step if checkpoint else None, limit=limit) if is_run else None
    weights = checkpoint.path if checkpoint is not None else run.adapter
    result = EvalResult(
        model=loaded.base_name,
        adapter=str(weights) if is_run and loaded.has_adapter else None,
        tasks=scores,
        base=base_scores,
        limit=limit,
        num_fewshot=num_fewshot,
        lm_eval_version=lm_eval.__version__,
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        index_seconds=index_seconds,
        index_included_builtins=builtins,
        checkpoint=checkpoint.name if checkpoint else "final",
        path=path,
    )
    if path is not None:
        doc = result.as_json()
        if path.is_file():
            try:
                previous = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                previous = {}
            if isinstance(previous, dict) and "own_data" in previous:
                doc["own_data"] = previous["own_data"]
        atomic_write_json(path, doc)
    return result
