"""Evaluate a restorer on a paired dataset under one of the papers' protocols; per-image rows and means."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from derain.data.paired import Layout, PairedFolder
from derain.device import resolve_device
from derain.errors import InputError
from derain.inference import Restorer, load
from derain.inference.scale import Scale, check_scale
from derain.io import write_image
from derain.metrics import PROTOCOLS, check_protocol, measure
from derain.metrics import quantize as quantize_image

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class ImageScore:
    name: str
    psnr: float
    ssim: float
    seconds: float


@dataclass(frozen=True)
class EvalReport:
    weights: str
    data: str
    protocol: str
    quantize: str | None
    downsample: bool
    psnr: float
    ssim: float
    images: int
    seconds: float
    per_image: tuple[ImageScore, ...]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["per_image"] = [asdict(s) for s in self.per_image]
        return d

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def table(self) -> str:
        q = f", quantize {self.quantize}" if self.quantize else ""
        head = f"{'weights':<28} {'protocol':<16} {'PSNR (dB)':>10} {'SSIM':>8} {'images':>7} {'seconds':>8}"
        row = (f"{self.weights[:28]:<28} {self.protocol[:16]:<16} {self.psnr:>10.3f} {self.ssim:>8.4f} "
               f"{self.images:>7d} {self.seconds:>8.1f}")
        return f"{head}\n{row}\n(data: {self.data}{q})"


def default_quantize(restorer: Restorer, protocol: str) -> str | None:
    """How the authors of these weights saved outputs before measuring (matlab-y only); round when unknown."""
    if not PROTOCOLS[protocol].quantizes:
        return None
    record = restorer.weights.record if restorer.weights is not None else None
    return record.quantize if record is not None else "round"


def evaluate(
    restorer: Restorer,
    dataset: Sequence[Any],
    *,
    protocol: str = "matlab-y",
    quantize: Literal["floor", "round"] | None = None,
    downsample: bool = False,
    save_images: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    scale: Scale = 1,
) -> EvalReport:
    """Run ``restorer`` on every pair of ``dataset`` (items with ``name``, ``rainy``, ``clean``) and measure it.

    ``quantize`` defaults to how the weights' authors saved their outputs (``floor`` for PReNet, ``round``
    otherwise); ``save_images`` writes exactly the images that were measured, under the pairs' names.
    """
    check_protocol(protocol, quantize=quantize, downsample=downsample)
    if quantize is None:
        quantize = default_quantize(restorer, protocol)
    if len(dataset) == 0:
        raise InputError("the dataset holds no pairs")
    out_dir = Path(save_images) if save_images is not None else None
    if out_dir is not None and out_dir.is_dir() and any(out_dir.iterdir()):
        raise InputError(f"{out_dir}: folder is not empty; choose an empty or new folder for --save-images")

    gated = hasattr(restorer.model, "gated")
    scores: list[ImageScore] = []
    start = time.perf_counter()
    for index in range(len(dataset)):
        pair = dataset[index]
        t0 = time.perf_counter()
        # scale 1 (the default) is the papers' own measurement; other scales return the clamped image. A model with
        # a gate (derain.default) is measured as `derain run` writes it: the gate applied to the clamped output.
        if scale != 1:
            output = restorer(pair.rainy[None], scale=scale)
        elif gated:
            output = restorer.finish(pair.rainy[None], restorer.run(pair.rainy[None]).image.clamp(0, 1))
        else:
            output = restorer.run(pair.rainy[None]).image
        seconds = time.perf_counter() - t0
        psnr, ssim = measure(output, pair.clean[None], protocol=protocol, quantize=quantize, downsample=downsample)
        scores.append(ImageScore(pair.name, float(psnr[0]), float(ssim[0]), seconds))
        if out_dir is not None:
            saved = quantize_image(output.clamp(0, 1), quantize) if quantize else output.clamp(0, 1)
            write_image(out_dir / Path(pair.name).with_suffix(".png"), saved)
        if progress is not None:
            progress(index + 1, len(dataset), pair.name)
    finite = [s.psnr for s in scores if math.isfinite(s.psnr)]
    return EvalReport(
        weights=restorer.name,
        data=str(getattr(dataset, "root", "")),
        protocol=protocol,
        quantize=quantize,
        downsample=downsample,
        psnr=sum(finite) / len(finite) if finite else math.inf,
        ssim=sum(s.ssim for s in scores) / len(scores),
        images=len(scores),
        seconds=time.perf_counter() - start,
        per_image=tuple(scores),
    )


def evaluate_named(
    weights: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    protocol: str = "matlab-y",
    quantize: Literal["floor", "round"] | None = None,
    downsample: bool = False,
    layout: Layout = "auto",
    limit: int | None = None,
    device: str = "auto",
    save_images: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    scale: Scale | str = 1,
) -> EvalReport:
    """``derain eval``: weights (a catalog name or a file) on a paired dataset (a folder, a list file or a data set's
    name), measured as :func:`evaluate` does. Every option is checked before anything is read or downloaded."""
    check_protocol(protocol, quantize=quantize, downsample=downsample)
    where = resolve_device(device)
    working = check_scale(scale)
    dataset = PairedFolder(data, layout=layout, limit=limit)  # the layout is checked before the data set is fetched
    return evaluate(load(weights, device=where), dataset, protocol=protocol, quantize=quantize,
                    downsample=downsample, save_images=save_images, progress=progress, scale=working)

