"""Render the dashboard and the wizard's plan screen to SVG under `docs/images/` with Rich.

The dashboard is `tunewiz.ui.render.render(state)` for a state folded from
`docs/images/tiny-lora.events.jsonl`, the event log of a real `tunewiz train presets/tiny-lora.yaml`
run on two CPU cores, replaced when a newer run is worth showing. The wizard screen is `tunewiz init`
run with flags for one 8 GB GPU, so it draws the same on any machine. Both are pure functions of the
code and the log, and `tests/test_docs.py` checks the committed SVGs are up to date.

    python scripts/render_screenshots.py
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
EVENTS = IMAGES / "tiny-lora.events.jsonl"
WIDTH = 110


def _console() -> Console:
    # A fixed-size recording terminal: the SVG must not depend on the terminal this runs in.
    return Console(
        record=True, width=WIDTH, force_terminal=True, color_system="truecolor", file=io.StringIO()
    )


def dashboard_svg() -> str:
    """The dashboard of the recorded tiny-lora run, as SVG text."""
    from tunewiz.run.events import read_events
    from tunewiz.ui import fold_events, render

    console = _console()
    console.print(render(fold_events(read_events(EVENTS))))
    return console.export_svg(title="tunewiz train presets/tiny-lora.yaml")


def wizard_svg() -> str:
    """The wizard's plan for Llama 3.2 1B Instruct on one 8 GB GPU, as SVG text."""
    from tunewiz.models.catalog import lookup
    from tunewiz.wizard import flow
    from tunewiz.wizard.flow import WizardFlags, run_wizard
    from tunewiz.wizard.model_step import missing_model

    # The download step names this machine's free disk and cache path: fixed here, so the picture is
    # the same on every machine (the model not downloaded, no token, 100 GB free).
    fixed = missing_model(lookup("llama-3.2-1b-instruct"), False, 100 * 10**9, "~/.cache/huggingface/hub")
    shown = flow._model_readiness
    flow._model_readiness = lambda model: fixed  # type: ignore[assignment]
    console = _console()
    with tempfile.TemporaryDirectory() as tmp:
        flags = WizardFlags(
            model="llama-3.2-1b-instruct",
            dataset="tunewiz:story-qa",
            method=None,
            epochs=1,
            time_budget=None,
            gpus=1,
            gpu_memory="8GB",
            micro_batch=None,
            lora_rank=None,
            seq_len=None,
            output=Path(tmp) / "story-qa.yaml",
            name="llama-1b-story-qa",
            yes=True,
            force=True,
            launch=False,
        )
        try:
            run_wizard(flags, None, console)
        finally:
            flow._model_readiness = shown  # type: ignore[assignment]
    return console.export_svg(title="tunewiz init --gpus 1 --gpu-memory 8GB")


SCREENSHOTS: tuple[tuple[Path, Callable[[], str]], ...] = (
    (IMAGES / "dashboard.svg", dashboard_svg),
    (IMAGES / "wizard-plan.svg", wizard_svg),
)


if __name__ == "__main__":
    for path, render in SCREENSHOTS:
        path.write_text(render(), encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
