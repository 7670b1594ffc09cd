"""The model a run trains: built from the registry, initialised (``model.init``), warm-started from weights
(``model.weights``) and, on request, compiled (``train.compile``)."""

from __future__ import annotations

import shutil
from typing import Any

import torch
from torch import nn

from derain.archs import create_model
from derain.errors import InputError
from derain.train.config import Config
from derain.weights.store import load_weights


def init_weights(model: nn.Module, kind: str) -> None:
    """``normal``: convolution weights ~ N(0, 0.02) and zero biases (pix2pix ``init_weights``, SIAN)."""
    if kind == "default":
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def split_part(weights: str) -> tuple[str, str]:
    """``(catalog name or file, network)`` of ``weights``: ``NAME:light`` / ``NAME:heavy`` name one network of a
    pair's file; otherwise the network is ``""``, the whole file."""
    source, _, part = weights.rpartition(":") if weights.endswith((":light", ":heavy")) else (weights, "", "")
    return source, part


def load_network(weights: str) -> tuple[str, dict[str, Any], nn.Module]:
    """``(architecture name, its options, built network)`` of ``weights``: a catalog name or a file;
    ``NAME:light`` / ``NAME:heavy`` for one network of a pair such as derain.default (a ``prn``, built with the
    pair's options)."""
    source, part = split_part(weights)
    loaded = load_weights(source)
    built, kind = loaded.build(), loaded.model
    if part:
        if not hasattr(built, part):
            raise InputError(f"{weights!r}: {loaded.model!r} weights have no {part!r} network")
        built, kind = getattr(built, part), "prn"
    return kind, dict(loaded.options), built


def warm_start(model: nn.Module, weights: str, name: str) -> None:
    """Load ``weights`` (as :func:`load_network` reads them) into ``model`` strictly; they must be weights of
    ``name``."""
    kind, _, built = load_network(weights)
    if kind != name:
        raise InputError(f"model.weights={weights!r} holds {kind!r} weights, not {name!r}")
    model.load_state_dict(built.state_dict())


def build_model(cfg: Config, *, fresh: bool) -> nn.Module:
    """``cfg.model`` built and initialised; a ``fresh`` run (not a resumed one) also loads ``model.weights``."""
    model = create_model(cfg.model.name, **cfg.model.options)
    init_weights(model, cfg.model.init)
    if cfg.model.weights and fresh:
        warm_start(model, cfg.model.weights, cfg.model.name)
    return model


def cxx_compiler() -> str | None:
    """The C++ compiler torch.compile would build CPU kernels with (the first on ``PATH``), or None."""
    return next((path for cc in ("c++", "g++", "clang++") if (path := shutil.which(cc))), None)


def compiled(net: nn.Module, device: torch.device) -> nn.Module:
    """``torch.compile(net)`` for ``train.compile: true``; a clear error where it cannot work.

    Opt-in: the mathematics are the same (gradients equal eager ones within float32 tolerance), the first step
    pays the compilation (minutes on 2 CPU cores), and it pays off only for some recipes (README, "Time per
    training step"). On CPU, torch's inductor builds C++: it needs a C++ compiler on ``PATH``.
    """
    if not hasattr(torch, "compile"):
        raise InputError("train.compile: this torch has no torch.compile; set train.compile=false")
    if device.type == "cpu" and cxx_compiler() is None:
        raise InputError("train.compile needs a C++ compiler on PATH (torch.compile builds C++ kernels on CPU): "
                         "install one (e.g. apt install g++) or set train.compile=false")
    return torch.compile(net, dynamic=False)  # training crops are one size; static shapes compile best
