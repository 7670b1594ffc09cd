"""Official checkpoint layouts: one unwrapper, and detection of the architecture from keys and shapes, one detector
per family of :mod:`derain.archs` (keyed by the family's name).

derain's modules reproduce the official parameter names, so an official state_dict loads as it is (strictly: a
missing or unexpected key is an error naming them); the detectors only say which model and options it fits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from derain.errors import WeightsError

StateDict = dict[str, Tensor]

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


@dataclass(frozen=True)
class Detected:
    model: str                                # registry name
    options: Mapping[str, Any] = field(default_factory=dict)
    channel_order: str = "rgb"


def _detect_prenet(sd: StateDict) -> Detected | None:
    w = sd.get("conv0.0.weight")
    if w is None or "conv.0.weight" not in sd or w.ndim != 4:
        return None
    channels = int(w.shape[0])
    options = {"channels": channels} if channels != 32 else {}
    recursive = "res_conv2.0.weight" not in sd
    if int(w.shape[1]) == 3:
        return Detected("prenet_x", options)
    if "conv_z.0.weight" in sd:
        return Detected("prenet_gru", options)
    if "conv_i.0.weight" in sd:
        # PReNet, the no-residual LSTM ablations and Generator_lstm share one key set; a file not in the
        # catalog is taken as the main model (the catalog's sha256 lookup names the others).
        return Detected("prenet_r" if recursive else "prenet", options)
    return Detected("prn_r" if recursive else "prn", options)


def _detect_sian(sd: StateDict) -> Detected | None:
    w = sd.get("body.tran_conv.weight")
    if w is None:
        return None
    scales = len({k.split(".")[2] for k in sd if k.startswith("body.scale_conv.")})
    dog = sd.get("body.scale_conv.0.conv_m.0.weight")
    options: dict[str, Any] = {}
    if int(w.shape[0]) != 32:
        options["channels"] = int(w.shape[0])
    if scales != 3:
        options["scales"] = scales
    if dog is not None and int(dog.shape[1]) // int(w.shape[0]) + 1 != 6:
        options["gaussian_layers"] = int(dog.shape[1]) // int(w.shape[0]) + 1
    return Detected("sian", options)


def _detect_spanet(sd: StateDict) -> Detected | None:
    w = sd.get("conv_in.0.weight")
    if w is None or "SAM1.irnn1.up_weight.weight" not in sd:
        return None
    channels = int(w.shape[0])
    # The official weights were trained on cv2 (BGR) images, as every SPANet-layout file from its code.
    return Detected("spanet", {"channels": channels} if channels != 32 else {}, channel_order="bgr")


def _detect_jdnet(sd: StateDict) -> Detected | None:
    w = sd.get("enterBlock.0.weight")
    if w is None or "exitBlock.0.weight" not in sd:
        return None
    units = len({k.split(".")[2] for k in sd if k.startswith("derain_net.units.")})
    scales = len({k.split(".")[4] for k in sd if k.startswith("derain_net.units.0.res_list.")})
    attention = "derain_net.units.0.san.conv.weight" in sd
    calibrated = "derain_net.units.0.scn.conv3.weight" in sd
    name = "jdnet" if attention else ("jdnet_r2" if calibrated else "jdnet_r1")
    if attention and not calibrated:
        raise WeightsError("JDNet-layout checkpoint with self-attention but without the self-calibrated convolution "
                           "(no derain_net.units.0.scn.*): no JDNet variant has that combination")
    options: dict[str, Any] = {}
    if int(w.shape[0]) != 32:
        options["channels"] = int(w.shape[0])
    if units != 32:
        options["units"] = units
    if scales != 4:
        options["scales"] = scales
    # JDNet's official code reads images with cv2 and never converts them: BGR.
    return Detected(name, options, channel_order="bgr")


# One detector per architecture family (derain.archs.FAMILIES), with the key layout it recognises.
_DETECTORS: dict[str, tuple[str, Callable[[StateDict], Detected | None]]] = {
    "sian": ("SIAN (body.tran_conv...)", _detect_sian),
    "prenet": ("PReNet family (conv0.0..., conv.0...)", _detect_prenet),
    "spanet": ("SPANet (conv_in.0..., SAM1.irnn1...)", _detect_spanet),
    "jdnet": ("JDNet (enterBlock.0..., derain_net.units...)", _detect_jdnet),
}


def detect(sd: StateDict) -> Detected:
    """Name the architecture (and constructor options) a state_dict belongs to, from its keys and shapes."""
    for _, detector in _DETECTORS.values():
        found = detector(sd)
        if found is not None:
            return found
    sample = ", ".join(sorted(sd)[:5]) or "no keys"
    known = "; ".join(label for label, _ in _DETECTORS.values())
    raise WeightsError(f"unknown checkpoint layout (keys: {sample}, ... {len(sd)} tensors); known layouts: {known}")
