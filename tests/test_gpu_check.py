"""The GPU check (benchmarks/gpu_check.py) runs end to end on the CPU in its dry-run mode: every recipe, every
model, the report's three tables."""

from __future__ import annotations

import subprocess
import sys

import derain
from tests.conftest import REPO, require_shared


def test_gpu_check_dry_run_reports_every_recipe_and_model() -> None:
    require_shared("data", "bsds500")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run"],
                          capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for recipe in (p.stem for p in (REPO / "configs").glob("*.yaml")):
        assert f"| {recipe} | 2 |" in out and "FAIL" not in out, recipe
    for model in derain.list_models():
        assert out.count(f"| {model} |") == 2, model
