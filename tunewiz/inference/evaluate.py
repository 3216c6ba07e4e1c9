"""`tunewiz eval`: EleutherAI lm-eval through a native ``LM`` adapter, offline local tasks, results.json.

The adapter scores with the native model (base + adapter unmerged, or merged weights) and mirrors
lm-eval's own ``HFLM`` where numbers depend on it: context/continuation split, left truncation,
rolling windows. Task start-up indexes only the local task directories unless a requested name is
not local, because indexing lm-eval's ~14,000 built-in tasks takes seconds. A Hub task asked for
without network fails at once with the dataset's name, instead of lm-eval's retry loop.

torch and lm_eval are imported inside functions (and the adapter class is built on first use), so
that importing this module stays cheap for the CLI.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import warnings
from contextlib import redirect_stdout
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from tunewiz.atomic import atomic_write_json
from tunewiz.errors import TunewizError, did_you_mean
from tunewiz.run.directory import RunDir

if TYPE_CHECKING:
    from lm_eval.api.instance import Instance
    from lm_eval.tasks import TaskManager

    from tunewiz.inference.load import LoadedModel
    from tunewiz.text.prompt import PromptBuilder

log = logging.getLogger(__name__)

SHIPPED_TASKS_DIR = Path(__file__).resolve().parents[1] / "assets" / "tasks"
# Tasks that evaluate a run trained on a shipped sample dataset, when `--tasks` is not given.
DATASET_TASKS = {"tunewiz:story-qa": ["story_qa", "story_qa_loglik"]}
# `--batch-size auto`: rows per forward so that one batch's fp32 logits [B, T, V] stay under this.
AUTO_BATCH_LOGITS_BYTES = 512 * 2**20
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

    def as_json(self) -> dict[str, Any]:
        """The results.json document (the Hub model card reads it)."""
        return {
            "model": self.model,
            "adapter": self.adapter,
            "tasks": self.tasks,
            "base": self.base,
            "limit": self.limit,
            "num_fewshot": self.num_fewshot,
            "lm_eval_version": self.lm_eval_version,
            "date": self.date,
        }


# --- the lm-eval adapter -----------------------------------------------------------------------------


@cache
def tunewiz_lm_class() -> type:
    """The ``lm_eval.api.model.LM`` subclass over a :class:`LoadedModel` (built on first use, so that
    importing this module does not import lm_eval)."""
    import torch
    import torch.nn.functional as F
    from lm_eval.api.model import LM
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    from tunewiz.inference.generate import SamplingParams, generate

    class TunewizLM(LM):
        """lm-eval's model interface over the native model.

        Args:
            loaded: from ``load_for_inference``; its adapter (if any) stays unmerged.
            batch_size: rows per forward, or ``"auto"`` (sized so a batch's logits fit
                ``AUTO_BATCH_LOGITS_BYTES``).
            max_length: longest sequence scored; default the model's ``max_position_embeddings``.
            prompts: the run's prompt builder (``tunewiz.inference.load.prompt_builder_for``): what tasks
                with ``metadata.chat_template: true`` render prompts with, and the bos rule every
                sequence follows; default: the loaded model's own template and bos rule.
        """

        def __init__(
            self,
            loaded: LoadedModel,
            *,
            batch_size: int | str = "auto",
            max_length: int | None = None,
            prompts: PromptBuilder | None = None,
        ) -> None:
            from tunewiz.text.prompt import PromptBuilder, new_prompt_format

            super().__init__()
            self.loaded = loaded
            self.tokenizer = loaded.tokenizer
            if prompts is None:
                prompts = PromptBuilder(
                    self.tokenizer, new_prompt_format(self.tokenizer.chat_template, self.tokenizer)
                )
            self.prompts = prompts
            self.template = prompts.template
            self.batch_size = batch_size
            self.max_length = max_length or loaded.model.config.max_position_embeddings
            self._device = loaded.device

        # -- tokens --
        @property
        def prefix_token_id(self) -> int:
            """What an empty context conditions on: bos, else eos (as HFLM)."""
            return self.tokenizer.bos_id if self.tokenizer.bos_id is not None else self.tokenizer.eos_id

        def tok_encode(self, text: str) -> list[int]:
            """Token ids of ``text`` (plain, or rendered by the chat template) by the run's bos rule."""
            return self.prompts.encode_text(text)

        def encode_pair(
            self, context: str, continuation: str, *, request: str = "a request"
        ) -> tuple[list[int], list[int]]:
            """Context and continuation ids; the continuation is never empty.

            Trailing spaces of the context move to the continuation, then context+continuation is
            encoded whole and split after the context's tokens, as HFLM splits it: a SentencePiece
            word keeps its leading "▁" in the continuation instead of becoming a lone-space token.
            When the context's own tokens are not a prefix of the joint encoding (the last context
            token merges with the continuation: context "Ans", continuation "wer", one token
            "Answer"), that cut would score the wrong tokens, so the continuation is encoded on its
            own after the context's tokens instead.

            Args:
                context: the request's context.
                continuation: the text whose log-probability is asked.
                request: names the request in errors (task and document).

            Raises:
                TunewizError: the continuation has no tokens (it would score a perfect 0.0).
            """
            if not context:
                cont = self.tokenizer.encode(continuation)
                if cont and cont[0] == self.prefix_token_id:
                    ctx, cont = cont[:1], cont[1:]
                else:
                    ctx = [self.prefix_token_id]
            else:
                n_spaces = len(context) - len(context.rstrip())
                if n_spaces:
                    context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
                whole = self.tok_encode(context + continuation)
                ctx = self.tok_encode(context)
                if len(whole) > len(ctx) and whole[: len(ctx)] == ctx:
                    cont = whole[len(ctx) :]
                else:
                    cont = self.tokenizer.encode(continuation)
            if not cont:
                raise TunewizError(
                    f"loglikelihood {request}: continuation {continuation!r} after context "
                    f"{context[-60:]!r} has no tokens, so there is nothing to score",
                    hint="check the task's `doc_to_target` and `target_delimiter` "
                    "(the answer must not be empty)",
                )
            return ctx, cont

        # -- scoring --
        def _rows_per_batch(self, longest: int) -> int:
            if self.batch_size != "auto":
                return int(self.batch_size)
            per_row = longest * self.loaded.model.config.vocab_size * 4
            return max(1, AUTO_BATCH_LOGITS_BYTES // per_row)

        @torch.inference_mode()
        def score_tokens(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
            """Sum of log-probabilities of each continuation given its context, and whether it is greedy.

            Sequences are sorted longest first, truncated from the left to ``max_length + 1`` tokens
            (the last one is only a target), right-padded and batched.

            Args:
                pairs: (context ids, continuation ids); the context is non-empty.
            """
            order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
            out: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
            pos = 0
            while pos < len(order):
                longest = min(len(pairs[order[pos]][0]) + len(pairs[order[pos]][1]), self.max_length + 1) - 1
                chunk = order[pos : pos + self._rows_per_batch(longest)]
                # Inputs: all but the last token of context+continuation, at most max_length of them.
                rows = [(pairs[i][0] + pairs[i][1])[-(self.max_length + 1) :][:-1] for i in chunk]
                width = len(rows[0])  # longest first
                ids = torch.full((len(rows), width), self.tokenizer.pad_id, dtype=torch.long)
                for r, row in enumerate(rows):
                    ids[r, : len(row)] = torch.tensor(row)
                # Right padding: causal attention keeps the real tokens blind to the pad after them.
                logits = self.loaded.model(ids.to(self._device))  # [B, width, V]
                for r, i in enumerate(chunk):
                    cont = pairs[i][1]
                    n = len(rows[r])
                    logp = F.log_softmax(logits[r, n - len(cont) : n].float(), dim=-1)  # [C, V]
                    target = torch.tensor(cont, device=logp.device)
                    greedy = bool((logp.argmax(-1) == target).all())
                    out[i] = (float(logp.gather(-1, target[:, None]).sum()), greedy)
                pos += len(chunk)
            return out

        def loglikelihood(
            self, requests: list[Instance], disable_tqdm: bool = False
        ) -> list[tuple[float, bool]]:
            """(log-probability of the continuation, whether it is the greedy one) per request."""
            return self.score_tokens(
                [self.encode_pair(*req.args, request=_request_name(req)) for req in requests]
            )

        def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
            """Log-likelihood of whole texts, scored in disjoint windows of ``max_length`` tokens
            with one token of context (lm-eval's rolling windows, as HFLM uses them)."""
            windows: list[tuple[list[int], list[int]]] = []
            owner: list[int] = []
            for n, (text,) in enumerate(req.args for req in requests):
                for window in get_rolling_token_windows(
                    token_list=self.tokenizer.encode(text),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ):
                    windows.append(make_disjoint_window(window))
                    owner.append(n)
            totals = [0.0] * len(requests)
            for n, (logprob, _) in zip(owner, self.score_tokens(windows), strict=True):
                totals[n] += logprob
            return totals

        # -- generation --
        def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
            """Batched generation per distinct gen_kwargs; each text is cut at its first stop string."""
            out: list[str] = [""] * len(requests)
            groups: dict[str, list[int]] = {}
            for i, req in enumerate(requests):
                groups.setdefault(repr(sorted(req.args[1].items())), []).append(i)
            for indices in groups.values():
                kwargs = dict(requests[indices[0]].args[1])
                until = kwargs.pop("until", None) or [
                    self.tokenizer.decode([self.tokenizer.eos_id], skip_special=False)
                ]
                until = [until] if isinstance(until, str) else list(until)
                params = _sampling_params(SamplingParams, kwargs)
                budget = max(1, self.max_length - params.max_new_tokens)
                prompts = {i: self.tok_encode(requests[i].args[0])[-budget:] for i in indices}
                order = sorted(indices, key=lambda i: -len(prompts[i]))
                size = self._rows_per_batch(len(prompts[order[0]]) + params.max_new_tokens)
                for start in range(0, len(order), size):
                    chunk = order[start : start + size]
                    new = generate(
                        self.loaded.model,
                        [prompts[i] for i in chunk],
                        params,
                        stop_ids=self.tokenizer.stop_ids,
                        pad_id=self.tokenizer.pad_id,
                    )
                    for i, tokens in zip(chunk, new, strict=True):
                        out[i] = _cut_at_stops(self.tokenizer.decode(tokens), until)
            return out

        # -- chat --
        def apply_chat_template(
            self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
        ) -> str:
            """The conversation rendered with the run's chat template, as training renders samples."""
            if self.template is None:
                raise TunewizError(
                    f"{self.loaded.description} has no chat template, and a requested task "
                    "formats prompts with one",
                    hint="evaluate a model with a chat template, or "
                    "remove `chat_template: true` from the task's metadata",
                )
            return self.prompts.render(chat_history, add_generation_prompt=add_generation_prompt)

        @property
        def tokenizer_name(self) -> str:
            """The tokenizer's directory, which lm-eval uses as a cache key."""
            return str(self.tokenizer.source_dir)

        def chat_template(self, chat_template: bool | str = False) -> str | None:
            """The run's chat template source (lm-eval records it with the results)."""
            return self.template.template if self.template is not None else None

    return TunewizLM


def _request_name(req: Instance) -> str:
    """``task `x`, doc 3, request 0`` for error messages."""
    return f"request of task `{req.task_name}`, doc {req.doc_id}, index {req.idx}"


def _sampling_params(cls: type, kwargs: dict[str, Any]) -> Any:
    """lm-eval gen_kwargs -> SamplingParams: greedy unless ``do_sample`` (or a positive temperature
    without ``do_sample: false``) asks for sampling."""
    temperature = float(kwargs.get("temperature", 0.0) or 0.0)
    if not kwargs.get("do_sample", temperature > 0):
        temperature = 0.0
    return cls(
        max_new_tokens=int(kwargs.get("max_gen_toks", 256)),
        temperature=temperature,
        top_p=float(kwargs.get("top_p", 1.0) or 1.0),
        top_k=int(kwargs.get("top_k", 0) or 0),
        repetition_penalty=float(kwargs.get("repetition_penalty", 1.0)),
        seed=kwargs.get("seed"),
    )


def _cut_at_stops(text: str, until: list[str]) -> str:
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


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


def _run(
    lm: Any, task_dict: dict[str, Any], *, limit: int | None, num_fewshot: int | None
) -> dict[str, dict[str, float | None]]:
    """Evaluate; tasks whose metadata says ``chat_template: true`` get prompts through the model's chat
    template (as training formats samples), the others plain."""
    from lm_eval import simple_evaluate

    chat = [t for t in task_dict.values() if _wants_chat(t)]
    plain = [t for t in task_dict.values() if not _wants_chat(t)]
    table: dict[str, dict[str, float | None]] = {}
    for tasks, use_chat in ((plain, False), (chat, True)):
        if not tasks:
            continue
        with redirect_stdout(sys.stderr):  # lm-eval prints progress notes; stdout carries only data
            out = simple_evaluate(
                model=lm,
                tasks=tasks,
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
    """
    import lm_eval

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

    loaded = load_for_inference(target, device=device)
    if compare_base and not loaded.has_adapter:
        raise TunewizError(
            f"--compare-base needs an adapter, and `{target}` evaluates {loaded.description} with none",
            hint="evaluate a LoRA run directory, or drop `--compare-base`",
        )
    # The run's recorded template and bos rule (the ones it trained with); both sides of --compare-base.
    prompts, warning = prompt_builder_for(target, loaded.tokenizer)
    if warning:
        log.warning("warning: %s", warning)
    lm = tunewiz_lm_class()(loaded, batch_size=batch_size, prompts=prompts)
    scores = _run(lm, task_dict, limit=limit, num_fewshot=num_fewshot)
    base_scores = None
    if compare_base:
        with base_model_only(loaded):
            base_scores = _run(lm, task_dict, limit=limit, num_fewshot=num_fewshot)

    run = RunDir(Path(target))
    is_run = run.config.is_file()
    result = EvalResult(
        model=loaded.base_name,
        adapter=str(run.adapter) if is_run and loaded.has_adapter else None,
        tasks=scores,
        base=base_scores,
        limit=limit,
        num_fewshot=num_fewshot,
        lm_eval_version=lm_eval.__version__,
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        index_seconds=index_seconds,
        index_included_builtins=builtins,
    )
    if is_run:  # own-data scores in the same file are kept; --limit writes beside the full results
        path = run.eval_results if not limit else run.eval_results.with_name(f"results-limit-{limit}.json")
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
