"""The architecture registry: a literal table of model names, each a constructor plus preset arguments.

``create_model("prenet_r")`` is ``PReNet(recursive=True)``. Unknown names raise with the list of valid ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from derain.archs.jdnet import PRESETS as _JDNET_PRESETS
from derain.archs.jdnet import JDNet
from derain.archs.prenet import PRESETS as _PRENET_PRESETS
from derain.archs.prenet import PReNet, PReNetPair
from derain.archs.sian import SIAN
from derain.archs.spanet import SPANet
from derain.errors import InputError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    constructor: Callable[..., nn.Module]
    preset: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""

    @property
    def family(self) -> str:
        """The architecture module the constructor lives in ("prenet" for every PReNet preset)."""
        return self.constructor.__module__.rsplit(".", 1)[-1]


def _table(entries: tuple[ModelEntry, ...]) -> dict[str, ModelEntry]:
    table: dict[str, ModelEntry] = {}
    for entry in entries:
        if entry.name in table:
            raise ValueError(f"duplicate model name in the registry: {entry.name!r}")
        table[entry.name] = entry
    return table


MODELS: dict[str, ModelEntry] = _table((
    ModelEntry("sian", SIAN, {}, "SIAN (ACM MM 2020): 6 shared stages, DoG attention, ConvLSTM per scale"),
    ModelEntry("prenet", PReNet, _PRENET_PRESETS["prenet"], "PReNet (CVPR 2019): 6 stages, LSTM, 5 res blocks"),
    ModelEntry("prenet_r", PReNet, _PRENET_PRESETS["prenet_r"], "PReNet_r: one recursive res block"),
    ModelEntry("prn", PReNet, _PRENET_PRESETS["prn"], "PRN: PReNet without recurrence"),
    ModelEntry("prn_r", PReNet, _PRENET_PRESETS["prn_r"], "PRN_r: PRN with one recursive res block"),
    ModelEntry("prenet_lstm", PReNet, _PRENET_PRESETS["prenet_lstm"], "PReNet ablation: no input residual"),
    ModelEntry("prenet_gru", PReNet, _PRENET_PRESETS["prenet_gru"], "PReNet ablation: GRU recurrence"),
    ModelEntry("prenet_x", PReNet, _PRENET_PRESETS["prenet_x"], "PReNet ablation: stage input x only"),
    ModelEntry("prn_pair", PReNetPair, {}, "two PRNs, light and heavy rain, each image routed by a rain-density "
               "classifier (derain.default)"),
    ModelEntry("prenet_real", PReNet, _PRENET_PRESETS["prenet_real"], "PReNet Generator_lstm (4 stages, real)"),
    ModelEntry("spanet", SPANet, {}, "SPANet (CVPR 2019): spatial attentive module, four-directional IRNN"),
    ModelEntry("jdnet", JDNet, _JDNET_PRESETS["jdnet"], "JDNet (ACM MM 2020): 32 joint units, 7x7 pairwise attention"),
    ModelEntry("jdnet_r1", JDNet, _JDNET_PRESETS["jdnet_r1"], "JDNet ablation R1: scale aggregation only"),
    ModelEntry("jdnet_r2", JDNet, _JDNET_PRESETS["jdnet_r2"], "JDNet ablation R2: scale aggregation + SC conv"),
))


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(MODELS)


def get_entry(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; valid names: {', '.join(list_models())}") from None


def create_model(name: str, **options: Any) -> nn.Module:
    """Build a bare model by registry name; ``options`` override the preset's constructor arguments."""
    entry = get_entry(name)
    try:
        return entry.constructor(**{**entry.preset, **options})
    except TypeError as exc:
        raise InputError(f"bad options for model {name!r}: {exc}") from None
