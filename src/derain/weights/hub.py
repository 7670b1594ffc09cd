"""Weights by name: the bundled file, the user's copy, or a download from where the authors put it.

:func:`locate` looks, in order, in the package (our weights and SPANet's), in the folders of ``$DERAIN_WEIGHTS``
(the official layout: ``sian/rain100h.pth``, ``prenet/Rain100H/PReNet6/net_latest.pth``, ...), and in the cache
(``$DERAIN_CACHE/official``, default ``~/.cache/derain/official``); a file found nowhere is downloaded from its
record's source into the cache, verified against its pin first (:mod:`derain.io.download`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from derain.errors import InputError, WeightsError
from derain.io.download import cache_dir, fetch, file_digest, mismatch
from derain.weights.catalog import CATALOG, WeightRecord, get_record, list_weights

WEIGHTS_ENV = "DERAIN_WEIGHTS"
_ASSETS = Path(__file__).resolve().parent.parent / "assets"


def search_dirs() -> list[Path]:
    """Folders holding official files in their official layout, in the order searched: ``$DERAIN_WEIGHTS``
    (``os.pathsep``-separated), then the cache."""
    dirs = [Path(p).expanduser() for p in os.environ.get(WEIGHTS_ENV, "").split(os.pathsep) if p]
    return [*dirs, official_cache()]


def official_cache() -> Path:
    return cache_dir() / "official"


def package_path(record: WeightRecord) -> Path:
    return _ASSETS / record.file


def cached_path(record: WeightRecord) -> Path | None:
    """Where the record's file is now, without downloading: the package, a $DERAIN_WEIGHTS folder, the cache."""
    if record.bundled:
        return package_path(record)
    for folder in search_dirs():
        candidate = folder / record.file
        if candidate.is_file():
            return candidate
    return None


def _first_download_notice(record: WeightRecord) -> str:
    if record.source is None:
        return ""
    return (f"derain: {record.name} was downloaded from its authors ({record.source.repo}) at your request; they "
            "publish no licence for it, so derain never ships it: use it under their terms (research).")


def locate(record: WeightRecord, *, download: bool = True, progress: bool | None = None,
           notice: Callable[[str], None] | None = None) -> Path:
    """The file of a catalog record, downloaded into the cache on first use (``download=False``: only look)."""
    found = cached_path(record)
    if found is not None:
        return found
    if record.source is None:
        raise WeightsError(f"{record.name}: {record.file} is missing from the package; reinstall derain")
    dest = official_cache() / record.file
    if not download:
        raise WeightsError(f"{record.name}: not downloaded yet (derain weights fetch {record.name})")
    by_hand = f"or in a ${WEIGHTS_ENV} folder as {record.file}"
    return fetch(record.source, dest, label=record.name, by_hand=by_hand, progress=progress, notice=notice,
                 first_download=_first_download_notice(record))


def verify_file(record: WeightRecord, path: Path) -> str:
    """'' when ``path`` is the record's file, else what differs."""
    digest = file_digest(path)
    if record.sha256:
        return "" if digest.sha256 == record.sha256 else f"sha256 expected {record.sha256}, got {digest.sha256}"
    return mismatch(record.source, digest) if record.source is not None else ""


@dataclass(frozen=True)
class CacheState:
    record: WeightRecord
    path: Path | None      # where the file is now (None: not downloaded)
    problem: str = ""      # what is wrong with it ('' when it matches its pin, or was not checked)

    @property
    def where(self) -> str:
        if self.record.bundled:
            return "bundled"
        return "cached" if self.path is not None else "not downloaded"


def status(names: Sequence[str] | None = None, *, check: bool = False) -> list[CacheState]:
    """Every record (or ``names``), where its file is and, with ``check``, whether it still matches its pin."""
    states = []
    for record in [get_record(name) for name in names or sorted(CATALOG)]:  # unknown names: the valid ones
        path = cached_path(record)
        problem = verify_file(record, path) if check and path is not None else ""
        states.append(CacheState(record, path, problem))
    return states


def fetch_all(names: Sequence[str] | None = None, *, every: bool = False,
              progress: bool | None = None) -> list[CacheState]:
    """Download the named records (every one with ``every``) that are not there yet; bundled ones are where they
    are. Every name is checked (an unknown one lists the valid ones) before anything is downloaded."""
    if every:
        names = list_weights()
    elif not names:
        raise InputError("name the weights to fetch (derain weights list shows them), or pass --all")
    records = [get_record(name) for name in names]
    show = sys.stderr.isatty() if progress is None else progress
    return [CacheState(record, locate(record, progress=show)) for record in records]
