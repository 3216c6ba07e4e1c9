"""Ctrl-C (SIGINT) where it must not cut a step in two.

Python runs a signal's handler in the main thread at the next bytecode, whichever thread the kernel
gave the signal to (torch's and the tokenizers' native threads take it too), so blocking the signal
with ``pthread_sigmask`` in the main thread alone does not hold it: these hold it at the Python level.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Hold a Ctrl-C that arrives inside the block until the block ends, then deliver it to the handler
    in place before the block (``KeyboardInterrupt``, the CLI's, or none when SIGINT is ignored).

    For two steps that must not be parted: a process pool forked but not yet assigned (a Ctrl-C between
    them left its workers running, orphaned); a thread started but not yet waited for. In a thread other
    than the main one (where no handler runs) it does nothing.
    """
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    pressed: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pressed:
            signal.raise_signal(signal.SIGINT)


@contextmanager
def ctrl_c_outside_imports() -> Iterator[None]:
    """Inside the block, a Ctrl-C that arrives during an import takes effect once it is done
    (:func:`interrupt_outside_imports`). Only where Python's own handler is in place, in the main
    thread: an ignored SIGINT (``nohup``) or another handler stays as it is."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    previous = signal.signal(signal.SIGINT, interrupt_outside_imports)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def interrupt_outside_imports(signum: int, frame: FrameType | None) -> None:
    """SIGINT handler: ``KeyboardInterrupt``, except while a module is being imported, when SIGINT is sent
    again 50 ms later (until no import is running).

    An import cut short by ``KeyboardInterrupt`` leaves a half-initialised module behind (torch's
    import of numpy did: ``module 'numpy' has no attribute 'logical_and'``, ``cannot load module more
    than once per process``), and some libraries' import code swallows it (the Ctrl-C was lost).
    ``tunewiz train`` imports torch for ~1-2 s at its start, when a Ctrl-C is most likely. Sent again,
    the Ctrl-C reaches whatever handles it then: this one, or the training dashboard's (which stops the
    run after its step) once torchrun has started.
    """
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            again = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
            again.daemon = True  # the process may end first
            again.start()
            return
        frame = frame.f_back
    raise KeyboardInterrupt
