"""Merge equivalence: for every LoRA target the preset accepts, on every supported shape (tied embeddings
included), transformers on the merged `final/` computes the logits of peft on base + `final/adapter`.
Both come from the real export (`export_final`); a target that cannot be merged faithfully is refused
before training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hf_pairs import random_pair
from test_model_parity import CASES

from tunewiz.errors import TunewizError
from tunewiz.preset.schema import LORA_TARGETS, Preset
from tunewiz.run.directory import RunDir


def _preset(model_dir: Path, targets: list[str], **output: bool) -> Preset:
    return Preset.model_validate(
        {
            "name": "merge",
            "device": "cpu",
            "model": {"path": str(model_dir), "dtype": "fp32"},
            "lora": {"rank": 4, "alpha": 8.0, "targets": targets},
            "data": {"path": "x.jsonl"},
            "output": output,
        }
    )


@pytest.mark.parametrize("case", list(CASES))
def test_merged_final_equals_peft_on_base_plus_adapter(
    case: str, tmp_path: Path, bpe_tokenizer_dir: Path
) -> None:
    import peft
    import transformers

    from tunewiz.lora.layer import apply_lora
    from tunewiz.models.loading import save_model
    from tunewiz.train.export import export_final
    from tunewiz.train.launcher import check_mergeable

    class_name, kwargs = CASES[case]
    _, ours = random_pair(class_name, kwargs, perturb=True)
    base = tmp_path / "base"
    save_model(ours, base, ours.config)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(bpe_tokenizer_dir / name, base / name)
    tied = bool(ours.config.tie_word_embeddings)  # Gemma ties by default
    targets = [t for t in LORA_TARGETS if not (tied and t == "lm_head")]  # lm_head on tied: refused
    preset = _preset(base, targets)
    check_mergeable(preset, base)

    apply_lora(ours, targets=targets, rank=4, alpha=8.0, dropout=0.0, seed=0)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a trained-looking adapter: B non-zero everywhere
        for name, param in ours.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    export_final(run, ours.state_dict(), preset=preset, model_dir=base)

    adapter_config = json.loads((run.adapter / "adapter_config.json").read_text())
    assert sorted(adapter_config["target_modules"]) == sorted(targets)
    ids = torch.randint(0, kwargs["vocab_size"], (2, 12), generator=generator)
    merged = transformers.AutoModelForCausalLM.from_pretrained(run.final, dtype=torch.float32).eval()
    adapted = peft.PeftModel.from_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), run.adapter
    ).eval()
    plain = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = adapted(ids).logits
        torch.testing.assert_close(merged(ids).logits, expected, atol=1e-4, rtol=0)
        assert not torch.allclose(plain(ids).logits, expected, atol=1e-3), "the adapter changed nothing"
    assert merged.config.tie_word_embeddings == tied


def test_lm_head_lora_on_tied_embeddings_is_refused_unless_adapter_only(tmp_path: Path) -> None:
    from tunewiz.train.launcher import check_mergeable

    (tmp_path / "config.json").write_text(json.dumps({"tie_word_embeddings": True}))
    with pytest.raises(TunewizError) as err:
        check_mergeable(_preset(tmp_path, ["q_proj", "lm_head"]), tmp_path)
    assert "lm_head" in err.value.message and "tie_word_embeddings" in err.value.message
    assert "output.merged=false" in (err.value.hint or "")
    check_mergeable(_preset(tmp_path, ["q_proj", "lm_head"], merged=False), tmp_path)  # adapter only: exact
    (tmp_path / "config.json").write_text(json.dumps({"tie_word_embeddings": False}))
    check_mergeable(_preset(tmp_path, ["q_proj", "lm_head"]), tmp_path)
    # embed_tokens is not a target the preset accepts, so there is nothing to merge there.
    with pytest.raises(ValueError, match="unknown LoRA target"):
        _preset(tmp_path, ["embed_tokens"])
