"""`tunewiz chat` and the inference loader on a tiny random model with a real tokenizer: a run-like
directory (base model named in config.yaml, PEFT adapter and merged weights in final/), one-shot
answers from --prompt and from piped stdin, --compare-base, the interactive loop, and bad input."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from tunewiz.cli import main
from tunewiz.inference.generate import SamplingParams, generate
from tunewiz.inference.load import ChatSession, base_model_only, load_for_inference, prompt_builder_for
from tunewiz.lora.layer import apply_lora, lora_state_dict
from tunewiz.lora.merge import merge_lora
from tunewiz.lora.peft_files import save_peft_adapter
from tunewiz.models.config import LlamaConfig
from tunewiz.models.llama import LlamaForCausalLM
from tunewiz.models.loading import load_model, save_model
from tunewiz.text.prompt import new_prompt_format, save_tokenizer_with_prompt, write_prompt_record
from tunewiz.text.tokenizer import load_tokenizer

PROMPT = "what is the quick fox?"
MAX_NEW = "12"


def _model_dir(out: Path, tokenizer_dir: Path, seed: int) -> Path:
    """A random ~60k-parameter Llama saved with the tokenizer of ``tokenizer_dir``."""
    tokenizer = load_tokenizer(tokenizer_dir)
    config = LlamaConfig(
        model_type="llama",
        vocab_size=tokenizer.vocab_size,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=12,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.init_weights(std=0.1)  # peaked enough that greedy output is a varied sequence
    save_model(model, out, config)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer_dir: Path) -> Path:
    return _model_dir(tmp_path_factory.mktemp("base"), bpe_tokenizer_dir, seed=0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, base_dir: Path) -> Path:
    """What `tunewiz train` leaves: config.yaml naming the base, final/adapter, merged final/ weights."""
    run = tmp_path_factory.mktemp("runs") / "tiny-lora"
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"name: tiny-lora\nmethod: lora\ndevice: cpu\nmodel:\n  path: {base_dir}\n  dtype: fp32\n"
        "lora:\n  rank: 4\n  alpha: 8\n  targets: [q_proj, v_proj, down_proj]\ndata:\n  path: "
        "tunewiz:story-qa\n"
    )
    model = load_model(base_dir)
    targets = ["q_proj", "v_proj", "down_proj"]
    apply_lora(model, targets=targets, rank=4, alpha=8.0, dropout=0.0, seed=0)
    with torch.no_grad():  # a trained-looking adapter: B is no longer zero, so answers change
        g = torch.Generator().manual_seed(2)  # seed 1 makes the first answer token a stop token
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    save_peft_adapter(
        lora_state_dict(model),
        run / "final" / "adapter",
        base_model=str(base_dir),
        rank=4,
        alpha=8.0,
        dropout=0.0,
        targets=targets,
    )
    save_model(merge_lora(model), run / "final", model.config)
    # The prompt record and final/ tokenizer, as training writes them.
    tokenizer = load_tokenizer(base_dir)
    prompt = new_prompt_format(tokenizer.chat_template, tokenizer)
    write_prompt_record(run, prompt)
    save_tokenizer_with_prompt(tokenizer, run / "final", prompt)
    return run


def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str, stdin: str = ""
) -> tuple[int, str, str]:
    """Run `tunewiz ARGS` in-process with ``stdin`` piped in (not a TTY).

    Returns (exit code, stdout, stderr).
    """
    monkeypatch.setattr(sys, "argv", ["tunewiz", *args])
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    out = capsys.readouterr()
    return code, out.out, out.err


def expected_answer(model_dir: Path, adapter: Path | None, text: str) -> str:
    """The greedy answer computed without the chat code: template, generate, decode."""
    from tunewiz.lora.peft_files import load_peft_adapter

    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir)
    if adapter is not None:
        load_peft_adapter(model, adapter)
    # The tokenizer adds bos (its tokenizer.json post-processor), so the prompt starts with it, as
    # training samples do; the model's ChatML template does not render it.
    rendered = tokenizer.chat_template.render([{"role": "user", "content": text}], add_generation_prompt=True)
    ids = [tokenizer.bos_id, *tokenizer.encode(rendered.removeprefix("<|begin_of_text|>"))]
    [out] = generate(
        model.eval(),
        [ids],
        SamplingParams(max_new_tokens=int(MAX_NEW)),
        stop_ids=tokenizer.stop_ids,
        pad_id=tokenizer.pad_id,
    )
    return tokenizer.decode(out)


def test_load_run_dir_applies_the_adapter_unmerged(run_dir: Path, base_dir: Path) -> None:
    loaded = load_for_inference(str(run_dir), device="cpu")
    assert loaded.has_adapter and loaded.base_name == str(base_dir)
    assert loaded.description == f"{run_dir}: {base_dir} + LoRA adapter (rank 4)"
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    ids = torch.tensor([[5, 17, 33, 2, 90]])
    with torch.no_grad():
        tuned = loaded.model(ids)
        with base_model_only(loaded):
            base = loaded.model(ids)
        again = loaded.model(ids)
        merged = load_for_inference(str(run_dir), merged=True).model(ids)
        plain = load_model(base_dir)(ids)
    torch.testing.assert_close(base, plain, rtol=0, atol=0)  # switched off, the adapter adds exactly nothing
    torch.testing.assert_close(again, tuned, rtol=0, atol=0)  # and it is back on afterwards
    torch.testing.assert_close(merged, tuned, rtol=1e-4, atol=1e-5)
    assert (tuned - base).abs().max() > 0.1


def test_prompt_on_a_run_dir_prints_the_answer(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(
        monkeypatch, capsys, "chat", str(run_dir), "--prompt", PROMPT, "--max-new-tokens", MAX_NEW
    )
    assert code == 0, err
    answer = expected_answer(run_dir / "final", None, PROMPT)  # final/ holds the merged weights
    assert answer.strip() and out == answer + "\n"
    assert "+ LoRA adapter (rank 4)" in err


def test_piped_stdin_is_one_prompt(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(
        monkeypatch, capsys, "chat", str(run_dir), "--max-new-tokens", MAX_NEW, stdin=PROMPT + "\n"
    )
    assert code == 0
    assert out == expected_answer(run_dir / "final", None, PROMPT) + "\n"


def test_compare_base_shows_both_answers(
    run_dir: Path, base_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(
        monkeypatch,
        capsys,
        "chat",
        str(run_dir),
        "--prompt",
        PROMPT,
        "--compare-base",
        "--max-new-tokens",
        MAX_NEW,
    )
    assert code == 0, err
    base, tuned = expected_answer(base_dir, None, PROMPT), expected_answer(run_dir / "final", None, PROMPT)
    assert base != tuned
    assert out == f"--- base model (adapter off) ---\n{base}\n\n--- fine-tuned ---\n{tuned}\n"


def test_comparison_renders_side_by_side() -> None:
    from rich.console import Console

    from tunewiz.cli.chat import render_comparison

    console = Console(record=True, width=80, color_system=None)
    console.print(render_comparison("base says hi", "tuned says hello"))
    lines = console.export_text().splitlines()
    assert "base model (adapter off)" in lines[0] and "fine-tuned" in lines[0]
    assert any("base says hi" in line and "tuned says hello" in line for line in lines)


def test_adapter_flag_on_a_model_dir(
    run_dir: Path, base_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(
        monkeypatch,
        capsys,
        "chat",
        str(base_dir),
        "--adapter",
        str(run_dir / "final" / "adapter"),
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        MAX_NEW,
    )
    assert code == 0
    assert out == expected_answer(base_dir, run_dir / "final" / "adapter", PROMPT) + "\n"


def test_session_keeps_turns_and_saves_json(run_dir: Path, tmp_path: Path) -> None:
    loaded = load_for_inference(str(run_dir))
    prompts, warning = prompt_builder_for(str(run_dir), loaded.tokenizer)
    assert warning is None and prompts.format.template_source == "tokenizer_config.json"
    session = ChatSession(loaded, prompts, SamplingParams(max_new_tokens=6), system="be brief")
    first = "".join(session.reply("hello"))
    assert session.messages == [{"role": "user", "content": "hello"}, {"role": "assistant", "content": first}]
    text = loaded.tokenizer.decode(session.prompt_ids("again"), skip_special=False)
    assert (
        text == "<|begin_of_text|><|im_start|>system\nbe "
        "brief<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
        f"{first}<|im_end|>\n<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\n"
    )
    session.save(tmp_path / "chat.json")
    saved = json.loads((tmp_path / "chat.json").read_text())
    assert saved["messages"][0] == {"role": "system", "content": "be brief"} and len(saved["messages"]) == 3
    session.reset()
    assert session.messages == []


def test_a_model_without_chat_template_falls_back_with_a_warning(
    tmp_path: Path,
    sp_tokenizer_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model_dir = _model_dir(tmp_path / "sp", sp_tokenizer_dir, seed=2)
    code, out, err = cli(
        monkeypatch, capsys, "chat", str(model_dir), "--prompt", "hello", "--max-new-tokens", "4"
    )
    assert code == 0, err
    assert "warning:" in err and "has no chat template" in err and "alpaca" in err


def test_interactive_chat_in_a_terminal(run_dir: Path, tmp_path: Path) -> None:
    import pexpect

    env = {**os.environ, "NO_COLOR": "1", "HF_HUB_OFFLINE": "1", "TERM": "dumb"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "tunewiz", "chat", str(run_dir), "--max-new-tokens", "6"],
        env=env,
        encoding="utf-8",
        timeout=90,
        dimensions=(40, 120),
    )
    child.expect_exact("Commands:")  # the line may wrap after it (long temp paths)
    child.expect_exact("you> ")
    child.sendline("hello")
    child.expect_exact("model> ")
    child.expect_exact("you> ")
    child.sendline("/help")
    child.expect_exact("several lines".capitalize())
    child.sendline("/system be brief")
    child.expect_exact("system prompt set")
    child.sendline("Tom has a red ball. \\")  # a story and a question as one turn
    child.expect_exact("... ")
    child.sendline("What does Tom have?")
    child.expect_exact("model> ")
    child.expect_exact("you> ")
    child.sendline(f"/save {tmp_path / 'chat.json'}")
    child.expect_exact("saved to")
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    messages = json.loads((tmp_path / "chat.json").read_text())["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[0]["content"] == "be brief"
    assert messages[1]["content"] == "Tom has a red ball. \nWhat does Tom have?"


@pytest.mark.parametrize(
    ("lines", "turn"),
    [
        (["hello"], "hello"),
        (["Tom has a ball. \\", "Who has it?"], "Tom has a ball. \nWho has it?"),
        (['"""', "Line one.", "", "Line two.", '"""'], "Line one.\n\nLine two."),
        (['"""Once upon a time.', 'Who?"""'], "Once upon a time.\nWho?"),
        (['"""one line"""'], "one line"),
        (["unfinished \\"], "unfinished"),  # input ends mid-turn: what was typed is the turn
    ],
)
def test_read_turn_joins_continued_lines_and_blocks(lines: list[str], turn: str) -> None:
    from tunewiz.cli.chat import read_turn

    feed = iter(lines)
    prompts: list[str] = []

    def read_line(prompt: str) -> str:
        prompts.append(prompt)
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    assert read_turn(read_line) == turn
    assert prompts[0] == "you> " and all(p == "... " for p in prompts[1:])


def _unfinished(tmp_path: Path, run_dir: Path, checkpoint: bool) -> Path:
    run = tmp_path / "unfinished"
    run.mkdir()
    shutil.copy(run_dir / "config.yaml", run / "config.yaml")
    if checkpoint:
        (run / "checkpoints" / "step-5").mkdir(parents=True)
        (run / "checkpoints" / "step-5" / "COMPLETE").touch()
    return run


@pytest.mark.parametrize("checkpoint", [True, False])
def test_a_run_without_final_weights_is_an_error(
    tmp_path: Path,
    run_dir: Path,
    checkpoint: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = _unfinished(tmp_path, run_dir, checkpoint)
    code, out, err = cli(monkeypatch, capsys, "chat", str(run), "--prompt", "hi")
    assert code == 2 and out == ""
    assert err.startswith(f"error: run `{run}` has no final weights")
    if checkpoint:
        assert "step-5" in err and f"hint: finish it with `tunewiz resume {run}`" in err
    else:
        assert f"hint: train it again: `tunewiz train {run / 'config.yaml'}" in err


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--prompt", "  "], "", "error: the prompt is empty"),
        ([], "\n", "error: the prompt is empty (nothing on stdin)"),
        (["--prompt", "hi", "--temperature", "-1"], "", "error: --temperature is -1.0; it must be >= 0"),
        (["--prompt", "hi", "--top-p", "0"], "", "error: --top-p is 0.0; it must be in (0, 1]"),
        (["--prompt", "hi", "--top-p", "1.5"], "", "error: --top-p is 1.5"),
        (["--prompt", "hi", "--top-k", "-3"], "", "error: --top-k is -3"),
        (["--prompt", "hi", "--max-new-tokens", "0"], "", "error: --max-new-tokens is 0"),
        (["--prompt", "hi", "--device", "tpu"], "", "error: --device is `tpu`"),
    ],
)
def test_bad_input_gives_error_and_hint(
    run_dir: Path,
    args: list[str],
    stdin: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = cli(monkeypatch, capsys, "chat", str(run_dir), *args, stdin=stdin)
    assert code == 2 and out == ""
    assert err.startswith(message), err
    assert "\nhint: " in err


def test_compare_base_without_an_adapter_is_an_error(
    base_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(monkeypatch, capsys, "chat", str(base_dir), "--prompt", "hi", "--compare-base")
    assert code == 2
    assert "error: --compare-base needs a LoRA adapter" in err and "hint: " in err


def test_a_missing_model_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(monkeypatch, capsys, "chat", str(tmp_path / "nope"), "--prompt", "hi")
    assert code == 2 and "does not exist" in err and "hint: " in err
