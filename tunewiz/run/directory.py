"""The run directory: the unit that train writes and resume, chat, eval and push read.

Layout::

    runs/<name>/
      config.yaml          resolved preset (every default filled in)
      plan.json            the planner's plan for this run (when one was made)
      prompt.json          the chat template and bos/eos rule the run trained with (tunewiz.text.prompt);
                           after training the only source for chat, eval, final/ and GGUF prompts
      events.jsonl         rank 0's event log (see tunewiz.run.events)
      checkpoints/step-N/  step checkpoints; complete only once COMPLETE exists
      final/               adapter/ (PEFT) and/or merged model.safetensors, config.json,
                           tokenizer files, README.md (model card)
      loss.png             training and validation loss
      eval/results.json    lm-eval results
      push-dry-run/        what `tunewiz push --dry-run` would upload (push-dry-run-step-N/: --from)
      trackers.json        the experiment tracker runs of this run (tunewiz.tracking), for resume/eval
      tensorboard/         TensorBoard event files (output.report_to: [tensorboard])
      lock, lock.json      the launcher's lock and who holds it (tunewiz.run.lock)
      ranks.lock           held by every rank while it runs
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tunewiz.errors import TunewizError

CHECKPOINT_COMPLETE_MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory. Creating the object touches nothing on disk."""

    path: Path

    @property
    def config(self) -> Path:
        """The resolved preset."""
        return self.path / "config.yaml"

    @property
    def plan(self) -> Path:
        """The planner's plan, when one was made."""
        return self.path / "plan.json"

    @property
    def events(self) -> Path:
        """Rank 0's event log."""
        return self.path / "events.jsonl"

    @property
    def checkpoints(self) -> Path:
        """Folder of the step checkpoints."""
        return self.path / "checkpoints"

    @property
    def final(self) -> Path:
        """The exported model and/or adapter."""
        return self.path / "final"

    @property
    def adapter(self) -> Path:
        """The PEFT adapter inside ``final/``."""
        return self.final / "adapter"

    @property
    def loss_plot(self) -> Path:
        """The loss curve image."""
        return self.path / "loss.png"

    @property
    def eval_results(self) -> Path:
        """lm-eval results written by ``tunewiz eval``."""
        return self.path / "eval" / "results.json"

    def eval_results_for(self, *, step: int | None = None, limit: int | None = None) -> Path:
        """Where ``tunewiz eval`` writes its results: ``eval/results.json`` for the final weights,
        ``eval/results-step-N.json`` for step checkpoint N, and ``-limit-M`` before ``.json`` for an
        evaluation of only M documents, so neither replaces the full evaluation of the final weights.

        Args:
            step: the step checkpoint evaluated (``--from step-N``), or None for ``final/``.
            limit: documents per task or samples (``--limit``), or None for all.
        """
        step_part = f"-step-{step}" if step is not None else ""
        limit_part = f"-limit-{limit}" if limit else ""
        return self.eval_results.with_name(f"results{step_part}{limit_part}.json")

    def push_dry_run(self, *, step: int | None = None) -> Path:
        """Where ``tunewiz push --dry-run`` stages the folder it would upload: ``push-dry-run/`` for the
        final weights, ``push-dry-run-step-N/`` for step checkpoint N (each dry run replaces its own).

        Args:
            step: the step checkpoint staged (``--from step-N``), or None for ``final/``.
        """
        return self.path / ("push-dry-run" + (f"-step-{step}" if step is not None else ""))

    @property
    def trackers(self) -> Path:
        """Which experiment tracker runs belong to this run (W&B run id, MLflow run id, TB log dir)."""
        return self.path / "trackers.json"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard's log directory for this run."""
        return self.path / "tensorboard"

    @property
    def stop_request(self) -> Path:
        """File the parent creates to ask the ranks to stop gracefully at the next step boundary."""
        return self.path / "STOP"

    def checkpoint(self, step: int) -> Path:
        """The folder of the step-``step`` checkpoint (complete or not)."""
        return self.checkpoints / f"step-{step}"

    def complete_checkpoints(self) -> list[tuple[int, Path]]:
        """Complete step checkpoints, oldest first. Half-written ones (no marker) are left out."""
        if not self.checkpoints.is_dir():
            return []
        found = []
        for child in self.checkpoints.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / CHECKPOINT_COMPLETE_MARKER).is_file():
                found.append((int(match.group(1)), child))
        return sorted(found)

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        complete = self.complete_checkpoints()
        return complete[-1][1] if complete else None


def existing_run(path: str | Path, command: str) -> RunDir:
    """The run directory at ``path``, or the error every command gives when there is none there.

    Args:
        path: what the user passed.
        command: the `tunewiz` command, for the example in the hint (``watch``, ``resume``, ...).

    Raises:
        TunewizError: ``path`` does not exist, or holds none of ``config.yaml``, ``events.jsonl`` and the
            lock a starting run writes first.
    """
    run = RunDir(Path(path))
    hint = f"pass the directory `tunewiz train` created, e.g. `tunewiz {command} runs/tiny-lora`"
    if not run.path.exists():
        raise TunewizError(f"run directory `{path}` does not exist", hint=hint)
    if not any(p.is_file() for p in (run.config, run.events, run.path / "lock.json")):
        raise TunewizError(
            f"`{path}` is not a run directory: it has no `config.yaml` and no `events.jsonl`", hint=hint
        )
    return run
