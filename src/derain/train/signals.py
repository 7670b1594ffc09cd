"""Stopping a run cleanly: Ctrl-C or SIGTERM (``kill``, a scheduler taking the machine back) ends the step in
progress, the checkpoint is written and ``fit`` returns; a second Ctrl-C interrupts at once."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any


class StopOnSignal:
    """While training: the first SIGINT or SIGTERM asks the loop to stop after the step in progress (which then
    writes its checkpoint); a second one interrupts at once. Only the main thread can take signals; elsewhere
    (a notebook's worker thread) signals keep their usual meaning."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            self._restore()
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        print(f"\n{self.received}: stopping after this step, with a checkpoint (again: stop at once, losing the "
              "steps since the last checkpoint)", file=sys.stderr, flush=True)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __exit__(self, *exc: object) -> None:
        self._restore()


def worker_ignores_stop_signals(worker_id: int) -> None:
    """A data worker leaves SIGINT and SIGTERM to the training process: Ctrl-C in a terminal and ``pkill -f``
    signal the whole process group, and a worker that died of it would crash the step in progress instead of
    letting :class:`StopOnSignal` end it with a checkpoint. The training process still ends its workers (they
    also exit by themselves within seconds once it is gone; SIGKILL ends them at once)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
