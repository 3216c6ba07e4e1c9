"""Merging LoRA adapters into their base weights: ``W + s·B·A`` as plain ``nn.Linear`` layers."""

from __future__ import annotations

import warnings

from torch import nn

from tunewiz.lora.layer import lora_modules


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace each LoRALinear, in place, by a plain frozen ``nn.Linear`` holding ``W + s·B·A``.

    A base weight shared with another module (tied ``lm_head``/``embed_tokens``) is not changed
    in place: the merged layer gets its own weight, and a warning says the tie is broken.

    Args:
        model: a model with LoRALinear layers.

    Returns:
        ``model``, for chaining.
    """
    lora = lora_modules(model)
    lora_ids = {id(m) for _, m in lora}
    shared = {id(p) for m in model.modules() if id(m) not in lora_ids for p in m.parameters(recurse=False)}
    for path, module in lora:
        # Built on meta so no throwaway weight is allocated and initialised; both parameters are replaced.
        merged = nn.Linear(
            module.in_features, module.out_features, bias=module.bias is not None, device="meta"
        )
        merged.weight = nn.Parameter(module.merged_weight(), requires_grad=False)
        if module.bias is not None:
            merged.bias = module.bias
        if id(module.weight) in shared:
            warnings.warn(
                f"`{path}.weight` is tied to another module; the merged `{path}` gets its own weight, so "
                "save the merged model with tie_word_embeddings=false",
                UserWarning,
                stacklevel=2,
            )
        parent_path, _, attr = path.rpartition(".")
        setattr(model.get_submodule(parent_path), attr, merged)
    return model
