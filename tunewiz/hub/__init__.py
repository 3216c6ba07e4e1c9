"""The Hugging Face Hub: download a base model into the HF cache, and push a run's adapter or merged
model with its model card.

One module per responsibility: :mod:`tunewiz.hub.errors` (the ordered huggingface_hub exception →
TunewizError table), :mod:`tunewiz.hub.auth` (the token), :mod:`tunewiz.hub.download`
(``tunewiz download``: file selection, disk check, download) and :mod:`tunewiz.hub.push`
(``tunewiz push``: staging, upload). huggingface_hub is imported inside the functions; importing
this package is cheap.
"""

from tunewiz.hub.auth import write_token
from tunewiz.hub.download import (
    HUB_IGNORE_PATTERNS,
    HUB_PATTERNS,
    DownloadPlan,
    DownloadResult,
    download_model,
    plan_download,
    resolve_repo_alias,
    select_files,
)
from tunewiz.hub.errors import HubContext, explain_hub_error
from tunewiz.hub.push import StagedFolder, push_run, stage_push

__all__ = [
    "HUB_IGNORE_PATTERNS",
    "HUB_PATTERNS",
    "DownloadPlan",
    "DownloadResult",
    "HubContext",
    "StagedFolder",
    "download_model",
    "explain_hub_error",
    "plan_download",
    "push_run",
    "resolve_repo_alias",
    "select_files",
    "stage_push",
    "write_token",
]
