"""Find a model directory, load its safetensors into the native model, and save a model back in the
Hugging Face layout (``config.json`` + ``model.safetensors``, sharded with an index when large).

Only safetensors are read: pickled ``.bin``/``.pth`` checkpoints can run code when loaded.
torch, safetensors and huggingface_hub are imported inside the functions so that importing this
module stays cheap for the CLI.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tunewiz.atomic import atomic_write_json
from tunewiz.errors import TunewizError
from tunewiz.models.config import LlamaConfig
from tunewiz.units import GiB

if TYPE_CHECKING:
    import torch

    from tunewiz.models.llama import LlamaForCausalLM

SHIPPED_PREFIX = "tunewiz:"
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
INDEX_FILE = "model.safetensors.index.json"
# What a model directory needs from a Hub snapshot: architecture, weights, tokenizer, generation defaults.
HUB_PATTERNS = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    INDEX_FILE,
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    # Multimodal repositories (Gemma 3 4B/12B/27B) may keep the template in the processor's file; their
    # preprocessor_config.json / processor_config.json are for images and stay on the Hub.
    "chat_template.json",
]
# fnmatch's `*` crosses `/`: without this, `*.safetensors` would also ask for
# `onnx/model.safetensors` and the like.
HUB_IGNORE_PATTERNS = ["*/*"]
# Older checkpoints store RoPE frequencies; the model recomputes them, as transformers ignores them.
IGNORED_KEY_SUFFIXES = ("rotary_emb.inv_freq",)
# Multimodal checkpoints (Gemma 3 4B/12B/27B) keep the language model under a prefix: Hub files written by
# transformers 4 use `language_model.model.*`, transformers 5 writes `model.language_model.*`.
TEXT_PREFIXES = {
    "language_model.model.": "model.",
    "language_model.lm_head.": "lm_head.",
    "model.language_model.": "model.",
}
# ... and the parts a text-only model does not load.
VISION_PREFIXES = (
    "vision_tower.",
    "multi_modal_projector.",
    "model.vision_tower.",
    "model.multi_modal_projector.",
)


def shipped_models() -> list[str]:
    """Names ``NAME`` of the shipped models usable as ``tunewiz:NAME``."""
    if not ASSETS_DIR.is_dir():
        return []
    return sorted(p.name for p in ASSETS_DIR.iterdir() if (p / "config.json").is_file())


def resolve_model_dir(path: str, revision: str | None = None) -> Path:
    """Turn a model reference into a checked local directory.

    Args:
        path: ``tunewiz:NAME`` (a shipped model), a local directory, or a Hugging Face repo id already
            in the local HF cache (never downloaded here).
        revision: branch, tag or commit of a repo id; ignored for directories.

    Returns:
        A directory holding ``config.json`` and ``*.safetensors``.
    """
    if path.startswith(SHIPPED_PREFIX):
        name = path[len(SHIPPED_PREFIX) :]
        shipped = shipped_models()
        if name not in shipped:
            raise TunewizError(
                f"`{path}` is not a shipped model; shipped: "
                f"{', '.join(f'`tunewiz:{n}`' for n in shipped) or 'none'}",
                hint="use one of the shipped names, a local directory or a Hugging Face repo id",
            )
        return check_model_dir(ASSETS_DIR / name)
    local = Path(path).expanduser()
    if local.is_dir():
        return check_model_dir(local)
    if local.exists():
        raise TunewizError(
            f"model `{path}` is a file; expected a directory with config.json and *.safetensors"
        )
    # A path, not an `org/name` repo id: it starts like a path, has more parts than a repo id, or
    # its parent is a local directory (`runs/nope` next to `runs/`, where `tunewiz train` writes runs).
    looks_local = path.startswith((".", "/", "~")) or path.count("/") > 1 or path.startswith("runs/")
    if looks_local or (local.parent != Path(".") and local.parent.is_dir()):
        raise TunewizError(
            f"model directory `{path}` does not exist",
            hint="check the path, or give a Hugging Face repo id such as `Qwen/Qwen2.5-0.5B`",
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        snapshot = snapshot_download(
            path,
            revision=revision,
            local_files_only=True,
            allow_patterns=HUB_PATTERNS,
            ignore_patterns=HUB_IGNORE_PATTERNS,
        )
    except (LocalEntryNotFoundError, HFValidationError):
        at = f" at revision `{revision}`" if revision else ""
        raise TunewizError(
            f"model `{path}` is not a directory and is not in the Hugging Face cache{at}",
            hint=f"`tunewiz download {path}`, or pass the path of a local model directory",
        ) from None
    return check_model_dir(Path(snapshot))


def check_model_dir(model_dir: Path) -> Path:
    """Check that ``model_dir`` has ``config.json`` and safetensors weights (``model.safetensors``, or
    shards listed in ``model.safetensors.index.json``, as transformers expects), and return it.

    Args:
        model_dir: the directory.
    """
    if not (model_dir / "config.json").is_file():
        raise TunewizError(
            f"`{model_dir}` has no config.json",
            hint="point at the directory that holds the model's config.json",
        )
    if (model_dir / INDEX_FILE).is_file() or (model_dir / "model.safetensors").is_file():
        return model_dir
    others = sorted(
        p.name for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin", ".pth", ".pt")
    )
    found = f" (it has {', '.join(others)})" if others else ""
    raise TunewizError(
        f"`{model_dir}` has no model.safetensors or {INDEX_FILE}{found}; "
        "tunewiz loads Hugging Face safetensors checkpoints only, never pickles",
        hint="use a checkpoint that ships `model.safetensors` (most Hub repositories do)",
    )


def _weight_files(model_dir: Path) -> dict[str, Path]:
    """Map every tensor name to the safetensors file holding it (from the index when sharded)."""
    from safetensors import safe_open

    check_model_dir(model_dir)
    index = model_dir / INDEX_FILE
    if not index.is_file():
        with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
            return dict.fromkeys(f.keys(), model_dir / "model.safetensors")
    weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    where = {key: model_dir / name for key, name in weight_map.items()}
    absent = sorted({file.name for file in where.values() if not file.is_file()})
    if absent:
        raise TunewizError(
            f"`{index}` lists `{absent[0]}`, which is not in `{model_dir}`"
            + (f" ({len(absent) - 1} more shard(s) absent)" if len(absent) > 1 else ""),
            hint="the download is incomplete: run `tunewiz download` again for this model",
        )
    return where


def load_state_dict_files(model_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of a model directory's safetensors files, memory-mapped on CPU, in the stored dtype.

    Args:
        model_dir: a directory with ``model.safetensors`` or shards plus ``model.safetensors.index.json``.
    """
    from safetensors import safe_open

    by_file: dict[Path, list[str]] = defaultdict(list)
    for key, file in _weight_files(model_dir).items():
        by_file[file].append(key)
    state = {}
    for file, keys in by_file.items():
        with safe_open(str(file), framework="pt") as f:
            state.update({key: f.get_tensor(key) for key in keys})
    return state


def load_model(
    model_dir: Path,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    convert: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
) -> LlamaForCausalLM:
    """Build the model on the meta device and fill it with the directory's safetensors weights.

    Args:
        model_dir: from :func:`resolve_model_dir`.
        dtype: dtype of the floating-point weights (default fp32).
        device: where the weights go.
        convert: called as ``convert(key, tensor)`` on each weight as soon as it is read (already
            in ``dtype`` on ``device``); its result is what the model holds. QLoRA quantizes here,
            so only one full-precision weight is alive at a time.

    Returns:
        The model in eval mode, with no tensor left on the meta device and tied embeddings re-tied.
    """
    import torch
    from safetensors import safe_open

    from tunewiz.models.llama import LlamaForCausalLM

    dtype = dtype or torch.float32
    config = LlamaConfig.from_file(model_dir / "config.json")
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    expected = model.state_dict()  # meta tensors: names and shapes only
    where = _weight_files(model_dir)
    stored = {key: key for key in where}  # our name -> the name in the file
    if config.text_of_multimodal:
        stored = text_model_keys(where)
        where = {key: where[name] for key, name in stored.items()}
    # A tied lm_head is the embedding; checkpoints usually omit it (and we ignore it when present).
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing = [k for k in expected if k not in where and k not in tied]
    if missing:
        raise TunewizError(
            f"{len(missing)} weight(s) missing from `{_describe(model_dir, where)}`: {', '.join(missing[:3])}"
            + (", ..." if len(missing) > 3 else ""),
            hint=f"the checkpoint does not match its config.json ({config.model_type}, "
            f"{config.num_hidden_layers} layers)",
        )
    unexpected = [k for k in where if k not in expected and not k.endswith(IGNORED_KEY_SUFFIXES)]
    if unexpected:
        raise TunewizError(
            f"unexpected weight `{unexpected[0]}` in `{where[unexpected[0]]}`"
            + (
                f" (and {len(unexpected) - 1} more: {', '.join(unexpected[1:3])}...)"
                if len(unexpected) > 1
                else ""
            ),
            hint="is this a checkpoint of a supported family matching its config.json?",
        )
    by_file: dict[Path, list[str]] = defaultdict(list)
    for key in expected:
        if key not in tied:
            by_file[where[key]].append(key)
    state = {}
    for file, keys in by_file.items():
        with safe_open(str(file), framework="pt") as f:
            for key in keys:
                tensor = f.get_tensor(stored[key])
                if tensor.shape != expected[key].shape:
                    raise TunewizError(
                        f"weight `{key}` in `{file}` has shape {tuple(tensor.shape)}, "
                        f"config.json implies {tuple(expected[key].shape)}",
                        hint="the checkpoint does not match its config.json",
                    )
                tensor = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)
                state[key] = convert(key, tensor) if convert is not None else tensor
    if tied:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if on_meta:
        raise RuntimeError(f"tensors left on the meta device after loading: {on_meta[:3]}")
    return model.eval()


def text_model_keys(keys: Iterable[str]) -> dict[str, str]:
    """The language model's weights of a multimodal checkpoint: ``{text-only name: stored name}``,
    without the vision tower and projector.

    Args:
        keys: the tensor names stored in the checkpoint.
    """
    out = {}
    for key in keys:
        if key.startswith(VISION_PREFIXES):
            continue
        prefix = next((p for p in TEXT_PREFIXES if key.startswith(p)), None)
        out[TEXT_PREFIXES[prefix] + key[len(prefix) :] if prefix else key] = key
    return out


def _describe(model_dir: Path, where: dict[str, Path]) -> Path:
    """The file to name in a missing-key error: the index if sharded, else the single weights file."""
    files = set(where.values())
    return next(iter(files)) if len(files) == 1 else model_dir / INDEX_FILE


def save_model(
    model_or_state_dict: LlamaForCausalLM | dict[str, torch.Tensor],
    out_dir: Path,
    config: LlamaConfig,
    *,
    max_shard_bytes: int = 5 * GiB,
) -> list[Path]:
    """Write weights and ``config.json`` so ``transformers.AutoModelForCausalLM.from_pretrained(out_dir)``
    (and :func:`load_model`) load them.

    Args:
        model_or_state_dict: the model, or a full (unsharded) state dict with transformers' key names.
        out_dir: created if needed; stale weight files from an earlier save there are removed.
        config: the architecture, written as ``config.json``.
        max_shard_bytes: above this, weights are split into ``model-0000i-of-0000n.safetensors`` plus
            ``model.safetensors.index.json``.

    Returns:
        The weight files written.
    """
    import torch

    state = (
        model_or_state_dict.state_dict()
        if isinstance(model_or_state_dict, torch.nn.Module)
        else model_or_state_dict
    )
    if config.tie_word_embeddings:
        # The same tensor under two names: safetensors refuses shared storage, and transformers re-ties.
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    tensors = _own_storage(state)
    shards: list[dict[str, torch.Tensor]] = [{}]
    shard_bytes = 0
    for key, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        if shards[-1] and shard_bytes + size > max_shard_bytes:
            shards.append({})
            shard_bytes = 0
        shards[-1][key] = tensor
        shard_bytes += size
    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(shards)
    names = (
        ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    )
    for name, shard in zip(names, shards, strict=True):
        _atomic_save_file(shard, out_dir / name)
    if n > 1:
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map = {key: name for name, shard in zip(names, shards, strict=True) for key in shard}
        atomic_write_json(out_dir / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})
    written = {*names, INDEX_FILE} if n > 1 else set(names)
    for stale in [*out_dir.glob("model*.safetensors"), out_dir / INDEX_FILE]:
        if stale.name not in written:
            stale.unlink(missing_ok=True)
    dtype = next((t.dtype for t in tensors.values() if t.is_floating_point()), torch.float32)
    atomic_write_json(out_dir / "config.json", {**config.to_hf(), "dtype": str(dtype).removeprefix("torch.")})
    return [out_dir / name for name in names]


def _own_storage(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors, each with storage of its own (safetensors refuses shared
    storage and views into larger buffers)."""
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        t = tensor.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != t.numel() * t.element_size():
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def _atomic_save_file(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})  # transformers checks format == "pt"
    os.replace(tmp, path)
