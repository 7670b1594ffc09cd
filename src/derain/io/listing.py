"""The one rule for "the image files in a folder": by extension (any case), hidden files and folders skipped,
in natural order of names (``rain-2`` before ``rain-10``), sub-folders walked in that order when asked."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection
from pathlib import Path

from derain.io.image import IMAGE_EXTENSIONS


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key that orders digit runs by value: ``rain-2`` < ``rain-10``; ties broken by the exact name."""
    parts = re.split(r"([0-9]+)", name)
    return (tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)), name)


def list_images(folder: str | os.PathLike[str], *, recursive: bool = False,
                extensions: Collection[str] = IMAGE_EXTENSIONS,
                onerror: Callable[[OSError], None] | None = None) -> list[Path]:
    """The files of ``folder`` whose extension is in ``extensions``; ``recursive`` walks sub-folders (a folder's
    own files first, then each sub-folder); ``onerror`` hears of folders that cannot be read (default: skipped).
    Every entry that is not a folder counts (a broken link too: reading it then says what is wrong). A path that
    is not a folder gives an empty list."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, onerror=onerror):
        dirs[:] = sorted((d for d in dirs if not d.startswith(".")), key=natural_key) if recursive else []
        found += [Path(root) / name for name in sorted(files, key=natural_key)
                  if not name.startswith(".") and Path(name).suffix.lower() in extensions]
    return found
