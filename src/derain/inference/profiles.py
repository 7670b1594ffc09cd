"""What inference needs to know per architecture family: tile overlap and memory per pixel.

``overlap``: the default tile overlap in pixels, from the measured effective receptive field
(``benchmarks/tiling.py``): with it, tiled PReNet and SIAN outputs equal the untiled ones within 2/255 (SIAN's
windows are told where they sit, so its ``align_corners=True`` up-sampling follows the whole image's grid).
JDNet (stride-16 levels in 32 units) and SPANet (IRNN sweeps span whole rows and columns) see the whole image;
their overlaps keep tiling changes small but not zero (README), and they are tiled only when memory requires.

``align``: windows start at multiples of the model's largest pooling factor (SIAN pools by 2 and 4, JDNet's
scale aggregation by up to 16), so a window sees the same pooling grid as the whole image.

``bytes_per_pixel``: peak memory of a float32 forward pass per input pixel (``benchmarks/forward.py`` at two
sizes); automatic tiling keeps a window's estimate under half of the free memory.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    overlap: int
    bytes_per_pixel: float
    align: int = 1                  # windows start at multiples of this (the model's largest pooling factor)
    sees_whole_image: bool = False


PROFILES: dict[str, Profile] = {
    "prenet": Profile(overlap=64, bytes_per_pixel=2200.0),
    "sian": Profile(overlap=96, bytes_per_pixel=3500.0, align=4),
    "spanet": Profile(overlap=128, bytes_per_pixel=2600.0, sees_whole_image=True),
    "jdnet": Profile(overlap=128, bytes_per_pixel=5500.0, align=16, sees_whole_image=True),
}
