"""What derain knows about an architecture family, in one frozen record per family.

Each ``archs/<family>.py`` ends with ``FAMILY = Family(...)``: its presets (registry names, constructor, arguments,
one-line summary), the facts tiled inference needs, the options of a tiny model for tests and dry runs, how to
turn a model into the form the ONNX exporter can trace, and how to recognise its official checkpoints from their keys
and shapes. The registry (:mod:`derain.archs`), the Restorer, export, checkpoint detection
(:mod:`derain.weights.convert`) and the tests read everything from here; ``docs/adding_a_model.md`` walks through
adding one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

StateDict = Mapping[str, Tensor]


@dataclass(frozen=True)
class Preset:
    """One registry name: ``constructor(**options)``."""

    name: str
    constructor: Callable[..., nn.Module]
    options: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""


@dataclass(frozen=True)
class Detected:
    """What a family's detector recognised in a state_dict: a registry name, its constructor options (those that
    differ from the preset's) and the channel order the weights were trained on."""

    model: str
    options: Mapping[str, Any] = field(default_factory=dict)
    channel_order: str = "rgb"


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
    ``detect``: recognises the family's official checkpoints (plain state_dicts, after
    :func:`derain.weights.convert.unwrap`) from their keys and shapes: a :class:`Detected`, or None for another
    family's; ``layout`` names the keys it looks for, for the error that lists the known layouts. A family without
    official checkpoints leaves both out (derain's own files carry their model's name and options).
    """

    name: str
    presets: tuple[Preset, ...]
    overlap: int
    bytes_per_pixel: float
    align: int = 1
    small: Mapping[str, Any] = field(default_factory=dict)
    export_form: Callable[[nn.Module], None] = _unchanged
    detect: Callable[[StateDict], Detected | None] | None = None
    layout: str = ""

    def __post_init__(self) -> None:
        if not self.presets:
            raise ValueError(f"architecture family {self.name!r} has no presets")
        if self.overlap < 0 or self.align < 1 or self.bytes_per_pixel <= 0:
            raise ValueError(f"architecture family {self.name!r}: overlap >= 0, align >= 1 and bytes_per_pixel > 0")
        if (self.detect is None) != (not self.layout):
            raise ValueError(f"architecture family {self.name!r}: a checkpoint detector and its layout go together")

    @property
    def classes(self) -> frozenset[type]:
        """The module classes its presets construct (a built model is recognised by its exact class)."""
        return frozenset(p.constructor for p in self.presets if isinstance(p.constructor, type))
