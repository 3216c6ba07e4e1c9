"""`tunewiz eval`: the lm-eval adapter against direct computation and lm-eval's own HFLM, local tasks
end to end, the CLI's results.json, and the offline Hub-task error."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from tunewiz.errors import TunewizError
from tunewiz.inference.evaluate import EvalResult, run_eval
from tunewiz.inference.lm_eval_adapter import TunewizLM
from tunewiz.inference.load import load_for_inference
from tunewiz.text.prompt import PromptBuilder, new_prompt_format

TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json")
STORY = "Mia has a red cup. Tom has a blue ball. Ana has a green kite. What colour is the kite?"


def _instances(kind: str, args: list[tuple[str, ...]]) -> list:
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


def _write_tasks(out: Path) -> Path:
    """Three local tasks over JSONL files: multiple choice, generation, and rolling perplexity."""
    rows = [
        {"story": f"{n} has a {c} {o}.", "object": o, "colour": c, "choices": ["red", "blue", "green"]}
        for n, c, o in [
            ("Mia", "red", "cup"),
            ("Tom", "blue", "ball"),
            ("Ana", "green", "kite"),
            ("Leo", "red", "hat"),
            ("Sam", "blue", "kite"),
            ("Ivy", "green", "cup"),
        ]
    ]
    data = out / "colours.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = {
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "metadata": {"version": 1.0},
    }
    tasks = {
        "tw_mc": {
            "output_type": "multiple_choice",
            "doc_to_text": "{{story}} What colour is the {{object}}?",
            "doc_to_choice": "{{choices}}",
            "doc_to_target": "{{choices.index(colour)}}",
            "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
        },
        "tw_gen": {
            "output_type": "generate_until",
            "doc_to_text": "{{story}} What colour is the {{object}}?",
            "doc_to_target": "{{colour}}",
            "generation_kwargs": {"until": ["."], "max_gen_toks": 5},
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        },
        "tw_ppl": {
            "output_type": "loglikelihood_rolling",
            "doc_to_text": "",
            "doc_to_target": "{{story}} " * 8,
            "metric_list": [{"metric": m} for m in ("word_perplexity", "byte_perplexity", "bits_per_byte")],
        },
    }
    for name, cfg in tasks.items():
        (out / f"{name}.yaml").write_text(yaml.safe_dump({"task": name, **common, **cfg}))
    return out


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_tasks(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished LoRA run directory on the tiny model, trained (nominally) on `tunewiz:story-qa`,
    with a random non-zero adapter so it differs from its base."""
    from runs import write_preset

    from tunewiz.lora.layer import apply_lora, lora_state_dict
    from tunewiz.lora.peft_files import save_peft_adapter
    from tunewiz.models.loading import load_model

    run = tmp_path_factory.mktemp("run")
    write_preset(run / "config.yaml", tiny_model_dir, Path("tunewiz:story-qa"))
    model = load_model(tiny_model_dir)
    apply_lora(model, targets=["q_proj", "v_proj"], rank=4, alpha=8, dropout=0.0, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    save_peft_adapter(
        lora_state_dict(model),
        run / "final" / "adapter",
        base_model=str(tiny_model_dir),
        rank=4,
        alpha=8,
        dropout=0.0,
        targets=["q_proj", "v_proj"],
    )
    for name in TOKENIZER_FILES:
        shutil.copyfile(tiny_model_dir / name, run / "final" / name)
    return run


def _direct_loglikelihood(model: torch.nn.Module, ids: list[int], n_cont: int) -> float:
    """Sum of log p(ids[t] | ids[:t]) over the last n_cont tokens, one unpadded sequence."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids]))[0].float(), dim=-1)  # [T, V]
    return float(sum(logp[t - 1, ids[t]] for t in range(len(ids) - n_cont, len(ids))))


def test_loglikelihoods_equal_direct_computation(lora_run: Path) -> None:
    loaded = load_for_inference(str(lora_run), device="cpu")
    assert loaded.has_adapter
    tok = loaded.tokenizer
    lm = TunewizLM(loaded, batch_size=3)
    requests = [
        (STORY, " green"),
        (STORY + " ", "green"),
        ("Mia has", " a red cup and a blue ball."),
        ("", "Tom has a blue ball."),
        (STORY * 3, " red"),
    ]
    got = lm.loglikelihood(_instances("loglikelihood", requests))
    for (context, cont), (logprob, _) in zip(requests, got, strict=True):
        if context:
            ctx_ids = [tok.bos_id, *tok.encode(context.rstrip(" "))]
            whole = [tok.bos_id, *tok.encode(context + cont)]
        else:  # an empty context conditions on bos alone
            ctx_ids, whole = [tok.bos_id], [tok.bos_id, *tok.encode(cont)]
        assert whole[: len(ctx_ids)] == ctx_ids
        assert logprob == pytest.approx(
            _direct_loglikelihood(loaded.model, whole, len(whole) - len(ctx_ids)), abs=1e-4
        )

    # Left truncation: only the last max_length + 1 tokens take part.
    short = TunewizLM(loaded, batch_size=2, max_length=12)
    ((logprob, _),) = short.loglikelihood(_instances("loglikelihood", [(STORY, " green")]))
    whole = [tok.bos_id, *tok.encode(STORY + " green")]
    n_cont = len(whole) - len([tok.bos_id, *tok.encode(STORY)])
    assert logprob == pytest.approx(_direct_loglikelihood(loaded.model, whole[-13:], n_cont), abs=1e-4)

    # Rolling log-likelihood of a text that fits: every token given bos and the tokens before it.
    (rolling,) = lm.loglikelihood_rolling(_instances("loglikelihood_rolling", [(STORY,)]))
    ids = [tok.bos_id, *tok.encode(STORY)]
    assert rolling == pytest.approx(_direct_loglikelihood(loaded.model, ids, len(ids) - 1), abs=1e-4)


def test_local_tasks_end_to_end(tiny_model_dir: Path, tasks_dir: Path) -> None:
    result = run_eval(
        str(tiny_model_dir),
        tasks=["tw_mc", "tw_gen", "tw_ppl"],
        include_path=tasks_dir,
        batch_size=4,
        device="cpu",
    )
    assert not result.index_included_builtins and result.index_seconds < 2.0
    assert set(result.tasks) == {"tw_mc", "tw_gen", "tw_ppl"}
    assert set(result.tasks["tw_mc"]) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}
    assert 0.0 <= result.tasks["tw_mc"]["acc"] <= 1.0
    assert result.tasks["tw_gen"]["exact_match"] == 0.0  # random weights do not answer
    assert result.tasks["tw_ppl"]["word_perplexity"] > 1.0
    assert result.tasks["tw_ppl"]["bits_per_byte"] > 0.0
    assert result.base is None and result.adapter is None


def test_merged_weights_match_lm_eval_hflm(
    lora_run: Path, tiny_model_dir: Path, tasks_dir: Path, tmp_path: Path
) -> None:
    """Merge the adapter, save with save_model, load into transformers, and require lm-eval's HFLM to
    give our numbers: loglikelihood (with and without bos), rolling windows, a task's metrics."""
    import transformers
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from tunewiz.lora.merge import merge_lora
    from tunewiz.models.loading import save_model

    loaded = load_for_inference(str(lora_run), device="cpu")
    merge_lora(loaded.model)
    merged_dir = tmp_path / "merged"
    save_model(loaded.model, merged_dir, loaded.model.config)
    for name in TOKENIZER_FILES:
        shutil.copyfile(tiny_model_dir / name, merged_dir / name)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(merged_dir))
    ours = load_for_inference(str(merged_dir), device="cpu")

    requests = _instances(
        "loglikelihood",
        [(STORY, " green"), (STORY + " ", "red"), ("", "Mia has a cup."), (STORY * 4, " blue")],
    )
    # (No trailing whitespace: our SentencePiece backend drops it where transformers' Llama tokenizer
    # keeps a "▁" token; loglikelihood requests are unaffected, their trailing spaces move to the
    # continuation.)
    long_text = _instances("loglikelihood_rolling", [(" ".join([STORY] * 5),), ("Ivy has a hat.",)])
    for add_bos in (True, False):
        hflm = HFLM(pretrained=hf_model, tokenizer=hf_tok, batch_size=3, max_length=32, add_bos_token=add_bos)
        rule = new_prompt_format(None, ours.tokenizer)
        prompts = PromptBuilder(ours.tokenizer, rule if add_bos else replace(rule, bos="none"))
        lm = TunewizLM(ours, batch_size=3, max_length=32, prompts=prompts)
        for (a, greedy_a), (b, greedy_b) in zip(
            lm.loglikelihood(requests), hflm.loglikelihood(requests), strict=True
        ):
            assert a == pytest.approx(b, abs=1e-4) and greedy_a == greedy_b
    # HFLM encodes rolling texts with its bos setting and prefixes bos again, so compare without it.
    assert lm.loglikelihood_rolling(long_text) == pytest.approx(
        hflm.loglikelihood_rolling(long_text), abs=1e-3
    )

    manager = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    hflm = HFLM(pretrained=hf_model, tokenizer=hf_tok, batch_size=3, max_length=32, add_bos_token=True)
    lm = TunewizLM(ours, batch_size=3, max_length=32)
    theirs = simple_evaluate(model=hflm, tasks=["tw_mc"], task_manager=manager, log_samples=False)["results"][
        "tw_mc"
    ]
    mine = simple_evaluate(model=lm, tasks=["tw_mc"], task_manager=manager, log_samples=False)["results"][
        "tw_mc"
    ]
    assert mine["acc,none"] == theirs["acc,none"] and mine["acc_norm,none"] == theirs["acc_norm,none"]


def test_cli_writes_results_with_base_deltas(lora_run: Path) -> None:
    """No --tasks: a run trained on tunewiz:story-qa is evaluated on the shipped story_qa tasks."""
    from runs import cli

    proc = cli(
        "eval", str(lora_run), "--limit", "3", "--compare-base", "--json", "--device", "cpu", cwd=lora_run
    )
    assert proc.returncode == 0, proc.stderr
    # The fixture run has no prompt.json (as runs made before it): the fallback is said once.
    assert proc.stderr.count("warning: ") == 1 and "has no prompt.json" in proc.stderr
    printed = json.loads(proc.stdout)
    written = json.loads((lora_run / "eval" / "results-limit-3.json").read_text())  # beside a full one
    assert printed == written
    assert set(written) == {
        "model",
        "adapter",
        "checkpoint",
        "tasks",
        "base",
        "limit",
        "num_fewshot",
        "lm_eval_version",
        "date",
    }
    assert written["adapter"] == str(lora_run / "final" / "adapter") and written["limit"] == 3
    assert written["checkpoint"] == "final"
    assert set(written["tasks"]) == set(written["base"]) == {"story_qa", "story_qa_loglik"}
    assert set(written["tasks"]["story_qa_loglik"]) == {
        "perplexity",
        "perplexity_stderr",
        "acc",
        "acc_stderr",
    }
    # The random adapter changes the answer's likelihood, so the base differs.
    assert (
        written["tasks"]["story_qa_loglik"]["perplexity"] != written["base"]["story_qa_loglik"]["perplexity"]
    )
    assert "indexed tasks in" in proc.stderr and "local tasks only" in proc.stderr
    # progress for each model and request type, from its start; none of lm-eval's own noise (its git
    # lookup outside a repository, its bootstrap notes)
    for model in ("tuned", "base"):
        for line in ("story_qa: generations 0/3", "story_qa: generations 3/3", "story_qa_loglik: log-lik"):
            assert f"eval: {model} model, {line}" in proc.stderr, proc.stderr
    assert "fatal:" not in proc.stderr and "bootstrapping" not in proc.stderr, proc.stderr


def test_results_table_shows_deltas() -> None:
    from rich.console import Console

    from tunewiz.cli.eval import results_table

    result = EvalResult(
        model="tunewiz:tiny",
        adapter="runs/x/final/adapter",
        tasks={"story_qa": {"exact_match": 0.5, "exact_match_stderr": 0.1}},
        base={"story_qa": {"exact_match": 0.25, "exact_match_stderr": 0.1}},
        limit=4,
        num_fewshot=None,
        lm_eval_version="0.4.13",
        date="2026-01-01T00:00:00+00:00",
        index_seconds=0.01,
        index_included_builtins=False,
    )
    console = Console(record=True, width=120)
    console.print(results_table(result))
    text = console.export_text()
    assert "0.5000" in text and "0.2500" in text and "+0.2500" in text and "Δ" in text
    # a perplexity row: value, stderr, base and change in one format that suits their size
    tasks = {"ppl": {"perplexity": 1534.469, "perplexity_stderr": 1334.41}}
    big = replace(result, tasks=tasks, base={"ppl": {"perplexity": 40934.873}})
    console = Console(record=True, width=120)
    console.print(results_table(big))
    row = next(line for line in console.export_text().splitlines() if "perplexity" in line)
    assert [c.strip() for c in row.split("│")[3:-1]] == ["1534", "1334", "40935", "-39400"]


def test_progress_lines_are_regular_and_the_same_for_each_model() -> None:
    """A line at each tenth of a phase (every step up to 10) and at its start, whatever the speed or batch
    size; the same lines for a second model; one more after a long quiet stretch."""
    from tunewiz.cli.eval import PROGRESS_QUIET_S, progress_lines

    lines: list[str] = []
    now = [0.0]
    progress = progress_lines(lines.append, clock=lambda: now[0])
    for model, seconds in (("tuned", 5.0), ("base", 0.001)):
        for done in range(1, 5):
            now[0] += seconds
            progress(f"{model} model, loss", done, 4)
    assert lines == [f"eval: {m} model, loss {d}/4" for m in ("tuned", "base") for d in range(1, 5)]
    lines.clear()
    for done in [0, *range(7, 100, 7), 100]:  # batches of 7 of 100 requests: a line on crossing each tenth
        progress("x: generations", done, 100)
    assert lines == [f"eval: x: generations {d}/100" for d in (0, 14, 21, 35, 42, 56, 63, 70, 84, 91, 100)]
    lines.clear()
    progress("slow", 1, 1000)
    now[0] += PROGRESS_QUIET_S
    progress("slow", 2, 1000)
    assert lines == ["eval: slow 2/1000"]


def test_eval_help_names_the_files_from_and_limit_write(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tunewiz.cli import app
    from tunewiz.run.directory import RunDir

    result = CliRunner().invoke(app, ["eval", "--help"], env={"NO_COLOR": "1", "COLUMNS": "200"})
    run = RunDir(tmp_path)
    for path in (run.eval_results, run.eval_results_for(step=6, limit=5), run.eval_results_for(limit=1)):
        name = path.relative_to(tmp_path).as_posix().replace("-1.json", "-N.json")
        assert name in result.output, (name, result.output)


def test_hub_task_offline_and_unknown_task(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(TunewizError) as err:
        run_eval(str(tiny_model_dir), tasks=["arc_easy"], device="cpu")
    assert time.perf_counter() - start < 20
    assert "allenai/ai2_arc" in err.value.message and "arc_easy" in err.value.message
    assert "--include-path" in (err.value.hint or "")

    with pytest.raises(
        TunewizError, match="unknown task `story_qa_logli` \\(did you mean `story_qa_loglik`\\?\\)"
    ):
        run_eval(str(tiny_model_dir), tasks=["story_qa_logli"], device="cpu")


def test_no_tasks_for_a_plain_model(tiny_model_dir: Path) -> None:
    with pytest.raises(TunewizError, match="no `--tasks` given"):
        run_eval(str(tiny_model_dir), device="cpu")


# Contexts that end mid-word (`target_delimiter: ""`): with the tiny tokenizer the joint encoding merges
# the context's last token with the continuation ("▁b" "a" + "ll." -> "▁ball" "."), so the context's
# tokens are not a prefix of it; cutting at the context's token count left no continuation (an empty
# answer scored 0.0: perplexity 1, accuracy 1) or a wrong one.
MID_WORD = [("Tom has a blue ba", "ll."), ("Below is an instr", "uction."), ("What col", "our is it?")]


def test_loglikelihood_of_a_merged_continuation_equals_transformers(
    lora_run: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Reference: transformers on the merged weights, the continuation encoded on its own after the
    encoded context (not HFLM, which makes the same cut)."""
    import transformers

    from tunewiz.lora.merge import merge_lora
    from tunewiz.models.loading import save_model

    loaded = load_for_inference(str(lora_run), device="cpu")
    lm = TunewizLM(loaded, batch_size=2)
    got = lm.loglikelihood(_instances("loglikelihood", MID_WORD))

    merged = load_for_inference(str(lora_run), device="cpu")
    merge_lora(merged.model)
    save_model(merged.model, tmp_path / "merged", merged.model.config)
    for name in TOKENIZER_FILES:
        shutil.copyfile(tiny_model_dir / name, tmp_path / "merged" / name)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "merged"))
    for (context, continuation), (logprob, greedy) in zip(MID_WORD, got, strict=True):
        ctx = hf_tok(context)["input_ids"]  # bos + context, the tokenizer's default
        cont = hf_tok(continuation, add_special_tokens=False)["input_ids"]
        joint = hf_tok(context + continuation)["input_ids"]
        assert joint[: len(ctx)] != ctx  # the case this test is about
        with torch.no_grad():
            logp = torch.log_softmax(hf_model(torch.tensor([ctx + cont])).logits[0].float(), dim=-1)
        targets = range(len(ctx), len(ctx) + len(cont))
        expected = float(sum(logp[t - 1, (ctx + cont)[t]] for t in targets))
        assert logprob == pytest.approx(expected, abs=1e-4), context
        assert greedy == all(int(logp[t - 1].argmax()) == (ctx + cont)[t] for t in targets)

    # An empty continuation is an error naming the request, never a perfect score.
    with pytest.raises(TunewizError, match=r"loglikelihood request of task .*doc .*index 0: continuation ''"):
        lm.loglikelihood(_instances("loglikelihood", [("What colour", "")]))


def test_a_mid_word_task_is_not_scored_as_perfect(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Issue 15's report: a local task with `target_delimiter: ""` gave an untrained model
    perplexity 1.0 and accuracy 1.0."""
    data = tmp_path / "mid.jsonl"
    data.write_text("".join(json.dumps({"context": c, "answer": a}) + "\n" for c, a in MID_WORD))
    task = {
        "task": "tw_mid_word",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "loglikelihood",
        "doc_to_text": "{{context}}",
        "doc_to_target": "{{answer}}",
        "target_delimiter": "",
        "metric_list": [{"metric": "perplexity"}, {"metric": "acc"}],
        "metadata": {"version": 1.0},
    }
    (tmp_path / "tw_mid_word.yaml").write_text(yaml.safe_dump(task))
    result = run_eval(str(tiny_model_dir), tasks=["tw_mid_word"], include_path=tmp_path, device="cpu")
    scores = result.tasks["tw_mid_word"]
    assert scores["perplexity"] > 10.0 and scores["acc"] == 0.0  # random weights
