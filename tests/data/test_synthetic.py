"""Synthetic rain: seeded, in range, calibrated against the benchmarks' inputs, and written as a paired folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from derain.cli import main
from derain.data import PairedFolder
from derain.data.synthetic import STYLES, RainStyle, StreakParams, add_rain, load_textures, synthesize_folder
from derain.data.training import clean_files, read_exclusions
from derain.errors import InputError
from derain.io import read_image, write_image
from derain.metrics import psnr
from tests.conftest import require_shared


def _scene(h: int = 64, w: int = 80) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([0.2 + 0.5 * x, 0.3 + 0.4 * y, 0.5 - 0.3 * x * y]).clamp(0, 1)


def test_seeded_and_in_range() -> None:
    clean = _scene()
    for style in ("light", "heavy", "mixed"):
        a, ma = add_rain(clean, style=style, seed=7)
        b, mb = add_rain(clean, style=style, seed=7)
        c, _ = add_rain(clean, style=style, seed=8)
        assert torch.equal(a, b) and torch.equal(ma, mb)
        assert not torch.equal(a, c)
        assert a.shape == clean.shape and ma.shape == (1, *clean.shape[1:])
        assert a.min() >= 0 and a.max() <= 1
        assert set(ma.unique().tolist()) <= {0.0, 1.0} and ma.sum() > 0


def test_light_rain_only_adds_and_the_mask_marks_streaks() -> None:
    clean = _scene()
    rainy, mask = add_rain(clean, style="light", seed=3)
    assert (rainy >= clean - 1e-6).all()  # no haze in the light style: streaks only add
    added = (rainy - clean).max(dim=0, keepdim=True).values
    assert (added[mask.bool()] > 0.04).all()
    assert float(added[~mask.bool()].max()) <= 0.05 + 1e-6


def test_heavy_covers_more_than_light() -> None:
    clean = _scene(96, 96)
    light = torch.stack([add_rain(clean, style="light", seed=s)[1].mean() for s in range(6)]).mean()
    heavy = torch.stack([add_rain(clean, style="heavy", seed=s)[1].mean() for s in range(6)]).mean()
    assert heavy > 2 * light


def test_bad_input_is_named() -> None:
    with pytest.raises(InputError, match=r"unknown rain style 'drizzle'.*light, heavy, mixed"):
        add_rain(_scene(), style="drizzle")
    with pytest.raises(InputError, match=r"float \(3, H, W\)"):
        add_rain(_scene().permute(1, 2, 0))
    with pytest.raises(InputError, match=r"no such folder"):
        load_textures("/nonexistent/streaks")


def test_calibrated_against_rain100_inputs() -> None:
    """Mean Y-PSNR of rainy vs clean near the real sets' inputs (Rain100L 26.90 dB, Rain100H 13.56 dB)."""
    textures = load_textures(require_shared("data", "rain_streaks", "streaks"))
    files = clean_files(require_shared("data", "bsds500", "clean"))[::25]
    for style, target in (("light", 26.90), ("heavy", 13.56)):
        values = []
        for k, path in enumerate(files):
            clean = read_image(path).image
            rainy, _ = add_rain(clean[0], style=style, seed=k, textures=textures)
            values.append(float(psnr(rainy[None], clean, data_range=1.0, y_channel=True)))
        mean = sum(values) / len(values)
        assert abs(mean - target) < 2.5, f"{style}: {mean:.2f} dB, Rain100 input {target} dB"


def test_textures_are_used() -> None:
    textures = load_textures(require_shared("data", "rain_streaks", "streaks"), limit=3)
    assert len(textures) == 3 and textures[0].ndim == 2 and 0 <= float(textures[0].min()) <= float(textures[0].max())
    only_textures = RainStyle(layers=(1, 1), angle=10.0, haze=(0.0, 0.0), light=(0.8, 0.8), texture_chance=1.0,
                              streaks=StreakParams(density=(0.0, 0.0), length=(10, 10), width=(0.0, 0.0),
                                                   gain=(0.8, 0.8), spread=0.0))
    _, mask = add_rain(_scene(), style=only_textures, seed=1, textures=textures)
    assert mask.mean() > 0.005  # procedural density is 0: every streak came from a texture
    _, plain_mask = add_rain(_scene(), style=only_textures, seed=1)
    assert plain_mask.sum() == 0


def test_bsds_training_set_leaves_out_the_rain100_ground_truths() -> None:
    root = require_shared("data", "bsds500", "clean")
    tsv = require_shared("data", "bsds500", "overlap_with_Rain100.tsv")
    excluded = read_exclusions(tsv)
    assert len(excluded) == 91
    files = clean_files(root, exclude=tsv)
    assert len(files) == 500 - 91 and not {p.name for p in files} & excluded


def test_synth_folder_and_cli(tmp_path: Path) -> None:
    src = tmp_path / "clean"
    for k in range(3):
        write_image(src / f"img{k}.png", _scene(40 + k, 50))
    out = tmp_path / "out"
    assert main(["synth", str(src), "-o", str(out), "--style", "heavy", "--seed", "5"]) == 0
    pairs = PairedFolder(out)
    assert pairs.layout == "rain-norain" and len(pairs) == 3
    first = pairs[0]
    assert first.rainy.shape == (3, 40, 50) and not torch.equal(first.rainy, first.clean)
    assert sorted(p.name for p in (out / "mask").iterdir()) == ["img0.png", "img1.png", "img2.png"]
    # the rain of a file depends on the seed and its name only
    again = synthesize_folder(src, tmp_path / "again", style="heavy", seed=5, limit=1)
    assert [p.name for p in again] == ["img0.png"]
    assert torch.equal(read_image(again[0]).image, read_image(out / "rain" / "img0.png").image)
    before = (out / "rain" / "img0.png").read_bytes()
    assert main(["synth", str(src), "-o", str(out), "--seed", "6"]) == 1  # exists: refused, nothing changed
    assert (out / "rain" / "img0.png").read_bytes() == before
    assert main(["synth", str(tmp_path / "missing"), "-o", str(out)]) == 1


def test_styles_table() -> None:
    assert set(STYLES) == {"light", "heavy"}
    assert STYLES["light"].layers == (1, 1) and STYLES["light"].streaks.spread == 0  # one direction per image
    assert STYLES["heavy"].layers[0] >= 2 and STYLES["heavy"].haze[1] > 0


def _streak_length(h: int, w: int, scale: float = 1.0) -> float:
    """Median over 12 draws of vertical texture streaks of mean(layer) / mean(|vertical difference|): grows with
    the streaks' length."""
    from derain.data.synthetic import generator, rain_layer

    textures = load_textures(require_shared("data", "rain_streaks", "streaks"))
    style = RainStyle(layers=(1, 1), angle=0.0, haze=(0.0, 0.0), light=(0.8, 0.8), texture_chance=1.0,
                      streaks=StreakParams(density=(0.0, 0.0), length=(12, 32), width=(0.0, 0.4), gain=(0.5, 0.5),
                                           spread=0.0))
    values = []
    for k in range(12):
        layer = rain_layer(h, w, style, generator("length", k), textures, scale)
        values.append(float(layer.mean() / layer.diff(dim=0).abs().mean()))
    return sorted(values)[len(values) // 2]


def test_texture_streaks_keep_the_photo_scale_in_training_crops() -> None:
    """A 64x64 training crop holds texture streaks about as long as a whole 481x321 photo's (they were ~4x shorter
    when every texture was stretched over the image); ``scale`` lengthens them as for a larger photo."""
    crop, photo = _streak_length(64, 64), _streak_length(321, 481)
    assert photo / crop < 2.0, (crop, photo)
    assert _streak_length(64, 64, scale=3.0) > 2.0 * crop
