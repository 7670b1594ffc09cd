"""The benchmarks that judge weight sets run end to end on real data: generalization (test sets of several
renderers, the suite score, the rain-free check) and validation (held-out training photos, what choices use)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, require_shared


def _run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True,
                          text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_generalization_reports_gain_worse_share_suite_and_rain_free(tmp_path: Path) -> None:
    require_shared("data", "spa_sample")
    out = _run("generalization.py", "--weights", "derain.prn_mixed", "spanet.real", "--sets", "spa_sample",
               "nturain_a1", "--every", "42", "--rain-free-every", "42", "--json", str(tmp_path / "g.json"))
    assert "| spa_sample (2) | nturain_a1 (1) | suite | unseen | rain-free |" in out
    assert "| rainy input | | 22.62 | " in out  # the inputs' PSNR (the data's own, as published)
    rows = {r["weights"]: r for r in json.loads((tmp_path / "g.json").read_text())["rows"]}
    spa = rows["spanet.real"]["sets"]["spa_sample"]
    assert spa["trained_on"] and spa["psnr"] > 35  # SPANet on its own real data
    assert not rows["derain.prn_mixed"]["sets"]["spa_sample"]["trained_on"]
    for row in rows.values():
        sets = row["sets"].values()
        assert abs(row["suite"] - sum(s["gain"] for s in sets) / 2) < 1e-9
        assert all(abs(s["gain"] - (s["psnr"] - s["input_psnr"])) < 1e-9 and 0 <= s["worse"] <= 1 for s in sets)
        assert 20 < row["rain_free_psnr"] < 80 and set(row["rain_free"]) == {"spa_sample", "nturain_a1"}
        assert row["rain_free_unchanged"] == 0  # neither has a gate: every clean image is changed a little
    unseen = rows["spanet.real"]["sets"]["nturain_a1"]["gain"]
    assert abs(rows["spanet.real"]["unseen"] - unseen) < 1e-9  # the set it was trained on is left out


def test_validation_uses_held_out_training_photos() -> None:
    require_shared("data", "bsds500")
    out = _run("validation.py", "--weights", "derain.prn_mixed", "derain.default", "--photos", "2", "--seeds", "1")
    lines = [line for line in out.splitlines() if line.startswith("| derain.prn_mixed |")]
    assert len(lines) == 1 and "% worse" in lines[0] and "(min " in lines[0]
    assert ("| diverse (2) | rainmix (2) | downpour (2) | rainmix_dense (2) | renderers (diverse+rainmix+downpour) "
            "| rain-free (2) | rain-free, heavy forced |" in out)
    # choices are made on the mean gain over the three renderers (rainmix_dense is shown, outside the mean)
    cells = [c.strip() for c in lines[0].strip("| ").split(" | ")]
    gains = [float(re.search(r", ([+-]\d+\.\d+), ", cell).group(1)) for cell in cells[1:4]]
    # to three places, as the rules compare them (a renderer's gain and the mean are both rounded to 0.0005)
    assert abs(float(cells[5]) - sum(gains) / 3) < 0.0011 and all(
        re.search(r", [+-]\d+\.\d{3}, ", cell) for cell in cells[1:5])
    assert cells[7] == ""  # a single network has no router to bypass
    # the second weight set is compared photo by photo with the first; its mean is the renderers' difference
    other = next(line for line in out.splitlines() if line.startswith("| derain.default |"))
    theirs = [c.strip() for c in other.strip("| ").split(" | ")]
    renderers = float(theirs[5]) - float(cells[5])
    # the pair's clean photos through its heavy network: a different figure from its routed rain-free cell
    assert "(min " in theirs[7] and theirs[7] != theirs[6]
    paired = re.search(r"- derain\.default: ([+-]\d+\.\d+) dB, standard error (\d+\.\d+) over 2 photos, "
                       r"(\d) of 2 better", out)
    assert paired, out
    assert abs(float(paired.group(1)) - renderers) < 0.002 and float(paired.group(2)) >= 0
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks" / "validation.py"), "--weights", "derain.default",
                          "no.such_weights"], capture_output=True, text=True, check=False, timeout=600)
    assert bad.returncode == 2 and "no.such_weights" in bad.stderr and "Traceback" not in bad.stderr


def test_rain_free_is_pooled_so_unchanged_images_do_not_make_it_infinite() -> None:
    import importlib.util
    import math

    spec = importlib.util.spec_from_file_location("generalization", REPO / "benchmarks" / "generalization.py")
    assert spec and spec.loader
    generalization = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("generalization", generalization)  # its dataclasses look their module up
    spec.loader.exec_module(generalization)
    pooled = generalization.pooled
    assert abs(pooled([40.0, 40.0]) - 40.0) < 1e-9
    assert abs(pooled([math.inf, 40.0]) - (40 + 10 * math.log10(2))) < 1e-9   # half the error of 40 dB alone
    assert pooled([math.inf, math.inf]) == math.inf
    assert pooled([30.0, 60.0]) < 33.1 < (30 + 60) / 2   # a damaged image shows; the mean would hide it
