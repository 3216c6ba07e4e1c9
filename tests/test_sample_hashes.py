"""The training samples of every shipped dataset are pinned: input ids and labels hash to what the
per-row path gave before the tokenization speed work (issue 16), computed on main at d7a958e.

Matrix: the shipped tiny SentencePiece tokenizer, the test SentencePiece tokenizer (non-legacy and
legacy prefix rule), byte-level tokenizer.json ones with and without bos, and the Qwen3/Gemma 3 model
templates' tokenizers × every shipped dataset × every template choice (the whole dataset with the
default template; the first 300 rows with each other one) × the rules that change tokens (training on
inputs, the pre-prompt.json rule, left/right/drop truncation).

The hashes depend on the pinned ``tokenizers``/``sentencepiece`` versions (the test tokenizers are
trained here); after a library upgrade changes them, recompute them at a commit known to be right.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tunewiz.data import build_datasets
from tunewiz.data.sources import shipped_datasets_dir
from tunewiz.preset.schema import DataSection
from tunewiz.text.tokenizer import load_tokenizer

TINY = Path(__file__).resolve().parent.parent / "tunewiz" / "assets" / "tiny"
DATASETS = sorted(p.stem for p in shipped_datasets_dir().glob("*.jsonl"))
TEXT_DATASETS = {"pretrain", "story-text"}
TOKENIZERS = ["tiny", "sp", "sp_legacy", "json_bos", "json_no_bos", "qwen3", "gemma3"]
OTHER_TEMPLATES = ["model", "alpaca", "llama2", "llama3", "chatml"]
# Rules that change tokens, on story-chat (multi-turn with a system prompt) and story-qa.
VARIANTS = {
    "train_on_inputs": ("story-chat", {"train_on_inputs": True}, False),
    "legacy": ("story-chat", {}, True),
    "left": ("story-qa", {"max_seq_len": 40, "truncation": "left"}, False),
    "right": ("story-chat", {"max_seq_len": 96, "truncation": "right"}, False),
    "drop": ("story-chat", {"max_seq_len": 96, "truncation": "drop"}, False),
}


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for tok in TOKENIZERS:
        for name in DATASETS:
            cases.append((tok, name, "auto"))
            if name not in TEXT_DATASETS:
                # the test SentencePiece tokenizers have no template of their own
                cases.extend(
                    (tok, name, t) for t in OTHER_TEMPLATES if t != "model" or tok not in ("sp", "sp_legacy")
                )
        cases.extend((tok, "variant", variant) for variant in VARIANTS)
    return cases


@pytest.fixture(scope="module")
def tokenizer_dirs(
    sp_tokenizer_dir: Path, bpe_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    from test_model_templates import _tokenizer_dir
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import processors

    root = tmp_path_factory.mktemp("hash_tokenizers")
    legacy = shutil.copytree(sp_tokenizer_dir, root / "sp_legacy")
    config = json.loads((legacy / "tokenizer_config.json").read_text())
    (legacy / "tokenizer_config.json").write_text(json.dumps({**config, "legacy": True}))
    qwen = shutil.copytree(bpe_tokenizer_dir, root / "json_no_bos")
    tok = HFTokenizer.from_file(str(qwen / "tokenizer.json"))
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.save(str(qwen / "tokenizer.json"))
    config = json.loads((qwen / "tokenizer_config.json").read_text())
    (qwen / "tokenizer_config.json").write_text(json.dumps({**config, "bos_token": None}))
    return {
        "tiny": TINY,
        "sp": sp_tokenizer_dir,
        "sp_legacy": legacy,
        "json_bos": bpe_tokenizer_dir,
        "json_no_bos": qwen,
        "qwen3": _tokenizer_dir(root, "qwen3"),
        "gemma3": _tokenizer_dir(root, "gemma3"),
    }


def _hash(cfg: DataSection, tokenizer_dir: Path, legacy: bool) -> str:
    """sha256 (first 16 hex digits) of every train sample's ids and labels and the truncation counts."""
    digest = hashlib.sha256()
    train, _, stats = build_datasets(cfg, load_tokenizer(tokenizer_dir), seed=0, legacy=legacy)
    for sample in train:
        digest.update(json.dumps([sample.input_ids, sample.labels]).encode())
    digest.update(json.dumps(stats.counts, sort_keys=True).encode())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize(("tok", "dataset", "choice"), _cases(), ids=["-".join(c) for c in _cases()])
def test_samples_are_bit_for_bit_the_pinned_ones(
    tok: str, dataset: str, choice: str, tokenizer_dirs: dict[str, Path]
) -> None:
    legacy = False
    if dataset == "variant":
        name, settings, legacy = VARIANTS[choice]
        cfg = DataSection(path=f"tunewiz:{name}", val_fraction=0.0, **{"max_seq_len": 4096, **settings})
    else:
        cfg = DataSection(
            path=f"tunewiz:{dataset}",
            val_fraction=0.0,
            max_seq_len=4096,
            template=choice,
            max_samples=None if choice == "auto" else 300,
        )
    actual = _hash(cfg, tokenizer_dirs[tok], legacy)
    key = f"{tok}-{dataset}-{choice}"
    assert EXPECTED.get(key) == actual, f"HASH {key!r}: {actual!r},"


EXPECTED = {
    "tiny-pretrain-auto": "c51fe1920eb49313",
    "tiny-story-chat-auto": "2280598aa0ef0a31",
    "tiny-story-chat-model": "3e0a7de3aa48f47c",
    "tiny-story-chat-alpaca": "477388b421de8a4b",
    "tiny-story-chat-llama2": "c69d65cdc7f7006e",
    "tiny-story-chat-llama3": "ba0a28796e9488cc",
    "tiny-story-chat-chatml": "69ab03833e1d22cc",
    "tiny-story-qa-auto": "7f3ca8299b16f2bc",
    "tiny-story-qa-model": "0a0cc1f17446ee5a",
    "tiny-story-qa-alpaca": "5ce7a186cae0748a",
    "tiny-story-qa-llama2": "07373eb6fb3e3399",
    "tiny-story-qa-llama3": "ed886886b5c918b6",
    "tiny-story-qa-chatml": "0e93563e7303a6f0",
    "tiny-story-qa-test-auto": "b3dcba5b2eecc3ee",
    "tiny-story-qa-test-model": "b3dcba5b2eecc3ee",
    "tiny-story-qa-test-alpaca": "b0464b01b9356faf",
    "tiny-story-qa-test-llama2": "7f2b47a93b884829",
    "tiny-story-qa-test-llama3": "7678b86fa8d2be15",
    "tiny-story-qa-test-chatml": "2d7021f94aab2d3b",
    "tiny-story-text-auto": "e74879f16f32ddf0",
    "tiny-variant-train_on_inputs": "7799fb8c453b3c7d",
    "tiny-variant-legacy": "2280598aa0ef0a31",
    "tiny-variant-left": "6d7ee0311eb6765a",
    "tiny-variant-right": "cd6e57970d706937",
    "tiny-variant-drop": "37850303afb0b9dd",
    "sp-pretrain-auto": "b03f3c73f523f4fb",
    "sp-story-chat-auto": "00e6b6173539b74a",
    "sp-story-chat-alpaca": "1bfe87dfff083a94",
    "sp-story-chat-llama2": "d4843ad823addfad",
    "sp-story-chat-llama3": "d66448ef6d35a3fe",
    "sp-story-chat-chatml": "d5facff034ed9a34",
    "sp-story-qa-auto": "ec7e02ff8cf8f2fc",
    "sp-story-qa-alpaca": "c6494ee6b166dbb7",
    "sp-story-qa-llama2": "9591f98ba9f8fe04",
    "sp-story-qa-llama3": "a6ead90d4d39bcc8",
    "sp-story-qa-chatml": "4886cfd155b0cc00",
    "sp-story-qa-test-auto": "7f8d0eff2519be13",
    "sp-story-qa-test-alpaca": "7f8d0eff2519be13",
    "sp-story-qa-test-llama2": "0158cee792418821",
    "sp-story-qa-test-llama3": "df84824fdc49fe03",
    "sp-story-qa-test-chatml": "ec3642b49e784a64",
    "sp-story-text-auto": "45331022a444c3be",
    "sp-variant-train_on_inputs": "7641c835da78380f",
    "sp-variant-legacy": "dde91d82f9953bea",
    "sp-variant-left": "042f10cac2fd5a88",
    "sp-variant-right": "6c92a79be045a002",
    "sp-variant-drop": "db74dfb3e0eb31ae",
    "sp_legacy-pretrain-auto": "b03f3c73f523f4fb",
    "sp_legacy-story-chat-auto": "e1094478a8d7438f",
    "sp_legacy-story-chat-alpaca": "c41f58c4f9802505",
    "sp_legacy-story-chat-llama2": "340498a27ee6a5a9",
    "sp_legacy-story-chat-llama3": "644e38dfe890e2e9",
    "sp_legacy-story-chat-chatml": "40ec51bae8fdec77",
    "sp_legacy-story-qa-auto": "98967446fafee6a1",
    "sp_legacy-story-qa-alpaca": "1a7c09c89b9900ed",
    "sp_legacy-story-qa-llama2": "47564e183b8ed97d",
    "sp_legacy-story-qa-llama3": "f0f1a19e953f70e5",
    "sp_legacy-story-qa-chatml": "b14190a713ec0c1e",
    "sp_legacy-story-qa-test-auto": "054e2b6aff5e5a46",
    "sp_legacy-story-qa-test-alpaca": "054e2b6aff5e5a46",
    "sp_legacy-story-qa-test-llama2": "2fba63149b14b15b",
    "sp_legacy-story-qa-test-llama3": "5f095f72d4f79499",
    "sp_legacy-story-qa-test-chatml": "4e92b38a8a34356f",
    "sp_legacy-story-text-auto": "45331022a444c3be",
    "sp_legacy-variant-train_on_inputs": "14837009265b6caf",
    "sp_legacy-variant-legacy": "dde91d82f9953bea",
    "sp_legacy-variant-left": "042f10cac2fd5a88",
    "sp_legacy-variant-right": "d11412ea49c7bbb6",
    "sp_legacy-variant-drop": "b6bac2523fb13999",
    "json_bos-pretrain-auto": "61e6f2215cf69436",
    "json_bos-story-chat-auto": "b72c9f15085ca07e",
    "json_bos-story-chat-model": "ec8dce524518023c",
    "json_bos-story-chat-alpaca": "189175c6b855eed7",
    "json_bos-story-chat-llama2": "878188c484897310",
    "json_bos-story-chat-llama3": "36114e40bc295885",
    "json_bos-story-chat-chatml": "ec8dce524518023c",
    "json_bos-story-qa-auto": "932d5f089748e17a",
    "json_bos-story-qa-model": "30a23817230067cf",
    "json_bos-story-qa-alpaca": "41ba45aa2fe80ed1",
    "json_bos-story-qa-llama2": "11fe71d130f3d997",
    "json_bos-story-qa-llama3": "63cb28ca2d14017e",
    "json_bos-story-qa-chatml": "30a23817230067cf",
    "json_bos-story-qa-test-auto": "f3b7c430bb9dff00",
    "json_bos-story-qa-test-model": "f3b7c430bb9dff00",
    "json_bos-story-qa-test-alpaca": "1a020fdbba219ae7",
    "json_bos-story-qa-test-llama2": "1f5807c63891982c",
    "json_bos-story-qa-test-llama3": "012598044e706436",
    "json_bos-story-qa-test-chatml": "f3b7c430bb9dff00",
    "json_bos-story-text-auto": "08dbe16c8645a36c",
    "json_bos-variant-train_on_inputs": "1ccee7b70cd736c3",
    "json_bos-variant-legacy": "b72c9f15085ca07e",
    "json_bos-variant-left": "9888b718cfac851c",
    "json_bos-variant-right": "bbce2253b30db8a4",
    "json_bos-variant-drop": "50a128d67381b93c",
    "json_no_bos-pretrain-auto": "665677acc87e4f43",
    "json_no_bos-story-chat-auto": "7c5c69a882be4d67",
    "json_no_bos-story-chat-model": "534357fed8b31e1b",
    "json_no_bos-story-chat-alpaca": "93838d8ec90fcf91",
    "json_no_bos-story-chat-llama2": "eb27ba7b3ebbf95d",
    "json_no_bos-story-chat-llama3": "baeb0475d8600318",
    "json_no_bos-story-chat-chatml": "534357fed8b31e1b",
    "json_no_bos-story-qa-auto": "200561897d676584",
    "json_no_bos-story-qa-model": "2c2606bfa2aa9c9a",
    "json_no_bos-story-qa-alpaca": "a8557bf70c6e9ab2",
    "json_no_bos-story-qa-llama2": "b98fa67c55a5c732",
    "json_no_bos-story-qa-llama3": "4a044b790f5b33e2",
    "json_no_bos-story-qa-chatml": "2c2606bfa2aa9c9a",
    "json_no_bos-story-qa-test-auto": "ceb869c73ab59149",
    "json_no_bos-story-qa-test-model": "ceb869c73ab59149",
    "json_no_bos-story-qa-test-alpaca": "d8aaa0fcbc7a7f81",
    "json_no_bos-story-qa-test-llama2": "6dd42c8be77ef627",
    "json_no_bos-story-qa-test-llama3": "0ced274a4f674fdb",
    "json_no_bos-story-qa-test-chatml": "ceb869c73ab59149",
    "json_no_bos-story-text-auto": "df1bd0f05cbb545c",
    "json_no_bos-variant-train_on_inputs": "1736bc8546919d97",
    "json_no_bos-variant-legacy": "7c5c69a882be4d67",
    "json_no_bos-variant-left": "5caabd8b419b2037",
    "json_no_bos-variant-right": "12c0bc876e229e69",
    "json_no_bos-variant-drop": "eb8e74c2c7329e9b",
    "qwen3-pretrain-auto": "111bc89f4a15e4b9",
    "qwen3-story-chat-auto": "c9da296724c1c482",
    "qwen3-story-chat-model": "8b5e0a14b7ab47dc",
    "qwen3-story-chat-alpaca": "9a27d446a78fc081",
    "qwen3-story-chat-llama2": "d586ff0fe21193ef",
    "qwen3-story-chat-llama3": "2d03e85c8e1d514d",
    "qwen3-story-chat-chatml": "899ad36696849051",
    "qwen3-story-qa-auto": "7f79f03d875a4c7f",
    "qwen3-story-qa-model": "c8939173823f9434",
    "qwen3-story-qa-alpaca": "3f62fe13bc2035ae",
    "qwen3-story-qa-llama2": "1595e1cf223b56ce",
    "qwen3-story-qa-llama3": "e2adb533b2b5067a",
    "qwen3-story-qa-chatml": "8b21cb90de195013",
    "qwen3-story-qa-test-auto": "553ecef353dd0246",
    "qwen3-story-qa-test-model": "553ecef353dd0246",
    "qwen3-story-qa-test-alpaca": "d46433d87230a713",
    "qwen3-story-qa-test-llama2": "a3175580e4f5e466",
    "qwen3-story-qa-test-llama3": "344a3e3bebd28407",
    "qwen3-story-qa-test-chatml": "b5a09e309a3f356c",
    "qwen3-story-text-auto": "1b7c5974cb083766",
    "qwen3-variant-train_on_inputs": "7e1158428a0b356d",
    "qwen3-variant-legacy": "37f4cf5916f714e0",
    "qwen3-variant-left": "687b0fd28e5adef1",
    "qwen3-variant-right": "8f97698525280595",
    "qwen3-variant-drop": "082d661d0e319031",
    "gemma3-pretrain-auto": "36602f1259a98c4c",
    "gemma3-story-chat-auto": "aab6ee5b13196a47",
    "gemma3-story-chat-model": "70bf0d4212e3e0e8",
    "gemma3-story-chat-alpaca": "10618c3e06317f48",
    "gemma3-story-chat-llama2": "3985e25a45828821",
    "gemma3-story-chat-llama3": "18352ea04fe1d5d0",
    "gemma3-story-chat-chatml": "07d6331466c25265",
    "gemma3-story-qa-auto": "eb6c9f483d301e53",
    "gemma3-story-qa-model": "d5918aca9edc7c09",
    "gemma3-story-qa-alpaca": "e531024a7b2b177d",
    "gemma3-story-qa-llama2": "2951e146c6cd1965",
    "gemma3-story-qa-llama3": "9d667a1f5953e151",
    "gemma3-story-qa-chatml": "24dee0a9cd016c2e",
    "gemma3-story-qa-test-auto": "7bc156b4a8a27fed",
    "gemma3-story-qa-test-model": "7bc156b4a8a27fed",
    "gemma3-story-qa-test-alpaca": "da673c8a1a653cb7",
    "gemma3-story-qa-test-llama2": "53ae1b30df917be1",
    "gemma3-story-qa-test-llama3": "64d49d8b195a7663",
    "gemma3-story-qa-test-chatml": "82f9b556fc5541de",
    "gemma3-story-text-auto": "fa7c3d92c05aa900",
    "gemma3-variant-train_on_inputs": "361f8e659db92cef",
    "gemma3-variant-legacy": "aab6ee5b13196a47",
    "gemma3-variant-left": "d0edd69522cec63e",
    "gemma3-variant-right": "881d1e18c59d6613",
    "gemma3-variant-drop": "c287eb04b101533d",
}
