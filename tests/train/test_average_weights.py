"""scripts/average_weights.py: weight-space interpolation of two weight sets of one architecture."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from derain.archs import create_model
from derain.weights.store import load_weights, write_weights
from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "average_weights.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, check=False)


def _prn(path: Path, seed: int, **options: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = create_model("prn", **options)
    write_weights(path, model="prn", options=options, state_dict=net.state_dict())
    return net.state_dict()


def test_interpolates_layer_by_layer_and_refuses_bad_input(tmp_path: Path) -> None:
    a, b = _prn(tmp_path / "a.safetensors", 0, channels=16), _prn(tmp_path / "b.safetensors", 1, channels=16)
    out = tmp_path / "mix.safetensors"
    done = _run("--before", tmp_path / "a.safetensors", "--after", tmp_path / "b.safetensors", "--alpha", "0.25",
                "-o", out)
    assert done.returncode == 0, done.stderr
    mixed = load_weights(out)
    assert mixed.model == "prn" and dict(mixed.options) == {"channels": 16}  # the networks' options carried over
    state = mixed.build().state_dict()
    for key, value in state.items():
        torch.testing.assert_close(value, 0.75 * a[key] + 0.25 * b[key], rtol=1e-6, atol=1e-6)
    # the output exists: refused, the file untouched
    before = out.read_bytes()
    again = _run("--before", tmp_path / "a.safetensors", "--after", tmp_path / "b.safetensors", "--alpha", "0.5",
                 "-o", out)
    assert again.returncode != 0 and "exists" in again.stderr and out.read_bytes() == before
    bad = _run("--before", tmp_path / "a.safetensors", "--after", tmp_path / "b.safetensors", "--alpha", "1.5",
               "-o", tmp_path / "x.safetensors")
    assert bad.returncode != 0 and "--alpha must be in [0, 1]" in bad.stderr
    torch.manual_seed(2)
    write_weights(tmp_path / "c.safetensors", model="spanet", options={},
                  state_dict=create_model("spanet").state_dict())
    other = _run("--before", tmp_path / "a.safetensors", "--after", tmp_path / "c.safetensors", "--alpha", "0.5",
                 "-o", tmp_path / "y.safetensors")
    assert other.returncode == 2 and "must match" in other.stderr and "Traceback" not in other.stderr
    assert not (tmp_path / "y.safetensors").exists()
