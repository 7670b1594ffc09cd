"""Deraining as preprocessing (derain.downstream, benchmarks/downstream.py): box matching on hand-made boxes, the
OpenCV detectors on a real photo, and the benchmark end to end on two photos."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from derain.downstream import Box, Tally, iou, load_detector, match, tally, total
from derain.errors import InputError
from tests.conftest import REPO, require_shared


def _b(x0: float, y0: float, x1: float, y1: float, label: str = "person") -> Box:
    return Box(x0, y0, x1, y1, label)


def test_iou_of_hand_made_boxes() -> None:
    a = _b(0, 0, 10, 10)
    assert iou(a, a) == 1.0
    assert iou(a, _b(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou(a, _b(0, 0, 5, 10)) == pytest.approx(0.5)  # contained: 50 / 100
    assert iou(a, _b(10, 0, 20, 10)) == 0.0  # touching edges
    assert iou(a, _b(20, 20, 30, 30)) == 0.0
    assert iou(a, _b(3, 3, 3, 8)) == 0.0  # empty box
    assert iou(_b(5, 0, 15, 10), a) == iou(a, _b(5, 0, 15, 10))


def test_matching_is_one_to_one_per_label_from_the_largest_overlap() -> None:
    ref = [_b(0, 0, 10, 10), _b(8, 0, 18, 10)]
    # one found box over both references: one match, not two
    assert match(ref, [_b(1, 0, 11, 10)]) == 1
    # two found boxes, each nearest one reference
    assert match(ref, [_b(0, 0, 10, 10), _b(8, 0, 18, 10)]) == 2
    # from the largest IoU down: f1 = r0 exactly (1.0) is paired first, leaving r1 to f0 (0.67); pairing in the
    # order of the found boxes would give f0 to r0 and leave f1 without a partner (IoU 0.43 with r1)
    r = [_b(0, 0, 10, 10), _b(4, 0, 14, 10)]
    f = [_b(2, 0, 12, 10), _b(0, 0, 10, 10)]
    assert match(r, f) == 2
    # labels never match across
    assert match([_b(0, 0, 10, 10, "face")], [_b(0, 0, 10, 10, "person")]) == 0
    # the threshold is inclusive: IoU exactly 0.5 matches, just below does not
    assert match([_b(0, 0, 10, 10)], [_b(0, 0, 5, 10)]) == 1
    assert match([_b(0, 0, 10, 10)], [_b(0, 0, 4.9, 10)]) == 0
    assert match([], [_b(0, 0, 1, 1)]) == 0
    assert match([_b(0, 0, 1, 1)], []) == 0


def test_tally_recall_and_precision() -> None:
    ref = [_b(0, 0, 10, 10), _b(20, 0, 30, 10), _b(0, 0, 10, 10, "face")]
    found = [_b(0, 0, 10, 10), _b(50, 50, 60, 60), _b(0, 0, 10, 10, "face")]
    t = tally(ref, found)
    assert (t.reference, t.found, t.matched) == (3, 3, 2)
    assert t.recall == pytest.approx(2 / 3) and t.precision == pytest.approx(2 / 3)
    people = tally(ref, found, label="person")
    assert (people.reference, people.found, people.matched) == (2, 2, 1)
    s = total([t, people, Tally()])
    assert (s.reference, s.found, s.matched) == (5, 5, 3)
    assert math.isnan(Tally().recall) and math.isnan(Tally().precision)
    assert Tally(2, 0, 0).recall == 0.0 and math.isnan(Tally(2, 0, 0).precision)


def _photos_with_people(n: int) -> list[Path]:
    folder = require_shared("data", "bsds500", "clean")
    detect = load_detector()
    found = []
    for name in ("test_14085.jpg", "test_15011.jpg", "test_16004.jpg", "test_16068.jpg"):
        path = folder / name
        if detect(np.asarray(Image.open(path).convert("RGB"))):
            found.append(path)
        if len(found) == n:
            return found
    pytest.fail("the detectors no longer fire on the BSDS500 photos they fired on (OpenCV changed?)")


def test_detector_on_a_real_photo() -> None:
    path = _photos_with_people(1)[0]
    rgb = np.asarray(Image.open(path).convert("RGB"))
    detect = load_detector()
    boxes = detect(rgb)
    h, w = rgb.shape[:2]
    assert boxes and all(b.label in ("person", "face") for b in boxes)
    assert all(0 <= b.x0 < b.x1 <= w + 16 and 0 <= b.y0 < b.y1 <= h + 16 for b in boxes)
    assert detect(rgb) == boxes  # deterministic
    with pytest.raises(InputError, match="uint8"):
        detect(rgb.astype(np.float32) / 255)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "downstream.py"), *args],
                          capture_output=True, text=True, check=False, timeout=900)


def test_downstream_benchmark_end_to_end(tmp_path: Path) -> None:
    require_shared("data", "rain_streaks")
    clean = tmp_path / "clean"
    clean.mkdir()
    for path in _photos_with_people(2):
        shutil.copy(path, clean / path.name)
    proc = _run("--clean", str(clean), "--images", "2", "--weights", "derain.default", "no.such.weights",
                "--json", str(tmp_path / "out.json"), "--figure", str(tmp_path / "fig.png"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert len(out["photos"]) == 2
    assert set(out["results"]) == {"rainy", "derain.default"}  # the unknown name is reported and skipped
    assert "no.such.weights | skipped: unknown weights" in proc.stdout
    n_ref = sum(out["reference"].values())
    for style in ("light", "heavy"):
        for name in ("rainy", "derain.default"):
            r = out["results"][name][style]["all"]
            assert r["reference"] == n_ref and 0 <= r["matched"] <= min(r["reference"], r["found"])
            assert r["recall"] == pytest.approx(r["matched"] / n_ref)
    with Image.open(tmp_path / "fig.png") as fig:
        assert fig.width > 3 * 300


def test_downstream_benchmark_says_when_no_detector_fires(tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    clean.mkdir()
    Image.fromarray(np.full((200, 300, 3), 128, np.uint8)).save(clean / "grey.png")
    proc = _run("--clean", str(clean), "--weights", "derain.default")
    assert proc.returncode == 2
    assert "neither detector fires" in proc.stderr and "Traceback" not in proc.stderr
