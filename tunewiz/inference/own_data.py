"""How good is it on my data: base vs fine-tuned on the run's validation split (or a file).

Two measures, each on the base model and on the fine-tuned one:

- **loss and perplexity on the trained tokens**: the samples are built by the run's own data pipeline
  (its ``data:`` settings and recorded prompt format, ``prompt.json``), so the tokens scored are exactly
  the ones training computed its loss on; loss is the mean token cross-entropy (nats), perplexity its
  ``exp``.
- **greedy generations against the references**: each sample's prompt is its tokens up to the first
  trained token (what chat would send), the reference is the first trained reply without its stop
  token. Exact match compares the stripped texts; chrF (character n-gram F-score, Popović 2015) comes
  from ``sacrebleu``, the implementation WMT uses, on a 0–100 scale.

The result is the ``own_data`` entry of ``RUN/eval/results.json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewiz.errors import TunewizError

if TYPE_CHECKING:
    from tunewiz.data import Sample
    from tunewiz.inference.load import LoadedModel, StepCheckpoint
    from tunewiz.preset.schema import Preset
    from tunewiz.text.prompt import PromptFormat
    from tunewiz.text.tokenizer import Tokenizer

EXAMPLES = 3  # side-by-side examples kept in the results
MAX_NEW_TOKENS = 64  # per generation; a reference longer than this is scored on what fits


def reference_split(sample: Sample, stop_ids: set[int]) -> tuple[list[int], list[int]] | None:
    """(prompt ids, reference ids) of an unpacked sample, or None when it trains on its first token.

    The prompt is every token up to and including the position that predicts the first trained
    token; the reference is the run of trained tokens that follows, stop tokens left out.
    """
    from tunewiz.data import IGNORE_INDEX

    first = next((i for i, label in enumerate(sample.labels) if label != IGNORE_INDEX), None)
    if first is None or first == 0:
        return None
    reference = []
    for label in sample.labels[first:]:
        if label == IGNORE_INDEX or label in stop_ids:
            break
        reference.append(label)
    return list(sample.input_ids[: first + 1]), reference


def score_texts(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Exact match (share of stripped texts equal) and corpus chrF (sacrebleu, 0–100).

    Raises:
        ValueError: the lists differ in length.
    """
    from sacrebleu.metrics import CHRF

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        return {"exact_match": 0.0, "chrf": 0.0}
    exact = sum(p.strip() == r.strip() for p, r in zip(predictions, references, strict=True))
    chrf = CHRF().corpus_score([p.strip() for p in predictions], [[r.strip() for r in references]]).score
    return {"exact_match": exact / len(predictions), "chrf": float(chrf)}


def _losses(loaded: LoadedModel, samples: list[Sample], tick: Callable[[], None]) -> tuple[float, int]:
    import torch

    from tunewiz.models.loss import chunked_cross_entropy

    model = loaded.model
    softcap = model.config.final_logit_softcapping
    total, count = 0.0, 0
    with torch.no_grad():
        for sample in samples:
            ids = torch.tensor([sample.input_ids], device=loaded.device)
            labels = torch.tensor([sample.labels], device=loaded.device)
            hidden = model(ids, output_hidden=True)  # [1, T, D]
            loss_sum, n = chunked_cross_entropy(hidden, model.lm_head, labels, softcap=softcap)
            total += float(loss_sum)
            count += int(n)
            tick()
    return total, count


def _generations(
    loaded: LoadedModel, prompts: list[list[int]], max_new_tokens: int, tick: Callable[[], None]
) -> list[str]:
    from tunewiz.inference.generate import SamplingParams, generate

    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    tok = loaded.tokenizer
    out = []
    for prompt in prompts:  # one at a time: the same ids as chat, no padding effects
        (ids,) = generate(loaded.model, [prompt], params, stop_ids=tok.stop_ids, pad_id=tok.pad_id)
        out.append(tok.decode(ids))
        tick()
    return out


def _measure(
    loaded: LoadedModel,
    samples: list[Sample],
    pairs: list[tuple[list[int], list[int]]],
    max_new_tokens: int,
    ticker: Callable[[str, int], Callable[[], None]],
) -> tuple[dict[str, Any], list[str]]:
    total, count = _losses(loaded, samples, ticker("loss", len(samples)))
    loss = total / max(count, 1)
    texts = _generations(loaded, [p for p, _ in pairs], max_new_tokens, ticker("generations", len(pairs)))
    refs = [loaded.tokenizer.decode(r) for _, r in pairs]
    scores = {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": count}
    return {**scores, **score_texts(texts, refs)}, texts


def evaluate_own_data(
    target: str,
    *,
    data: str | None = None,
    limit: int | None = None,
    device: str = "auto",
    max_new_tokens: int = MAX_NEW_TOKENS,
    progress: Callable[[str, int, int], None] | None = None,
    checkpoint: StepCheckpoint | None = None,
) -> dict[str, Any]:
    """Score the base and the fine-tuned model of run ``target`` on its own data.

    Args:
        target: a run directory.
        data: a data file (or any ``data.path`` value) to score instead of the run's validation split;
            the run's column mapping and prompt format apply.
        limit: score only the first N samples.
        device: ``auto``, ``cpu`` or ``cuda``.
        max_new_tokens: generation length limit.
        progress: called as ``progress(phase, done, total)`` after each sample, in four phases:
            ``tuned model, loss`` (``total``: samples), ``tuned model, generations`` (``total``:
            generations), then the same for ``base model``.
        checkpoint: a step checkpoint of the run (from :func:`tunewiz.inference.load.resolve_from`):
            the fine-tuned model is that instead of ``final/``.

    Returns:
        The ``own_data`` document: data, samples, ``base`` and ``tuned`` scores (loss, perplexity,
        tokens, exact_match, chrf), side-by-side ``examples``, limit and date.

    Raises:
        TunewizError: not a run directory, no validation split without ``--data``, no scorable sample.
    """
    from tunewiz.inference.load import base_model_only, load_for_inference, prompt_builder_for
    from tunewiz.preset.files import load_preset
    from tunewiz.run.directory import RunDir

    run = RunDir(Path(target).expanduser())
    if not run.config.is_file():
        raise TunewizError(
            f"`{target}` is not a run directory (no config.yaml), so it has no data of its own",
            hint=f"name lm-eval tasks: `tunewiz eval {target} --tasks NAME`",
        )
    preset, _ = load_preset(str(run.config))
    tuned = load_for_inference(target, device=device, checkpoint=checkpoint)
    builder, _warning = prompt_builder_for(target, tuned.tokenizer)
    samples = own_samples(preset, tuned.tokenizer, builder.format, data)
    where = data if data is not None else "the validation split"
    if not samples:
        raise TunewizError(
            f"`{target}` has no validation samples (data.val_fraction is 0 and no data.val_path)",
            hint=f"score a file instead: `tunewiz eval {target} --data FILE`",
        )
    samples = samples[:limit] if limit else samples
    stop = set(tuned.tokenizer.stop_ids)
    pairs = [p for p in (reference_split(s, stop) for s in samples) if p is not None]

    def ticker(model: str) -> Callable[[str, int], Callable[[], None]]:
        def for_phase(phase: str, total: int) -> Callable[[], None]:
            done = [0]

            def tick() -> None:
                done[0] += 1
                if progress is not None:
                    progress(f"{model} model, {phase}", done[0], total)

            return tick

        return for_phase

    tuned_scores, tuned_texts = _measure(tuned, samples, pairs, max_new_tokens, ticker("tuned"))
    if tuned.has_adapter:
        with base_model_only(tuned):
            base_scores, base_texts = _measure(tuned, samples, pairs, max_new_tokens, ticker("base"))
    else:  # a full fine-tune: the base model itself, with the run's tokenizer and prompt format
        base = load_for_inference(preset.model.path, device=device)
        base.tokenizer = tuned.tokenizer
        base_scores, base_texts = _measure(base, samples, pairs, max_new_tokens, ticker("base"))
    tok = tuned.tokenizer
    examples = [
        {
            "prompt": tok.decode(prompt),
            "reference": tok.decode(ref),
            "base": base_texts[i],
            "tuned": tuned_texts[i],
        }
        for i, (prompt, ref) in enumerate(pairs[:EXAMPLES])
    ]
    return {
        "data": str(where),
        "checkpoint": checkpoint.name if checkpoint else "final",
        "samples": len(samples),
        "generations": len(pairs),
        "max_new_tokens": max_new_tokens,
        "base": base_scores,
        "tuned": tuned_scores,
        "examples": examples,
        "limit": limit,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def own_samples(preset: Preset, tokenizer: Tokenizer, prompt: PromptFormat, data: str | None) -> list[Sample]:
    """The samples ``tunewiz eval`` scores, unpacked: the run's validation split, or every row of ``data``.

    The validation split comes from the run's prepared entry when it is still in the cache (the
    samples the run validated on, read with the base model's tokenizer the run trained with);
    otherwise, and for ``data``, they are built here with ``tokenizer`` (the same tokens: the
    prompt format is the run's).

    Args:
        preset: the run's preset.
        tokenizer: the fine-tuned model's tokenizer.
        prompt: the run's prompt format.
        data: ``--data FILE``, or None for the validation split.
    """
    from tunewiz.data import build_datasets
    from tunewiz.data.prepared import find
    from tunewiz.models.loading import resolve_model_dir
    from tunewiz.text.tokenizer import load_tokenizer

    if data is None:
        try:
            base_tokenizer = load_tokenizer(resolve_model_dir(preset.model.path, preset.model.revision))
        except TunewizError:  # the base model is gone: build with the run's own tokenizer
            base_tokenizer = None
        found = (
            None
            if base_tokenizer is None
            else find(preset.data, base_tokenizer, seed=preset.train.seed, prompt=prompt)
        )
        if found is not None:
            return list(found.unpacked("validation"))
    cfg = preset.data.model_copy(update={"packing": False})
    if data is not None:
        cfg = cfg.model_copy(
            update={"path": data, "val_path": None, "val_fraction": 0.0, "max_samples": None}
        )
    train, val, _ = build_datasets(cfg, tokenizer, seed=preset.train.seed, prompt=prompt)
    return train if data is not None else val


def write_own_data(
    run_dir: Path, result: dict[str, Any], *, limit: int | None, checkpoint: StepCheckpoint | None = None
) -> Path:
    """Merge ``result`` as ``own_data`` into ``eval/results.json`` (lm-eval's entries kept); with a
    ``limit`` or a step ``checkpoint``, into the file beside it that
    :meth:`tunewiz.run.directory.RunDir.eval_results_for` names, so neither a partial score nor a step
    checkpoint's replaces the final weights' full one.

    Returns:
        The file written.
    """
    import json

    from tunewiz.atomic import atomic_write_json
    from tunewiz.run.directory import RunDir

    path = RunDir(run_dir).eval_results_for(step=checkpoint.step if checkpoint else None, limit=limit)
    doc: dict[str, Any] = {}
    if path.is_file():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            doc = {}
    doc["own_data"] = result
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, doc)
    return path


def own_data_table(result: dict[str, Any]) -> Any:
    """A Rich table: each measure for base and fine-tuned and the change, then the examples. A measure's
    three numbers share one format (:func:`tunewiz.units.shared_decimals`)."""
    from rich.console import Group
    from rich.table import Table

    from tunewiz.units import shared_decimals

    table = Table(
        title=f"own data: {result['data']} ({result['samples']} samples, {result['generations']} "
        f"generations, fine-tuned = {result['checkpoint']})",
        title_justify="left",
    )
    for name in ("measure", "base", "fine-tuned", "Δ"):
        table.add_column(name, justify="left" if name == "measure" else "right")
    rows = [
        ("loss (trained tokens)", "loss"),
        ("perplexity", "perplexity"),
        ("exact match", "exact_match"),
        ("chrF", "chrf"),
    ]
    for label, key in rows:
        b, t = result["base"][key], result["tuned"][key]
        d = shared_decimals([b, t, t - b])
        table.add_row(label, f"{b:.{d}f}", f"{t:.{d}f}", f"{t - b:+.{d}f}")
    examples = Table(title="examples (greedy)", title_justify="left", show_lines=True)
    for name in ("prompt", "reference", "base", "fine-tuned"):
        examples.add_column(name, overflow="fold", max_width=40)
    for ex in result["examples"]:
        examples.add_row(ex["prompt"][-200:], ex["reference"], ex["base"], ex["tuned"])
    return Group(table, examples)
