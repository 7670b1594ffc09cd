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
from dataclasses import dataclass
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
from derain.io.video import VIDEO_EXTENSIONS
from derain.io.video import frames as video_frames

LIST_FILE = "real_world.txt"
PATCH_LIST_FILE = "real_world_patches.txt"
DECISIONS = ("accepted", "rejected", "rebuild")
_PROBE = 20


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


def find_sources(inputs: Sequence[str | os.PathLike[str]]) -> list[Source]:
    """Videos and folders of frames; a folder holding videos (and no frames) contributes each video."""
    out: list[Source] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            if path.suffix.lower() not in VIDEO_EXTENSIONS:
                raise InputError(f"{path}: not a video ({', '.join(sorted(VIDEO_EXTENSIONS))}) or a folder of frames")
            out.append(Source(path.stem, path))
        elif path.is_dir():
            videos = list_images(path, extensions=VIDEO_EXTENSIONS)
            if videos and not list_images(path):
                out += [Source(p.stem, p) for p in videos]
            else:
                out.append(Source(path.name, path))
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
                   progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Build one sequence into ``out/<name>``; returns its manifest entry.

    ``patch`` > 0 also cuts every pair (and its mask) into ``patch x patch`` crops every ``stride`` pixels
    (default: ``patch``, no overlap; the last crop of a row or column is flush with the border).
    """
    if patch < 0 or (stride is not None and stride < 1):
        raise InputError(f"patch must be >= 0 and stride >= 1, got patch {patch}, stride {stride}")
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
    return {"source": str(source.path), "frames_used": n, "density": round(density, 5),
            "n_from_density": frames_for_density(density), "extra": extra, "rank": estimate.rank,
            "p": round(estimate.p, 5), "coverage": round(estimate.coverage, 5), "pairs": pairs,
            **({"patch": patch, "stride": step, "patches": keys} if patch else {}), "status": "built"}


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
    manifest, decisions = read_json(dataset / "manifest.json"), read_json(dataset / "decisions.json")
    lines, patch_lines = [], []
    for name in sorted(manifest):
        entry = manifest[name]
        if entry.get("status") != "built" or decisions.get(name, {}).get("decision") != "accepted":
            continue
        lines += [f"{name}/rain/{p} {name}/clean.png" for p in entry["pairs"]]
        patch_lines += [f"{name}/patches/rain/{p[:-4]}_{key}.png {name}/patches/clean/{key}.png"
                        for p in entry["pairs"] for key in entry.get("patches", [])]
    has_patches = any(e.get("patches") for e in manifest.values())
    for path, listed in ((dataset / LIST_FILE, lines), (dataset / PATCH_LIST_FILE, patch_lines)):
        if path.name == PATCH_LIST_FILE and not has_patches and not path.exists():
            continue
        with atomic_write(path) as tmp:
            tmp.write_text("".join(line + "\n" for line in listed))
    return dataset / LIST_FILE


def decide(dataset: Path, name: str, decision: str, *, more: int = 0) -> dict[str, Any]:
    """Record a review decision (saved at once, so review survives a restart) and refresh the list file."""
    if decision not in DECISIONS:
        raise InputError(f"unknown decision {decision!r}; use one of {', '.join(DECISIONS)}")
    manifest = read_json(dataset / "manifest.json")
    if name not in manifest:
        raise InputError(f"{dataset}: no sequence named {name!r}; sequences: {', '.join(sorted(manifest)) or 'none'}")
    if decision == "rebuild" and more not in (10, 20, 50):
        raise InputError("rebuild adds 10, 20 or 50 frames (the paper's steps); pass more=10, 20 or 50")
    decisions = read_json(dataset / "decisions.json")
    decisions[name] = {"decision": decision, **({"more": more} if decision == "rebuild" else {})}
    _write_json(dataset / "decisions.json", decisions)
    write_list(dataset)
    return decisions[name]


def build_dataset(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *, frames: int | None = None,
                  align: bool = False, max_shift: int = 0, accept_all: bool = False, patch: int = 0,
                  stride: int | None = None,
                  progress: Callable[[int, int, str], None] | None = None,
                  report: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Build (or rebuild) every sequence of ``inputs`` into ``out``; returns the manifest.

    Sequences already built are kept unless a review decision asks to rebuild them with more frames.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_json(out / "manifest.json")
    decisions = read_json(out / "decisions.json")
    for source in find_sources(inputs):
        wanted = decisions.get(source.name, {})
        rebuild = wanted.get("decision") == "rebuild"
        done = manifest.get(source.name, {})
        if done.get("status") == "built" and not rebuild:
            continue
        extra = int(done.get("extra", 0)) + int(wanted.get("more", 0)) if rebuild else 0
        try:
            manifest[source.name] = build_sequence(source, out, frames=frames, extra=extra, max_shift=max_shift,
                                                   align=align, patch=patch, stride=stride, progress=progress)
            if rebuild or accept_all:
                decisions[source.name] = {"decision": "accepted"} if accept_all else {"decision": "pending"}
        except InputError as exc:
            status = "moving camera" if isinstance(exc, MovingCamera) else "failed"
            manifest[source.name] = {"source": str(source.path), "status": status, "reason": str(exc)}
            if report:
                report(source.name, str(exc))
        _write_json(out / "manifest.json", manifest)
        _write_json(out / "decisions.json", decisions)
    write_list(out)
    return manifest
