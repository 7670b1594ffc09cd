"""A progress display for the library's ``progress(done, total, name)`` callbacks (:func:`derain.evaluate`,
:func:`derain.inference.batch.derain_files`, :func:`derain.data.rainbuild.build_dataset`): a tqdm bar with an ETA on
a terminal, silent otherwise (logs of background runs stay clean)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


class FileProgress:
    """``FileProgress("eval")`` is a ``progress(done, total, name)`` callback drawing a bar of files on stderr."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None

    def __call__(self, done: int, total: int, name: str) -> None:
        if not sys.stderr.isatty():
            return
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.label, unit="file", file=sys.stderr, leave=False)
        self.bar.set_postfix_str(name[:24], refresh=False)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()
            self.bar = None
