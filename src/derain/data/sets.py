"""Data sets by name: the benchmark test sets, the clean photos and the streak textures derain uses.

Each set ships as a manifest in the package (``assets/datasets/<name>.tsv``: the GitHub repository and commit it
comes from, every file's original path, sha256 and size). :func:`resolve` turns a name into a local folder:

1. ``$DERAIN_DATA/<name>`` when that variable names a local mirror of the data sets holding the set (the
   deprecated ``$DERAIN_SHARED/data/<name>`` is still read, with a warning, when ``DERAIN_DATA`` is not set);
2. the cache, ``$DERAIN_CACHE/data/<name>`` (default ``~/.cache/derain/data/<name>``), once complete;
3. otherwise every missing file is fetched from ``$DERAIN_HUB/<owner>/<repo>/<commit>/<original path>`` with
   the downloader of the weights (timeout, retries, sha256 check, atomic), and the set is marked complete.

A whole set is fetched at once (Rain100L is 51 MB, BSDS500 37 MB), so that ``limit=``, layouts and the training
code see an ordinary folder.
"""

from __future__ import annotations

import csv
import os
import sys
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from derain.errors import DataError, InputError
from derain.io.download import Source, cache_dir, fetch, file_digest

DATA_ENV = "DERAIN_DATA"       # a local mirror of the data sets: $DERAIN_DATA/<name>, searched first
_DEPRECATED_ENV = "DERAIN_SHARED"  # its former name, a folder whose data/<name> held the sets
_MANIFESTS = Path(__file__).resolve().parent.parent / "assets" / "datasets"
_COMPLETE = ".complete"

Kind = Literal["paired", "clean", "textures", "unpaired"]


@dataclass(frozen=True)
class DataSet:
    name: str                 # as users type it (case-insensitive)
    kind: Kind
    summary: str
    images: str = ""          # the sub-folder holding the images of an unpaired set ("clean", "streaks", "rain")
    exclude: str = ""         # package file naming images never to train on (used with the set by name)

    @property
    def manifest(self) -> Path:
        return _MANIFESTS / f"{self.name}.tsv"


@dataclass(frozen=True)
class Entry:
    file: str                 # path inside the set's folder
    source: Source


SETS: dict[str, DataSet] = {s.name: s for s in (
    DataSet("rain100L", "paired", "Rain100L test set: 100 light-rain pairs, 480x320 (rain/, norain/)"),
    DataSet("rain100H", "paired", "Rain100H test set: 100 heavy-rain pairs, 481x321 (rain/, norain/)"),
    DataSet("nturain_a1", "paired", "NTURain clip a1: 42 frames of a real video with rain rendered by Adobe After "
            "Effects, 640x480 JPEG (rain/, norain/)"),
    DataSet("heavy_rain_haze", "paired", "Heavy rain with accumulation haze (Li et al. 2019, Test1 s80 a04): 4 pairs, "
            "720x480 (rain/, norain/)"),
    DataSet("spa_sample", "paired", "2 real-rain pairs of SPA-Data (SPANet's real test set; clean image from the "
            "video by SPANet's method), 512x512: a check, not a statistic"),
    DataSet("bsds500", "clean", "BSDS500: 500 clean photos for synthetic rain; used by name, the 91 that are "
            "Rain100L/H ground truths are left out", images="clean", exclude="bsds500.exclude.tsv"),
    DataSet("rain_streaks", "textures", "104 rain-streak textures (Garg & Nayar 2006), for synthetic rain",
            images="streaks"),
    DataSet("real_rain", "unpaired", "49 real rainy photos, no ground truth (SPANet's Real_Internet set)",
            images="rain"),
    DataSet("real_rain_large", "unpaired", "6 real rainy photos at full resolution (1280-1920 px wide), no "
            "ground truth", images="rain"),
)}


def list_sets() -> list[str]:
    return sorted(SETS, key=str.lower)


def find(name: str) -> DataSet | None:
    """The set called ``name`` (any case), or None."""
    return next((s for key, s in SETS.items() if key.lower() == name.lower()), None)


def get_set(name: str) -> DataSet:
    found = find(name)
    if found is None:
        raise DataError(f"unknown data set {name!r}; known sets: {', '.join(list_sets())} (or pass a folder)")
    return found


def entries(dataset: DataSet) -> list[Entry]:
    """Every file of the set with its source, from the shipped manifest."""
    lines = dataset.manifest.read_text().splitlines()
    header = dict(field.split("=", 1) for field in lines[0].lstrip("# ").split("\t") if "=" in field)
    repo = header["source"].removeprefix("github:")
    rows = csv.DictReader(lines[1:], delimiter="\t")
    return [Entry(row["file"], Source(repo, header["commit"], row["orig_path"], sha256=row["sha256"],
                                      size=int(row["bytes"]))) for row in rows]


def exclusions(dataset: DataSet) -> set[str]:
    """File names of the set never to train on (BSDS500: the Rain100L/H ground truths)."""
    if not dataset.exclude:
        return set()
    rows = csv.DictReader((_MANIFESTS / dataset.exclude).read_text().splitlines(), delimiter="\t")
    return {row["bsds_file"] for row in rows}


def mirror_root() -> Path | None:
    """The local mirror of the data sets, ``$DERAIN_DATA`` (each set in a folder of its name), or None.

    The variable's former name is still read when ``DERAIN_DATA`` is not set: ``$DERAIN_SHARED/data``, with a
    warning that says what to set instead."""
    root = os.environ.get(DATA_ENV)
    if root:
        return Path(root).expanduser()
    old = os.environ.get(_DEPRECATED_ENV)
    if not old:
        return None
    folder = Path(old).expanduser() / "data"
    warnings.warn(f"{_DEPRECATED_ENV} is deprecated as the data sets' local mirror: set {DATA_ENV}={folder} "
                  "instead", FutureWarning, stacklevel=3)
    return folder


def mirror(dataset: DataSet) -> Path | None:
    """``$DERAIN_DATA/<name>`` when set and present (a local copy, searched first)."""
    root = mirror_root()
    if root is None:
        return None
    folder = root / dataset.name
    return folder if folder.is_dir() else None


def cache_folder(dataset: DataSet) -> Path:
    return cache_dir() / "data" / dataset.name


def local_folder(dataset: DataSet) -> Path | None:
    """Where the set is now without downloading: the mirror, or a complete cache folder."""
    found = mirror(dataset)
    if found is not None:
        return found
    folder = cache_folder(dataset)
    return folder if (folder / _COMPLETE).is_file() else None


def fetch_set(dataset: DataSet, *, progress: bool | None = None, workers: int = 8) -> Path:
    """Download every file of the set that is missing (or wrong) into the cache; returns the folder."""
    folder = cache_folder(dataset)
    todo = [e for e in entries(dataset)
            if not ((folder / e.file).is_file() and (folder / e.file).stat().st_size == e.source.size)]
    show = sys.stderr.isatty() if progress is None else progress

    with tqdm(total=len(todo), desc=f"{dataset.name}: downloading", unit="file", file=sys.stderr,
              disable=not (show and todo)) as bar:
        def one(entry: Entry) -> None:
            fetch(entry.source, folder / entry.file, label=f"{dataset.name}/{entry.file}", progress=False,
                  by_hand=f"or the whole set under ${DATA_ENV}/{dataset.name}")
            bar.update(1)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(one, e) for e in todo]:
                future.result()
    (folder / _COMPLETE).write_text(f"{len(entries(dataset))} files\n")
    return folder


def verify_set(dataset: DataSet) -> list[str]:
    """Re-hash the cached (or mirrored) set: the files that are missing or differ from the manifest."""
    folder = local_folder(dataset)
    if folder is None:
        return ["not downloaded"]
    bad = []
    for e in entries(dataset):
        path = folder / e.file
        if not path.is_file():
            bad.append(f"{e.file}: missing")
        elif file_digest(path).sha256 != e.source.sha256:
            bad.append(f"{e.file}: sha256 differs from the manifest")
    return bad


def fetch_sets(names: Sequence[str] | None = None, *, every: bool = False) -> list[tuple[str, Path]]:
    """``(name, folder)`` of the named sets (every one with ``every``), downloaded first where needed. Every name is
    checked (an unknown one lists the valid ones) before anything is downloaded."""
    return [(name, resolve(name)) for name in _names(names, every)]


def verify_sets(names: Sequence[str] | None = None) -> list[tuple[str, list[str]]]:
    """``(name, problems)`` of the named sets re-hashed against their manifests (no problem: an empty list);
    without names, every set that is here (mirrored or downloaded)."""
    chosen = _names(names, not names)
    if not names:
        chosen = [name for name in chosen if local_folder(SETS[name]) is not None]
    return [(name, verify_set(SETS[name])) for name in chosen]


def _names(names: Sequence[str] | None, every: bool) -> list[str]:
    if every:
        return list_sets()
    if not names:
        raise InputError("name the data sets (derain data list shows them), or pass --all")
    return [get_set(n).name for n in names]


def resolve(name: str, *, download: bool = True, progress: bool | None = None) -> Path:
    """The folder of the set called ``name``: the mirror, the cache, or a download into the cache."""
    dataset = get_set(name)
    found = local_folder(dataset)
    if found is not None:
        return found
    if not download:
        raise DataError(f"{dataset.name}: not downloaded yet (derain data fetch {dataset.name})")
    return fetch_set(dataset, progress=progress)


def resolve_images(text: str | os.PathLike[str], *,
                   progress: bool | None = None) -> tuple[Path, set[str]]:
    """A folder of images given as a path, or as a set's name: ``(folder, names never to train on)``."""
    path = Path(text).expanduser()
    if path.exists() or find(str(text)) is None:
        return path, set()
    dataset = get_set(str(text))
    folder = resolve(dataset.name, progress=progress)
    return (folder / dataset.images if dataset.images else folder), exclusions(dataset)


def resolve_folder(text: str | os.PathLike[str], *, progress: bool | None = None) -> Path:
    """A dataset folder given as a path, or as a set's name (an existing path wins)."""
    path = Path(text).expanduser()
    if path.exists() or find(str(text)) is None:
        return path
    return resolve(str(text), progress=progress)
