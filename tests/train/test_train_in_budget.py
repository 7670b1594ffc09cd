"""scripts/train_in_budget.py: variants side by side, the step count sized to the budget, float16 weights out."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

import derain
from tests.conftest import REPO, require_shared

TINY = "model.options={channels: 8},data.crop=32,data.batch=2,data.val_count=1,data.val_size=32"


@pytest.mark.slow
def test_two_variants_fit_the_budget_and_save_float16_weights(tmp_path: Path) -> None:
    require_shared("data", "bsds500")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_in_budget.py"), "60", "--out", str(out), "--runs",
         str(tmp_path / "runs"), "--device", "cpu", "--workers", "0", "--probe", "30", "--margin", "20",
         "--variant", f"light=configs/default.yaml,{TINY},data.style=light",
         "--variant", f"heavy=configs/default.yaml,{TINY},data.style=heavy", "--snapshot", "light"],
        capture_output=True, text=True, check=False, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "ms per step" in proc.stdout and "steps per variant" in proc.stdout
    steps = int(proc.stdout.split(" steps per variant")[0].split()[-1])
    assert steps >= 30
    for name in ("light", "light_half", "heavy"):
        state = derain.load(out / f"{name}.safetensors").model.state_dict()
        assert state.keys() == derain.create_model("prn", channels=8).state_dict().keys()
        assert all(t.dtype == torch.float32 for t in state.values())  # stored in float16, loaded as float32
    half, full = (derain.load(out / f"light{s}.safetensors").model.state_dict() for s in ("_half", ""))
    assert any(not torch.equal(half[k], full[k]) for k in full)  # the snapshot is an earlier state
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"light/log.csv", "heavy/config.yaml", "probe_light/log.csv", "logs/heavy.log"} <= names


def test_a_malformed_variant_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "train_in_budget.py"), "60", "--out",
                           str(tmp_path), "--variant", "nothing"], capture_output=True, text=True, check=False,
                          cwd=REPO)
    assert proc.returncode == 2 and "expected NAME=CONFIG" in proc.stderr
