"""derain.device: device names, and each torchrun process on its own GPU (inference and training alike)."""

from __future__ import annotations

import pytest
import torch

import derain
from derain.device import DEVICES, launch, resolve_device


def test_device_names_and_errors() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu", 0)) == torch.device("cpu", 0)  # taken as it is
    with pytest.raises(derain.InputError, match=f"unknown device 'tpu'; use one of {', '.join(DEVICES)}"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(derain.InputError, match="PyTorch sees no CUDA GPU"):
            resolve_device("cuda")


def test_each_torchrun_process_takes_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launch() == launch().__class__(0, 1, 0)
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda")  # one process: as before
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert (launch().rank, launch().world, launch().local_rank) == (3, 4, 1)
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)  # an explicit index is kept
    assert resolve_device("cpu") == torch.device("cpu")
