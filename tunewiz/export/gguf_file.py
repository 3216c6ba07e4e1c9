"""Write one GGUF file: quant types, a disk-space check first, then header, metadata, tensor table and
tensor data streamed one tensor at a time (peak memory: the state dict plus one converted tensor).

The file appears under its final name only when complete (temp file in the same folder, then rename),
so an interrupted or failed export never leaves a GGUF that llama.cpp would half-read.

Which tensors are quantized follows llama.cpp's converter: 2-D weights take the requested type; norms,
biases and ``rope_freqs`` (1-D) stay F32; a weight whose rows are not a whole number of Q8_0 blocks (32)
falls back to F16.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewiz.errors import TunewizError, did_you_mean
from tunewiz.units import GiB, fmt_bytes

if TYPE_CHECKING:
    import numpy as np
    import torch

    from tunewiz.export.gguf_vocab import GGUFVocab

# --quant values written by this module, and those that go through llama.cpp's quantizer.
DIRECT_QUANTS = ("f16", "bf16", "q8_0")
LLAMA_CPP_QUANTS = ("q4_k_m", "q5_k_m", "q6_k")
QUANTS = (*DIRECT_QUANTS, *LLAMA_CPP_QUANTS)
# Bits per weight of each type (ggml's block sizes: Q8_0 is 34 bytes per 32 weights; the k-quant mixes
# as llama.cpp's quantize tool reports them for Llama models), for the disk-space estimate.
BITS_PER_WEIGHT = {
    "f32": 32.0,
    "f16": 16.0,
    "bf16": 16.0,
    "q8_0": 8.5,
    "q6_k": 6.56,
    "q5_k_m": 5.7,
    "q4_k_m": 4.9,
}
_METADATA_ALLOWANCE = 16 * 2**20  # vocabulary, merges and template: a few MB even for 256k vocabularies


@dataclass(frozen=True)
class TensorPlan:
    """One tensor as it will be stored.

    Args:
        name: GGUF tensor name (``blk.0.attn_q.weight``).
        shape: element shape, PyTorch order ([out, in] for a weight).
        qtype: ggml type name (``F32``, ``F16``, ``BF16``, ``Q8_0``).
        produce: returns the tensor as fp32 in llama.cpp's layout, when it is written.
    """

    name: str
    shape: tuple[int, ...]
    qtype: str
    produce: Callable[[], torch.Tensor]


def check_quant(quant: str) -> str:
    """``quant`` lower-cased, or an error naming the accepted values.

    Args:
        quant: a ``--quant`` value.
    """
    value = quant.lower()
    if value not in QUANTS:
        raise TunewizError(
            f"--quant `{quant}` is not a GGUF type tunewiz writes{did_you_mean(value, QUANTS)}; "
            f"choose one of {', '.join(QUANTS)}",
            hint="`--quant q8_0` (near-lossless, half of f16) or `--quant q4_k_m` "
            "(smallest; needs llama.cpp)",
        )
    return value


def tensor_type(shape: tuple[int, ...], quant: str) -> str:
    """The ggml type a tensor of ``shape`` is stored as for ``quant`` (one of :data:`DIRECT_QUANTS`).

    Args:
        shape: element shape.
        quant: ``f16``, ``bf16`` or ``q8_0``.
    """
    if len(shape) < 2:
        return "F32"
    if quant == "q8_0" and shape[-1] % 32:
        return "F16"
    return quant.upper()


def estimate_bytes(n_weights: int, quant: str) -> int:
    """Expected file size for ``n_weights`` parameters at ``quant`` (within a few percent), in bytes.

    Args:
        n_weights: parameter count written.
        quant: a :data:`QUANTS` value.
    """
    return int(n_weights * BITS_PER_WEIGHT[quant] / 8) + _METADATA_ALLOWANCE


def check_disk_space(folder: Path, needed: int, what: str) -> None:
    """Raise before writing when ``folder``'s file system has less than ``needed`` bytes free.

    Args:
        folder: where the file(s) will be written (an existing folder).
        needed: bytes the export will write there.
        what: the file(s) named in the message.
    """
    free = shutil.disk_usage(folder).free
    if free < needed:
        size, free_size = fmt_bytes(needed), fmt_bytes(free)
        raise TunewizError(
            f"not enough disk space for {what}: it needs about {size} and `{folder}` has {free_size} free",
            hint="free some space, or write elsewhere with `--output /other/disk/model.gguf`"
            + (" (or pick a smaller `--quant q4_k_m`)" if needed > GiB else ""),
            exit_code=1,
        )


def write_gguf(
    path: Path,
    arch: str,
    metadata: dict[str, Any],
    vocab: GGUFVocab,
    chat_template: str | None,
    tensors: Iterable[TensorPlan],
    file_type: int,
) -> None:
    """Write a complete GGUF file at ``path`` (atomically).

    Args:
        path: the file to write; its folder must exist.
        arch: ``general.architecture`` (``llama``, ``qwen2``, ...).
        metadata: other key -> value pairs (ints become uint32, floats float32, str/bool as such).
        vocab: the tokenizer keys.
        chat_template: ``tokenizer.chat_template`` (the run's trained template), or None.
        tensors: the tensors in file order.
        file_type: ``general.file_type`` (a ``gguf.LlamaFileType``).

    Raises:
        TunewizError: the disk filled up while writing (the partial file is removed).
    """
    import gguf

    tmp = path.with_name(f".{path.name}.tmp")
    plans = list(tensors)
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        writer.add_file_type(file_type)
        if file_type not in (gguf.LlamaFileType.ALL_F32, gguf.LlamaFileType.MOSTLY_F16):
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for key, value in metadata.items():
            _add_value(writer, key, value)
        _add_vocab(writer, vocab)
        if chat_template:
            writer.add_chat_template(chat_template)
        for plan in plans:
            qtype = gguf.GGMLQuantizationType[plan.qtype]
            if plan.qtype in ("F32", "F16"):
                dtype = _np_dtype(plan.qtype)
                writer.add_tensor_info(
                    plan.name, plan.shape, dtype, _nbytes(plan.shape, qtype), raw_dtype=qtype
                )
            else:
                byte_shape = gguf.quants.quant_shape_to_byte_shape(plan.shape, qtype)
                writer.add_tensor_info(
                    plan.name, byte_shape, _np_dtype("U8"), _nbytes(plan.shape, qtype), qtype
                )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for plan in plans:
            writer.write_tensor_data(_encode(plan.produce(), plan.qtype))
        writer.close()
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TunewizError(
                f"the disk filled up while writing `{path}`; the partial file was removed",
                hint="free some space, or write elsewhere with `--output /other/disk/model.gguf`",
                exit_code=1,
            ) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _encode(tensor: torch.Tensor, qtype: str) -> np.ndarray:
    """The bytes of an fp32 tensor in ggml type ``qtype``, as the array GGUFWriter writes."""
    import gguf
    import numpy as np

    data = tensor.detach().to("cpu").contiguous().numpy().astype(np.float32, copy=False)
    if qtype == "F32":
        return data
    if qtype == "F16":
        return data.astype(np.float16)
    return gguf.quants.quantize(data, gguf.GGMLQuantizationType[qtype])


def _nbytes(shape: tuple[int, ...], qtype: Any) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n = 1
    for dim in shape:
        n *= dim
    return n // block * size


def _np_dtype(name: str) -> Any:
    import numpy as np

    return {"F32": np.float32, "F16": np.float16, "U8": np.uint8}[name]


def _add_value(writer: Any, key: str, value: Any) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        writer.add_array(key, list(value))


def _add_vocab(writer: Any, vocab: GGUFVocab) -> None:
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores:
        writer.add_token_scores(vocab.scores)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    for setter, value in (
        (writer.add_bos_token_id, vocab.bos_id),
        (writer.add_eos_token_id, vocab.eos_id),
        (writer.add_eot_token_id, vocab.eot_id),
        (writer.add_pad_token_id, vocab.pad_id),
        (writer.add_unk_token_id, vocab.unk_id),
    ):
        if value is not None:
            setter(value)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
