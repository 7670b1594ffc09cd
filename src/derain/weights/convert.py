"""Official checkpoint layouts: one unwrapper, and detection of the architecture from keys and shapes by asking each
family of :mod:`derain.archs` in turn (each family's detector lives in its own ``archs/<family>.py``).

derain's modules reproduce the official parameter names, so an official state_dict loads as it is (strictly: a
missing or unexpected key is an error naming them); the detectors only say which model and options it fits.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from derain.archs import FAMILIES
from derain.archs.spec import Detected
from derain.errors import WeightsError

StateDict = dict[str, Tensor]

__all__ = ["Detected", "StateDict", "detect", "unwrap"]

# Containers official repositories wrap their state_dict in (SPANet and JDNet save {'net': ..., 'opt': ...}).
_WRAPPER_KEYS = ("net", "state_dict", "model", "params", "params_ema", "generator")


def unwrap(obj: object) -> StateDict:
    """Return the tensor mapping inside a loaded checkpoint: unwrap known containers, strip ``module.``."""
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
            break
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is not None:
                obj = inner
                continue
        found = sorted(map(str, obj))[:6] if isinstance(obj, Mapping) else type(obj).__name__
        raise WeightsError(f"no state_dict found in the checkpoint (top level holds {found}); "
                           f"expected a mapping of tensors, possibly under one of {', '.join(_WRAPPER_KEYS)}")
    assert isinstance(obj, Mapping)
    state = {str(k): v for k, v in obj.items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def detect(sd: StateDict) -> Detected:
    """Name the architecture (and constructor options) a state_dict belongs to, from its keys and shapes: the first
    family of :data:`derain.archs.FAMILIES` whose detector recognises it."""
    for family in FAMILIES.values():
        found = family.detect(sd) if family.detect is not None else None
        if found is not None:
            return found
    sample = ", ".join(sorted(sd)[:5]) or "no keys"
    known = "; ".join(f"{f.name} ({f.layout})" for f in FAMILIES.values() if f.detect is not None)
    raise WeightsError(f"unknown checkpoint layout (keys: {sample}, ... {len(sd)} tensors); known layouts: {known}")
