"""What derain knows about an architecture family, in one frozen record per family.

Each ``archs/<family>.py`` ends with ``FAMILY = Family(...)``: its presets (registry names, constructor, arguments,
one-line summary), the facts tiled inference needs, the options of a tiny model for tests and dry runs, and how to
turn a model into the form the ONNX exporter can trace. The registry (:mod:`derain.archs`), the Restorer, export
and the tests read everything from here; ``docs/adding_a_model.md`` walks through adding one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class Preset:
    """One registry name: ``constructor(**options)``."""

    name: str
    constructor: Callable[..., nn.Module]
    options: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""


def _unchanged(model: nn.Module) -> None:
    return None


@dataclass(frozen=True)
class Family:
    """An architecture family: its presets and what inference, export and tests need to know about it.

    ``overlap``: the default tile overlap in pixels, from the measured effective receptive field
    (``benchmarks/tiling.py``). ``align``: windows start at multiples of this (the model's largest pooling factor),
    so a window sees the image's pooling grid. ``bytes_per_pixel``: peak memory of a float32 forward pass per input
    pixel (``benchmarks/forward.py``); automatic tiling keeps a window's estimate under half the free memory.
    ``small``: constructor options (over any preset's) of a tiny model that builds and runs in milliseconds.
    ``export_form``: switches a copy of a model, in place, to layers the ONNX exporter can trace with a dynamic
    image size (same values up to rounding); the default leaves it as it is.
    """

    name: str
    presets: tuple[Preset, ...]
    overlap: int
    bytes_per_pixel: float
    align: int = 1
    small: Mapping[str, Any] = field(default_factory=dict)
    export_form: Callable[[nn.Module], None] = _unchanged

    def __post_init__(self) -> None:
        if not self.presets:
            raise ValueError(f"architecture family {self.name!r} has no presets")
        if self.overlap < 0 or self.align < 1 or self.bytes_per_pixel <= 0:
            raise ValueError(f"architecture family {self.name!r}: overlap >= 0, align >= 1 and bytes_per_pixel > 0")

    @property
    def classes(self) -> frozenset[type]:
        """The module classes its presets construct (a built model is recognised by its exact class)."""
        return frozenset(p.constructor for p in self.presets if isinstance(p.constructor, type))
