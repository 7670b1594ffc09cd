"""``derain build-dataset``: real rain/clean pairs from static-camera rain videos or folders of frames.

Per sequence: check the camera is static (global translation of every frame against the first, by phase
correlation; a moving sequence is reported and skipped, or aligned by integer shifts with ``align=True``);
estimate the rain density on the first 20 frames to choose N (20/100/200, plus ``extra`` after a rejection);
stream N frames into per-pixel histograms for the clean image (:mod:`derain.data.realrain`); then stream them
again to write each rainy frame, its binary rain mask and the clean image. Nothing holds all frames in memory.

The dataset folder::

    DATASET/manifest.json        every sequence: source, frames used, N, p, density, shift, status
    DATASET/decisions.json       review decisions (derain review): accepted / rejected / rebuild (+frames)
    DATASET/real_world.txt       SPANet-style list "<rainy> <clean>" of the accepted sequences only
    DATASET/<seq>/clean.png, rain/NNNN.png, mask/NNNN.png
    DATASET/<seq>/patches/clean/Y_X.png, rain/NNNN_Y_X.png, mask/NNNN_Y_X.png   (with ``patch``: training crops)
    DATASET/real_world_patches.txt  the same list, of the accepted sequences' patches (with ``patch``)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from derain.data.realrain import (
    TemporalHistogram,
    frame_shift,
    frames_for_density,
    rain_density,
    rain_mask_from,
)
from derain.errors import InputError
from derain.io import list_images, read_image, write_image
from derain.io.atomic import atomic_write
from derain.io.interrupt import terminate_as_interrupt
from derain.io.video import VIDEO_EXTENSIONS
from derain.io.video import frames as video_frames

LIST_FILE = "real_world.txt"
PATCH_LIST_FILE = "real_world_patches.txt"
DECISIONS = ("accepted", "rejected", "rebuild")
_PROBE = 20
MANIFEST, DECISIONS_FILE = "manifest.json", "decisions.json"


@dataclass(frozen=True)
class SequenceEntry:
    """One sequence of ``manifest.json``: where it came from, whether it was built, and the numbers of its build."""

    source: str
    status: str                       # "built", "moving camera" or "failed"
    reason: str = ""                  # why it was not built
    frames_used: int = 0              # N
    density: float = 0.0              # rain density of the first 20 frames
    n_from_density: int = 0           # the paper's N for that density (20/100/200)
    extra: int = 0                    # frames added by rebuilds
    rank: int = 0                     # the global percentile rank, as a histogram bin
    p: float = 0.0                    # ... and as a fraction
    coverage: float = 0.0             # share of pixels whose mode range holds the chosen rank
    pairs: tuple[str, ...] = ()       # rain/<name> frames written
    patch: int = 0                    # training crops (0: none)
    stride: int = 0
    patches: tuple[str, ...] = ()     # crop keys "Y_X"

    @property
    def built(self) -> bool:
        return self.status == "built"

    def to_json(self) -> dict[str, Any]:
        if not self.built:
            return {"source": self.source, "status": self.status, "reason": self.reason}
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k != "reason"}
        if not self.patch:
            for key in ("patch", "stride", "patches"):
                data.pop(key)
        return data

    @classmethod
    def from_json(cls, data: Any, *, where: str) -> SequenceEntry:
        if not isinstance(data, dict) or not isinstance(data.get("source"), str) or \
                not isinstance(data.get("status"), str):
            raise InputError(f"{where}: not a sequence entry (needs source and status); fix or remove it")
        known = {f.name for f in fields(cls)}
        values = {k: tuple(v) if k in ("pairs", "patches") else v for k, v in data.items() if k in known}
        try:
            return cls(**values)
        except TypeError as exc:
            raise InputError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class Decision:
    """A review decision of ``decisions.json``: pending, accepted, rejected, or rebuild with ``more`` frames."""

    decision: str = "pending"
    more: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"decision": self.decision, **({"more": self.more} if self.decision == "rebuild" else {})}

    @property
    def label(self) -> str:
        return self.decision + (f" +{self.more}" if self.decision == "rebuild" else "")

    @classmethod
    def from_json(cls, data: Any, *, where: str) -> Decision:
        if not isinstance(data, dict) or not isinstance(data.get("decision", "pending"), str):
            raise InputError(f"{where}: not a decision (needs decision); fix or remove it")
        try:
            return cls(decision=data.get("decision", "pending"), more=int(data.get("more") or 0))
        except (TypeError, ValueError):
            raise InputError(f"{where}: more must be a number of frames") from None


def read_manifest(dataset: Path) -> dict[str, SequenceEntry]:
    """The sequences of ``dataset/manifest.json`` by name (empty when there is none)."""
    path = dataset / MANIFEST
    return {name: SequenceEntry.from_json(entry, where=f"{path}: {name}")
            for name, entry in read_json(path).items()}


def read_decisions(dataset: Path) -> dict[str, Decision]:
    """The review decisions of ``dataset/decisions.json`` by name (a sequence not listed is pending)."""
    path = dataset / DECISIONS_FILE
    return {name: Decision.from_json(entry, where=f"{path}: {name}") for name, entry in read_json(path).items()}


def _write_manifest(dataset: Path, manifest: dict[str, SequenceEntry]) -> None:
    _write_json(dataset / MANIFEST, {name: entry.to_json() for name, entry in manifest.items()})


def _write_decisions(dataset: Path, decisions: dict[str, Decision]) -> None:
    _write_json(dataset / DECISIONS_FILE, {name: d.to_json() for name, d in decisions.items()})


@dataclass(frozen=True)
class Source:
    name: str
    path: Path

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_EXTENSIONS

    def frames(self) -> Iterator[Tensor]:
        if self.is_video:
            yield from video_frames(self.path)
            return
        files = list_images(self.path)
        if not files:
            raise InputError(f"{self.path}: no image files (frames) in this folder")
        for f in files:
            yield read_image(f).image


RESERVED_NAMES = frozenset({MANIFEST, DECISIONS_FILE, LIST_FILE, PATCH_LIST_FILE})


def sequence_name(path: Path, *, video: bool = False) -> str:
    """The sequence name of an input: its folder's (or video's) own name once ``.`` and ``..`` are resolved
    (``frames/sub/..`` is ``frames``; ``.`` is the current folder's name), so the sequence's folder is always one
    level inside the dataset. A name that cannot be one folder there (the file system's root, a dataset file's
    name) is refused."""
    absolute = Path(os.path.abspath(path))  # lexical: a symbolic link keeps the name it was given
    name = absolute.stem if video else absolute.name
    if name in ("", ".", "..") or name in RESERVED_NAMES:
        raise InputError(f"{path}: cannot name a sequence after it (it resolves to {absolute}); give the folder of "
                         "frames or the video itself, with a name of its own")
    return name


def find_sources(inputs: Sequence[str | os.PathLike[str]]) -> list[Source]:
    """Videos and folders of frames; a folder holding videos (and no frames) contributes each video."""
    out: list[Source] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            if path.suffix.lower() not in VIDEO_EXTENSIONS:
                raise InputError(f"{path}: not a video ({', '.join(sorted(VIDEO_EXTENSIONS))}) or a folder of frames")
            out.append(Source(sequence_name(path, video=True), path))
        elif path.is_dir():
            videos = list_images(path, extensions=VIDEO_EXTENSIONS)
            if videos and not list_images(path):
                out += [Source(sequence_name(p, video=True), p) for p in videos]
            else:
                out.append(Source(sequence_name(path), path))
        else:
            raise InputError(f"{path}: no such video or folder")
    names = [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"two inputs have the same name {dup[0]!r}; rename one (sequence names must be unique)")
    return out


def _shifted(frame: Tensor, dy: int, dx: int) -> Tensor:
    return torch.roll(frame, shifts=(-dy, -dx), dims=(-2, -1))


def _frames_checked(source: Source, n: int, *, max_shift: int, align: bool) -> Iterator[Tensor]:
    """The first ``n`` frames, each checked (and with ``align`` shifted) against the first."""
    reference: Tensor | None = None
    count = 0
    for frame in source.frames():
        if reference is None:
            reference = frame
        elif frame.shape != reference.shape:
            raise InputError(f"{source.path}: frame {count + 1} is {frame.shape[-1]}x{frame.shape[-2]}, the first is "
                             f"{reference.shape[-1]}x{reference.shape[-2]}; all frames must have one size")
        else:
            dy, dx = frame_shift(reference, frame)
            if max(abs(dy), abs(dx)) > max_shift:
                if not align:
                    raise MovingCamera(f"{source.path}: the camera moves (frame {count + 1} is shifted by "
                                       f"{dy}, {dx} pixels against the first); the method needs a static camera "
                                       "(use --align for small global shifts)")
                frame = _shifted(frame, dy, dx)
        yield frame
        count += 1
        if count >= n:
            return
    if count < n:
        raise InputError(f"{source.path}: {count} frames, fewer than the {n} needed (N = {n}); use a longer "
                         "sequence or --frames with a smaller N")


class MovingCamera(InputError):
    """The sequence's frames shift: it is reported and skipped, never turned into a blurry 'clean' image."""


def patch_starts(size: int, patch: int, stride: int) -> list[int]:
    """Starts of ``patch``-long windows every ``stride`` pixels, the last one flush with the end (full coverage)."""
    if patch > size:
        return []
    starts = list(range(0, size - patch + 1, stride))
    return starts if starts[-1] == size - patch else [*starts, size - patch]


def build_sequence(source: Source, out: Path, *, frames: int | None = None, extra: int = 0, max_shift: int = 0,
                   align: bool = False, mask_threshold: float = 8 / 255, patch: int = 0, stride: int | None = None,
                   progress: Callable[[int, int, str], None] | None = None) -> SequenceEntry:
    """Build one sequence into ``out/<name>``; returns its manifest entry.

    ``patch`` > 0 also cuts every pair (and its mask) into ``patch x patch`` crops every ``stride`` pixels
    (default: ``patch``, no overlap; the last crop of a row or column is flush with the border).
    """
    if patch < 0 or (stride is not None and stride < 1):
        raise InputError(f"patch must be >= 0 and stride >= 1, got patch {patch}, stride {stride}")
    if source.name in ("", ".", "..") or Path(os.path.abspath(out / source.name)).parent != Path(os.path.abspath(out)):
        raise InputError(f"{source.path}: the sequence name {source.name!r} is not one folder inside {out}")
    probe = []
    for frame in source.frames():
        if probe and frame.shape != probe[0].shape:
            raise InputError(f"{source.path}: frame {len(probe) + 1} is {frame.shape[-1]}x{frame.shape[-2]}, the "
                             f"first is {probe[0].shape[-1]}x{probe[0].shape[-2]}; all frames must have one size")
        probe.append(frame)
        if len(probe) >= _PROBE:
            break
    if len(probe) < 2:
        raise InputError(f"{source.path}: {len(probe)} frame(s); a clean estimate needs a sequence of frames")
    density = rain_density(probe)
    n = (frames or frames_for_density(density)) + extra
    del probe
    hist: TemporalHistogram | None = None
    for k, frame in enumerate(_frames_checked(source, n, max_shift=max_shift, align=align), 1):
        if hist is None:
            hist = TemporalHistogram(frame.shape[-2], frame.shape[-1], max_frames=max(n, 2))
        hist.add(frame)
        if progress:
            progress(k, n, f"{source.name}: histogram")
    assert hist is not None
    estimate = hist.estimate()
    folder = out / source.name
    height, width = estimate.clean.shape[-2:]
    if patch and patch > min(height, width):
        raise InputError(f"{source.path}: patches of {patch}x{patch} do not fit frames of {width}x{height}; "
                         "pass a smaller --patch")
    step = stride or patch
    crops = [(y, x) for y in patch_starts(height, patch, step) for x in patch_starts(width, patch, step)] if patch \
        else []
    keys = [f"{y:04d}_{x:04d}" for y, x in crops]
    write_image(folder / "clean.png", estimate.clean, overwrite=True)
    for (y, x), key in zip(crops, keys, strict=True):
        write_image(folder / "patches" / "clean" / f"{key}.png", estimate.clean[..., y:y + patch, x:x + patch],
                    overwrite=True)
    pairs = []
    for k, frame in enumerate(_frames_checked(source, n, max_shift=max_shift, align=align), 1):
        name = f"{k:04d}.png"
        write_image(folder / "rain" / name, frame, overwrite=True)
        mask = rain_mask_from(frame, estimate.clean, threshold=mask_threshold)
        write_image(folder / "mask" / name, mask.expand(3, -1, -1), overwrite=True)
        for (y, x), key in zip(crops, keys, strict=True):
            write_image(folder / "patches" / "rain" / f"{k:04d}_{key}.png", frame[..., y:y + patch, x:x + patch],
                        overwrite=True)
            write_image(folder / "patches" / "mask" / f"{k:04d}_{key}.png",
                        mask[..., y:y + patch, x:x + patch].expand(3, -1, -1), overwrite=True)
        pairs.append(name)
        if progress:
            progress(k, n, f"{source.name}: pairs")
    return SequenceEntry(source=str(source.path), status="built", frames_used=n, density=round(density, 5),
                         n_from_density=frames_for_density(density), extra=extra, rank=estimate.rank,
                         p=round(estimate.p, 5), coverage=round(estimate.coverage, 5), pairs=tuple(pairs),
                         patch=patch, stride=step if patch else 0, patches=tuple(keys))


def read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable ({exc}); fix or remove it") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_list(dataset: Path) -> Path:
    """The SPANet list of every accepted sequence's pairs (paths relative to the dataset folder); when any
    sequence has patches, also the list of the accepted sequences' patches."""
    manifest, decisions = read_manifest(dataset), read_decisions(dataset)
    lines, patch_lines = [], []
    for name in sorted(manifest):
        entry = manifest[name]
        if not entry.built or decisions.get(name, Decision()).decision != "accepted":
            continue
        lines += [f"{name}/rain/{p} {name}/clean.png" for p in entry.pairs]
        patch_lines += [f"{name}/patches/rain/{p[:-4]}_{key}.png {name}/patches/clean/{key}.png"
                        for p in entry.pairs for key in entry.patches]
    has_patches = any(e.patches for e in manifest.values())
    for path, listed in ((dataset / LIST_FILE, lines), (dataset / PATCH_LIST_FILE, patch_lines)):
        if path.name == PATCH_LIST_FILE and not has_patches and not path.exists():
            continue
        with atomic_write(path) as tmp:
            tmp.write_text("".join(line + "\n" for line in listed))
    return dataset / LIST_FILE


def decide(dataset: Path, name: str, decision: str, *, more: int = 0) -> Decision:
    """Record a review decision (saved at once, so review survives a restart) and refresh the list file."""
    if decision not in DECISIONS:
        raise InputError(f"unknown decision {decision!r}; use one of {', '.join(DECISIONS)}")
    manifest = read_manifest(dataset)
    if name not in manifest:
        raise InputError(f"{dataset}: no sequence named {name!r}; sequences: {', '.join(sorted(manifest)) or 'none'}")
    if decision == "rebuild" and more not in (10, 20, 50):
        raise InputError("rebuild adds 10, 20 or 50 frames (the paper's steps); pass more=10, 20 or 50")
    decisions = read_decisions(dataset)
    decisions[name] = Decision(decision, more if decision == "rebuild" else 0)
    _write_decisions(dataset, decisions)
    write_list(dataset)
    return decisions[name]


def build_dataset(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *, frames: int | None = None,
                  align: bool = False, max_shift: int = 0, accept_all: bool = False, patch: int = 0,
                  stride: int | None = None,
                  progress: Callable[[int, int, str], None] | None = None,
                  report: Callable[[str, str], None] | None = None) -> dict[str, SequenceEntry]:
    """Build (or rebuild) every sequence of ``inputs`` into ``out``; returns the manifest.

    Sequences already built are kept unless a review decision asks to rebuild them with more frames.
    """
    out = Path(out)
    sources = find_sources(inputs)  # names checked before anything is written
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out)
    decisions = read_decisions(out)
    with terminate_as_interrupt():  # SIGTERM cleans up like Ctrl+C
        for source in sources:
            wanted = decisions.get(source.name, Decision())
            rebuild = wanted.decision == "rebuild"
            done = manifest.get(source.name)
            if done is not None and done.built and not rebuild:
                continue
            extra = (done.extra if done is not None else 0) + wanted.more if rebuild else 0
            try:
                manifest[source.name] = build_sequence(source, out, frames=frames, extra=extra, max_shift=max_shift,
                                                       align=align, patch=patch, stride=stride, progress=progress)
                if rebuild or accept_all:
                    decisions[source.name] = Decision("accepted" if accept_all else "pending")
            except InputError as exc:
                status = "moving camera" if isinstance(exc, MovingCamera) else "failed"
                manifest[source.name] = SequenceEntry(source=str(source.path), status=status, reason=str(exc))
                if report:
                    report(source.name, str(exc))
            _write_manifest(out, manifest)
            _write_decisions(out, decisions)
    write_list(out)
    return manifest


def review(dataset: str | os.PathLike[str], *, accept: Sequence[str] = (), reject: Sequence[str] = (),
           rebuild: Sequence[str] = (), more: int = 20) -> dict[str, tuple[str, str]]:
    """``derain review`` without its page: record the decisions given (:func:`decide`), then every sequence's
    ``(status, decision)`` by name, sorted. A folder that :func:`build_dataset` did not make is an error."""
    folder = Path(dataset)
    manifest = read_manifest(folder)
    if not manifest:
        raise InputError(f"{folder}: no manifest.json; build it with derain build-dataset first")
    for names, decision in ((accept, "accepted"), (reject, "rejected"), (rebuild, "rebuild")):
        for name in names:
            decide(folder, name, decision, more=more if decision == "rebuild" else 0)
    decisions = read_decisions(folder)
    return {name: (manifest[name].status, decisions.get(name, Decision()).label) for name in sorted(manifest)}
