"""``export_gguf``: a finished run as one GGUF file plus an Ollama Modelfile, ready for llama.cpp,
Ollama and LM Studio.

What goes in, and where each part comes from:

* weights: the run's merged model (:mod:`tunewiz.export.merged`), in llama.cpp's layout and names
  (:mod:`tunewiz.export.gguf_arch`), stored as ``--quant`` says (:mod:`tunewiz.export.gguf_file`);
  k-quants are made from a 16-bit file by llama.cpp itself (:mod:`tunewiz.export.llama_quantize`);
* tokenizer: the run's tokenizer files (:mod:`tunewiz.export.gguf_vocab`), with the bos/eos ids tunewiz
  resolved and the run's recorded BOS rule (:func:`adds_bos`);
* ``tokenizer.chat_template``: the template the run trained with, from the run's prompt record
  (``RUN/prompt.json``, the one prompt builder's source), written as ``final/`` writes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tunewiz.errors import TunewizError
from tunewiz.export.gguf_file import DIRECT_QUANTS, check_quant

if TYPE_CHECKING:
    from tunewiz.export.merged import MergedWeights
    from tunewiz.inference.load import StepCheckpoint
    from tunewiz.text.prompt import PromptBuilder
    from tunewiz.text.templates import ChatTemplate
    from tunewiz.text.tokenizer import Tokenizer

_FILE_TYPES = {"f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0"}
# A conversation rendered to find how the template starts and ends a turn.
_PROBE = [{"role": "user", "content": "Hi"}]


@dataclass(frozen=True)
class GGUFExport:
    """What an export wrote.

    Args:
        path: the GGUF file.
        modelfile: the Ollama Modelfile beside it.
        quant: the quant type (``q8_0``, ...).
        source: where the weights came from (``final/model.safetensors``, or merged now).
        template: where the chat template came from (``tokenizer_config.json``, ``builtin:alpaca``, ...).
        quantizer: the tool that made a k-quant (``llama-cpp-python``, a ``llama-quantize`` path), else None.
        commands: commands that run the model (Ollama, llama-cli, llama-server).
        warnings: things the user should know (e.g. a template that was guessed).
    """

    path: Path
    modelfile: Path
    quant: str
    source: str
    template: str
    quantizer: str | None
    commands: list[str]
    warnings: list[str]


def export_dir(run_path: Path, checkpoint: StepCheckpoint | None = None) -> Path:
    """Where a run's GGUF files and Modelfile go by default: ``RUN/export/``, and
    ``RUN/export/step-N/`` for a step checkpoint (its own Modelfile, never mixed with the final ones).

    Args:
        run_path: the run directory.
        checkpoint: the step checkpoint exported, or None for ``final/``.
    """
    return Path(run_path) / "export" / (checkpoint.name if checkpoint is not None else "")


def default_output(
    run_path: Path, run_name: str, quant: str, checkpoint: StepCheckpoint | None = None
) -> Path:
    """``RUN/export/<run name>.<quant>.gguf``; ``RUN/export/step-N/<run name>-step-N.<quant>.gguf`` for a
    step checkpoint.

    Args:
        run_path: the run directory.
        run_name: the run's name (``name`` in its config).
        quant: the quant type.
        checkpoint: the step checkpoint exported, or None for ``final/``.
    """
    return export_dir(run_path, checkpoint) / f"{_slug(_label(run_name, checkpoint))}.{quant}.gguf"


def _label(run_name: str, checkpoint: StepCheckpoint | None) -> str:
    """The run's name, with ``-step-N`` for a step checkpoint: file and Ollama model names."""
    return run_name + (f"-{checkpoint.name}" if checkpoint is not None else "")


def export_gguf(
    run_path: Path,
    *,
    quant: str = "q8_0",
    output: Path | None = None,
    checkpoint: StepCheckpoint | None = None,
) -> GGUFExport:
    """Write a run's merged model as GGUF, with an Ollama Modelfile beside it.

    Args:
        run_path: a finished run directory (any run directory with ``checkpoint``).
        quant: ``f16``, ``bf16``, ``q8_0`` (written here) or ``q4_k_m``/``q5_k_m``/``q6_k`` (llama.cpp).
        output: the GGUF file, or a folder for the default file name; default ``RUN/export/``
            (``RUN/export/step-N/`` for a step checkpoint).
        checkpoint: a step checkpoint of the run (``--from step-N``) to export instead of ``final/``.

    Raises:
        TunewizError: unknown quant type, unfinished run, unsupported architecture or tokenizer, no
            k-quant tool, not enough disk space.
    """
    from tunewiz.atomic import atomic_write_text
    from tunewiz.export.gguf_file import check_disk_space, estimate_bytes
    from tunewiz.export.gguf_vocab import sentencepiece_normalization
    from tunewiz.export.llama_quantize import INSTALL_HINT, K_QUANTS, quantize, quantizer_available
    from tunewiz.export.merged import merged_weights
    from tunewiz.export.modelfile import Modelfile, run_commands, sampling_parameters
    from tunewiz.text.tokenizer import load_tokenizer

    quant = check_quant(quant)
    if quant in K_QUANTS and quantizer_available() is None:
        raise TunewizError(
            f"`--quant {quant}` needs llama.cpp's quantizer, which is not installed", hint=INSTALL_HINT
        )
    merged = merged_weights(Path(run_path), checkpoint)
    name = merged.preset.name
    path = _output_path(Path(run_path), name, quant, output, checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(merged.tokenizer_dir)
    prompts, prompt_warning = trained_prompts(Path(run_path), tokenizer)
    if prompts.template is None:
        raise TunewizError(
            f"`{run_path}` trained on plain text and recorded no chat template; a GGUF without one "
            "would be prompted with whatever template llama.cpp or Ollama guess",
            hint="train with `data.format: chat` or `alpaca`, or convert `final/` with llama.cpp's "
            "`convert_hf_to_gguf.py` for raw-completion use",
        )

    # Checked before the weights are read: a full disk fails in a second, not after loading a model.
    n_weights = merged.config.num_parameters()
    k_quant = quant not in DIRECT_QUANTS  # a 16-bit file first, then llama.cpp's quantized one beside it
    needed = estimate_bytes(n_weights, "f16" if k_quant else quant)
    needed += estimate_bytes(n_weights, quant) if k_quant else 0
    check_disk_space(path.parent, needed, f"`{path.name}`")
    direct = _sixteen_bit(merged) if k_quant else quant

    written = path if quant == direct else path.with_name(f".{path.stem}.{direct}-for-quantize.gguf")
    try:
        _write(merged, prompts, written, direct)
        quantizer = quantize(written, path, quant) if quant != direct else None
    finally:
        if written != path:
            written.unlink(missing_ok=True)

    warnings = [prompt_warning] if prompt_warning else []
    sp_model = merged.tokenizer_dir / "tokenizer.model"
    if sp_model.is_file() and (rules := sentencepiece_normalization(sp_model)):
        warnings.append(
            f"`{sp_model}` applies {rules}, which llama.cpp's tokenizer does not: text those rules change "
            "(repeated spaces, compatibility characters) splits into other tokens there"
        )
    stop = _stop_strings(tokenizer, prompts.template)
    modelfile = Modelfile(
        gguf_name=path.name,
        stop=stop,
        parameters=sampling_parameters(merged.tokenizer_dir, merged.config.max_position_embeddings),
        comment=f"Ollama Modelfile for {_label(name, checkpoint)} ({quant}), written by `tunewiz export`; "
        "the chat template is read from the GGUF (tokenizer.chat_template)",
    )
    modelfile_path = path.parent / "Modelfile"
    atomic_write_text(modelfile_path, modelfile.text())
    return GGUFExport(
        path=path,
        modelfile=modelfile_path,
        quant=quant,
        source=merged.source,
        template=prompts.format.template_source or "prompt.json",
        quantizer=quantizer,
        commands=run_commands(path, modelfile_path, _slug(_label(name, checkpoint))),
        warnings=warnings,
    )


def trained_prompts(run_path: Path, tokenizer: Tokenizer) -> tuple[PromptBuilder, str | None]:
    """The run's prompt builder (its recorded template and BOS rule, ``RUN/prompt.json``), and a warning
    when the run predates the record and the rule is the fallback ``tunewiz chat`` uses too.

    Args:
        run_path: the run directory.
        tokenizer: the run's tokenizer.
    """
    from tunewiz.inference.load import prompt_builder_for

    return prompt_builder_for(str(run_path), tokenizer)


def adds_bos(prompts: PromptBuilder) -> bool:
    """``tokenizer.ggml.add_bos_token``: whether a prompt starts with bos under the run's rule.

    llama.cpp's chat path strips a bos the template rendered and then adds bos itself when this is
    true, so ``in_template`` and ``prepended`` runs (whose exported template writes bos) both get one
    bos; ``none`` (Qwen-style tokenizers without bos) gets none. Plain-text prompts follow the same
    rule as plain-text training samples.

    Args:
        prompts: the run's prompt builder.
    """
    return prompts.format.bos != "none" and prompts.tokenizer.bos_id is not None


def end_of_turn_token(tokenizer: Tokenizer, template: ChatTemplate) -> str | None:
    """The special token that ends an assistant turn in ``template`` (``<|im_end|>``, ``<|eot_id|>``,
    ``</s>``...), found by rendering a short reply; None when the turn ends in plain text.

    Args:
        tokenizer: the run's tokenizer.
        template: the trained template.
    """
    prompt = template.render(_PROBE, add_generation_prompt=True)
    full = template.render([*_PROBE, {"role": "assistant", "content": "Yes"}])
    reply = full[len(prompt) :] if full.startswith(prompt) else full
    ids = tokenizer.encode(reply.split("Yes", 1)[-1])
    specials = [i for i in ids if tokenizer.decode([i], skip_special=True) == ""]
    return tokenizer.decode(specials[:1], skip_special=False) if specials else None


def _stop_strings(tokenizer: Tokenizer, template: ChatTemplate) -> tuple[str, ...]:
    eos = tokenizer.decode([tokenizer.eos_id], skip_special=False)
    eot = end_of_turn_token(tokenizer, template)
    return tuple(dict.fromkeys(s for s in (eot, eos) if s))


def _write(merged: MergedWeights, prompts: PromptBuilder, path: Path, quant: str) -> None:
    import gguf

    from tunewiz.export.gguf_arch import gguf_arch_name, gguf_tensors, hyperparameters
    from tunewiz.export.gguf_file import TensorPlan, tensor_type, write_gguf
    from tunewiz.export.gguf_vocab import build_vocab, choose_space_prefix
    from tunewiz.text.prompt import exported_template

    config, tokenizer, template = merged.config, prompts.tokenizer, prompts.template
    assert template is not None  # export_gguf refuses runs without one
    vocab = build_vocab(
        tokenizer,
        config.vocab_size,
        add_bos=adds_bos(prompts),
        end_of_turn=end_of_turn_token(tokenizer, template),
    )
    if vocab.model == "llama":
        vocab.add_space_prefix = choose_space_prefix(tokenizer, prompts.render(_PROBE))
    metadata = {
        gguf.Keys.General.NAME: merged.preset.name,
        gguf.Keys.General.FINETUNE: merged.preset.name,
        gguf.Keys.General.BASE_MODEL_COUNT: 1,
        gguf.Keys.General.BASE_MODEL_NAME.format(id=0): merged.preset.model.path,
        gguf.Keys.General.DESCRIPTION: f"{merged.preset.method} fine-tune of {merged.preset.model.path} "
        f"exported by tunewiz ({merged.source})",
        **hyperparameters(config),
    }
    plans = [
        TensorPlan(name, shape, tensor_type(shape, quant), produce)
        for name, shape, produce in gguf_tensors(merged.state, config)
    ]
    file_type = getattr(gguf.LlamaFileType, _FILE_TYPES[quant])
    chat_template = exported_template(prompts.format, tokenizer)
    write_gguf(path, gguf_arch_name(config), metadata, vocab, chat_template, plans, file_type)


def _sixteen_bit(merged: MergedWeights) -> str:
    """The 16-bit type a k-quant starts from: bf16 for bf16 weights (f16 could overflow), else f16."""
    import torch

    dtypes = {v.dtype for v in merged.state.values() if v.is_floating_point()}
    return "bf16" if torch.bfloat16 in dtypes else "f16"


def _output_path(
    run_path: Path, run_name: str, quant: str, output: Path | None, checkpoint: StepCheckpoint | None
) -> Path:
    default = default_output(run_path, run_name, quant, checkpoint)
    if output is None:
        return default
    output = Path(output).expanduser()
    if output.is_dir() or str(output).endswith("/"):
        return output / default.name
    return output if output.suffix == ".gguf" else output.with_name(output.name + ".gguf")


def _slug(name: str) -> str:
    """A name Ollama and file systems accept: lower case, ``[a-z0-9._-]``."""
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-") or "model"
