"""Safe, hash-checked loading of weights: catalog names, official pickles and our safetensors files.

Pickles are only ever read with ``torch.load(weights_only=True)``; nothing else is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from derain.archs import create_model, get_entry
from derain.errors import InputError, WeightsError
from derain.io.atomic import atomic_write
from derain.weights.catalog import BY_SHA256, CATALOG, WeightRecord, get_record
from derain.weights.convert import StateDict, detect, unwrap
from derain.weights.hub import locate, verify_file

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pkl", ".ckpt", ".tar", ".bin", ".safetensors")
_META_PREFIX = "derain."


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class LoadedWeights:
    """A state_dict ready for ``model.load_state_dict(strict=True)`` and what it belongs to."""

    model: str
    options: Mapping[str, Any]
    state_dict: StateDict
    channel_order: str
    sha256: str
    source: str                          # the file it was read from
    record: WeightRecord | None = None   # the catalog record, when the file is a known one
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.record.name if self.record else Path(self.source).name

    def build(self) -> nn.Module:
        """Construct the model and load the weights strictly (eval mode)."""
        model = create_model(self.model, **self.options)
        missing, unexpected = [], []
        try:
            result = model.load_state_dict(self.state_dict, strict=False)
            missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
        except RuntimeError as exc:  # shape mismatches
            reason = str(exc).strip().splitlines()[-1]
            raise WeightsError(f"{self.source}: weights do not fit {self.model!r}: {reason}") from None
        if missing or unexpected:
            raise WeightsError(f"{self.source}: weights do not fit {self.model!r} ({_keys('missing', missing)}, "
                               f"{_keys('unexpected', unexpected)}); nothing was loaded")
        return model.eval()


def _keys(what: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:6]) + (", ..." if len(keys) > 6 else "")
    return f"{len(keys)} {what} key{'s' if len(keys) != 1 else ''}{': ' + shown if keys else ''}"


def _read_file(path: Path) -> tuple[StateDict, dict[str, str]]:
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise WeightsError(f"{path}: empty file, not a checkpoint")
    if path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{"):
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as exc:
            if path.suffix == ".safetensors":
                raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    if not (head.startswith(b"PK") or head[:1] == b"\x80"):  # zip (torch >= 1.6) or legacy pickle
        raise WeightsError(f"{path}: not a PyTorch checkpoint (neither a zip nor a pickle file)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a malformed file can fail anywhere inside the unpickler
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path}: not a PyTorch checkpoint that can be loaded safely ({first[:160]})") from None
    return unwrap(obj), _training_metadata(obj)


def _training_metadata(obj: object) -> dict[str, str]:
    """A ``derain train`` checkpoint (``checkpoint.pt``) names its model in its config and was trained on RGB:
    say so, rather than guess from the keys (a JDNet or SPANet layout would otherwise read as the official BGR)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("config"), dict) or "model" not in obj:
        return {}
    model = obj["config"].get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        return {}
    return {_META_PREFIX + "model": model["name"], _META_PREFIX + "options": json.dumps(model.get("options") or {}),
            _META_PREFIX + "channel_order": "rgb", _META_PREFIX + "steps": str(obj.get("step", ""))}


def read_checkpoint(path: str | os.PathLike[str], *, record: WeightRecord | None = None) -> LoadedWeights:
    """Read an official checkpoint or a derain safetensors file; recognise known files by sha256 (or take the
    ``record`` the caller verified the file against)."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: no such file")
    if not path.is_file():
        raise WeightsError(f"{path}: is a directory, not a checkpoint file")
    sha = sha256_file(path)
    raw, metadata = _read_file(path)
    record = record or BY_SHA256.get(sha)
    if record is None and metadata.get(_META_PREFIX + "name") in CATALOG:
        named = CATALOG[metadata[_META_PREFIX + "name"]]
        pins = {named.sha256, named.source.sha256 if named.source else ""} - {""}
        record = named if metadata.get(_META_PREFIX + "source_sha256") in pins else None
    if _META_PREFIX + "model" in metadata:
        model = metadata[_META_PREFIX + "model"]
        get_entry(model)
        options = json.loads(metadata.get(_META_PREFIX + "options", "{}"))
        order = metadata.get(_META_PREFIX + "channel_order", "rgb")
        return LoadedWeights(model, options, raw, order, sha, str(path), record, metadata)
    if record is not None:
        model, options, order = record.model, dict(record.options), record.channel_order
    else:
        found = detect(raw)
        model, options, order = found.model, dict(found.options), found.channel_order
    get_entry(model)
    return LoadedWeights(model, options, raw, order, sha, str(path), record, metadata)


def load_weights(name_or_path: str | os.PathLike[str]) -> LoadedWeights:
    """Weights by catalog name (``"sian.rain100l"``) or by file path."""
    text = os.fspath(name_or_path)
    if text in CATALOG:
        record = get_record(text)
        path = locate(record)
        wrong = verify_file(record, path)
        if wrong:
            fix = ("it ships inside the package: reinstall derain (in a git checkout, git checkout the file)"
                   if record.bundled else "delete it and derain fetches the right one")
            raise WeightsError(f"{path}: not the file of {record.name} ({wrong}); the file is corrupt or a "
                               f"different checkpoint: {fix}")
        return read_checkpoint(path, record=record)
    looks_like_name = "/" not in text and os.sep not in text and Path(text).suffix not in CHECKPOINT_SUFFIXES
    if looks_like_name and not Path(text).exists():
        get_record(text)  # raises with the list of valid names
    return read_checkpoint(text)


def save_converted(weights: LoadedWeights, out: str | os.PathLike[str], *, overwrite: bool = False,
                   float16: bool = False) -> Path:
    """Write weights as safetensors with derain metadata (model, options, channel order, source sha256).

    ``float16`` stores floating-point tensors as float16 (half the file); they load back into float32 models,
    so outputs change only by the rounding of the weights (measure it before shipping such a file)."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise InputError(f"{out}: the output file must end in .safetensors")
    if out.resolve() == Path(weights.source).resolve():
        raise InputError(f"{out}: refusing to overwrite the input checkpoint; choose another output path")
    if out.exists() and not overwrite:
        raise InputError(f"{out}: exists; pass --overwrite to replace it")
    weights.build()  # proves the state_dict fits before anything is written
    state = weights.state_dict
    if float16:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    return write_weights(out, model=weights.model, options=weights.options, state_dict=state,
                         channel_order=weights.channel_order,
                         source_sha256=weights.metadata.get(_META_PREFIX + "source_sha256", weights.sha256),
                         name=weights.record.name if weights.record else "",
                         extra={"dtype": "float16"} if float16 else None)


def write_weights(out: str | os.PathLike[str], *, model: str, options: Mapping[str, Any], state_dict: StateDict,
                  channel_order: str = "rgb", source_sha256: str = "", name: str = "",
                  extra: Mapping[str, str] | None = None) -> Path:
    """Write a state_dict as safetensors with the derain metadata that :func:`read_checkpoint` reads back,
    atomically (temporary file, then rename). ``extra`` adds ``derain.<key>`` metadata entries."""
    out = Path(out)
    metadata = {
        "format": "pt",
        _META_PREFIX + "model": model,
        _META_PREFIX + "options": json.dumps(dict(options), sort_keys=True),
        _META_PREFIX + "channel_order": channel_order,
        _META_PREFIX + "source_sha256": source_sha256,
        _META_PREFIX + "name": name,
        **{_META_PREFIX + k: v for k, v in (extra or {}).items()},
    }
    with atomic_write(out) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(tmp), metadata=metadata)
    return out
