"""Tiled SIAN reproduces the untiled SIAN: windows up-sample on the whole image's ``align_corners=True`` grid."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import derain
from derain.archs.sian import SIAN, upsample2x_on_grid
from derain.inference.tiling import run_tiled
from derain.io import read_image
from derain.types import Placement
from tests.conftest import require_shared


def _up(m: torch.Tensor) -> torch.Tensor:
    return F.interpolate(m, scale_factor=2, mode="bilinear", align_corners=True)


@pytest.mark.parametrize("size", [(1, 1), (1, 6), (7, 9), (30, 41)])
def test_upsample_on_grid_of_the_whole_map_is_interpolate(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    m = torch.randn(2, 3, *size)
    h, w = size
    out = upsample2x_on_grid(m, size=(2 * h + 1, 2 * w + 1), full=size, offset=(0, 0))
    torch.testing.assert_close(out[..., : 2 * h, : 2 * w], _up(m), atol=1e-6, rtol=0)
    assert not out[..., 2 * h :, :].any() and not out[..., :, 2 * w :].any()  # FuseUp's zero padding


@pytest.mark.parametrize("window", [(5, 7, 10, 12), (0, 0, 10, 12), (20, 29, 10, 12), (0, 8, 30, 9)])
def test_upsample_on_grid_of_a_window_is_the_crop_of_the_whole(window: tuple[int, int, int, int]) -> None:
    torch.manual_seed(1)
    m = torch.randn(1, 2, 30, 41)
    top, left, h, w = window
    out = upsample2x_on_grid(
        m[..., top : top + h, left : left + w], size=(2 * h, 2 * w), full=(30, 41), offset=(top, left)
    )
    crop = _up(m)[..., 2 * top : 2 * top + 2 * h, 2 * left : 2 * left + 2 * w]
    # Exact but for the first / last row and column of a window edge inside the map (sources clamped there).
    y0, y1 = int(top > 0), 2 * h - int(top + h < 30)
    x0, x1 = int(left > 0), 2 * w - int(left + w < 41)
    torch.testing.assert_close(out[..., y0:y1, x0:x1], crop[..., y0:y1, x0:x1], atol=1e-6, rtol=0)


def test_run_tiled_tells_each_window_where_it_sits() -> None:
    x = torch.rand(1, 3, 53, 77)
    seen: list[Placement] = []

    def fn(t: torch.Tensor, p: Placement) -> torch.Tensor:
        seen.append(p)
        assert (p.image_height, p.image_width) == (53, 77) and p.top % 4 == 0 and p.left % 4 == 0
        assert torch.equal(t, x[..., p.top : p.top + t.shape[2], p.left : p.left + t.shape[3]])
        return t * 2

    out = run_tiled(fn, x, tile=24, overlap=8, align=4, placed=True)
    torch.testing.assert_close(out, x * 2, atol=1e-6, rtol=0)
    assert len(seen) > 4 and len(set(seen)) == len(seen)


def test_sian_window_with_placement_reproduces_the_whole_image() -> None:
    torch.manual_seed(0)
    model = SIAN(stages=2, channels=8).eval()
    x = torch.rand(1, 3, 62, 87)
    with torch.no_grad():
        whole = model(x).image
        assert torch.equal(model(x).image, whole)  # without placement: the plain forward
        torch.testing.assert_close(model(x, placement=Placement(62, 87, 0, 0)).image, whole, atol=1e-5, rtol=0)
        # A window reaching the bottom-right corner: away from its inner edges, it is the whole image's output.
        win = x[..., 20:, 32:]
        placed = model(win, placement=Placement(62, 87, 20, 32)).image - whole[..., 20:, 32:]
        plain = model(win).image - whole[..., 20:, 32:]
        assert float(placed[..., 24:, 24:].abs().max()) < 1e-5
        assert float(plain[..., 24:, 24:].abs().max()) > 1e-4  # without it the up-sampling grid is off
        with pytest.raises(ValueError, match="multiple of 4"):
            model(win, placement=Placement(62, 87, 18, 32))
        with pytest.raises(ValueError, match="inside the image"):
            model(win, placement=Placement(60, 87, 20, 32))


def test_tiled_official_sian_equals_untiled_within_2_levels() -> None:
    weights = require_shared("weights", "official", "sian", "rain100h.pth")
    image = require_shared("data", "rain100H", "rain", "001.png")
    restorer = derain.load(weights, device="cpu")
    x = read_image(image).image[..., :160, :240].contiguous()  # 2 x 3 windows
    whole = restorer(x)
    tiled = restorer(x, tile=128)  # the profile's overlap (96), capped at tile / 2
    # Measured: 0.16 levels; 3.4 without placements (each window on its own align_corners grid).
    assert float((tiled - whole).abs().max()) * 255 <= 2.0
