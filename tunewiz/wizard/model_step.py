"""Before "start training now?": is the model on disk, and if not, what must happen first.

A run can only start when the weights are in a local directory or the Hugging Face cache
(``resolve_model_dir`` never downloads). For a model that is not there, the wizard lists the steps in
order: the licence page of a gated model, ``hf auth login`` when no token is configured, and
``tunewiz download`` with the download's size against the free disk. It offers the download before
the launch; a gated model without a token cannot be downloaded, so then it offers neither.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunewiz.errors import TunewizError
from tunewiz.models.catalog import CatalogModel
from tunewiz.plan.hardware import hf_cache_dir

SAFETENSORS_BYTES_PER_PARAM = 2  # Hub checkpoints of these families are bf16 safetensors


@dataclass(frozen=True)
class Readiness:
    """Whether a run of ``model`` can start, and what to do first when it cannot.

    Args:
        on_disk: the weights are local (a directory, the shipped model, or in the HF cache).
        can_download: ``tunewiz download`` can fetch them now (not gated, or a token is configured).
        download_command: ``["tunewiz", "download", REPO_ID]``.
        steps: what to do, in order, as sentences with the commands in backticks.
    """

    on_disk: bool
    can_download: bool
    download_command: list[str]
    steps: tuple[str, ...]


def readiness(model: CatalogModel, hub_token: bool, free_disk: int) -> Readiness:
    """Check that ``model`` is on disk; otherwise say how to get it there.

    Args:
        model: the chosen model.
        hub_token: a Hugging Face token is configured (``Hardware.hub_token``).
        free_disk: free bytes where the HF cache is (``Hardware.disks``).
    """
    from tunewiz.models.loading import resolve_model_dir

    try:
        resolve_model_dir(model.repo_id)
        return Readiness(True, False, ["tunewiz", "download", model.repo_id], ())
    except TunewizError:
        return missing_model(model, hub_token, free_disk, str(hf_cache_dir()))


def missing_model(model: CatalogModel, hub_token: bool, free_disk: int, cache: str) -> Readiness:
    """The steps that bring a model that is not on disk there (pure: nothing is looked up).

    Args:
        model: the chosen model.
        hub_token: a Hugging Face token is configured.
        free_disk: free bytes where the HF cache is.
        cache: the HF cache directory, for the message.
    """
    command = ["tunewiz", "download", model.repo_id]
    size = SAFETENSORS_BYTES_PER_PARAM * model.params
    steps = []
    if model.gated:
        steps.append(
            f"accept the licence of this gated model at https://huggingface.co/{model.repo_id} "
            "(once per Hugging Face account)"
        )
        if not hub_token:
            steps.append("log in with a read token: `hf auth login`")
    room = "" if free_disk >= size else f" — only {free_disk / 1e9:.1f} GB free: make room first"
    steps.append(
        f"download it: `tunewiz download {model.repo_id}` (~{size / 1e9:.1f} GB; "
        f"{free_disk / 1e9:.0f} GB free in `{cache}`){room}"
    )
    can = (not model.gated or hub_token) and free_disk >= size
    return Readiness(False, can, command, tuple(steps))
