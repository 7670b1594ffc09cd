"""Video files through PyAV (optional extra ``video``: ``pip install "derain[video]"``).

Frames come out in derain's convention (float32 ``(1, 3, H, W)`` RGB in [0, 1]). :class:`VideoWriter` writes
H.264 (libx264, ``yuv420p`` for even sizes, ``yuv444p`` otherwise) at the source's frame rate, into a temporary
file that replaces the target only when complete, and can copy the source's audio streams unchanged.

Phones store a portrait video as landscape frames plus a rotation in the container (the display matrix), which
players apply. :func:`frames` applies it too (``upright=True``), so a model sees the rain falling down the image
as the person filming saw it, not sideways; :func:`probe` reports it (``rotation``), and :class:`VideoWriter`
writes it back (``rotation=``), so an output written in the input's stored geometry plays as the input does.
Only quarter turns are supported (all a phone writes); a mirrored display matrix is read as its rotation alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from derain.errors import InputError
from derain.io.atomic import atomic_write

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"})


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise InputError("video needs PyAV: pip install \"derain[video]\" (or pip install av)") from None
    return av


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: Fraction
    frames: int | None      # as the container states it (None when unknown)
    audio_streams: int
    codec: str
    rotation: int = 0       # degrees counter-clockwise that players turn the stored frames (0, 90, 180, -90)

    @property
    def upright_size(self) -> tuple[int, int]:
        """``(width, height)`` as the video plays (the stored size, swapped for a quarter turn)."""
        return (self.height, self.width) if self.rotation % 180 else (self.width, self.height)


def _open(path: Path) -> Any:
    av = _av()
    if not path.is_file():
        raise InputError(f"{path}: no such video file")
    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises a family of FFmpegError subclasses
        raise InputError(f"{path}: not a readable video ({' '.join(str(exc).split())[:160]})") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: holds no video stream")
    return container


def _quarter_turns(path: Path, degrees: float) -> int:
    """The display rotation as a multiple of 90 degrees in (-180, 180]; other angles are refused."""
    turns = round(degrees / 90)
    if abs(degrees - 90 * turns) > 1:
        raise InputError(f"{path}: the video asks players to turn it by {degrees:g} degrees; only quarter turns "
                         "(0, 90, 180, 270) are supported: re-encode it upright first")
    return 90 * ((turns + 1) % 4 - 1)


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        fps = stream.average_rate or stream.guessed_rate or Fraction(25)
        try:  # the display matrix comes with the decoded frames
            rotation = _quarter_turns(path, next(container.decode(video=0)).rotation)
        except (StopIteration, _av().FFmpegError):
            rotation = 0
        return VideoInfo(path, stream.codec_context.width, stream.codec_context.height, Fraction(fps),
                         stream.frames or None, len(container.streams.audio), stream.codec_context.name, rotation)


def turn(image: Tensor, rotation: int) -> Tensor:
    """``image`` (..., H, W) turned ``rotation`` degrees counter-clockwise (a multiple of 90)."""
    return torch.rot90(image, rotation // 90, dims=(-2, -1)) if rotation else image


def frames(path: str | os.PathLike[str], *, upright: bool = True) -> Iterator[Tensor]:
    """Every frame of the first video stream as float32 ``(1, 3, H, W)`` RGB in [0, 1]; ``upright``: turned as
    players show it (the container's display rotation applied), else as stored."""
    path = Path(path)
    container = _open(path)
    try:
        for frame in container.decode(video=0):
            rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)[None].float().div_(255)
            yield turn(rgb, _quarter_turns(path, frame.rotation)).contiguous() if upright else rgb
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: cannot decode the video ({' '.join(str(exc).split())[:160]})") from None
    finally:
        container.close()


class VideoWriter:
    """``with VideoWriter(out, fps=..., width=..., height=..., audio_from=src) as w: w.write(frame)``."""

    def __init__(self, path: str | os.PathLike[str], *, fps: Fraction, width: int, height: int,
                 audio_from: str | os.PathLike[str] | None = None, crf: int = 18, overwrite: bool = False,
                 rotation: int = 0) -> None:
        """``width`` x ``height``: the stored frames' size; ``rotation``: the display rotation written with them
        (degrees counter-clockwise, a multiple of 90), so that players turn them as they turned the input."""
        av = _av()
        self.path = Path(path)
        if self.path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise InputError(f"{self.path}: unknown video extension; use one of {', '.join(sorted(VIDEO_EXTENSIONS))}")
        if self.path.exists() and not overwrite:
            raise InputError(f"{self.path}: already exists; pass --overwrite to replace it")
        self._target = atomic_write(self.path, overwrite=overwrite, suffix=self.path.suffix)
        self.tmp = self._target.__enter__()  # av picks the container format from the suffix
        self.audio_from = Path(audio_from) if audio_from is not None else None
        self.container = av.open(str(self.tmp), mode="w")
        self.stream = self.container.add_stream("libx264", rate=fps)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        self.stream.options = {"crf": str(crf), "preset": "medium"}
        if rotation:
            self.stream.set_display_rotation(rotation)
        self._audio: list[tuple[Any, Any]] = []
        if self.audio_from is not None:
            self._source = av.open(str(self.audio_from))
            for s in self._source.streams.audio:
                self._audio.append((s, self.container.add_stream_from_template(s)))
        self.count = 0

    def write(self, image: Tensor) -> None:
        """One frame ``(1, 3, H, W)`` or ``(3, H, W)`` float in [0, 1]."""
        av = _av()
        x = image[0] if image.ndim == 4 else image
        arr = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.count += 1

    def close(self, ok: bool = True) -> None:
        try:
            if ok:
                for packet in self.stream.encode():
                    self.container.mux(packet)
                if self._audio:
                    by_index = {src.index: dst for src, dst in self._audio}
                    for packet in self._source.demux([src for src, _ in self._audio]):
                        if packet.dts is None:
                            continue
                        packet.stream = by_index[packet.stream.index]
                        self.container.mux(packet)
        finally:
            self.container.close()
            if self._audio:
                self._source.close()
            failed = None if ok else InputError("video not finished")
            self._target.__exit__(type(failed) if failed else None, failed, None)  # ok: in place; else removed

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close(ok=kind is None)
