"""`tunewiz download` and `tunewiz push`: huggingface_hub's real code paths against a locally built HF
cache (offline) and a local fake Hub on 127.0.0.1 (online), the error table at the HfApi boundary,
staged folders that transformers and peft load, and a token that never shows up in any output."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx2
import huggingface_hub
import huggingface_hub.constants
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub import errors as hf_errors

from tunewiz.cli import main
from tunewiz.errors import TunewizError
from tunewiz.hub import HubContext, download_model, explain_hub_error, select_files, stage_push
from tunewiz.models.loading import load_model, resolve_model_dir

FAKE_TOKEN = "hf_tunewizFAKEtoken0123456789abcdefXYZ"
REPO = "someone/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
BASE_ID = "HuggingFaceTB/SmolLM2-135M"
IDS = torch.tensor([[1, 5, 9, 17, 33, 2]])


# --- a tiny run directory ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer_dir: Path) -> dict[str, object]:
    """A finished LoRA run: base model, final/ (adapter + merged), events, loss.png, eval results."""
    from tokenizers import Tokenizer

    from tunewiz.lora.layer import apply_lora, lora_state_dict
    from tunewiz.lora.peft_files import save_peft_adapter
    from tunewiz.models.config import LlamaConfig
    from tunewiz.models.llama import LlamaForCausalLM
    from tunewiz.models.loading import save_model
    from tunewiz.preset.files import dump_preset
    from tunewiz.preset.schema import Preset
    from tunewiz.run.events import EventWriter, read_events
    from tunewiz.train.export import merge_lora_state, split_lora_state
    from tunewiz.ui.lossplot import write_loss_plot

    root = tmp_path_factory.mktemp("hub_run")
    vocab = Tokenizer.from_file(str(bpe_tokenizer_dir / "tokenizer.json")).get_vocab_size()
    config = LlamaConfig.from_hf(
        {
            "model_type": "llama",
            "vocab_size": vocab,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 64,
            "bos_token_id": 0,
            "eos_token_id": 1,
        }
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.init_weights()
    base_dir = root / "base"
    save_model(model, base_dir, config)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bpe_tokenizer_dir / name, base_dir / name)

    targets = ["q_proj", "v_proj"]
    apply_lora(model, targets=targets, rank=4, alpha=8.0, dropout=0.0, seed=0)
    with torch.no_grad():  # B starts at zero; a non-zero B makes the adapter change the logits
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.2)
        expected = model(IDS)

    run_dir = root / "runs" / "tiny-lora"
    final = run_dir / "final"
    base, lora = split_lora_state(model.state_dict())
    save_peft_adapter(
        lora_state_dict(model),
        final / "adapter",
        base_model=BASE_ID,
        rank=4,
        alpha=8.0,
        dropout=0.0,
        targets=targets,
    )
    save_model(merge_lora_state(base, lora, scaling=8.0 / 4), final, config)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bpe_tokenizer_dir / name, final / name)
    (final / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 1}))

    preset = Preset.model_validate(
        {
            "name": "tiny-lora",
            "device": "cpu",
            "model": {"path": BASE_ID, "dtype": "fp32"},
            "lora": {"rank": 4, "alpha": 8, "targets": targets},
            "data": {"path": "tatsu-lab/alpaca", "max_seq_len": 64},
            "train": {"lr": 1e-3, "max_steps": 3},
        }
    )
    (run_dir / "config.yaml").write_text(dump_preset(preset))
    with EventWriter(run_dir / "events.jsonl") as events:
        events.write(
            "start",
            run="tiny-lora",
            model=BASE_ID,
            method="lora",
            device="cpu",
            dtype="fp32",
            world_size=1,
            micro_batch_size=4,
            grad_accum=1,
            global_batch_size=4,
            total_steps=3,
            steps_per_epoch=3,
            epochs=1,
            step=0,
            resumed_from=None,
            planned_peak_bytes=None,
            hardware="CPU (2 cores), 1 rank(s)",
            num_train_samples=12,
            num_val_samples=1,
            truncated_samples=0,
            trainable_params=512,
            total_params=40_000,
        )
        for step, loss in enumerate([3.0, 2.5, 2.25], start=1):
            events.write(
                "step",
                step=step,
                epoch=0,
                loss=loss,
                lr=1e-3,
                grad_norm=1.0,
                tokens=200,
                tokens_total=200 * step,
                tokens_per_s=800.0 + step,
                peak_memory_bytes=[300 * 2**20],
                elapsed=0.25 * step,
            )
        events.write("eval", step=3, val_loss=2.5)
        events.write("end", step=3, elapsed=0.75, final_dir=str(final), tokens_total=600)
    write_loss_plot(read_events(run_dir / "events.jsonl"), run_dir / "loss.png")
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "results.json").write_text(
        json.dumps(
            {
                "model": str(final),
                "adapter": str(final / "adapter"),
                "tasks": {"tiny_qa": {"acc,none": 0.75, "acc_stderr,none": 0.1}},
                "base": {"tasks": {"tiny_qa": {"acc,none": 0.5, "acc_stderr,none": 0.1}}},
                "limit": 8,
                "num_fewshot": 0,
                "lm_eval_version": "0.4.13",
                "date": "2026-01-02",
            }
        )
    )
    return {"run_dir": run_dir, "base_dir": base_dir, "expected": expected}


def _hf_logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def test_dry_run_merged_loads_in_transformers(run: dict, tmp_path: Path) -> None:
    import transformers

    out = tmp_path / "staged"
    staged = stage_push(run["run_dir"], out, repo_id="alice/tiny-merged", kind="merged")
    assert staged.files == (
        "README.md",
        "config.json",
        "generation_config.json",
        "loss.png",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "tunewiz-badge.svg",
    )
    assert sorted(p.name for p in out.iterdir()) == list(staged.files)  # exactly the folder, nothing else
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    torch.testing.assert_close(_hf_logits(hf), run["expected"], atol=1e-5, rtol=0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert tokenizer.decode(tokenizer("hello world")["input_ids"], skip_special_tokens=True) == "hello world"
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and card.data.base_model == BASE_ID
    assert (out / "tunewiz-badge.svg").read_text().startswith("<svg")


def test_dry_run_adapter_loads_in_peft(run: dict, tmp_path: Path) -> None:
    import peft
    import transformers

    out = tmp_path / "staged"
    staged = stage_push(run["run_dir"], out, repo_id="alice/tiny-lora")  # the adapter by default
    assert staged.kind == "adapter" and staged.warnings == ()
    assert staged.files == (
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "loss.png",
        "tokenizer.json",
        "tokenizer_config.json",
        "tunewiz-badge.svg",
    )
    base = transformers.AutoModelForCausalLM.from_pretrained(run["base_dir"], dtype=torch.float32)
    tuned = peft.PeftModel.from_pretrained(base, out).eval()
    torch.testing.assert_close(_hf_logits(tuned), run["expected"], atol=1e-5, rtol=0)

    card = ModelCard.load(out / "README.md")
    meta = card.data.to_dict()
    assert meta["base_model"] == BASE_ID and meta["datasets"] == ["tatsu-lab/alpaca"]
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "peft"
    assert {"tunewiz", "lora"} <= set(meta["tags"]) and meta["pipeline_tag"] == "text-generation"
    [result] = card.data.eval_results
    assert (result.dataset_type, result.metric_type, result.metric_value) == ("tiny_qa", "acc", 0.75)
    # Numbers from the run's own files: events.jsonl, config.yaml, eval/results.json.
    for line in (
        "| Hardware | CPU (2 cores), 1 rank(s) |",
        "| Peak memory | 300 MiB (process RSS) |",
        "| Throughput | 802 input tokens/s (median over steps, all ranks) |",
        "| Training time | 1 s |",
        "| Trained tokens | 600 |",
        "| LoRA rank / alpha / dropout | 4 / 8 / 0 |",
        "| tiny_qa | acc | 0.7500 ± 0.1000 | 0.5000 ± 0.1000 | +0.2500 |",
        "![Training and validation loss](loss.png)",
        "![Trained with tunewiz](tunewiz-badge.svg)",
    ):
        assert line in card.text, line


def test_dry_run_refuses_a_non_empty_folder_and_an_unfinished_run(run: dict, tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(TunewizError, match="already exists and is not empty"):
        stage_push(run["run_dir"], tmp_path / "busy", repo_id="a/b")
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["notes.txt"]

    unfinished = tmp_path / "runs" / "half"
    (unfinished / "checkpoints" / "step-4").mkdir(parents=True)
    (unfinished / "checkpoints" / "step-4" / "COMPLETE").write_text("")
    shutil.copy(run["run_dir"] / "config.yaml", unfinished / "config.yaml")
    with pytest.raises(
        TunewizError, match="has no `final/`: the run has not finished .its newest checkpoint is `step-4`"
    ) as e:
        stage_push(unfinished, tmp_path / "out", repo_id="a/b")
    assert e.value.hint == f"finish it with `tunewiz resume {unfinished}`, then push again"
    with pytest.raises(TunewizError, match="must be `USER/NAME`"):
        stage_push(run["run_dir"], tmp_path / "out", repo_id="just-a-name")


def test_dry_run_is_a_flag_that_takes_no_option_after_it(
    run: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--dry-run` before `--repo-id` no longer swallows it: it stages into RUN/push-dry-run/, and a second
    dry run replaces that folder; `--dry-run-dir DIR` stages elsewhere and refuses a non-empty DIR."""
    copy = Path(shutil.copytree(run["run_dir"], tmp_path / "runs" / "copy"))
    code, out, output = _invoke(["push", str(copy), "--dry-run", "--repo-id", "alice/tiny"], capsys)
    staged = copy / "push-dry-run"
    assert code == 0, output
    assert out.strip() == str(staged) and "alice/tiny" in (staged / "README.md").read_text()
    (staged / "stale.txt").write_text("from an earlier dry run")
    code, _, output = _invoke(["push", str(copy), "--dry-run", "--repo-id", "bob/tiny", "--merged"], capsys)
    assert code == 0, output
    assert not (staged / "stale.txt").exists() and "bob/tiny" in (staged / "README.md").read_text()
    assert "model.safetensors" in os.listdir(staged) and not list(copy.glob(".push-dry-run*"))

    mine = tmp_path / "mine"
    code, out, output = _invoke(["push", str(copy), "--dry-run-dir", str(mine), "--repo-id", "a/b"], capsys)
    assert code == 0 and out.strip() == str(mine) and (mine / "README.md").is_file(), output
    code, _, output = _invoke(["push", str(copy), "--dry-run-dir", str(mine), "--repo-id", "a/b"], capsys)
    assert code == 2 and f"`{mine}` already exists and is not empty" in output
    assert "hint: pass a new or empty directory to `--dry-run-dir`" in output


# --- push at the HfApi boundary ------------------------------------------------------------------


def _invoke(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the console entry point in process.

    Returns the exit code, stdout, and stdout + stderr as the user sees them.
    """
    argv = sys.argv
    sys.argv = ["tunewiz", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    out = capsys.readouterr()
    return code, out.out, out.out + out.err


def test_push_creates_the_repo_and_uploads_the_staged_folder(
    run: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str, dict]] = []

    def create_repo(self: HfApi, repo_id: str, **kwargs: object) -> str:
        calls.append(("create_repo", {"repo_id": repo_id, "token": self.token, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self: HfApi, *, repo_id: str, folder_path: Path, **kwargs: object) -> None:
        files = sorted(p.name for p in Path(folder_path).iterdir())
        card = (Path(folder_path) / "README.md").read_text()
        calls.append(
            (
                "upload_folder",
                {"repo_id": repo_id, "token": self.token, "files": files, "card": card, **kwargs},
            )
        )

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    code, stdout, output = _invoke(
        ["push", str(run["run_dir"]), "--repo-id", "alice/tiny", "--merged", "--private", "--license", "mit"],
        capsys,
    )
    assert code == 0, output
    assert stdout == "https://huggingface.co/alice/tiny\n"
    (name1, create), (name2, upload) = calls
    assert (name1, name2) == ("create_repo", "upload_folder")
    assert create == {
        "repo_id": "alice/tiny",
        "token": FAKE_TOKEN,
        "repo_type": "model",
        "private": True,
        "exist_ok": True,
    }
    assert upload["files"] == [
        "README.md",
        "config.json",
        "generation_config.json",
        "loss.png",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "tunewiz-badge.svg",
    ]
    assert upload["token"] == FAKE_TOKEN and upload["repo_type"] == "model"
    assert "license: mit" in upload["card"]
    assert FAKE_TOKEN not in output and FAKE_TOKEN not in upload["card"]


def _http_error(cls: type[Exception], status: int, server_message: str | None = None) -> Exception:
    response = httpx2.Response(
        status, request=httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    )
    return cls(
        f"{status} Client Error (token {FAKE_TOKEN})", response=response, server_message=server_message
    )


@pytest.mark.parametrize(
    ("error", "message", "hint"),
    [
        (
            _http_error(hf_errors.HfHubHTTPError, 403, f"You don't have the rights ({FAKE_TOKEN})"),
            "your token may not write to `alice/tiny` (HTTP 403)",
            "write",
        ),
        (_http_error(hf_errors.HfHubHTTPError, 401), "rejected your token (HTTP 401)", "hf auth login"),
        (
            _http_error(hf_errors.RepositoryNotFoundError, 404),
            "cannot write to `alice/tiny`",
            "hf auth whoami",
        ),
        (hf_errors.OfflineModeIsEnabled("offline"), "offline mode is on", "unset HF_HUB_OFFLINE"),
    ],
)
def test_push_errors_never_show_the_token(
    run: dict,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    message: str,
    hint: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def create_repo(self: HfApi, repo_id: str, **kwargs: object) -> str:
        raise error

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    with pytest.raises(TunewizError) as e:
        from tunewiz.hub import push_run

        push_run(run["run_dir"], repo_id="alice/tiny")
    assert message in e.value.message and hint in (e.value.hint or "")
    assert FAKE_TOKEN not in str(e.value)
    code, _, output = _invoke(["push", str(run["run_dir"]), "--repo-id", "alice/tiny"], capsys)
    assert code == 1 and message in output and FAKE_TOKEN not in output


def test_push_without_a_token(
    run: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    code, _, output = _invoke(["push", str(run["run_dir"]), "--repo-id", "alice/tiny"], capsys)
    assert code == 1
    assert "error: no Hugging Face token: pushing needs one with write access" in output
    assert "hint: `hf auth login` (or set `HF_TOKEN`)" in output
    code, _, output = _invoke(
        ["push", str(run["run_dir"]), "--repo-id", "alice/tiny", "--dry-run-dir", str(tmp_path / "d")], capsys
    )
    assert code == 0, output  # a dry run needs no token


# --- download: a local HF cache, offline -----------------------------------------------------------


def build_hf_cache(hub: Path, repo_id: str, source: Path, commit: str = COMMIT) -> Path:
    """Lay out `source`'s files the way huggingface_hub caches them.

    That is blobs/<sha256>, snapshot symlinks and refs/main.
    """
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in sorted(source.iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def _cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")} | env | {"NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tunewiz", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def test_download_offline_finds_the_cached_model(
    run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = build_hf_cache(tmp_path / "hf" / "hub", REPO, run["base_dir"])
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    done = _cli(["download", REPO], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(snapshot)
    assert "already in the cache" in done.stderr and f"model: {{path: {REPO}}}" in done.stderr

    missing = _cli(["download", "someone/not-here"], env)
    assert missing.returncode == 1
    assert (
        "error: offline mode is on (`HF_HUB_OFFLINE=1`) and `someone/not-here` is not in the local "
        "Hugging Face cache" in missing.stderr
    )
    assert "Traceback" not in missing.stderr

    # In process: the same cache resolves for training, and the model loads.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    result = download_model(REPO)
    assert result.offline and result.path == snapshot == resolve_model_dir(REPO)
    assert result.files == ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    assert load_model(result.path).config.num_hidden_layers == 2


# --- download: a fake Hub on 127.0.0.1 --------------------------------------------------------------


class FakeHub(BaseHTTPRequestHandler):
    """Just enough of the Hub's API for model_info, list_repo_tree and file downloads of one repo."""

    files: dict[str, bytes] = {}
    requests: list[str] = []

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _entry(self, name: str) -> dict[str, object]:
        data = self.files[name]
        sha = hashlib.sha256(data).hexdigest()
        return {
            "type": "file",
            "path": name,
            "rfilename": name,
            "size": len(data),
            "oid": sha[:40],
            "blobId": sha[:40],
            "lfs": {"oid": sha, "sha256": sha, "size": len(data), "pointerSize": 130},
        }

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = unquote(urlparse(self.path).path)
        FakeHub.requests.append(f"{self.command} {path}")
        repo = path.split("/api/models/", 1)[-1]
        if repo.startswith("org/gated"):
            return self._send(
                403, b"{}", {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access restricted"}
            )
        if repo.startswith("org/missing"):
            return self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"})
        if "/revision/nope" in path:
            return self._send(404, b"{}", {"X-Error-Code": "RevisionNotFound"})
        if path.startswith(f"/api/models/{REPO}/tree/"):
            return self._send(200, json.dumps([self._entry(n) for n in self.files]).encode())
        if path.startswith(f"/api/models/{REPO}"):
            info = {"id": REPO, "sha": COMMIT, "siblings": [self._entry(n) for n in self.files]}
            return self._send(200, json.dumps(info).encode())
        prefix = f"/{REPO}/resolve/"
        if path.startswith(prefix):
            name = path[len(prefix) :].split("/", 1)[1]
            data = self.files[name]
            etag = hashlib.sha256(data).hexdigest()
            return self._send(
                200,
                data,
                {
                    "X-Repo-Commit": COMMIT,
                    "ETag": f'"{etag}"',
                    "X-Linked-Etag": f'"{etag}"',
                    "X-Linked-Size": str(len(data)),
                },
            )
        return self._send(404, b"{}")

    do_HEAD = do_GET


@pytest.fixture
def fake_hub(run: dict) -> Iterator[str]:
    files = {p.name: p.read_bytes() for p in sorted(run["base_dir"].iterdir())}
    files |= {
        "pytorch_model.bin": b"pickle",
        "original/consolidated.00.pth": b"pickle",
        "README.md": b"# tiny",
        "onnx/model.safetensors": b"onnx",
    }
    FakeHub.files, FakeHub.requests = files, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_download_from_a_fake_hub_fetches_only_what_tunewiz_loads(
    run: dict, fake_hub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": fake_hub, "HF_HUB_DISABLE_XET": "1"}
    done = _cli(["download", REPO], env)
    assert done.returncode == 0, done.stderr
    snapshot = Path(done.stdout.strip())
    assert snapshot == tmp_path / "hf" / "hub" / "models--someone--tiny-llama" / "snapshots" / COMMIT
    assert sorted(p.name for p in snapshot.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert not any("pytorch_model.bin" in r or "original/" in r or "onnx/" in r for r in FakeHub.requests)
    assert f"{REPO} @ {COMMIT[:12]}: 4 files" in done.stderr
    # Training then resolves it offline through the cache.
    offline = _cli(["download", REPO], {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0 and offline.stdout.strip() == str(snapshot)
    # The cached tree lists `onnx/model.safetensors` too; resolution must not call the snapshot incomplete.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    assert resolve_model_dir(REPO) == snapshot


@pytest.mark.parametrize(
    ("repo", "args", "message", "hint"),
    [
        (
            "org/gated-model",
            [],
            "`org/gated-model` is a gated model: its license must be accepted",
            "accept it on https://huggingface.co/org/gated-model",
        ),
        ("org/missing", [], "model `org/missing` not found on the Hugging Face Hub", "check the repo id"),
        (REPO, ["--revision", "nope"], f"revision `nope` not found in `{REPO}`", "drop `--revision`"),
    ],
)
def test_download_errors_from_the_hub(
    fake_hub: str, tmp_path: Path, repo: str, args: list[str], message: str, hint: str
) -> None:
    done = _cli(["download", repo, *args], {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": fake_hub})
    assert done.returncode == 1, done.stderr
    assert f"error: {message}" in done.stderr and hint in done.stderr
    assert "hf auth login" in done.stderr or "revision" in message
    assert "Traceback" not in done.stderr


def test_download_says_at_once_when_the_hub_is_unreachable(tmp_path: Path) -> None:
    start = time.monotonic()
    # Port 9 (discard) on the loopback has no listener: the connection is refused at once.
    done = _cli(["download", REPO], {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert done.returncode == 1
    assert "error: cannot reach the Hugging Face Hub (ConnectError" in done.stderr
    assert time.monotonic() - start < 30


def test_select_files_and_disk_check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sizes = {
        "config.json": 10,
        "model-00001-of-00002.safetensors": 5,
        "model-00002-of-00002.safetensors": 5,
        "model.safetensors.index.json": 1,
        "pytorch_model.bin": 10,
        "original/consolidated.00.pth": 10,
        "tokenizer.json": 2,
        "chat_template.jinja": 1,
        "README.md": 3,
        "generation_config.json": 1,
    }
    assert sorted(select_files(sizes, "a/b")) == [
        "chat_template.jinja",
        "config.json",
        "generation_config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
    ]
    # google/gemma-3-4b-it: the processor's image files stay on the Hub (the vision tower's weights share
    # the shards with the language model, so those come along and loading skips them).
    gemma = dict.fromkeys(
        [
            "added_tokens.json",
            "chat_template.json",
            "config.json",
            "generation_config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "preprocessor_config.json",
            "processor_config.json",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer.model",
            "tokenizer_config.json",
        ],
        1,
    )
    assert sorted(set(gemma) - set(select_files(gemma, "google/gemma-3-4b-it"))) == [
        "preprocessor_config.json",
        "processor_config.json",
    ]
    with pytest.raises(
        TunewizError,
        match=r"`a/b` has no safetensors weights \(it has pytorch_model.bin\); "
        "tunewiz loads safetensors only, never pickled",
    ):
        select_files({"config.json": 1, "pytorch_model.bin": 9}, "a/b")

    # A petabyte of weights does not fit: refused before any byte is fetched.
    from huggingface_hub.hf_api import ModelInfo

    huge = ModelInfo(
        id="big/model",
        sha=COMMIT,
        siblings=[
            {"rfilename": "config.json", "size": 10, "blobId": "c" * 40},
            {
                "rfilename": "model.safetensors",
                "size": 10**15,
                "blobId": "d" * 40,
                "lfs": {"size": 10**15, "sha256": "e" * 64, "pointerSize": 130},
            },
        ],
    )
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "model_info", lambda self, repo_id, **kw: huge)
    monkeypatch.setattr(
        huggingface_hub, "snapshot_download", lambda *a, **kw: pytest.fail("must not download")
    )
    with pytest.raises(
        TunewizError, match=r"not enough disk space for `big/model`: it needs 1000000.00 GB"
    ) as e:
        download_model("big/model", output_dir=tmp_path / "out")
    assert "--output-dir" in (e.value.hint or "")


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (hf_errors.OfflineModeIsEnabled("x"), "offline mode is on"),
        (_http_error(hf_errors.GatedRepoError, 403), "is a gated model"),
        (
            _http_error(hf_errors.RepositoryNotFoundError, 404),
            "model `meta-llama/llama-3.2-1b-instruc` not found on the Hugging Face Hub "
            "(did you mean `meta-llama/Llama-3.2-1B-Instruct`?)",
        ),
        (_http_error(hf_errors.RevisionNotFoundError, 404), "revision `main` not found"),
        (hf_errors.LocalEntryNotFoundError("x"), "cannot reach the Hugging Face Hub, and"),
        (httpx2.ConnectTimeout("timed out"), "cannot reach the Hugging Face Hub (ConnectTimeout: timed out)"),
        (_http_error(hf_errors.HfHubHTTPError, 401), "rejected your token (HTTP 401)"),
        (
            _http_error(hf_errors.HfHubHTTPError, 403),
            "access to `meta-llama/llama-3.2-1b-instruc` denied (HTTP 403)",
        ),
    ],
)
def test_error_table(monkeypatch: pytest.MonkeyPatch, error: Exception, message: str) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    explained = explain_hub_error(
        error, HubContext("download", "meta-llama/llama-3.2-1b-instruc", token=FAKE_TOKEN)
    )
    assert explained is not None and message in explained.message
    assert FAKE_TOKEN not in str(explained)
    assert explain_hub_error(KeyError("x"), HubContext("download", "a/b")) is None
