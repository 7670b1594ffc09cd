"""The bundled sample and the demo that README command 1 runs: derain the sample with the default model."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from derain.errors import InputError
from derain.inference.restorer import DEFAULT_WEIGHTS, load
from derain.io import read_image, write_image
from derain.metrics import psnr, quantize, ssim

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def sample_paths() -> tuple[Path, Path]:
    """The bundled sample: a procedural landscape with light synthetic rain, and its clean original."""
    return ASSETS / "sample_rain.png", ASSETS / "sample_clean.png"


@dataclass(frozen=True)
class DemoResult:
    rainy: Path
    derained: Path
    comparison: Path
    weights: str
    psnr_before: float
    psnr_after: float
    ssim_before: float
    ssim_after: float
    seconds: float


def _y_scores(x: torch.Tensor, clean: torch.Tensor) -> tuple[float, float]:
    """PSNR/SSIM on Y of the 8-bit image, as the matlab-y protocol measures."""
    x = quantize(x, "round")
    return (float(psnr(x, clean, data_range=1.0, y_channel=True)),
            float(ssim(x * 255, clean * 255, data_range=255.0, y_channel=True)))


def run_demo(out: str | os.PathLike[str], *, weights: str = DEFAULT_WEIGHTS, device: str = "auto",
             overwrite: bool = False) -> DemoResult:
    """Derain the bundled sample with ``weights``; write the rainy input, the result and a side-by-side
    comparison into ``out``; score both against the sample's clean original."""
    out = Path(out)
    rainy_path, clean_path = sample_paths()
    targets = [out / "sample_rain.png", out / "sample_derained.png", out / "sample_compare.png"]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]} exists; pass --overwrite to replace the demo's files or choose another "
                         "output folder")
    rainy, clean = read_image(rainy_path).image, read_image(clean_path).image
    restorer = load(weights, device=device)
    start = time.perf_counter()
    derained = restorer(rainy)
    seconds = time.perf_counter() - start
    before, after = _y_scores(rainy, clean), _y_scores(derained, clean)
    write_image(targets[0], rainy, overwrite=True)
    write_image(targets[1], derained, overwrite=True)
    gap = torch.ones(1, 3, rainy.shape[2], 8)
    write_image(targets[2], torch.cat([rainy, gap, derained], dim=3), overwrite=True)
    return DemoResult(targets[0], targets[1], targets[2], restorer.name, before[0], after[0], before[1], after[1],
                      seconds)
