"""Paired rainy/clean datasets in the folder layouts of the official repositories (listed below).

Layouts:

``rain-norain``
    ``root/rain/NAME`` + ``root/norain/NAME``, equal file names (the layout of derain's named data sets).
``prenet``
    PReNet: ``root/rainy/rain-K.png`` + ``root/norain-K.png`` (test sets), or the flat training layout
    ``root/rain-K.png`` + ``root/norain-K.png``.
``sian``
    SIAN training layout: ``root/rainy/rain-K.png`` + ``root/norain/norain-K.png``.
``jdnet``
    JDNet: each image holds a side-by-side pair split at ``floor(W / 2)``: left = clean, right = rainy
    (``swap_halves=True`` for the Rain1200 / DID-MDN convention, left = rainy). The images are those directly
    in ``root``; when ``root`` holds none, those in ``root/test`` (JDNet reads ``<data_dir>/test/*.png``).
    For an odd width the right half's last column is dropped: both halves are ``floor(W / 2)`` wide and
    column ``x`` of one pairs with column ``x`` of the other, as in JDNet's split.
``list``
    SPANet: a text file, one pair a line, ``<rainy path> <clean path>`` separated by white space (paths
    cannot contain spaces); blank lines, trailing white space and ``#`` comments are skipped. Relative paths
    (``a/b.png``, ``./a/b.png``) are relative to the list file's folder. A path starting with ``/`` is
    absolute when that file exists, and otherwise relative to the list file's folder (SPANet's test list
    writes ``/real_test_1000/...`` and its code prepends ``.``). Pairs keep the list's order; names are the
    rainy paths as written, less a leading ``./`` or ``/``.

``auto`` picks, in this order: a ``.txt`` file as ``root`` (or a ``list_file``) -> list; ``rain/`` +
``norain/`` -> rain-norain; ``rainy/`` + ``norain/`` -> sian; ``rainy/`` + ``norain-*`` files, or flat
``rain-*`` + ``norain-*`` files -> prenet; otherwise jdnet, only when the first images' halves show one scene
(correlated coarse structure and aligned fine structure); else :class:`DataError` saying what was tried and
what was found.

Folder layouts are sorted in natural order of the names (``rain-2`` before ``rain-10``); ``limit=N`` keeps
the first N pairs. Files that cannot be paired are all reported in one :class:`DataError`; pairs whose two
images differ in size are reported when loaded.
"""

from __future__ import annotations

import operator
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from derain.data.sets import list_sets, resolve_folder
from derain.errors import DataError, InputError
from derain.io import IMAGE_EXTENSIONS, list_images, natural_key, read_image

Layout = Literal["auto", "rain-norain", "prenet", "sian", "jdnet", "list"]
LAYOUTS: tuple[str, ...] = get_args(Layout)
_SHOWN = 20  # problems listed by name in one error
_PROBE = 5  # images checked before calling a folder side-by-side pairs
_PREFIX = re.compile(r"^(no)?rain-(.+)$")
_EXPECTS = {
    "rain-norain": "rain/NAME + norain/NAME",
    "prenet": "rainy/rain-K.png + norain-K.png, or rain-K.png + norain-K.png",
    "sian": "rainy/rain-K.png + norain/norain-K.png",
    "jdnet": "side-by-side images in the folder or in its test/ folder",
    "list": "lines '<rainy path> <clean path>'",
}


@dataclass(frozen=True)
class Pair:
    """One rainy/clean pair: ``rainy`` and ``clean`` are ``(3, H, W)`` float32 RGB in [0, 1]."""

    name: str
    rainy: Tensor
    clean: Tensor


def _listing(problems: list[str]) -> str:
    shown = "\n  ".join(problems[:_SHOWN])
    more = f"\n  ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    return f"\n  {shown}{more}"


_Entry = tuple[str, Path, Path]


def _match(root: Path, layout: str, rainy: dict[str, Path], clean: dict[str, Path],
           clean_for: Callable[[str], str], rainy_for: Callable[[str], str]) -> list[_Entry]:
    """Pair files by key; every file without a partner is named in one DataError."""
    problems = [(p, f"{p.relative_to(root).as_posix()} (no {clean_for(k)})")
                for k, p in rainy.items() if k not in clean]
    problems += [(p, f"{p.relative_to(root).as_posix()} (no {rainy_for(k)})")
                 for k, p in clean.items() if k not in rainy]
    if problems:
        problems.sort(key=lambda item: (natural_key(item[0].name), item[1]))
        raise DataError(f"{root}: {len(problems)} file(s) cannot be paired (layout {layout}):"
                        f"{_listing([text for _, text in problems])}\n"
                        "remove or rename them, or fix the missing partners")
    entries = [(p.name, p, clean[k]) for k, p in rainy.items()]
    return sorted(entries, key=lambda e: natural_key(e[0]))


def _prefixed(paths: list[Path], clean: bool) -> dict[str, Path]:
    """``rain-K`` (or ``norain-K``) files keyed by ``K``."""
    out = {}
    for p in paths:
        m = _PREFIX.match(p.name)
        if m and bool(m.group(1)) == clean:
            out[m.group(2)] = p
    return out


def _rain_norain(root: Path) -> list[_Entry]:
    rainy = {p.name: p for p in list_images(root / "rain")}
    clean = {p.name: p for p in list_images(root / "norain")}
    return _match(root, "rain-norain", rainy, clean, lambda k: f"norain/{k}", lambda k: f"rain/{k}")


def _prenet(root: Path) -> list[_Entry]:
    sub = (root / "rainy").is_dir()
    rainy = _prefixed(list_images(root / "rainy" if sub else root), clean=False)
    clean = _prefixed(list_images(root), clean=True)
    where = "rainy/" if sub else ""
    return _match(root, "prenet", rainy, clean, lambda k: f"norain-{k}", lambda k: f"{where}rain-{k}")


def _sian(root: Path) -> list[_Entry]:
    rainy = _prefixed(list_images(root / "rainy"), clean=False)
    clean = _prefixed(list_images(root / "norain"), clean=True)
    return _match(root, "sian", rainy, clean, lambda k: f"norain/norain-{k}", lambda k: f"rainy/rain-{k}")


def _jdnetlist_images(root: Path) -> list[Path]:
    return list_images(root) or list_images(root / "test")


def _jdnet(root: Path) -> list[_Entry]:
    return [(p.name, p, p) for p in _jdnetlist_images(root)]


def _resolve_listed(text: str, base: Path) -> Path:
    path = Path(text)
    if path.is_absolute():
        if path.exists() or not text.startswith("/"):
            return path
        return base / text.lstrip("/")  # SPANet: "/real_test_1000/..." with "." prepended by its code
    return base / path


def _list(list_path: Path) -> list[_Entry]:
    if not list_path.is_file():
        raise DataError(f"{list_path}: list file not found")
    try:
        lines = list_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{list_path}: cannot read the list file ({exc})") from exc
    base = list_path.parent
    entries, problems, seen = [], [], {}
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 2:
            problems.append(f"line {number}: expected '<rainy path> <clean path>', got {line.strip()!r}")
            continue
        rainy, clean = (_resolve_listed(f, base) for f in fields)
        missing = [f for f, p in zip(fields, (rainy, clean), strict=True) if not p.is_file()]
        if missing:
            problems.append(f"line {number}: {' and '.join(missing)} not found")
            continue
        name = fields[0][2:] if fields[0].startswith("./") else fields[0].lstrip("/")
        if name in seen:
            problems.append(f"line {number}: {fields[0]} is listed again (first on line {seen[name]})")
            continue
        seen[name] = number
        entries.append((name, rainy, clean))
    if problems:
        raise DataError(f"{list_path}: {len(problems)} line(s) cannot be used (paths are relative to "
                        f"{base}):{_listing(problems)}")
    return entries


def _halves(image: Tensor, swap: bool) -> tuple[Tensor, Tensor]:
    """(rainy, clean) from a side-by-side ``(3, H, W)`` image; both halves ``floor(W / 2)`` wide."""
    half = image.shape[-1] // 2
    left, right = image[..., :half], image[..., half:2 * half]
    return (left, right) if swap else (right, left)


def _same_scene(image: Tensor) -> bool:
    """Do the halves of this image show one scene? Coarse structure correlates (> 0.4) and fine structure is
    aligned (> 0.2): true for every Rain100L/H pair, for about 1% of single photos (measured on BSDS500)."""
    if image.shape[-1] < 16 or image.shape[-2] < 8:
        return False
    grey = image.mean(0)
    half = grey.shape[-1] // 2
    scores = []
    for size, fine in ((32, False), (64, True)):
        vectors = []
        for h in (grey[:, :half], grey[:, half:2 * half]):
            s = F.adaptive_avg_pool2d(h[None, None], (size, size))
            if fine:
                s = s - F.avg_pool2d(s, 5, 1, 2, count_include_pad=False)
            v = s.flatten()
            vectors.append(v - v.mean())
        a, b = vectors
        scores.append(float((a @ b) / (a.norm() * b.norm() + 1e-12)))
    return scores[0] > 0.4 and scores[1] > 0.2


def _detect(root: Path) -> str:
    if root.is_file():
        if root.suffix.lower() == ".txt":
            return "list"
        raise DataError(f"{root}: is a file, not a dataset folder; a pair list must end in .txt (or pass "
                        "layout='list')")
    dirs = {name for name in ("rain", "norain", "rainy") if (root / name).is_dir()}
    if {"rain", "norain"} <= dirs:
        return "rain-norain"
    if {"rainy", "norain"} <= dirs:
        return "sian"
    flat = list_images(root)
    has_clean = bool(_prefixed(flat, clean=True))
    if has_clean and ("rainy" in dirs or _prefixed(flat, clean=False)):
        return "prenet"
    candidates = _jdnetlist_images(root)
    probe = candidates[:_PROBE]
    if probe and all(_same_scene(read_image(p).image[0]) for p in probe):
        return "jdnet"
    entries = sorted(os.listdir(root))
    folders = [f"{e}/" for e in entries if (root / e).is_dir()]
    found = (f"{len(folders)} folder(s) {', '.join(folders[:8])}{' ...' if len(folders) > 8 else ''}; "
             f"{len(flat)} image(s) {', '.join(p.name for p in flat[:5])}{' ...' if len(flat) > 5 else ''}")
    raise DataError(
        f"{root}: cannot tell the dataset layout. Tried: rain-norain (rain/ + norain/), sian (rainy/ + "
        "norain/), prenet (rainy/ + norain-*.png, or rain-*.png + norain-*.png), jdnet (side-by-side "
        f"clean|rainy images, here or in test/), list (pass a .txt file). Found: {found}. "
        "Arrange the files in one of these layouts or pass layout=... explicitly")


class PairedFolder(Dataset[Pair]):
    """Rainy/clean pairs from a folder or list file in one of the official layouts, or a data set by name
    (``PairedFolder("rain100L")``, fetched on first use: :mod:`derain.data.sets`); items: :class:`Pair`."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        layout: Layout = "auto",
        list_file: str | os.PathLike[str] | None = None,
        swap_halves: bool = False,
        limit: int | None = None,
    ) -> None:
        if layout not in LAYOUTS:
            raise InputError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InputError(f"limit must be a positive integer or None, got {limit!r}")
        self._root = resolve_folder(root)  # a folder, a list file, or a data set's name (rain100L)
        if not self._root.exists():
            raise DataError(f"{self._root}: not found (expected a dataset folder, a pair list .txt or the name of "
                            f"a data set: {', '.join(list_sets())})")
        if list_file is not None:
            if layout not in ("auto", "list"):
                raise InputError(f"list_file is only used by the list layout, not {layout!r}")
            list_path = Path(list_file)
            if not list_path.is_absolute() and self._root.is_dir():
                list_path = self._root / list_path
            resolved = "list"
        else:
            list_path = self._root
            resolved = _detect(self._root) if layout == "auto" else layout
        if resolved == "list" and list_path.is_dir():
            raise InputError(f"{list_path}: is a folder; the list layout needs the list file itself "
                             "(pass it as root, or list_file=...)")
        if resolved != "list" and not self._root.is_dir():
            raise DataError(f"{self._root}: is a file, not a dataset folder (a pair list must end in .txt "
                            "or be passed with layout='list')")
        if swap_halves and resolved != "jdnet":
            raise InputError(f"swap_halves applies to the jdnet layout only (this dataset: {resolved})")
        self._layout = resolved
        self._swap = swap_halves
        builders: dict[str, Callable[[Path], list[_Entry]]] = {
            "rain-norain": _rain_norain, "prenet": _prenet, "sian": _sian, "jdnet": _jdnet, "list": _list}
        entries = builders[resolved](list_path if resolved == "list" else self._root)
        if not entries:
            raise DataError(f"{self._root}: no image pairs found (layout {resolved} expects "
                            f"{_EXPECTS[resolved]}; image extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
        self._entries = entries[:limit] if limit is not None else entries

    @property
    def root(self) -> Path:
        return self._root

    @property
    def layout(self) -> str:
        """The layout in use (``auto`` resolved)."""
        return self._layout

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self._entries]

    def pair_paths(self) -> list[tuple[str, Path, Path]]:
        """``(name, rainy path, clean path)`` per pair; for jdnet both paths are the one side-by-side file."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> Pair:
        name, rainy_path, clean_path = self._entries[operator.index(index)]
        if self._layout == "jdnet":
            rainy, clean = _halves(read_image(rainy_path).image[0], self._swap)
            if rainy.shape[-1] == 0:
                raise DataError(f"{rainy_path}: 1 pixel wide; a side-by-side pair needs at least 2 columns")
            return Pair(name, rainy.contiguous(), clean.contiguous())
        rainy, clean = read_image(rainy_path).image[0], read_image(clean_path).image[0]
        if rainy.shape != clean.shape:
            raise DataError(f"{rainy_path} is {rainy.shape[2]}x{rainy.shape[1]} but its clean image "
                            f"{clean_path} is {clean.shape[2]}x{clean.shape[1]}; pairs must have equal sizes")
        return Pair(name, rainy, clean)

    def __repr__(self) -> str:
        return f"PairedFolder({str(self._root)!r}, layout={self._layout!r}, pairs={len(self)})"
