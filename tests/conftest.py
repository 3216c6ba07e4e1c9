"""Shared test setup: no test may reach the network."""

import os

# Set before any test imports huggingface_hub/transformers/datasets, which read these at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# Prepared data (tunewiz.data.prepared) goes to a fresh directory of this session, never ~/.cache.
if "TUNEWIZ_CACHE" not in os.environ:
    import tempfile as _tempfile

    os.environ["TUNEWIZ_CACHE"] = _tempfile.mkdtemp(prefix="tunewiz-prepared-")


# --- tokenizer fixtures (tests/test_tokenizer.py, tests/test_data.py) ---------------------------------
import json as _json
import random as _random
from pathlib import Path as _Path

import pytest as _pytest


@_pytest.fixture(autouse=True)
def _restore_signal_handlers() -> object:
    """Put back the SIGINT/SIGTERM/SIGHUP handlers a test changes (the Ctrl-C tests set Python's own; a
    command run in this process sets its own while it runs)."""
    import signal

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@_pytest.fixture
def ctrl_c() -> None:
    """Ctrl-C as a terminal delivers it, also where the suite runs with SIGINT ignored (started in the
    background by a non-interactive shell, `cmd &`, or under nohup: children inherit the ignore): Python's
    own handler in this process. A handled signal is reset to its default at exec, so the subprocesses
    a test starts get the default too, which Python turns into ``KeyboardInterrupt``."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)


_WORDS = (
    "the quick brown fox jumps over lazy dog hello world assistant user answer question tokenizer "
    "model data train learn python code llama chat template is a of to and in it what why how"
).split()


def _corpus(n: int = 3000) -> list[str]:
    rng = _random.Random(0)
    return [
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))) + rng.choice([".", "!", "?", ""])
        for _ in range(n)
    ]


@_pytest.fixture(scope="session")
def sp_tokenizer_dir(tmp_path_factory: _pytest.TempPathFactory) -> _Path:
    """A Llama-style SentencePiece tokenizer dir: BPE, byte fallback, identity normalisation, <s>/</s>."""
    import sentencepiece as spm

    out = tmp_path_factory.mktemp("sp_tok")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_prefix=str(out / "tokenizer"),
        vocab_size=600,
        model_type="bpe",
        hard_vocab_limit=False,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    (out / "tokenizer.vocab").unlink()
    (out / "tokenizer_config.json").write_text(
        _json.dumps(
            {
                "tokenizer_class": "LlamaTokenizer",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "add_bos_token": True,
                "add_eos_token": False,
                "legacy": False,
            }
        )
    )
    return out


@_pytest.fixture(scope="session")
def bpe_tokenizer_dir(tmp_path_factory: _pytest.TempPathFactory) -> _Path:
    """A byte-level BPE tokenizer.json with Llama-3-style special tokens and a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )
    out = tmp_path_factory.mktemp("bpe_tok")
    tok.save(str(out / "tokenizer.json"))
    chatml = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
        "+ '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ "
        "'<|im_start|>assistant\\n' }}{% endif %}"
    )
    (out / "tokenizer_config.json").write_text(
        _json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<|begin_of_text|>",
                "eos_token": "<|end_of_text|>",
                "chat_template": chatml,
            }
        )
    )
    return out


# --- end-to-end run fixtures (tests/test_recipe.py, tests/test_resume.py, tests/test_run_plan.py) ----------
@_pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: _pytest.TempPathFactory) -> _Path:
    """A ~100k-parameter random Llama with its own tokenizer (see tests/runs.py)."""
    from runs import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@_pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: _pytest.TempPathFactory) -> _Path:
    from runs import write_dataset

    return write_dataset(tmp_path_factory.mktemp("tiny_data") / "qa.jsonl")


@_pytest.fixture(scope="session")
def trained_run(
    tmp_path_factory: _pytest.TempPathFactory, tiny_model_dir: _Path, tiny_dataset: _Path
) -> _Path:
    """THE trained run of the test session, trained once: `tunewiz train` (torchrun, one rank) on
    tests/runs.py's default preset: LoRA on the tiny random Llama, 6 steps of micro-batch 4, a checkpoint
    every 2 steps, and (`runs.SAMPLED`) a validation every 2 steps with greedy replies to 3 validation
    prompts. The golden losses, the resume, the replies and the planner checks all read it. Tests only
    read it; one that would change it copies it first (`shutil.copytree`)."""
    from runs import SAMPLED, cli, write_preset

    work = tmp_path_factory.mktemp("trained_run")
    preset = write_preset(work / "golden.yaml", tiny_model_dir, tiny_dataset, train=SAMPLED)
    result = cli("train", str(preset), "--no-tui", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    return work / "runs" / "golden"


@_pytest.fixture(scope="session")
def two_rank_run(
    tmp_path_factory: _pytest.TempPathFactory, tiny_model_dir: _Path, tiny_dataset: _Path
) -> _Path:
    """`trained_run`'s preset on one node with two ranks (torchrun, FSDP2 over gloo), micro-batch 2 so the
    global batch is the same 4, trained once: tests/test_recipe.py checks it against the one-rank run and
    tests/test_multinode.py compares two one-rank nodes with it. Tests only read it."""
    from runs import SAMPLED, cli, write_preset

    work = tmp_path_factory.mktemp("two_rank_run")
    preset = write_preset(
        work / "fsdp.yaml", tiny_model_dir, tiny_dataset, train={"micro_batch_size": 2, **SAMPLED}
    )
    result = cli("train", str(preset), "--no-tui", "--nproc-per-node", "2", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    return work / "runs" / "fsdp"
