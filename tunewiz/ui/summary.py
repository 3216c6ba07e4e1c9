"""The summary printed when a run ends: what it achieved, where the outputs are, what to run next.

A stopped or failed run gets the reason, the last good checkpoint and the exact resume command
instead.
"""

from __future__ import annotations

import shlex

from rich.console import Console
from rich.text import Text

from tunewiz.run.directory import RunDir
from tunewiz.ui.render import fmt_loss, fmt_num
from tunewiz.ui.state import DashboardState, truncation_note
from tunewiz.units import fmt_bytes, fmt_duration


def _cmd(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)


def _last_good_checkpoint(state: DashboardState, run_dir: RunDir) -> str | None:
    # The disk is the truth: a checkpoint only counts once its completion marker exists.
    on_disk = run_dir.latest_checkpoint()
    if on_disk is not None:
        return str(on_disk)
    if state.stop and state.stop.get("checkpoint"):
        return str(state.stop["checkpoint"])
    return None


def _numbers(state: DashboardState) -> Text:
    text = Text()
    best = state.best_val
    final = state.val_losses[-1] if state.val_losses else None
    if final:
        text.append(f"  validation loss: final {fmt_loss(final[1])} (step {final[0]})")
        if best:
            text.append(f", best {fmt_loss(best[1])} (step {best[0]})")
        text.append("\n")
    text.append(f"  training loss:   last {fmt_loss(state.loss)}, smoothed {fmt_loss(state.loss_ema)}\n")
    text.append(
        f"  time {fmt_duration(state.elapsed)} · {fmt_num(state.tokens_total, ',')} trained tokens"
        f" · {fmt_num(state.run_tokens_per_s, ',.0f')} input tokens/s\n"
    )
    if state.peak_memory_max is not None:
        planned = f" (planned {fmt_bytes(state.planned_peak_bytes)})" if state.planned_peak_bytes else ""
        text.append(f"  peak memory {fmt_bytes(state.peak_memory_max)} per rank{planned}\n")
    if note := truncation_note(state):
        text.append(f"  {note[0]}\n", style="yellow")
        text.append(f"  hint: {note[1]}\n")
    return text


def _outputs(state: DashboardState, run_dir: RunDir) -> Text:
    final = str((state.end or {}).get("final_dir") or run_dir.final)
    text = Text(f"  outputs: {final}\n")
    if run_dir.adapter.is_dir():
        text.append(f"    adapter (PEFT format): {run_dir.adapter}\n")
    if (run_dir.final / "model.safetensors").is_file() or any(run_dir.final.glob("model-*.safetensors")):
        text.append(f"    merged model (safetensors): {run_dir.final}\n")
    if run_dir.loss_plot.is_file():
        text.append(f"    loss curve: {run_dir.loss_plot}\n")
    text.append(f"    event log: {run_dir.events}\n")
    return text


def print_summary(state: DashboardState, run_dir: RunDir, console: Console, *, running: bool = False) -> None:
    """Print the end-of-run summary: results and next commands, or how to resume.

    Args:
        state: the final dashboard state (from ``run_dashboard`` or folded from the log).
        run_dir: the run directory; paths and commands in the summary point into it.
        console: where to print; a colourless console prints plain text.
        running: the run is still live (``tunewiz watch`` detached from it); otherwise a launch that
            wrote no end, stop or error crashed.
    """
    run = str(run_dir.path)
    name = run_dir.path.name  # the run's name, as every message names it (not the preset's)
    out = Text()
    if state.launches == 0 and state.errors:  # failed before its start event: the error says why
        for err in state.errors:
            out.append(f"✗ run {name} failed before training started: {err.message}\n", style="bold red")
    elif state.launches == 0:
        code = f" (exit code {state.returncode})" if state.returncode not in (None, 0) else ""
        out.append(
            f"✗ run {name} wrote no events{code}: it failed before training started\n", style="bold red"
        )
        out.append(f"  look at the output above, or at {run_dir.events}\n")
    elif state.end is not None:
        out.append(f"✓ run {name} finished: {state.step} steps\n", style="bold green")
        out.append_text(_numbers(state))
        out.append_text(_outputs(state, run_dir))
        out.append("next:\n", style="bold")
        out.append(f"  {_cmd('tunewiz', 'chat', run)}\n  {_cmd('tunewiz', 'eval', run)}\n")
        # The Hub repo is named after the run directory (what the user chose), not the preset.
        repo = shlex.quote(run_dir.path.resolve().name)
        out.append(f"  {_cmd('tunewiz', 'push', run)} --repo-id <your-user>/{repo}\n")
    elif not running or state.stop is not None or state.errors or state.returncode not in (None, 0):
        nan = state.stop is not None and state.stop.get("reason") == "nan"
        if state.errors:
            for err in state.errors:
                at = f" at step {err.step}" if err.step is not None else ""
                out.append(f"✗ rank {err.rank} failed{at}: {err.message}\n", style="bold red")
        elif nan:
            out.append(
                f"✗ run {name} stopped at step {state.stop['step']}: the loss became NaN/inf\n",
                style="bold red",
            )
        elif state.stop is not None and state.stop.get("reason") == "orphaned":
            why = state.stop.get("detail") or "its launcher went away"
            out.append(
                f"■ run {name} stopped at step {state.stop.get('step', state.step)} because {why}\n",
                style="bold yellow",
            )
        elif state.stop is not None:
            out.append(
                f"■ run {name} stopped at step {state.stop.get('step', state.step)} on request\n",
                style="bold yellow",
            )
        elif state.returncode is None:
            out.append(
                f"✗ run {name} crashed at step {state.step}: nothing holds its lock and it wrote no end "
                "(killed, or the machine went down)\n",
                style="bold red",
            )
        else:
            out.append(
                f"✗ the training processes exited with code {state.returncode} at step {state.step}\n",
                style="bold red",
            )
        out.append_text(_numbers(state))
        checkpoint = _last_good_checkpoint(state, run_dir)
        if checkpoint:
            resume = (state.stop or {}).get("resume_command") or _cmd("tunewiz", "resume", run)
            out.append(f"  last good checkpoint: {checkpoint}\n")
            out.append("resume with:\n", style="bold")
            out.append(f"  {resume}\n")
            if nan:
                out.append("  (if the loss diverges again, try a lower learning rate, `train.lr`)\n")
        else:
            out.append("  no complete checkpoint was saved; start again with:\n")
            out.append(f"  {_cmd('tunewiz', 'train', str(run_dir.config))}\n")
    else:
        out.append(f"… run {name} is still running: step {state.step}", style="bold")
        out.append(f"/{state.total_steps}\n" if state.total_steps else "\n")
        out.append(f"  watch it again with: {_cmd('tunewiz', 'watch', run)}\n")
    console.print(out, end="", soft_wrap=True, highlight=False)
