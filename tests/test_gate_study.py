"""benchmarks/gate_study.py on three real training photos: it runs the pair, saves and reloads its features, and
refuses what it cannot do with a message."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

from tests.conftest import REPO, require_shared, run_script

SCRIPT = REPO / "benchmarks" / "gate_study.py"


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return run_script(SCRIPT, *args)


def test_studies_features_saves_and_reloads_them(tmp_path: Path) -> None:
    require_shared("data", "bsds500")
    require_shared("data", "rain_streaks")
    first = _run("--photos", "3", "--save", tmp_path / "f.pt")
    assert first.returncode == 0, first.stderr
    data = torch.load(tmp_path / "f.pt", weights_only=True)
    assert data["base"].shape == (6, 16) and data["new"].shape == (6, 6) and data["terms"].shape == (6, 3)
    assert torch.isfinite(data["new"]).all()
    assert data["labels"][0::2].sum() == 0  # a rain-free photo is never helped
    assert float(data["terms"][0::2, 2].abs().max()) == 0  # rain-free: nothing to remove
    assert float(data["terms"][1::2, 2].min()) > 0
    # the oracle leaves the rain-free images alone: the rounding floor, 58.92 dB
    assert "oracle (knows the rain-free ones)" in first.stdout and "/ 58.92" in first.stdout
    assert first.stdout.count("+ ") == 7  # six features and all six
    again = _run("--load", tmp_path / "f.pt")
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert len(lines) == 13 and first.stdout.splitlines()[-len(lines):] == lines  # the same fits from the file


def test_refuses_an_existing_save_a_missing_load_a_non_pair_and_a_bad_name(tmp_path: Path) -> None:
    (tmp_path / "there.pt").write_bytes(b"keep me")
    exists = _run("--save", tmp_path / "there.pt")
    assert exists.returncode != 0 and "exists" in exists.stderr and "Traceback" not in exists.stderr
    assert (tmp_path / "there.pt").read_bytes() == b"keep me"
    missing = _run("--load", tmp_path / "nothing.pt")
    assert missing.returncode != 0 and "no such file" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "other.pt").write_bytes(b"not a torch file")
    other = _run("--load", tmp_path / "other.pt")
    assert other.returncode != 0 and "not a file written by --save" in other.stderr and "Traceback" not in other.stderr
    single = _run("--pair", "derain.default:light", "--photos", "1")
    assert single.returncode != 0 and "no gate" in (single.stdout + single.stderr)
    assert "Traceback" not in single.stderr
    unknown = _run("--pair", "no.such.weights", "--photos", "1")
    assert unknown.returncode != 0 and "no.such.weights" in unknown.stderr and "Traceback" not in unknown.stderr
