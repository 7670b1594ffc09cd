"""Where derain runs: the device a name means, and which process of a ``torchrun`` launch this one is.

Inference (:class:`derain.Restorer`) and training (:func:`derain.train.fit`) both take their device from here, so
a ``torchrun --nproc_per_node=N`` launch puts each process on its own GPU whether it runs ``derain run``,
``derain train`` or a script of its own that calls the API.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from derain.errors import InputError

DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class Launch:
    """What ``torchrun`` tells a process about itself (one process on its own: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0


def launch() -> Launch:
    """The one reader of torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Launch()
    return Launch(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an unavailable device is an error, not a silent fallback.

    In one of several ``torchrun`` processes, ``auto`` and ``cuda`` (without an index) mean this process's own GPU,
    ``cuda:LOCAL_RANK``, so the processes do not all share the first one. A ``torch.device`` is taken as it is.
    """
    if isinstance(device, torch.device):
        return device
    name = device.split(":")[0]
    if name not in DEVICES:
        raise InputError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return _this_process_gpu()
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("device 'mps' requested but it is not available; use --device cpu or auto")
    return _this_process_gpu() if device == "cuda" else torch.device(device)


def _this_process_gpu() -> torch.device:
    process = launch()
    return torch.device("cuda", process.local_rank) if process.world > 1 else torch.device("cuda")
