"""Synthetic rain: seeded, in range, calibrated against the benchmarks' inputs, and written as a paired folder."""

from __future__ import annotations

import itertools
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


# --- the diverse style (issue 31): physics-drawn rain, checked for its elements, not for a benchmark's look ---

def _plans(n: int = 300) -> list:
    from derain.data.diverse import draw_plan
    from derain.data.synthetic import generator

    return [draw_plan(generator("plans", k)) for k in range(n)]


def _no_rain_plan(**changes: object):
    import dataclasses

    from derain.data.diverse import draw_plan
    from derain.data.synthetic import generator

    base = draw_plan(generator("plan-base", 0))
    fields = dict(layers=(), veil=0.0, splashes=0.0, compression="none", quality=100, very_light=False,
                  additive=False)
    fields.update(changes)
    return dataclasses.replace(base, **fields)


def test_diverse_is_seeded_in_range_and_selectable() -> None:
    from derain.data.synthetic import STYLE_NAMES
    from derain.train.config import DataConfig

    assert "diverse" in STYLE_NAMES and DataConfig(style="diverse").style == "diverse"
    clean = _scene()
    original = clean.clone()
    first = []
    for seed in range(3):
        a, ma = add_rain(clean, style="diverse", seed=seed)
        b, mb = add_rain(clean, style="diverse", seed=seed)
        assert torch.equal(a, b) and torch.equal(ma, mb)
        assert a.shape == clean.shape and ma.shape == (1, *clean.shape[1:]) and a.dtype == clean.dtype
        assert a.min() >= 0 and a.max() <= 1 and set(ma.unique().tolist()) <= {0.0, 1.0}
        first.append(a)
    assert torch.equal(clean, original)  # the clean target is never touched
    assert not torch.equal(first[0], first[1])
    assert max(float((a - clean).abs().mean()) for a in first) > 0.02  # visible rain
    # with streak textures given, some images draw one slab from a texture
    from derain.data.diverse import draw_plan
    from derain.data.synthetic import generator

    seed = next(s for s in range(100) if any(layer.texture for layer in draw_plan(generator("rain", s),
                                                                                  textures=True).layers))
    fake = [torch.rand(90, 120) ** 8]
    rainy, _ = add_rain(clean, style="diverse", seed=seed, textures=fake)
    assert rainy.min() >= 0 and rainy.max() <= 1 and not torch.equal(rainy, add_rain(clean, style="diverse",
                                                                                       seed=seed)[0])


def test_diverse_plans_span_depths_winds_drizzle_and_very_light_rain() -> None:
    from derain.data.diverse import MAX_ANGLE

    plans = _plans()
    angles = [layer.angle for p in plans for layer in p.layers]
    assert all(abs(a) <= MAX_ANGLE for a in angles) and min(angles) < -20 and max(angles) > 20
    assert any(min(layer.angle for layer in p.layers) < 0 < max(layer.angle for layer in p.layers) for p in plans)
    very = [p for p in plans if p.very_light]
    assert 0.08 < len(very) / len(plans) < 0.25  # the do-no-harm range: drizzle only
    for p in very:
        assert p.veil == 0 and p.splashes == 0 and len(p.layers) == 1 and p.layers[0].sizes[1] <= 0.5
    rainy = [p for p in plans if not p.very_light]
    assert any(p.layers[-1].sizes[1] <= 0.5 for p in rainy) and any(p.layers[-1].sizes[1] > 1 for p in rainy)
    for p in rainy:  # slabs by depth: near ones sparse, wide and long; far ones dense and thin
        slabs = [layer for layer in p.layers if layer.sizes[0] >= 0.5]
        assert len(slabs) == 4 and [s.depth for s in slabs] == sorted(s.depth for s in slabs)
        assert all(a.density < b.density and a.drop_px > b.drop_px and a.speed_px > b.speed_px
                   for a, b in itertools.pairwise(slabs))
    assert {p.compression for p in plans} == {"none", "jpeg", "video"}
    assert any(p.splashes > 0 for p in plans) and any(p.additive for p in plans) and any(not p.additive for p in plans)
    assert min(p.veil for p in rainy) > 0 and max(p.veil for p in rainy) > 5 * min(p.veil for p in rainy)


def test_diverse_scale_keeps_the_photo_scale() -> None:
    from derain.data.diverse import draw_plan
    from derain.data.synthetic import generator

    one, two = draw_plan(generator("s", 3)), draw_plan(generator("s", 3), 2.0)
    for a, b in zip(one.layers, two.layers, strict=True):
        assert b.speed_px == pytest.approx(2 * a.speed_px) and b.drop_px == pytest.approx(2 * a.drop_px)


def test_diverse_veil_grows_with_the_depth_proxy() -> None:
    from derain.data.diverse import add_diverse_rain, depth_proxy
    from derain.data.synthetic import generator

    clean = torch.full((3, 48, 40), 0.2)
    proxy = depth_proxy(clean, generator("d", 1))
    assert (proxy.diff(dim=0) < 0).all()  # higher rows are farther
    plan = _no_rain_plan(veil=2e-3, zmax=1000.0, light=0.9)
    rainy, mask = add_diverse_rain(clean, generator("d", 1), plan=plan)
    rows = rainy.mean(dim=(0, 2))
    assert (rows.diff() < 0).all() and rows[0] > 0.3 > 0.2 < rows[-1]
    # with the photo's brightness in the proxy too, brighter (farther) regions are veiled more
    scene = _scene(48, 40)
    veiled, _ = add_diverse_rain(scene, generator("d", 2), plan=plan)
    depth = depth_proxy(scene, generator("d", 2))
    lift = (veiled - scene).mean(0)
    far, near = depth > depth.median(), depth <= depth.median()
    assert lift[far].mean() > lift[near].mean()
    assert mask.sum() == 0  # the mask marks streaks and specks, not the veil (as in the heavy style)


def test_diverse_compression_changes_the_input_only_and_the_mask_is_consistent() -> None:
    from derain.data.diverse import add_diverse_rain
    from derain.data.synthetic import generator

    clean = _scene(64, 64)
    plan = next(p for p in _plans(60) if not p.very_light and p.splashes == 0 and p.compression == "none")
    import dataclasses

    plan = dataclasses.replace(plan, veil=0.0)
    raw, mask = add_diverse_rain(clean, generator("c", 0), plan=plan)
    added = (raw - clean).abs().amax(0, keepdim=True)
    assert mask.sum() > 0 and (added[mask.bool()] > 0.05).all() and float(added[~mask.bool()].max()) <= 0.05 + 1e-6
    for kind, quality in (("jpeg", 60), ("video", 15)):
        original = clean.clone()
        squeezed, mask2 = add_diverse_rain(clean, generator("c", 0), plan=dataclasses.replace(
            plan, compression=kind, quality=quality))
        assert torch.equal(clean, original) and torch.equal(mask, mask2)
        assert 0 < float((squeezed - raw).abs().mean()) < 0.05


def test_diverse_very_light_rain_is_nearly_nothing() -> None:
    import dataclasses

    from derain.data.diverse import add_diverse_rain
    from derain.data.synthetic import generator

    clean = _scene(64, 64)
    very = [p for p in _plans(120) if p.very_light]
    changes = [float((add_diverse_rain(clean, generator("v", k), plan=dataclasses.replace(
        p, compression="none"))[0] - clean).abs().mean()) for k, p in enumerate(very)]
    assert len(very) >= 8 and max(changes) < 0.02 and min(changes) < 0.002, changes  # down to nearly nothing


def test_diverse_synth_cli(tmp_path: Path) -> None:
    src = tmp_path / "clean"
    write_image(src / "a.png", _scene(40, 50))
    assert main(["synth", str(src), "-o", str(tmp_path / "out"), "--style", "diverse"]) == 0
    assert PairedFolder(tmp_path / "out")[0].rainy.shape == (3, 40, 50)


def test_diverse_streaks_are_relative_to_the_background() -> None:
    """Blended in linear light, the same streaks change a dark background more than a bright one."""
    import dataclasses

    from derain.data.diverse import add_diverse_rain
    from derain.data.synthetic import generator

    plan = next(p for p in _plans(60) if not p.very_light)
    plan = dataclasses.replace(plan, veil=0.0, splashes=0.0, compression="none", additive=False)
    dark, bright = torch.full((3, 64, 64), 0.1), torch.full((3, 64, 64), 0.85)
    on_dark = (add_diverse_rain(dark, generator("r", 0), plan=plan)[0] - dark).abs().mean()
    on_bright = (add_diverse_rain(bright, generator("r", 0), plan=plan)[0] - bright).abs().mean()
    assert on_dark > 2 * on_bright > 0


# --- the rainmix style: a second renderer for validation (Garg & Nayar streaks through augmentation chains) ---

def _streak_textures() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    tex = torch.zeros(160, 180)
    cols = torch.randint(0, 180, (150,), generator=g)
    for k, c in enumerate(cols.tolist()):  # vertical streaks of varying length on black
        top = int(torch.randint(0, 120, (), generator=g))
        tex[top:top + 10 + k % 30, c] = 0.6 + 0.4 * (k % 3) / 2
    return [tex, tex.flip(0)]


def test_rainmix_is_seeded_additive_and_selectable() -> None:
    from derain.data.synthetic import STYLE_NAMES
    from derain.train.config import DataConfig

    assert "rainmix" in STYLE_NAMES and DataConfig(style="rainmix").style == "rainmix"
    clean, textures = _scene(), _streak_textures()
    original = clean.clone()
    outs = []
    for seed in range(3):
        a, ma = add_rain(clean, style="rainmix", seed=seed, textures=textures)
        b, mb = add_rain(clean, style="rainmix", seed=seed, textures=textures)
        assert torch.equal(a, b) and torch.equal(ma, mb) and a.dtype == clean.dtype
        assert a.min() >= 0 and a.max() <= 1 and set(ma.unique().tolist()) <= {0.0, 1.0}
        added = a - clean
        assert added.min() >= -1e-6  # additive: streaks only brighten (then clip)
        assert float(ma.mean()) > 0.01  # some streak pixels
        # the mask marks where streaks add more than 0.05, unless the photo was already near white there
        lifted = (added.amax(0) > 0.05)
        assert bool((lifted <= (ma[0] > 0)).all())
        outs.append(a)
    assert torch.equal(clean, original)
    assert not torch.equal(outs[0], outs[1])


def test_rainmix_chains_warp_the_streaks_and_need_textures() -> None:
    from derain.data import rainmix
    from derain.data.synthetic import generator, texture_window

    textures = _streak_textures()
    layer = rainmix.rainmix_layer(64, 96, textures, generator("rm", 1))
    assert layer.shape == (64, 96) and float(layer.min()) >= 0 and float(layer.max()) <= 1
    # the chains' geometry moves streaks off the window's own grid: the layer is not the plain window crop
    g = generator("rm", 2)
    window = texture_window(64, 96, textures[0], g, texel=rainmix.TEXEL)
    plain = rainmix._sample(window, torch.eye(2, 3), 64, 96)
    turned = rainmix._sample(window, torch.tensor([[0.87, -0.5, 0.0], [0.5, 0.87, 0.0]]), 64, 96)
    assert float((plain - turned).abs().mean()) > 0.01
    w = rainmix._dirichlet(generator("d", 0), 3)
    assert w.shape == (3,) and abs(float(w.sum()) - 1) < 1e-6 and bool((w > 0).all())
    with pytest.raises(InputError, match="needs streak textures"):
        add_rain(_scene(), style="rainmix", seed=0)


# --- the photoshop style: the tutorials' recipe (noise, motion blur, levels, Screen), and a two-renderer mixture ---

def test_photoshop_rain_is_seeded_screened_and_streaked() -> None:
    from derain.data.photoshop import photoshop_layer
    from derain.data.synthetic import RENDERERS, STYLE_NAMES, generator
    from derain.train.config import DataConfig

    assert {"photoshop", "diverse+photoshop"} <= set(STYLE_NAMES)
    assert set(RENDERERS) <= set(STYLE_NAMES)  # every renderer of its own module is a style by name
    assert DataConfig(style="diverse+photoshop").style == "diverse+photoshop"
    clean = _scene()
    original = clean.clone()
    a, mask = add_rain(clean, style="photoshop", seed=4)
    b, _ = add_rain(clean, style="photoshop", seed=4)
    assert torch.equal(a, b) and torch.equal(clean, original)
    assert not torch.equal(a, add_rain(clean, style="photoshop", seed=5)[0])
    assert bool((a >= clean - 1e-6).all())  # Screen only brightens
    assert torch.equal(mask, ((a - clean).mean(0, keepdim=True) > 0.05).float()) and 0 < float(mask.mean()) < 0.5
    # Screen is relative to the background: a white image stays white, a dark one gains most
    white, dark = torch.ones(3, 48, 48), torch.full((3, 48, 48), 0.1)
    assert torch.equal(add_rain(white, style="photoshop", seed=1)[0], white)
    assert float((add_rain(dark, style="photoshop", seed=1)[0] - dark).mean()) > 0.005
    # "mostly black with a few lines of white": sparse, and streaked along the motion blur's direction (vertical)
    layer = photoshop_layer(96, 96, 0.0, generator("ps", 0))
    assert 0.005 < float((layer > 0.2).float().mean()) < 0.3
    assert float((layer[1:] - layer[:-1]).abs().mean()) < 0.5 * float((layer[:, 1:] - layer[:, :-1]).abs().mean())
    assert add_rain(clean, style="photoshop", seed=4, scale=2.5)[0].shape == clean.shape


@pytest.mark.parametrize("mixture", ["diverse+photoshop", "diverse+downpour", "downpour+photoshop",
                                     "downpour+downpour_near"])
def test_the_two_renderer_mixtures_draw_from_both(mixture: str) -> None:
    from derain.data.synthetic import STYLE_NAMES, generator
    from derain.train.config import DataConfig

    assert mixture in STYLE_NAMES and DataConfig(style=mixture).style == mixture
    clean = _scene()
    kinds = set()
    for seed in range(12):
        mixed = add_rain(clean, style=mixture, seed=seed)[0]
        for style in mixture.split("+"):
            g = generator("rain", seed)
            torch.rand((), generator=g)  # the mixture's own draw, then the chosen renderer's
            if torch.equal(mixed, add_rain(clean, style=style, g=g)[0]):
                kinds.add(style)
    assert kinds == set(mixture.split("+"))


def test_dense_rainmix_sums_several_independent_maps() -> None:
    from derain.data.rainmix import DENSE_MAPS, STRENGTH, rainmix_layer
    from derain.data.synthetic import STYLE_NAMES, _uniform, generator

    assert "rainmix_dense" in STYLE_NAMES
    clean, textures = _scene(), _streak_textures()
    counts, dense_added, single_added = set(), [], []
    for seed in range(10):
        a, ma = add_rain(clean, style="rainmix_dense", seed=seed, textures=textures)
        assert torch.equal(a, add_rain(clean, style="rainmix_dense", seed=seed, textures=textures)[0])
        assert a.min() >= 0 and a.max() <= 1 and (a - clean).min() >= -1e-6 and set(ma.unique().tolist()) <= {0, 1}
        # the same draws by hand: a count, then that many maps each with its own strength, summed and clipped
        g = generator("rain", seed)
        count = int(torch.randint(DENSE_MAPS[0], DENSE_MAPS[1] + 1, (), generator=g))
        layer = torch.zeros(clean.shape[-2:])
        for _ in range(count):
            layer = layer + rainmix_layer(*clean.shape[-2:], textures, g) * _uniform(g, *STRENGTH)
        assert torch.allclose(a, (clean + layer.clamp(0, 1)[None]).clamp(0, 1))
        counts.add(count)
        dense_added.append(float((a - clean).mean()))
        single_added.append(float((add_rain(clean, style="rainmix", seed=seed, textures=textures)[0] - clean).mean()))
    assert counts == set(range(DENSE_MAPS[0], DENSE_MAPS[1] + 1))
    assert sorted(dense_added)[5] > 1.5 * sorted(single_added)[5]  # the median image carries more rain
    with pytest.raises(InputError, match="textures"):
        add_rain(clean, style="rainmix_dense", seed=0)


def test_dense_photoshop_screens_several_independent_layers() -> None:
    from derain.data.photoshop import ANGLE, DENSE_LAYERS, OPACITY, photoshop_layer
    from derain.data.synthetic import STYLE_NAMES, _uniform, generator

    assert "photoshop_dense" in STYLE_NAMES
    clean = _scene()
    counts, dense_added, single_added = set(), [], []
    for seed in range(10):
        a, ma = add_rain(clean, style="photoshop_dense", seed=seed)
        assert torch.equal(a, add_rain(clean, style="photoshop_dense", seed=seed)[0])
        assert a.min() >= 0 and a.max() <= 1 and (a - clean).min() >= -1e-6 and set(ma.unique().tolist()) <= {0, 1}
        # the same draws by hand: an angle, a count, then that many layers each screened at its own opacity
        g = generator("rain", seed)
        angle = _uniform(g, -ANGLE, ANGLE)
        count = int(torch.randint(DENSE_LAYERS[0], DENSE_LAYERS[1] + 1, (), generator=g))
        x = clean.clone()
        for k in range(count):
            layer = photoshop_layer(*clean.shape[-2:], angle + (_uniform(g, -5.0, 5.0) if k else 0.0), g)
            x = 1 - (1 - x) * (1 - _uniform(g, *OPACITY) * layer[None])
        assert torch.allclose(a, x.clamp(0, 1))
        counts.add(count)
        dense_added.append(float((a - clean).mean()))
        single_added.append(float((add_rain(clean, style="photoshop", seed=seed)[0] - clean).mean()))
    assert counts == set(range(DENSE_LAYERS[0], DENSE_LAYERS[1] + 1))
    assert sorted(dense_added)[5] > 1.5 * sorted(single_added)[5]  # the median image carries more rain
    white = torch.ones(3, 40, 56)
    assert torch.equal(add_rain(white, style="photoshop_dense", seed=2)[0], white)  # Screen cannot brighten white
    assert add_rain(clean, style="photoshop_dense", seed=3, scale=2.0)[0].shape == clean.shape


def test_crossed_photoshop_screens_layers_of_independent_directions() -> None:
    from derain.data.photoshop import ANGLE, CROSSED_LAYERS, OPACITY, photoshop_layer
    from derain.data.synthetic import STYLE_NAMES, _uniform, generator

    assert "photoshop_crossed" in STYLE_NAMES
    clean = _scene()
    counts, spreads = set(), []
    for seed in range(10):
        a, ma = add_rain(clean, style="photoshop_crossed", seed=seed)
        assert torch.equal(a, add_rain(clean, style="photoshop_crossed", seed=seed)[0])
        assert a.min() >= 0 and a.max() <= 1 and (a - clean).min() >= -1e-6 and set(ma.unique().tolist()) <= {0, 1}
        # the same draws by hand: a count, then that many layers, each at its own angle, screened at its opacity
        g = generator("rain", seed)
        count = int(torch.randint(CROSSED_LAYERS[0], CROSSED_LAYERS[1] + 1, (), generator=g))
        x, angles = clean.clone(), []
        for _ in range(count):
            angles.append(_uniform(g, -ANGLE, ANGLE))
            layer = photoshop_layer(*clean.shape[-2:], angles[-1], g)
            x = 1 - (1 - x) * (1 - _uniform(g, *OPACITY) * layer[None])
        assert torch.allclose(a, x.clamp(0, 1))
        counts.add(count)
        spreads.append(max(angles) - min(angles))
    assert counts == set(range(CROSSED_LAYERS[0], CROSSED_LAYERS[1] + 1))
    assert sorted(spreads)[5] > 20  # the directions cross (photoshop_dense keeps its layers within 10 degrees)
    white = torch.ones(3, 40, 56)
    assert torch.equal(add_rain(white, style="photoshop_crossed", seed=2)[0], white)
    assert add_rain(clean, style="photoshop_crossed", seed=3, scale=2.0)[0].shape == clean.shape


# --- the downpour style: the physical model's heavy rain, lit by one source ---

def test_downpour_is_seeded_in_range_and_selectable(tmp_path: Path) -> None:
    from derain.data.synthetic import STYLE_NAMES
    from derain.train.config import DataConfig

    assert "downpour" in STYLE_NAMES and DataConfig(style="downpour").style == "downpour"
    clean = _scene()
    original = clean.clone()
    a, ma = add_rain(clean, style="downpour", seed=2)
    b, mb = add_rain(clean, style="downpour", seed=2)
    assert torch.equal(a, b) and torch.equal(ma, mb) and torch.equal(clean, original)
    assert a.min() >= 0 and a.max() <= 1 and a.shape == clean.shape and set(ma.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(a, add_rain(clean, style="downpour", seed=3)[0])
    assert add_rain(clean, style="downpour", seed=2, textures=_streak_textures())[0].shape == clean.shape
    src = tmp_path / "clean"
    write_image(src / "a.png", _scene(40, 50))
    assert main(["synth", str(src), "-o", str(tmp_path / "out"), "--style", "downpour"]) == 0
    assert PairedFolder(tmp_path / "out")[0].rainy.shape == (3, 40, 50)


def test_downpour_plans_are_heavy_lit_rain() -> None:
    from derain.data.diverse import DEPTHS, DOWNPOUR_RATE, GAIN, LIT, LIT_CAP, draw_downpour_plan
    from derain.data.synthetic import generator

    plans = [draw_downpour_plan(generator("downpour-plans", k)) for k in range(200)]
    assert {p.lighting for p in plans} == {"backlit", "lamp"}
    for p in plans:
        assert DOWNPOUR_RATE[0] <= p.rate <= DOWNPOUR_RATE[1] and not p.very_light and p.veil > 0
        assert [layer.depth for layer in p.layers] == [(a * b) ** 0.5 for a, b in itertools.pairwise(DEPTHS)]
        assert all(layer.cap == LIT_CAP and layer.sizes[0] >= 0.5 for layer in p.layers)  # no drizzle layer
        gains = [layer.gain for layer in p.layers]
        if p.lighting == "backlit":  # every slab lit
            assert all(LIT[0] - 1e-9 <= x <= LIT[1] + 1e-9 for x in gains)
        else:  # a lamp near the camera: near slabs at the peak, farther ones fainter, never below the floor
            assert gains == sorted(gains, reverse=True) and gains[0] >= LIT[0] - 1e-9
            assert all(GAIN[0] - 1e-9 <= x <= LIT[1] + 1e-9 for x in gains)
    # the same camera and wind draws as diverse, at the rates that diverse rarely reaches
    assert min(p.rate for p in plans) < 12 and max(p.rate for p in plans) > 60


def test_downpour_is_denser_and_brighter_than_diverse() -> None:
    """On a dark scene, bright streaks (changing the veiled background by more than 0.25) cover far more of the
    image under the lit downpour than under diverse rain drawn with the same seeds (medians over 16 seeds)."""
    dark = torch.full((3, 96, 96), 0.12)
    bright = {style: sorted(float(add_rain(dark, style=style, seed=s, mask_threshold=0.25)[1].mean())
                            for s in range(16)) for style in ("diverse", "downpour")}
    assert bright["downpour"][8] > 3 * bright["diverse"][8] and bright["downpour"][8] > 0.1


# --- downpour_varied: each drop at its own depth, oscillating (stage 26) ---

def _vertical_runs(frame: torch.Tensor) -> list[torch.Tensor]:
    """The values of each vertical run of nonzero pixels of ``frame`` (H, W), column by column."""
    runs = []
    for col in frame.T:
        start = None
        for i, v in enumerate([*col.tolist(), 0.0]):
            if v > 0 and start is None:
                start = i
            elif v <= 0 and start is not None:
                runs.append(col[start:i])
                start = None
    return runs


def test_varied_downpour_draws_downpours_plan_and_is_selectable() -> None:
    import dataclasses

    from derain.data.diverse import draw_downpour_plan
    from derain.data.synthetic import STYLE_NAMES, generator
    from derain.train.config import DataConfig

    assert "downpour_varied" in STYLE_NAMES and DataConfig(style="downpour_varied").style == "downpour_varied"
    for k in range(20):  # the same image-level draws as downpour; only its layers' drops differ
        plain = draw_downpour_plan(generator("varied", k))
        varied = draw_downpour_plan(generator("varied", k), varied=True)
        for a, b in zip(plain.layers, varied.layers, strict=True):
            assert a.slab is None and a.exposure == 0
            z1, z2 = b.slab
            assert z1 < b.depth < z2 and abs(b.depth - (z1 * z2) ** 0.5) < 1e-9 and 1 / 250 <= b.exposure <= 1 / 25
            assert dataclasses.replace(b, slab=None, exposure=0.0) == a
        assert dataclasses.replace(varied, layers=plain.layers) == plain
    clean = _scene()
    a, ma = add_rain(clean, style="downpour_varied", seed=4)
    assert torch.equal(a, add_rain(clean, style="downpour_varied", seed=4)[0]) and a.shape == clean.shape
    assert not torch.equal(a, add_rain(clean, style="downpour", seed=4)[0])
    assert a.min() >= 0 and a.max() <= 1 and set(ma.unique().tolist()) <= {0.0, 1.0}


def test_varied_downpour_streaks_vary_in_length_and_along_their_length() -> None:
    import dataclasses

    from derain.data.diverse import Layer, _streaks, fall_speed, oscillation_hz
    from derain.data.synthetic import generator

    # Rayleigh's n = 2 mode: ~121 Hz at D = 2 mm, and f ~ r^-1.5 (8 times faster at a quarter of the size)
    hz = oscillation_hz(torch.tensor([2.0, 0.5]))
    assert 115 < hz[0] < 128 and abs(hz[1] / hz[0] - 8) < 1e-4
    # one drop size, no blur, vertical: a 201 x 201 image maps the drawing frame 1:1, so each streak is one run
    base = Layer(depth=2.0, angle=0.0, density=4e-4, sizes=(2.0, 2.0 + 1e-6), speed_px=3.0, drop_px=0.2,
                 sigma=0.0, gain=10.0)
    length = float(fall_speed(2.0)) * 3.0  # ~19.6 px

    def runs(layer: Layer) -> list[torch.Tensor]:
        out = []
        for seed in range(3):
            out += [r for r in _vertical_runs(_streaks(201, 201, layer, 1.0, generator("runs", seed))) if len(r) > 3]
        return out

    plain = runs(base)
    # every drop at the slab's depth: every streak as long as the others and even along its length (runs that
    # merged with another drop's are longer; the image's top edge cuts some short)
    lengths = sorted(len(r) for r in plain)
    assert lengths[len(lengths) // 4] == lengths[3 * len(lengths) // 4] == round(length)
    assert all(float(r.std()) < 1e-6 for r in plain if len(r) == round(length))
    # each drop at its own depth in [1.2, 3.4] m (more of them far, in the wider part of the frustum): lengths
    # spread over the depth ratio (f v T / Z), the middle half of them shorter than the slab's depth gives
    deep = sorted(len(r) for r in runs(dataclasses.replace(base, slab=(1.2, 3.4))))
    q1, q3 = deep[len(deep) // 4], deep[3 * len(deep) // 4]
    assert q1 < 0.8 * length and q3 - q1 >= 3 and q3 < length
    # oscillating: ~4.9 cycles over a 1/25 s exposure; brightness varies along most streaks
    wobbly = [r for r in runs(dataclasses.replace(base, exposure=1 / 25)) if len(r) == round(length)]
    spread = sorted(float(r.std() / r.mean()) for r in wobbly)
    assert len(wobbly) > 10 and spread[len(spread) // 2] > 0.05 and spread[-1] < 0.6


def test_near_downpour_differs_from_downpour_only_in_the_scenes_depth() -> None:
    import dataclasses

    from derain.data.diverse import ZMAX, ZMAX_NEAR, draw_downpour_plan
    from derain.data.synthetic import STYLE_NAMES, generator

    assert "downpour_near" in STYLE_NAMES and ZMAX_NEAR[0] < ZMAX[0] and ZMAX_NEAR[1] == ZMAX[1]
    near = [draw_downpour_plan(generator("near", k), near=True) for k in range(300)]
    plain = [draw_downpour_plan(generator("near", k)) for k in range(300)]
    for a, b in zip(plain, near, strict=True):  # the same draws, the farthest depth mapped to the wider range
        assert dataclasses.replace(b, zmax=a.zmax) == a and ZMAX_NEAR[0] <= b.zmax <= ZMAX_NEAR[1]
        assert b.zmax <= a.zmax
    assert 0.2 < sum(p.zmax < ZMAX[0] for p in near) / len(near) < 0.4  # log(4) / log(100): 30% close-ups
    clean = _scene()
    a = add_rain(clean, style="downpour_near", seed=5)[0]
    assert torch.equal(a, add_rain(clean, style="downpour_near", seed=5)[0])
    assert not torch.equal(a, add_rain(clean, style="downpour", seed=5)[0])
