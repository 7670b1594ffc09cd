"""SIGTERM ends a run the way Ctrl+C does: with the files in progress cleaned up.

Python turns SIGINT into :class:`KeyboardInterrupt`, so every ``with``/``finally`` on the way out runs (a temporary
output file is removed, the target left as it was). SIGTERM (``kill``, a scheduler or a container stopping) kills
the process where it stands instead, leaving hidden temporary files such as ``.NAME.tmp.mp4`` beside the outputs.
:func:`terminate_as_interrupt` makes SIGTERM raise the same interrupt while a run is in progress.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(KeyboardInterrupt):
    """The interrupt raised for SIGTERM (a :class:`KeyboardInterrupt`, so code that cleans up on Ctrl+C does)."""


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signal.Signals(signum).name)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated`; the previous handler comes back after it. Only the
    main thread can take signals: elsewhere (a notebook's worker thread, a web page's) this does nothing. A
    handler someone else installed (not Python's default) is left in place."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        yield
        return
    signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
