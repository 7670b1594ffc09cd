"""The architecture registry: a literal tuple of families (one per ``archs/<family>.py``, see
:mod:`derain.archs.spec`), and the table of model names their presets define.

``create_model("prenet_r")`` is ``PReNet(recursive=True)``. Unknown names raise with the list of valid ones. Adding
an architecture: one file declaring ``FAMILY``, one import line and one entry below (``docs/adding_a_model.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from derain.archs import jdnet, prenet, sian, spanet
from derain.archs.spec import Family, Preset
from derain.errors import InputError

FAMILIES: dict[str, Family] = {f.name: f for f in (sian.FAMILY, prenet.FAMILY, spanet.FAMILY, jdnet.FAMILY)}


def _table(families: Mapping[str, Family]) -> dict[str, Preset]:
    table: dict[str, Preset] = {}
    for family in families.values():
        for p in family.presets:
            if p.name in table:
                raise ValueError(f"duplicate model name in the registry: {p.name!r}")
            table[p.name] = p
    return table


MODELS: dict[str, Preset] = _table(FAMILIES)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(MODELS)


def get_entry(name: str) -> Preset:
    """The preset of a registry name; unknown names raise with the list of valid ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; valid names: {', '.join(list_models())}") from None


def get_family(name: str) -> Family:
    """The family of a registry name (``"prn"`` -> PReNet's) or a family's own name (``"prenet"``)."""
    if name in FAMILIES:
        return FAMILIES[name]
    for family in FAMILIES.values():
        if any(p.name == name for p in family.presets):
            return family
    raise InputError(f"unknown architecture {name!r}; families: {', '.join(sorted(FAMILIES))}; "
                     f"models: {', '.join(list_models())}")


def family_of(model: nn.Module) -> Family:
    """The family a built model belongs to, by its exact class; a class no family declares is an error (derain
    never guesses how to tile or export an unknown architecture)."""
    for family in FAMILIES.values():
        if type(model) in family.classes:
            return family
    known = ", ".join(sorted(c.__name__ for f in FAMILIES.values() for c in f.classes))
    raise InputError(f"{type(model).__name__} is not a registered architecture (known: {known}); declare its "
                     "family in derain.archs (docs/adding_a_model.md)")


def create_model(name: str, **options: Any) -> nn.Module:
    """Build a bare model by registry name; ``options`` override the preset's constructor arguments."""
    entry = get_entry(name)
    try:
        return entry.constructor(**{**entry.options, **options})
    except TypeError as exc:
        raise InputError(f"bad options for model {name!r}: {exc}") from None


__all__ = ["FAMILIES", "MODELS", "Family", "Preset", "create_model", "family_of", "get_entry",
           "get_family", "list_models"]
