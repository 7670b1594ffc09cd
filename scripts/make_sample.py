"""Make the sample image that ships with the package: a procedural landscape (no photo, so no licence
question) with light synthetic rain, and its clean original.

    python scripts/make_sample.py     # writes src/derain/assets/sample_rain.png and sample_clean.png,
                                      # and docs/synthetic_styles.png (clean | light | heavy) for the README

Deterministic: the same files come out every time.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from derain.data.synthetic import add_rain, generator
from derain.io import write_image

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "src" / "derain" / "assets"
H, W = 320, 480


def _noise(g: torch.Generator, h: int, w: int, octaves: int = 5) -> torch.Tensor:
    """Fractal value noise in about [-1, 1]."""
    out = torch.zeros(h, w)
    for k in range(octaves):
        cells = 2 ** (k + 2)
        grid = torch.rand(1, 1, cells + 1, cells + 1, generator=g) * 2 - 1
        out += F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=True)[0, 0] / 2**k
    return out / 1.9


def _ridge(g: torch.Generator, base: float, amplitude: float) -> torch.Tensor:
    """A mountain skyline: the height (row) of the ridge per column."""
    line = torch.zeros(W)
    for k in range(1, 7):
        phase = float(torch.rand((), generator=g)) * 2 * math.pi
        line += amplitude / k**1.3 * torch.sin(torch.linspace(0, k * 2.7, W) + phase)
    return base + line


def scene() -> torch.Tensor:
    g = generator("sample-scene")
    y = torch.linspace(0, 1, H)[:, None].expand(H, W)
    x = torch.linspace(0, 1, W)[None, :].expand(H, W)
    rows = torch.arange(H)[:, None].float()
    img = torch.stack([0.45 + 0.25 * y, 0.60 + 0.20 * y, 0.85 - 0.05 * y])  # sky
    clouds = (_noise(g, H, W) * 0.5 + 0.5).clamp(0, 1) ** 2
    img = img * (1 - 0.35 * clouds) + 0.35 * clouds * 0.95
    for base, amp, colour, shade in ((120, 28, (0.42, 0.47, 0.58), 0.10), (165, 22, (0.28, 0.40, 0.30), 0.12)):
        ridge = _ridge(g, base, amp)[None, :]
        texture = _noise(g, H, W) * shade
        mask = (rows > ridge).float()
        layer = torch.tensor(colour)[:, None, None] + texture - 0.15 * ((rows - ridge) / H).clamp(0, 1)
        img = img * (1 - mask) + layer.clamp(0, 1) * mask
    lake = (rows > 235).float()
    reflection = img.flip(1)[:, : H - 235].roll(0, 1)  # mirror of what is above the shore
    water = torch.zeros_like(img)
    water[:, 235:] = 0.55 * F.pad(reflection, (0, 0, 0, 0))[:, : H - 235] + 0.45 * torch.tensor(
        [0.20, 0.32, 0.45])[:, None, None]
    img = img * (1 - lake) + water * lake
    for k in range(14):  # pine trees on the near shore
        cx = 20 + k * 33 + float(torch.rand((), generator=g)) * 14
        height = 40 + float(torch.rand((), generator=g)) * 35
        half = height * 0.28
        inside = ((rows < 236) & (rows > 236 - height) &
                  ((x * W - cx).abs() < half * (rows - (236 - height)) / height)).float()
        img = img * (1 - inside) + inside * torch.tensor([0.10, 0.24, 0.12])[:, None, None] * (0.8 + 0.4 * y)
    house = ((rows > 200) & (rows < 236) & (x * W > 300) & (x * W < 352)).float()
    roof = ((rows > 180) & (rows <= 200) & ((x * W - 326).abs() < (rows - 180) * 1.5)).float()
    window = ((rows > 210) & (rows < 222) & (((x * W - 314).abs() < 5) | ((x * W - 338).abs() < 5))).float()
    img = img * (1 - house) + house * torch.tensor([0.75, 0.66, 0.52])[:, None, None]
    img = img * (1 - roof) + roof * torch.tensor([0.55, 0.18, 0.14])[:, None, None]
    img = img * (1 - window) + window * torch.tensor([0.95, 0.85, 0.45])[:, None, None]
    grain = _noise(g, H, W, octaves=7) * 0.015
    return (img + grain).clamp(0, 1)


def main() -> None:
    clean = scene()
    rainy, _ = add_rain(clean, style="light", g=generator("sample-rain"))
    write_image(ASSETS / "sample_clean.png", clean, overwrite=True)
    write_image(ASSETS / "sample_rain.png", rainy, overwrite=True)
    heavy, _ = add_rain(clean, style="heavy", g=generator("sample-rain-heavy"))
    gap = torch.ones(3, H, 6)
    write_image(ROOT / "docs" / "synthetic_styles.png", torch.cat([clean, gap, rainy, gap, heavy], dim=2),
                overwrite=True)
    print(f"wrote {ASSETS / 'sample_rain.png'}, {ASSETS / 'sample_clean.png'} and docs/synthetic_styles.png")


if __name__ == "__main__":
    main()
