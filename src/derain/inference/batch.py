"""Derain many files: inputs (files, folders, globs) -> outputs, never losing or overwriting data.

Folders are walked recursively and mirrored under the output folder; a single file with an output path that has
an image extension is written exactly there. Existing outputs are skipped unless ``overwrite``; no input is ever
written over; every file appears atomically (temp file + rename). A file that cannot be read or processed is
reported by name and skipped; the rest go on. Under ``torchrun`` (WORLD_SIZE > 1) each process takes its share
of the files (every ``world``-th, from its rank), so none is done twice.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from derain.device import Launch, launch, resolve_device
from derain.errors import DerainError, InputError
from derain.inference.restorer import Restorer, Strength, check_strength, load
from derain.inference.scale import Scale, check_scale, resolve_scale
from derain.io import IMAGE_EXTENSIONS, list_images, read_image, write_image
from derain.io.interrupt import terminate_as_interrupt
from derain.io.video import VIDEO_EXTENSIONS, VideoWriter, frames, probe, turn

_GLOB_CHARS = set("*?[")


def shown(path: Path | str) -> str:
    """A path as printable text (undecodable bytes of a non-UTF-8 name shown as escapes)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class RunOptions:
    format: str | None = None        # output extension without the dot ("png", "jpg"...); None: the input's
    quality: int = 95                # JPEG / WebP quality
    tile: int | None = None          # None: whole image unless it would not fit in memory
    overlap: int | None = None       # None: the model's default
    save_stages: bool = False
    save_attention: bool = False
    compare: bool = False            # also write NAME_compare.EXT: input and output side by side
    overwrite: bool = False
    scale: Scale = "auto"            # working scale (derain.inference.scale); a video's is chosen once per clip
    strength: Strength = "auto"      # rain layer removed (Restorer.__call__): "auto" (the gate), or 0 to 1

    def __post_init__(self) -> None:  # frozen: each set once, checked
        object.__setattr__(self, "strength", check_strength(self.strength))
        object.__setattr__(self, "scale", check_scale(self.scale))


@dataclass
class RunSummary:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what the user should know (an output folder not read)

    def line(self) -> str:
        return "; ".join([f"{len(self.done)} done, {len(self.skipped)} skipped (exist; --overwrite replaces them), "
                          f"{len(self.failed)} failed, {self.seconds:.1f} s", *self.notes])


Job = tuple[Path, Path]  # (input file, output file)


def _images_under(folder: Path, failed: list[tuple[str, str]]) -> list[Path]:
    def onerror(exc: OSError) -> None:
        failed.append((shown(exc.filename or folder), f"cannot read the folder ({exc.strerror or exc})"))

    return list_images(folder, recursive=True, extensions=IMAGE_EXTENSIONS | VIDEO_EXTENSIONS, onerror=onerror)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def plan(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
         format: str | None = None, notes: list[str] | None = None) -> tuple[list[Job], list[tuple[str, str]]]:
    """The (input, output) pairs for ``inputs`` and the inputs that cannot be used, with the reason.

    An output folder inside an input folder (``derain run photos -o photos/out``) is not read: its files are
    earlier results, not inputs. ``notes`` (when given) gets a line saying so.
    """
    out = Path(out)
    out_real = out.resolve()
    failed: list[tuple[str, str]] = []
    found: list[tuple[Path, Path]] = []  # (file, output path relative to out)
    left_out: list[str] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            holds_out = out_real != path.resolve() and _inside(out_real, path.resolve())
            for f in _images_under(path, failed):
                if holds_out and _inside(f.resolve(), out_real):
                    if shown(out) not in left_out:
                        left_out.append(shown(out))
                    continue
                found.append((f, f.relative_to(path)))
        elif path.is_file():
            found.append((path, Path(path.name)))
        elif _GLOB_CHARS & set(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            files = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS]
            if not files:
                failed.append((text, "the pattern matches no image files"))
            found += [(m, Path(m.name)) for m in files]
        else:
            failed.append((shown(text), "no such file or folder"))
    if notes is not None:
        notes += [f"{name} not read as input (it is the output folder)" for name in left_out]
    single_target = (len(inputs) == 1 and len(found) == 1 and Path(os.fspath(inputs[0])).is_file()
                     and out.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
    jobs: list[Job] = []
    seen: dict[Path, Path] = {}
    for src, rel in found:
        if single_target:
            target = out
        else:
            video = rel.suffix.lower() in VIDEO_EXTENSIONS
            suffix = f".{format.lstrip('.').lower()}" if format and not video else rel.suffix
            target = out / rel.with_suffix(suffix)
        if target in seen:
            failed.append((shown(src), f"its output {shown(target)} is also the output of {shown(seen[target])}"))
            continue
        seen[target] = src
        jobs.append((src, target))
    return jobs, failed


def _extras(target: Path, tag: str) -> Path:
    return target.with_name(f"{target.stem}_{tag}.png")


def derain_video(restorer: Restorer, src: str | os.PathLike[str], dst: str | os.PathLike[str], *, batch: int = 4,
                 tile: int | None = None, overlap: int | None = None, overwrite: bool = False,
                 progress: Callable[[int, int | None], None] | None = None, scale: Scale = "auto",
                 strength: Strength = "auto") -> int:
    """Derain every frame of ``src`` into ``dst``: same frame rate, size and frame count; audio copied.
    Frames go through the model ``batch`` at a time, all at one working scale (``auto``: chosen from the first
    frame, so it cannot change from frame to frame), and upright: a phone video's display rotation is applied
    before the model (rain falls down the image) and written back with the output, which plays as the input
    does. Returns the number of frames written."""
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise InputError(f"{dst}: refusing to write over the input video; choose another output path")
    info = probe(src)
    pending: list[torch.Tensor] = []
    with VideoWriter(dst, fps=info.fps, width=info.width, height=info.height, rotation=info.rotation,
                     audio_from=src if info.audio_streams else None, overwrite=overwrite) as writer:
        chosen: list[int] = []

        def flush() -> None:
            if pending:
                if not chosen:
                    chosen.append(resolve_scale(scale, pending[0]))
                for frame in restorer(torch.cat(pending), tile=tile, overlap=overlap, scale=chosen[0],
                                      strength=strength):
                    writer.write(turn(frame, -info.rotation))  # back to the stored geometry
                pending.clear()
                if progress:
                    progress(writer.count, info.frames)

        for frame in frames(src):
            pending.append(frame)
            if len(pending) >= batch:
                flush()
        flush()
        return writer.count


def _process(restorer: Restorer, src: Path, target: Path, options: RunOptions, protect: list[Path],
             frame_progress: Callable[[int, int | None], None] | None = None) -> None:
    if src.suffix.lower() in VIDEO_EXTENSIONS:
        derain_video(restorer, src, target, tile=options.tile, overlap=options.overlap, overwrite=options.overwrite,
                     progress=frame_progress, scale=options.scale, strength=options.strength)
        return
    loaded = read_image(src)
    image = loaded.image
    fmt_alpha = target.suffix.lower() in (".png", ".tif", ".tiff", ".webp")
    bit_depth = 16 if loaded.bit_depth == 16 and target.suffix.lower() in (".png", ".tif", ".tiff") else 8
    alpha = loaded.alpha if fmt_alpha else None
    extras = options.save_stages or options.save_attention
    scale = resolve_scale(options.scale, image)
    if extras and scale != 1:
        raise InputError(f"{shown(src)}: --save-stages/--save-attention show the model at the image's own scale; "
                         f"this image would run at scale {scale}: pass --scale 1 with them")
    # Stages and attention maps come from one whole-image forward; untiled, that forward gives the image too.
    fits = extras and restorer.auto_tile(image.shape[-2], image.shape[-1]) is None
    result = restorer.run(image) if fits else None
    out = (restorer.finish(image, result.image.clamp(0, 1), options.strength)
           if result is not None and options.tile is None
           else restorer(image, tile=options.tile, overlap=options.overlap, scale=scale, strength=options.strength))
    write_image(target, out, alpha=alpha, bit_depth=bit_depth, quality=options.quality,
                overwrite=options.overwrite, protect=protect)
    if options.compare:
        gap = torch.ones(1, 3, image.shape[2], 8)
        write_image(_extras(target, "compare"), torch.cat([image, gap, out], dim=3), overwrite=options.overwrite,
                    protect=protect)
    if extras:
        if result is None:
            raise InputError(f"{shown(src)}: derained, but too large for --save-stages/--save-attention, which "
                             "need the whole image in one piece (they are not tiled)")
        if options.save_stages:
            for k, stage in enumerate(result.stages, 1):
                write_image(_extras(target, f"stage{k}"), stage.clamp(0, 1), overwrite=options.overwrite,
                            protect=protect)
        if options.save_attention:
            for k, att in enumerate(result.attention, 1):
                a = att[:, :1]
                a = (a - a.min()) / (a.max() - a.min()).clamp_min(1e-8)
                write_image(_extras(target, f"attention{k}"), a.expand(-1, 3, -1, -1), overwrite=options.overwrite,
                            protect=protect)


def derain_files(restorer: Restorer, inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                 options: RunOptions | None = None, rank: int = 0, world: int = 1,
                 progress: Callable[[int, int, str], None] | None = None,
                 report: Callable[[str, str], None] | None = None) -> RunSummary:
    """Derain every image in ``inputs`` into ``out``; see the module docstring for the rules.

    progress(done, total, name) is called after each file; report(name, reason) for each failure.
    """
    options = options or RunOptions()
    if options.format is not None and f".{options.format.lstrip('.').lower()}" not in IMAGE_EXTENSIONS:
        raise InputError(f"unknown output format {options.format!r}; valid: "
                         f"{', '.join(sorted(e.lstrip('.') for e in IMAGE_EXTENSIONS))}")
    start = time.perf_counter()
    summary = RunSummary()
    jobs, failed = plan(inputs, out, format=options.format, notes=summary.notes)
    if rank == 0:
        for name, reason in failed:
            summary.failed.append((name, reason))
            if report:
                report(name, reason)
    protect = [src for src, _ in jobs]  # every input, not just this rank's share: no rank writes over any input
    jobs = jobs[rank::world]
    with terminate_as_interrupt():  # SIGTERM cleans up like Ctrl+C: no hidden temporary file is left
        for k, (src, target) in enumerate(jobs, 1):
            if target.exists() and not options.overwrite:
                summary.skipped.append(target)
            elif any(target.resolve() == p.resolve() for p in protect):
                reason = "its output path is an input file; choose another output folder"
                summary.failed.append((shown(src), reason))
                if report:
                    report(shown(src), reason)
            else:
                try:
                    def frames_done(n: int, total: int | None, k: int = k, src: Path = src) -> None:
                        if progress:
                            progress(k - 1, len(jobs), f"{shown(src.name)} frame {n}/{total or '?'}")

                    _process(restorer, src, target, options, protect, frames_done)
                    summary.done.append(target)
                except (DerainError, OSError, RuntimeError, MemoryError, ValueError) as exc:
                    reason = " ".join(str(exc).split()) or type(exc).__name__
                    for prefix in (f"{shown(src)}: ", f"{src}: "):
                        reason = reason.removeprefix(prefix)
                    summary.failed.append((shown(src), reason))
                    if report:
                        report(shown(src), reason)
            if progress:
                progress(k, len(jobs), shown(src.name))
    summary.seconds = time.perf_counter() - start
    return summary


def derain_paths(weights: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]],
                 out: str | os.PathLike[str], *, device: str = "auto", half: bool = False,
                 options: RunOptions | None = None, progress: Callable[[int, int, str], None] | None = None,
                 report: Callable[[str, str], None] | None = None) -> tuple[str, RunSummary, Launch]:
    """``derain run``: load ``weights`` (a catalog name or a file) on ``device`` (float16 when ``half``) and derain
    ``inputs`` into ``out`` with :func:`derain_files`. Under ``torchrun`` each process takes its share of the files
    on its own GPU (:func:`derain.device.resolve_device`). Returns the weights' name, this process's summary and
    which process it was."""
    process, where = launch(), resolve_device(device)  # the device is checked before the weights are read
    restorer = load(weights, device=where)
    if half:
        restorer = restorer.to(torch.float16)
    summary = derain_files(restorer, inputs, out, options=options, rank=process.rank, world=process.world,
                           progress=progress, report=report)
    return restorer.name, summary, process
