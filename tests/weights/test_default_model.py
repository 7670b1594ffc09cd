"""Our bundled weights: the files match their records, load, run the demo, and measure what their cards say."""

from __future__ import annotations

from pathlib import Path

import pytest

import derain
from derain.cli import main
from derain.data import PairedFolder
from derain.weights.catalog import CATALOG
from derain.weights.hub import locate
from derain.weights.store import sha256_file
from tests.conftest import require_shared

OURS = sorted(name for name, record in CATALOG.items() if record.bundled and not record.redistributed)
ASSETS = Path(derain.__file__).resolve().parent / "assets"


def test_the_default_is_bundled() -> None:
    assert "derain.default" in OURS and derain.DEFAULT_WEIGHTS == "derain.default"


@pytest.mark.parametrize("name", OURS)
def test_bundled_file_record_and_card(name: str) -> None:
    record = CATALOG[name]
    path = locate(record)
    assert path.is_file() and sha256_file(path) == record.sha256
    restorer = derain.load(name, device="cpu")
    assert restorer.name == name and type(restorer.model).__name__ == type(derain.create_model(record.model)).__name__
    card = (ASSETS / "weights" / f"{name}.md").read_text()
    for key, (psnr, ssim) in record.metrics.items():
        assert f"{psnr:.2f}" in card and f"{ssim:.4f}" in card, key
    for words in ("Training data", "Recipe", "Steps", "Hardware", "Wall time", "Rain100L", "Rain100H"):
        assert words in card, words


def test_demo_derains_the_sample(tmp_path: Path) -> None:
    result = derain.run_demo(tmp_path / "demo", device="cpu")
    assert result.psnr_after > result.psnr_before + 3 and result.ssim_after > result.ssim_before
    assert {p.name for p in (tmp_path / "demo").iterdir()} == {"sample_rain.png", "sample_derained.png",
                                                               "sample_compare.png"}
    before = result.derained.read_bytes()
    assert main(["demo", "-o", str(tmp_path / "demo")]) == 1  # exists: refused, untouched
    assert result.derained.read_bytes() == before


SUBSETS = [(name, key) for name in OURS for key in CATALOG[name].metrics if key.endswith("@every20")]


def test_the_default_card_is_pinned_on_both_sets() -> None:
    assert {key for name, key in SUBSETS if name == "derain.default"} == {
        "rain100L/matlab-y@every20", "rain100H/matlab-y@every20"}


@pytest.mark.parametrize(("name", "key"), SUBSETS)
def test_our_weights_reproduce_their_cards_on_a_subset(name: str, key: str) -> None:
    """Every 20th image of the real test sets (the cards' full-set numbers come from derain eval)."""
    expected = CATALOG[name].metrics[key]
    pairs = PairedFolder(require_shared("data", key.split("/")[0]))
    report = derain.evaluate(derain.load(name, device="cpu"), [pairs[i] for i in range(0, 100, 20)],
                             protocol="matlab-y", quantize="round")
    assert abs(report.psnr - expected[0]) < 0.01 and abs(report.ssim - expected[1]) < 0.0002


def test_the_default_leaves_clean_photos_alone_and_removes_heavy_rain() -> None:
    """The gate of derain.default on real data: clean BSDS500 photos it never trained on (the validation photos)
    come out within noise of the input; heavy rain (every 20th Rain100H input) is removed in full; a number for
    ``strength`` overrides the gate (1: the networks' whole output)."""
    from derain.data.sets import resolve_images
    from derain.data.training import clean_files
    from derain.io import read_image
    from derain.metrics import psnr

    require_shared("data", "bsds500")
    restorer = derain.load("derain.default", device="cpu")
    root, never = resolve_images("bsds500")
    files = clean_files(root, drop=never)  # the first 8: every run's validation photos, never trained on
    for path in files[:2]:
        clean = read_image(path).image
        out = restorer(clean, scale=1)
        assert float(restorer.model.strength(clean, restorer(clean, scale=1, strength=1))) < 0.2
        assert float(psnr((out * 255).round() / 255, clean, data_range=1.0, y_channel=True)) >= 45
    heavy = PairedFolder(require_shared("data", "rain100H"))
    for i in (20, 60):
        rainy = heavy[i].rainy[None]
        full = restorer(rainy, scale=1, strength=1)
        assert float(restorer.model.strength(rainy, full)) > 0.95
        assert float((restorer(rainy, scale=1) - full).abs().max()) < 0.05
