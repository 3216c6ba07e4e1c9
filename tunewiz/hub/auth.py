"""The Hub token: huggingface_hub's own (``HF_TOKEN`` or the login cache), passed on and never printed."""

from __future__ import annotations

from tunewiz.errors import TunewizError

LOGIN_HINT = "`hf auth login` (or set `HF_TOKEN`)"


def write_token() -> str:
    """The Hub token huggingface_hub would use (``HF_TOKEN``, else the login cache).

    Raises:
        TunewizError: there is none.
    """
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise TunewizError(
            "no Hugging Face token: pushing needs one with write access",
            hint=f"{LOGIN_HINT}; or add `--dry-run` to write the folder without uploading it",
            exit_code=1,
        )
    return token
