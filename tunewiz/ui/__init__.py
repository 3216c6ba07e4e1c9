"""The training dashboard: fold ``events.jsonl`` into a state, draw it (Rich Live or plain lines),
summarise the run at the end and draw ``loss.png``.

Heavy dependencies stay out: Rich only at import time, matplotlib inside ``write_loss_plot``.
"""

from tunewiz.ui.live import StopControl, choose_mode, make_console, run_dashboard
from tunewiz.ui.lossplot import write_loss_plot
from tunewiz.ui.render import plain_lines, render, samples_lines, status_line
from tunewiz.ui.state import DashboardState, apply_event, fold_events
from tunewiz.ui.summary import print_summary

__all__ = [
    "DashboardState",
    "StopControl",
    "apply_event",
    "choose_mode",
    "fold_events",
    "make_console",
    "plain_lines",
    "print_summary",
    "render",
    "run_dashboard",
    "samples_lines",
    "status_line",
    "write_loss_plot",
]
