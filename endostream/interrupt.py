"""Clean stops for long commands (batch, demo, bench, eval, predict).

The first SIGINT or SIGTERM only asks: the command finishes the frame in hand, writes what it
has (manifest, summary), prints one line saying what was finished and where it is, and exits
with 128 + the signal number. A second signal quits at once (KeyboardInterrupt for SIGINT, the
default action for SIGTERM), still without a traceback.

Child processes must not get their own KeyboardInterrupt from a terminal's Ctrl-C (the whole
process group receives it): :func:`children_ignore_sigint` starts them with SIGINT ignored,
which Python keeps (it installs its KeyboardInterrupt handler only when SIGINT was left at the
default), and the parent tells them to stop.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """A loop saw a stop request after ``done`` of its ``total`` items."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"stopped after {done} of {total}")
        self.done, self.total = done, total


class StopRequest:
    """Context manager: SIGINT/SIGTERM set :attr:`event` (and call ``on_stop``) instead of
    killing; ``requested`` names the signal. Installed only from the main thread (elsewhere it
    is a plain flag that :meth:`request` sets)."""

    def __init__(self, on_stop: Callable[[str], None] | None = None) -> None:
        self.on_stop = on_stop
        self.event = threading.Event()
        self.requested: str | None = None
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def is_set(self) -> bool:
        return self.event.is_set()

    @property
    def exit_code(self) -> int:
        """128 + the signal number (130 for SIGINT), the shell's convention; 0 when none came."""
        return 128 + self.signum if self.signum else 0

    def request(self, name: str, signum: int | None = None) -> None:
        """Ask for a stop from code (a test, another thread)."""
        if self.requested is None:
            self.requested, self.signum = name, signum
            self.event.set()
            if self.on_stop is not None:
                self.on_stop(name)

    def _handle(self, signum: int, _frame: object) -> None:
        first = self.requested is None
        if first and self._old:  # the next signal quits at once
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        self.request(signal.Signals(signum).name, signum)


@contextmanager
def children_ignore_sigint() -> Iterator[None]:
    """Processes started inside the block ignore SIGINT for their whole life (the parent,
    which gets it too, decides). In the parent SIGINT is ignored only during the block: keep
    it to the process starts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
