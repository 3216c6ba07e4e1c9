"""LoRA: ``LoRALinear``, applying it to a model, PEFT adapter files and merging.

The public names are re-exported here, so ``from tunewiz.lora import apply_lora`` keeps working.
"""

from tunewiz.lora.layer import (
    LoRALinear,
    apply_lora,
    init_lora_parameters,
    load_peft_adapter,
    lora_disabled,
    lora_parameter_count,
    lora_state_dict,
    merge_lora,
    save_peft_adapter,
)

__all__ = [
    "LoRALinear",
    "apply_lora",
    "init_lora_parameters",
    "load_peft_adapter",
    "lora_disabled",
    "lora_parameter_count",
    "lora_state_dict",
    "merge_lora",
    "save_peft_adapter",
]
