"""The real recipe through the real CLI on a tiny model: golden losses, the loss normalisation across
micro-batch/accumulation splits and ranks, and the exported weights in transformers and peft."""

from __future__ import annotations

from pathlib import Path

import pytest
from runs import cli, events, samples_by_step, step_losses, write_preset

pytestmark = pytest.mark.slow

# Step losses of tests/runs.py's tiny model and dataset with the preset below (CPU, fp32, torch 2.13).
# Re-derived for issue 15's bos rule: the alpaca template now renders bos (`{{ bos_token }}`), so the
# SentencePiece tokenizer encodes the first word after it without the dummy-prefix space ("Be" "low"
# instead of "▁Below"), exactly as transformers' apply_chat_template on final/ does; no other token changed.
GOLDEN = {1: 6.0040601, 2: 5.9777082, 3: 6.0171076, 4: 5.7676413, 5: 5.7617035, 6: 5.7835992}


def test_golden_losses(trained_run: Path) -> None:
    losses = step_losses(trained_run)
    assert list(losses) == [1, 2, 3, 4, 5, 6]
    assert losses == pytest.approx(GOLDEN, rel=1e-5)
    kinds = [e["event"] for e in events(trained_run)]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert {"eval", "checkpoint"} <= set(kinds)


def test_accumulation_gives_the_same_update(
    trained_run: Path, tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    preset = write_preset(
        tmp_path / "acc.yaml", tiny_model_dir, tiny_dataset, train={"micro_batch_size": 1, "grad_accum": 4}
    )
    result = cli("train", str(preset), "--no-tui", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    tokens = {e["step"]: e["tokens"] for e in events(tmp_path / "runs" / "acc") if e["event"] == "step"}
    assert len(set(tokens.values())) > 1, "samples should differ in length"
    assert step_losses(tmp_path / "runs" / "acc") == pytest.approx(step_losses(trained_run), rel=1e-5)


def test_two_ranks_fsdp_match_one_rank(trained_run: Path, two_rank_run: Path) -> None:
    run = two_rank_run
    assert events(run)[0]["world_size"] == 2
    assert step_losses(run) == pytest.approx(step_losses(trained_run), rel=1e-5)
    # Both ranks decoded the validation prompts together (FSDP gathers each block for every token):
    # the replies at steps 2, 4, 6 are the one-rank run's.
    assert sorted(samples_by_step(run)) == [2, 4, 6]
    assert samples_by_step(run) == samples_by_step(trained_run)
    assert (run / "final" / "adapter" / "adapter_model.safetensors").is_file()


def test_export_loads_in_transformers_and_peft(trained_run: Path) -> None:
    import peft
    import torch
    import transformers

    from tunewiz.lora.peft_files import load_peft_adapter
    from tunewiz.models.loading import load_model

    final = trained_run / "final"
    base_dir = Path(events(trained_run)[0]["model"])
    ids = torch.tensor([[1, 20, 31, 42, 53, 64, 75]])

    ours = load_model(base_dir)
    load_peft_adapter(ours, final / "adapter")
    with torch.no_grad():
        expected = ours(ids)

    merged = transformers.AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32)
    adapted = peft.PeftModel.from_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), final / "adapter"
    )
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(adapted(ids).logits, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(load_model(base_dir)(ids), expected), "training changed nothing"


def test_dry_run_prints_the_torchrun_command(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    preset = write_preset(tmp_path / "dry.yaml", tiny_model_dir, tiny_dataset)
    result = cli("train", str(preset), "--dry-run", "--nproc-per-node", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (
        "torch.distributed.run --nproc-per-node 2 --standalone -m tunewiz.train.recipe --run-dir runs/dry"
        in result.stdout
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.path=/nonexistent/model", "model directory `/nonexistent/model` does not exist"),
        ("data.path=missing.jsonl", "data file `missing.jsonl` does not exist"),
        ("data.max_seq_len=0", "data.max_seq_len"),
        ("device=cuda", "no CUDA GPU"),
    ],
)
def test_bad_input_is_one_error_line(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path, override: str, message: str
) -> None:
    preset = write_preset(tmp_path / "bad.yaml", tiny_model_dir, tiny_dataset)
    result = cli("train", str(preset), "--set", override, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr and "hint:" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "runs" / "bad" / "events.jsonl").exists()


def test_model_without_safetensors(tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path) -> None:
    import shutil

    model = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, model)
    (model / "model.safetensors").rename(model / "pytorch_model.bin")
    result = cli("train", str(write_preset(tmp_path / "p.yaml", model, tiny_dataset)), cwd=tmp_path)
    assert result.returncode != 0 and "safetensors" in result.stderr and "Traceback" not in result.stderr


def test_activation_checkpointing_changes_no_number(
    trained_run: Path, tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    preset = write_preset(
        tmp_path / "ac.yaml", tiny_model_dir, tiny_dataset, train={"activation_checkpointing": True}
    )
    assert cli("train", str(preset), "--no-tui", cwd=tmp_path).returncode == 0
    assert step_losses(tmp_path / "runs" / "ac") == pytest.approx(step_losses(trained_run), rel=1e-5)


@pytest.mark.parametrize(
    ("name", "sections"),
    [
        ("bf16", {"model": {"dtype": "bf16"}}),
        ("packed", {"data": {"packing": True}}),
        ("full", {"method": "full", "train": {"lr": 1e-3}}),
    ],
)
def test_variants_train_and_export(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path, name: str, sections: dict
) -> None:
    import torch
    import transformers

    preset = write_preset(tmp_path / f"{name}.yaml", tiny_model_dir, tiny_dataset, **sections)
    result = cli("train", str(preset), "--no-tui", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "runs" / name
    losses = list(step_losses(run).values())
    assert len(losses) == 6 and all(loss == loss for loss in losses)  # no NaN
    assert losses[-1] < losses[0]
    model = transformers.AutoModelForCausalLM.from_pretrained(run / "final")
    assert model(torch.tensor([[1, 5, 9]])).logits.shape[-1] == model.config.vocab_size


def test_more_processes_than_gpus_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from tunewiz.errors import TunewizError
    from tunewiz.train import launcher

    monkeypatch.setattr(launcher, "_cuda_device_count", lambda: 1)  # the GPU count is the boundary here
    with pytest.raises(TunewizError, match="more processes than this machine's 1 GPU"):
        launcher.Topology(nproc_per_node=2).check("cuda")
    launcher.Topology(nproc_per_node=2).check("cpu")  # CPU ranks are processes, not devices
    with pytest.raises(TunewizError, match="--rdzv-endpoint"):
        launcher.Topology(nnodes=2).check("cpu")


def test_truncated_and_dropped_samples_are_counted_and_shown(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Issue 15's report: 8 alpaca rows, 4 of them ~300 words, max_seq_len 128: the long rows lost every
    trained token and vanished with `truncated_samples: 0` and nothing printed."""
    import json

    import yaml

    long_text = " ".join(["Mia has a red cup and Tom has a blue ball."] * 30)
    question = {"instruction": "Answer the question.", "input": "Tom has a blue ball.", "output": "blue"}
    long_row = {**question, "input": f"{long_text} What colour is the cup?", "output": "red"}
    rows = [long_row if i % 2 else question for i in range(8)]
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    preset = write_preset(
        tmp_path / "long.yaml",
        tiny_model_dir,
        data,
        data={"max_seq_len": 128, "val_fraction": 0.25, "shuffle": False},
        train={"max_steps": 1, "micro_batch_size": 1},
        checkpoint={"every_n_steps": None},
    )
    result = cli("train", str(preset), "--no-tui", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "runs" / "long"
    start = events(run)[0]
    assert start["num_train_samples"] + start["num_val_samples"] == 4
    assert start["dropped_samples"] == 4 and start["truncated_samples"] == 0
    truncation = start["truncation"]
    assert truncation["mode"] == "right" and truncation["max_seq_len"] == 128
    assert truncation["train"]["dropped_long"] + truncation["validation"]["dropped_long"] == 4
    assert start["token_lengths"]["max"] > 128
    shown = result.stdout + result.stderr
    assert "4 of 8 samples are longer than max_seq_len 128: 0 truncated (right), 4 dropped" in shown
    assert shown.count("raise `data.max_seq_len`") >= 2  # the start line's hint and the summary's

    # The run recorded its prompt format, and final/ carries that template (bos included).
    record = json.loads((run / "prompt.json").read_text())
    assert record["bos"] == "in_template" and record["template_source"] == "builtin:alpaca"
    assert (run / "final" / "chat_template.jinja").read_text() == record["template"]
    assert record["template"].startswith("{{ bos_token }}")
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["truncation"] == "right"
