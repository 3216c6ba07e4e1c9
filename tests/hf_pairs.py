"""A random tiny transformers model and tunewiz's model holding the same weights, copied by name."""

from __future__ import annotations

from typing import Any

import torch

from tunewiz.models.config import LlamaConfig
from tunewiz.models.llama import LlamaForCausalLM


def random_pair(
    class_name: str, kwargs: dict[str, Any], *, perturb: bool = False
) -> tuple[torch.nn.Module, LlamaForCausalLM]:
    """(transformers model, ours), eval mode, seed 0. `perturb` makes biases and norm weights non-trivial
    (transformers initialises them to 0 and 1, which would hide a missing bias or norm)."""
    import transformers

    hf_config = getattr(transformers, class_name)(**kwargs)
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(hf_config, attn_implementation="eager").eval()
    if perturb:
        with torch.no_grad():
            for name, p in hf.named_parameters():
                if name.endswith("bias") or name.endswith("norm.weight"):
                    p.add_(torch.randn_like(p) * 0.1)
    ours = LlamaForCausalLM(LlamaConfig.from_hf(hf_config.to_dict())).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    return hf, ours
