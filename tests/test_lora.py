"""LoRA: the layer's math, apply/init/merge, and PEFT-format adapters checked against peft itself.

Every model here is a tiny random transformers LlamaForCausalLM (~27k parameters), CPU fp32.
"""

from __future__ import annotations

import copy
import json
import math
import os
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tunewiz.errors import TunewizError  # noqa: E402
from tunewiz.lora.layer import (  # noqa: E402
    LoRALinear,
    apply_lora,
    init_lora_parameters,
    lora_disabled,
    lora_parameter_count,
    lora_state_dict,
)
from tunewiz.lora.merge import merge_lora  # noqa: E402
from tunewiz.lora.peft_files import (  # noqa: E402
    from_peft_state_dict,
    load_peft_adapter,
    save_peft_adapter,
    to_peft_state_dict,
)

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

TARGETS = ["q_proj", "v_proj", "down_proj", "lm_head"]


def tiny_llama(seed: int = 0, tie: bool = False) -> nn.Module:
    """A 2-layer grouped-query-attention Llama with random weights (~27k parameters)."""
    config = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config).eval()


def randomize_lora(model: nn.Module, seed: int = 1) -> None:
    """Give every adapter (B included) random non-zero values, so the update really changes the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in lora_state_dict(model).values():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def logits(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Logits [B, T, V] of a transformers/peft model (output object) or the native one (a tensor)."""
    with torch.no_grad():
        out = model(input_ids=tokens)
    return out if isinstance(out, torch.Tensor) else out.logits


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(7))


# --- LoRALinear ------------------------------------------------------------------------------------


def test_lora_linear_with_zero_b_equals_base_then_matches_closed_form() -> None:
    torch.manual_seed(0)
    base = nn.Linear(16, 24)
    reference = copy.deepcopy(base)
    layer = LoRALinear.from_linear(base, rank=4, alpha=8.0, dropout=0.0)
    init_generator = torch.Generator().manual_seed(0)
    layer.reset_lora_parameters(init_generator)
    x = torch.randn(3, 5, 16)

    assert layer.weight is base.weight and layer.bias is base.bias  # same parameters, no copy
    assert not layer.weight.requires_grad and not layer.bias.requires_grad
    assert layer.scaling == 2.0
    torch.testing.assert_close(layer(x), reference(x), rtol=0, atol=0)

    with torch.no_grad():
        layer.lora_B.weight.normal_(std=0.1)  # outputs of order 1, where fp32 resolves 1e-6
    a, b, w = (t.double() for t in (layer.lora_A.weight, layer.lora_B.weight, base.weight))
    expected = (x.double() @ (w + 2.0 * b @ a).T + base.bias.double()).float()
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-6)


def test_lora_a_init_is_kaiming_uniform_bound() -> None:
    layer = LoRALinear.from_linear(nn.Linear(256, 64), rank=8, alpha=16.0, dropout=0.0)
    layer.reset_lora_parameters(torch.Generator().manual_seed(0))
    bound = 1 / math.sqrt(256)  # kaiming_uniform(a=√5) on fan_in=256
    assert layer.lora_A.weight.abs().max() <= bound
    assert layer.lora_A.weight.abs().max() > 0.9 * bound
    assert torch.count_nonzero(layer.lora_B.weight) == 0


def test_lora_linear_bf16_base_with_fp32_adapters() -> None:
    torch.manual_seed(0)
    base = nn.Linear(16, 8, bias=False).to(torch.bfloat16)
    layer = LoRALinear.from_linear(base, rank=2, alpha=2.0, dropout=0.1)
    assert layer.lora_A.weight.dtype == torch.float32 and layer.lora_B.weight.dtype == torch.float32
    with torch.no_grad():
        layer.lora_A.weight.normal_()
        layer.lora_B.weight.normal_()
    layer.eval()  # dropout off
    x = torch.randn(4, 16, dtype=torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    expected = x.float() @ base.weight.float().T + (x.float() @ layer.lora_A.weight.T) @ layer.lora_B.weight.T
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    assert layer.lora_A.weight.grad is not None and layer.weight.grad is None


def test_lora_linear_dropout_applies_only_to_lora_path_in_training() -> None:
    torch.manual_seed(0)
    base = nn.Linear(8, 8)
    layer = LoRALinear.from_linear(base, rank=2, alpha=2.0, dropout=0.5)
    x = torch.randn(64, 8)
    # B = 0: dropout on the LoRA input cannot change the output, even in training mode.
    torch.testing.assert_close(layer.train()(x), base(x), rtol=0, atol=0)
    with torch.no_grad():
        layer.lora_B.weight.normal_()
    assert not torch.equal(layer.train()(x), layer.eval()(x))


def test_lora_disabled_flag_runs_the_base_and_is_cleared_even_on_error() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    reference = copy.deepcopy(model)
    apply_lora(model, targets=["0", "2"], rank=2, alpha=4.0, dropout=0.0, seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    x = torch.randn(5, 8)
    adapted = model(x)
    assert not torch.allclose(adapted, reference(x))
    layers = [model[0], model[2]]
    with lora_disabled(model):
        assert all(layer.disabled for layer in layers)
        assert "disabled" in repr(model[0])
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    assert not any(layer.disabled for layer in layers)
    assert "forward" not in vars(model[0])  # the class's forward, not an instance attribute
    with pytest.raises(RuntimeError, match="boom"), lora_disabled(model):
        raise RuntimeError("boom")
    assert not any(layer.disabled for layer in layers)
    torch.testing.assert_close(model(x), adapted, rtol=0, atol=0)


@pytest.mark.parametrize("rank, dropout", [(0, 0.0), (4, 1.0)])
def test_lora_linear_rejects_bad_settings(rank: int, dropout: float) -> None:
    with pytest.raises(TunewizError):
        LoRALinear.from_linear(nn.Linear(4, 4), rank=rank, alpha=1.0, dropout=dropout)


# --- apply / init / count -------------------------------------------------------------------------


def test_apply_lora_replaces_exactly_the_targets_and_freezes_the_rest() -> None:
    model = tiny_llama()
    base_keys = set(model.state_dict())
    replaced = apply_lora(model, targets=TARGETS, rank=4, alpha=8.0, dropout=0.0, seed=0)

    expected = [
        f"model.layers.{i}.{m}"
        for i in range(2)
        for m in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")
    ] + ["lm_head"]
    assert sorted(replaced) == sorted(expected)
    for name, module in model.named_modules():
        is_target = name in expected
        assert isinstance(module, LoRALinear) == is_target, name
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{path}.{part}.weight" for path in expected for part in ("lora_A", "lora_B")}
    # Base keys are unchanged: a base checkpoint loads into the LoRA model with no remapping.
    assert set(model.state_dict()) - set(lora_state_dict(model)) == base_keys

    n_trainable, n_total = lora_parameter_count(model)
    assert n_trainable == sum(v.numel() for v in lora_state_dict(model).values())
    # q_proj: 4·32 + 32·4, v_proj: 4·32 + 16·4, down_proj: 4·64 + 32·4 (×2 layers); lm_head: 4·32 + 128·4
    assert n_trainable == 2 * (256 + 192 + 384) + 640
    assert n_total == sum(p.numel() for p in tiny_llama().parameters()) + n_trainable


def test_apply_lora_warns_on_an_unmatched_target() -> None:
    model = tiny_llama()
    with pytest.warns(UserWarning, match=r"`qkv_proj` matched no nn.Linear.*'q_proj'"):
        replaced = apply_lora(model, targets=["q_proj", "qkv_proj"], rank=2, alpha=2.0, dropout=0.0, seed=0)
    assert replaced == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]


def test_apply_lora_twice_is_an_error() -> None:
    model = tiny_llama()
    apply_lora(model, targets=["q_proj"], rank=2, alpha=2.0, dropout=0.0, seed=0)
    with pytest.raises(TunewizError, match="already has a LoRA adapter"):
        apply_lora(model, targets=["q_proj"], rank=2, alpha=2.0, dropout=0.0, seed=0)


def test_init_is_deterministic_per_seed_and_differs_across_seeds() -> None:
    def adapters(seed: int) -> dict[str, torch.Tensor]:
        model = tiny_llama()
        apply_lora(model, targets=TARGETS, rank=4, alpha=8.0, dropout=0.0, seed=seed)
        return {k: v.clone() for k, v in lora_state_dict(model).items()}

    first, again, other = adapters(3), adapters(3), adapters(4)
    for key in first:
        torch.testing.assert_close(first[key], again[key], rtol=0, atol=0)
    a_keys = [k for k in first if ".lora_A." in k]
    assert all(not torch.equal(first[k], other[k]) for k in a_keys)
    assert all(torch.count_nonzero(first[k]) == 0 for k in first if ".lora_B." in k)


def test_apply_lora_on_meta_then_init_matches_eager_init() -> None:
    eager = tiny_llama()
    apply_lora(eager, targets=TARGETS, rank=4, alpha=8.0, dropout=0.0, seed=11)

    config = tiny_llama().config
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    apply_lora(model, targets=TARGETS, rank=4, alpha=8.0, dropout=0.0, seed=11)
    assert all(p.is_meta for p in lora_state_dict(model).values())
    model.to_empty(device="cpu")
    init_lora_parameters(model, seed=11)
    for key, value in lora_state_dict(eager).items():
        torch.testing.assert_close(lora_state_dict(model)[key], value, rtol=0, atol=0)


# --- peft interop ---------------------------------------------------------------------------------


def test_export_loads_in_peft_with_equal_logits(tmp_path: Path, tokens: torch.Tensor) -> None:
    model = tiny_llama()
    fresh = copy.deepcopy(model)  # same base weights, never touched by tunewiz
    apply_lora(model, targets=TARGETS, rank=4, alpha=8.0, dropout=0.05, seed=0)
    randomize_lora(model)
    model.eval()
    save_peft_adapter(
        lora_state_dict(model),
        tmp_path / "adapter",
        base_model="tiny-random-llama",
        rank=4,
        alpha=8.0,
        dropout=0.05,
        targets=TARGETS,
    )

    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (4, 8.0, 0.05)
    assert (
        config["target_modules"] == sorted(TARGETS)
        and config["base_model_name_or_path"] == "tiny-random-llama"
    )
    # Every field we write is a LoraConfig field, so peft loads it without any warning.
    assert set(config) <= {f.name for f in __import__("dataclasses").fields(peft.LoraConfig)}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = peft.PeftModel.from_pretrained(fresh, str(tmp_path / "adapter")).eval()
    # Only transformers' own deprecation notices (FutureWarning) may appear: no unexpected config keys,
    # no missing adapter keys.
    assert [str(w.message) for w in caught if not issubclass(w.category, FutureWarning)] == []
    torch.testing.assert_close(logits(peft_model, tokens), logits(model, tokens), rtol=0, atol=1e-5)
    # The adapter really changes the output, so the equality above is not vacuous.
    assert not torch.allclose(logits(tiny_llama(), tokens), logits(model, tokens), atol=1e-3)


def test_import_of_a_peft_made_adapter_gives_peft_logits(tmp_path: Path, tokens: torch.Tensor) -> None:
    base = tiny_llama()
    ours = copy.deepcopy(base)
    config = peft.LoraConfig(
        r=4,
        lora_alpha=16,
        lora_dropout=0.1,
        target_modules=["k_proj", "o_proj", "up_proj"],
        task_type="CAUSAL_LM",
        init_lora_weights=False,
    )  # random B: a non-zero update
    peft_model = peft.get_peft_model(base, config).eval()
    peft_model.save_pretrained(str(tmp_path / "peft-adapter"))

    load_peft_adapter(ours, tmp_path / "peft-adapter")
    ours.eval()
    assert sorted(
        p for p, _ in ours.named_modules() if "lora" not in p and isinstance(_, LoRALinear)
    ) == sorted(
        f"model.layers.{i}.{m}"
        for i in range(2)
        for m in ("self_attn.k_proj", "self_attn.o_proj", "mlp.up_proj")
    )
    torch.testing.assert_close(logits(ours, tokens), logits(peft_model, tokens), rtol=0, atol=1e-5)


def test_import_of_a_peft_adapter_on_lm_head_and_all_linear(tmp_path: Path, tokens: torch.Tensor) -> None:
    # peft also saves lm_head's base weight (`lm_head.base_layer.weight`) and a string target_modules.
    base = tiny_llama()
    ours = copy.deepcopy(base)
    config = peft.LoraConfig(
        r=2, lora_alpha=4, target_modules=".*(q_proj|lm_head)", task_type="CAUSAL_LM", init_lora_weights=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft's own notice that it saves the lm_head base weight
        peft_model = peft.get_peft_model(base, config).eval()
        peft_model.save_pretrained(str(tmp_path / "peft-adapter"))
    load_peft_adapter(ours, tmp_path / "peft-adapter")
    assert isinstance(ours.lm_head, LoRALinear) and isinstance(
        ours.model.layers[1].self_attn.q_proj, LoRALinear
    )
    torch.testing.assert_close(logits(ours.eval(), tokens), logits(peft_model, tokens), rtol=0, atol=1e-5)


def test_peft_key_renaming_round_trips() -> None:
    ours = {"model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(1)}
    peft_keys = to_peft_state_dict(ours)
    assert list(peft_keys) == ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    assert from_peft_state_dict(peft_keys).keys() == ours.keys()
    assert list(from_peft_state_dict({"base_model.model.lm_head.base_layer.weight": torch.zeros(1)})) == [
        "lm_head.weight"
    ]
    with pytest.raises(TunewizError, match="do not start with `base_model.model.`"):
        from_peft_state_dict({"model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(1)})


# --- merge ----------------------------------------------------------------------------------------


def test_merge_gives_the_same_logits_and_exactly_the_base_keys(tokens: torch.Tensor) -> None:
    model = tiny_llama()
    base_keys = set(model.state_dict())
    apply_lora(model, targets=TARGETS, rank=4, alpha=8.0, dropout=0.0, seed=0)
    randomize_lora(model)
    before = logits(model, tokens)
    merged = merge_lora(model)
    assert merged is model
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert all(type(m) is nn.Linear for n, m in model.named_modules() if n.endswith(("q_proj", "lm_head")))
    assert set(model.state_dict()) == base_keys
    torch.testing.assert_close(logits(model, tokens), before, rtol=0, atol=1e-5)
    # The merged weights load back into a plain transformers model with the same result.
    plain = tiny_llama(seed=99)
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(logits(plain, tokens), before, rtol=0, atol=1e-5)


def test_merge_of_a_tied_lm_head_warns_and_keeps_embeddings() -> None:
    model = tiny_llama(tie=True)
    embeddings = model.model.embed_tokens.weight.detach().clone()
    apply_lora(model, targets=["lm_head"], rank=2, alpha=2.0, dropout=0.0, seed=0)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # the tie survives wrapping
    randomize_lora(model)
    with pytest.warns(UserWarning, match="tied"):
        merge_lora(model)
    torch.testing.assert_close(model.model.embed_tokens.weight, embeddings, rtol=0, atol=0)
    assert not torch.equal(model.lm_head.weight, embeddings)


# --- load errors ----------------------------------------------------------------------------------


def _saved_adapter(tmp_path: Path, rank: int = 4, targets: list[str] | None = None) -> Path:
    model = tiny_llama()
    targets = targets or ["q_proj", "v_proj"]
    apply_lora(model, targets=targets, rank=rank, alpha=8.0, dropout=0.0, seed=0)
    out = tmp_path / "adapter"
    save_peft_adapter(
        lora_state_dict(model), out, base_model="tiny", rank=rank, alpha=8.0, dropout=0.0, targets=targets
    )
    return out


def _edit_config(adapter: Path, **changes: object) -> None:
    path = adapter / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_load_errors_on_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(TunewizError, match="does not exist"):
        load_peft_adapter(tiny_llama(), tmp_path / "nope")


@pytest.mark.parametrize("missing", ["adapter_config.json", "adapter_model.safetensors"])
def test_load_errors_on_a_missing_file(tmp_path: Path, missing: str) -> None:
    adapter = _saved_adapter(tmp_path)
    (adapter / missing).unlink()
    with pytest.raises(TunewizError, match=f"{missing}` is missing"):
        load_peft_adapter(tiny_llama(), adapter)


def test_load_errors_on_a_non_lora_peft_type(tmp_path: Path) -> None:
    adapter = _saved_adapter(tmp_path)
    _edit_config(adapter, peft_type="IA3")
    with pytest.raises(TunewizError, match="peft_type 'IA3'"):
        load_peft_adapter(tiny_llama(), adapter)


@pytest.mark.parametrize(
    "option, value",
    [("use_dora", True), ("modules_to_save", ["embed_tokens"]), ("rank_pattern", {"q_proj": 2})],
)
def test_load_errors_on_an_unsupported_lora_variant(tmp_path: Path, option: str, value: object) -> None:
    adapter = _saved_adapter(tmp_path)
    _edit_config(adapter, **{option: value})
    with pytest.raises(TunewizError, match=f"sets {option}="):
        load_peft_adapter(tiny_llama(), adapter)


def test_load_errors_on_a_rank_mismatch(tmp_path: Path) -> None:
    adapter = _saved_adapter(tmp_path, rank=4)
    _edit_config(adapter, r=8)
    with pytest.raises(
        TunewizError, match=r"has rank 4 at `model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight`.*r=8"
    ):
        load_peft_adapter(tiny_llama(), adapter)


def test_load_errors_on_keys_that_match_no_module(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    adapter = _saved_adapter(tmp_path)
    weights = load_file(adapter / "adapter_model.safetensors")
    weights["base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight"] = torch.zeros(4, 32)
    save_file(weights, adapter / "adapter_model.safetensors")
    with pytest.raises(
        TunewizError, match=r"match no module.*model\.layers\.7\.self_attn\.q_proj\.lora_A\.weight"
    ):
        load_peft_adapter(tiny_llama(), adapter)


def test_load_errors_on_a_model_of_another_size(tmp_path: Path) -> None:
    adapter = _saved_adapter(tmp_path)
    config = tiny_llama().config
    config.hidden_size, config.num_attention_heads, config.num_key_value_heads = 64, 4, 2
    with pytest.raises(TunewizError, match="shapes differ"):
        load_peft_adapter(transformers.LlamaForCausalLM(config), adapter)


def test_load_round_trips_our_own_adapter(tmp_path: Path, tokens: torch.Tensor) -> None:
    model = tiny_llama()
    apply_lora(model, targets=TARGETS, rank=4, alpha=8.0, dropout=0.0, seed=0)
    randomize_lora(model)
    save_peft_adapter(
        lora_state_dict(model),
        tmp_path / "a",
        base_model="tiny",
        rank=4,
        alpha=8.0,
        dropout=0.0,
        targets=TARGETS,
    )
    loaded = tiny_llama()
    load_peft_adapter(loaded, tmp_path / "a")
    torch.testing.assert_close(logits(loaded, tokens), logits(model, tokens), rtol=0, atol=0)
    assert lora_parameter_count(loaded)[0] == lora_parameter_count(model)[0]


# --- the native model and sharded init ------------------------------------------------------------


def native_llama_like(hf_model: nn.Module) -> nn.Module:
    """tunewiz's own Llama holding ``hf_model``'s weights (same state_dict keys)."""
    native = pytest.importorskip("tunewiz.models.llama")
    from tunewiz.models.config import LlamaConfig

    model = native.LlamaForCausalLM(LlamaConfig.from_hf(hf_model.config.to_dict()))
    model.load_state_dict(hf_model.state_dict())
    return model.eval()


def test_native_model_adapter_loads_in_peft_and_merges(tmp_path: Path, tokens: torch.Tensor) -> None:
    hf = tiny_llama()
    native = native_llama_like(hf)
    replaced = apply_lora(native, targets=TARGETS, rank=4, alpha=8.0, dropout=0.0, seed=0)
    assert len(replaced) == 7
    randomize_lora(native)
    ours = logits(native, tokens)
    save_peft_adapter(
        lora_state_dict(native),
        tmp_path / "adapter",
        base_model="tiny",
        rank=4,
        alpha=8.0,
        dropout=0.0,
        targets=TARGETS,
    )
    peft_model = peft.PeftModel.from_pretrained(copy.deepcopy(hf), str(tmp_path / "adapter")).eval()
    torch.testing.assert_close(logits(peft_model, tokens), ours, rtol=0, atol=1e-5)

    merge_lora(native)
    hf.load_state_dict(native.state_dict())
    torch.testing.assert_close(logits(hf, tokens), ours, rtol=0, atol=1e-5)


def test_init_on_meta_then_fsdp2_sharded_matches_eager_init() -> None:
    # One-process gloo group: the adapters become DTensors, and init must give the same full values.
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    eager = tiny_llama()
    apply_lora(eager, targets=TARGETS, rank=4, alpha=8.0, dropout=0.0, seed=5)

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with torch.device("meta"):
            model = transformers.LlamaForCausalLM(eager.config)
        apply_lora(model, targets=TARGETS, rank=4, alpha=8.0, dropout=0.0, seed=5)
        mesh = init_device_mesh("cpu", (1,))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        model.to_empty(device="cpu")
        init_lora_parameters(model, seed=5)
        assert isinstance(model.model.layers[0].self_attn.q_proj.lora_A.weight, DTensor)
        sharded = lora_state_dict(model)
        for key, value in lora_state_dict(eager).items():
            assert not isinstance(sharded[key], DTensor)
            torch.testing.assert_close(sharded[key], value, rtol=0, atol=0)
    finally:
        dist.destroy_process_group()
