"""How good is it on my data: `tunewiz eval RUN` without --tasks scores base vs fine-tuned on the run's
validation split; `--from step-N` uses a step checkpoint (chat equal to final/ at the last step)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runs import cli, write_preset

from tunewiz.inference.own_data import own_data_table, score_texts


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_dataset: Path) -> Path:
    work = tmp_path_factory.mktemp("owndata")
    preset = write_preset(
        work / "own.yaml", tiny_model_dir, tiny_dataset, train={"max_steps": 24}, data={"val_fraction": 0.1}
    )
    result = cli("train", str(preset), "--no-tui", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    return work / "runs" / "own"


def test_score_texts() -> None:
    scores = score_texts(["blue", "red red"], ["blue", "green"])
    assert scores["exact_match"] == 0.5 and 0 < scores["chrf"] < 100
    assert score_texts(["abc"], ["abc"])["chrf"] == pytest.approx(100.0)


def test_own_data_table_writes_a_measure_one_way() -> None:
    """A measure's base, fine-tuned and change share one format with digits that suit its size: a large
    perplexity and its change in whole numbers, a loss and a share with four decimals."""
    from rich.console import Console

    side = {"loss": 10.62, "perplexity": 40934.873, "exact_match": 0.0, "chrf": 3.1}
    tuned = {"loss": 7.34, "perplexity": 1534.469, "exact_match": 0.25, "chrf": 27.56}
    result = {"data": "v", "samples": 4, "generations": 4, "checkpoint": "final", "examples": []}
    console = Console(record=True, width=120)
    console.print(own_data_table({**result, "base": side, "tuned": tuned}))
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in console.export_text().splitlines()]
    rows = {row[0]: row[1:] for row in cells if row}
    assert rows["perplexity"] == ["40935", "1534", "-39400"]
    assert rows["loss (trained tokens)"] == ["10.620", "7.340", "-3.280"]
    assert rows["exact match"] == ["0.0000", "0.2500", "+0.2500"]
    assert rows["chrF"] == ["3.100", "27.560", "+24.460"]


def test_eval_own_data_base_vs_tuned(trained: Path) -> None:
    (trained / "eval").mkdir(exist_ok=True)
    (trained / "eval" / "results.json").write_text(json.dumps({"tasks": {"story_qa": {"acc": 0.5}}}))
    done = cli("eval", str(trained), cwd=trained.parent.parent)
    assert done.returncode == 0, done.stderr
    # progress: the same regular lines for both models (10 samples, 10 generations: every one)
    lines = [line for line in done.stderr.splitlines() if line.startswith("eval: ")]
    tuned_lines = [line for line in lines if line.startswith("eval: tuned model, ")]
    assert tuned_lines[:2] == ["eval: tuned model, loss 1/10", "eval: tuned model, loss 2/10"]
    assert len(tuned_lines) == 20 and tuned_lines[-1] == "eval: tuned model, generations 10/10"
    assert [line.replace("base", "tuned") for line in lines if "base model" in line] == tuned_lines
    assert "perplexity" in done.stdout and "chrF" in done.stdout
    written = json.loads((trained / "eval" / "results.json").read_text())
    assert written["tasks"] == {"story_qa": {"acc": 0.5}}  # lm-eval's results kept
    own = written["own_data"]
    assert own["samples"] == 10 and own["generations"] == 10 and own["data"] == "the validation split"
    base, tuned = own["base"], own["tuned"]
    assert tuned["loss"] < base["loss"] and tuned["perplexity"] < base["perplexity"]
    # 24 steps teach the tiny model the answers' tokens (lower loss), not yet fluent greedy replies.
    assert all(0 <= side["chrf"] <= 100 and 0 <= side["exact_match"] <= 1 for side in (base, tuned))
    assert len(own["examples"]) == 3 and {"prompt", "reference", "base", "tuned"} <= set(own["examples"][0])
    limited = cli("eval", str(trained), "--limit", "2", cwd=trained.parent.parent)
    assert limited.returncode == 0, limited.stderr
    assert json.loads((trained / "eval" / "results-limit-2.json").read_text())["own_data"]["samples"] == 2
    assert json.loads((trained / "eval" / "results.json").read_text())["own_data"]["samples"] == 10


def test_step_checkpoint_chat_equals_final_at_the_last_step(trained: Path) -> None:
    args = (
        "chat",
        str(trained),
        "--prompt",
        "Ann has a red cup. What colour is the cup?",
        "--max-new-tokens",
        "8",
    )
    final = cli(*args, cwd=trained.parent.parent)
    last = cli(*args, "--from", "step-24", cwd=trained.parent.parent)
    early = cli(*args, "--from", "step-8", cwd=trained.parent.parent)
    assert final.returncode == 0 and last.returncode == 0 and early.returncode == 0, (
        last.stderr + early.stderr
    )
    assert last.stdout == final.stdout
    assert "step-24" in last.stderr
    missing = cli(*args, "--from", "step-5", cwd=trained.parent.parent)
    assert missing.returncode != 0 and "has no complete checkpoint `step-5`" in missing.stderr


def test_full_fine_tune_is_scored_against_its_base_model(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    """The full-fine-tune path (no adapter to switch off: the base model is loaded from `model.path`
    with the run's tokenizer), on a run directory built by hand instead of trained: with `final/` holding
    the base's own weights both sides score the same; with changed weights only the tuned side moves."""
    import shutil

    import torch

    from tunewiz.inference.own_data import evaluate_own_data
    from tunewiz.models.config import LlamaConfig
    from tunewiz.models.loading import load_state_dict_files, save_model

    run = tmp_path / "full-run"
    run.mkdir()
    write_preset(run / "config.yaml", tiny_model_dir, tiny_dataset, method="full")
    config = LlamaConfig.from_file(tiny_model_dir / "config.json")
    weights = load_state_dict_files(tiny_model_dir)

    def score(state: dict[str, torch.Tensor]) -> dict:
        shutil.rmtree(run / "final", ignore_errors=True)
        save_model(state, run / "final", config)
        for name in ("tokenizer.model", "tokenizer_config.json"):
            shutil.copyfile(tiny_model_dir / name, run / "final" / name)
        return evaluate_own_data(str(run), limit=4, device="cpu", max_new_tokens=6)

    same = score(weights)
    assert same["samples"] == 4 and same["checkpoint"] == "final"
    assert same["tuned"] == same["base"] and same["base"]["tokens"] > 0
    assert [e["tuned"] for e in same["examples"]] == [e["base"] for e in same["examples"]]
    gen = torch.Generator().manual_seed(0)
    changed = score({k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in weights.items()})
    assert changed["base"] == same["base"] and changed["tuned"]["loss"] != same["base"]["loss"]
