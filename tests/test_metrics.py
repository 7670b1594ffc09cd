"""Contracts of derain.metrics: closed forms, a slow direct SSIM, scikit-image, MATLAB's ssim.m down-sampling,
gradients, error paths, and the Rain100L input PSNR from ../shared."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from derain.errors import InputError
from derain.metrics import PROTOCOLS, measure, protocol_names, psnr, quantize, rgb_to_y, ssim
from tests.conftest import require_shared


def _images(n: int, c: int, h: int, w: int, *, seed: int = 0, noise: float = 0.1) -> tuple[torch.Tensor, ...]:
    """A smooth structured float64 image in [0, 1] and a noisy copy (realistic, non-trivial SSIM)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 3, h, dtype=torch.float64),
                            torch.linspace(0, 4, w, dtype=torch.float64), indexing="ij")
    phase = torch.rand(n, c, 1, 1, generator=g, dtype=torch.float64) * 6
    clean = 0.5 + 0.4 * torch.sin(xx * 2 + phase) * torch.cos(yy * 3 - phase)
    noisy = (clean + noise * torch.randn(n, c, h, w, generator=g, dtype=torch.float64)).clamp(0, 1)
    return noisy, clean


def _direct_ssim(a: np.ndarray, b: np.ndarray, w2: np.ndarray, *, data_range: float, same: bool,
                 sample: bool = False) -> float:
    """Slow, obvious SSIM of two 2-D arrays: loop over every window position (zero padding if ``same``)."""
    k = w2.shape[0]
    if same:
        a, b = np.pad(a, k // 2), np.pad(b, k // 2)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    norm = k * k / (k * k - 1) if sample else 1.0
    values = []
    for i in range(a.shape[0] - k + 1):
        for j in range(a.shape[1] - k + 1):
            pa, pb = a[i:i + k, j:j + k], b[i:i + k, j:j + k]
            ma, mb = (w2 * pa).sum(), (w2 * pb).sum()
            va = norm * (w2 * (pa - ma) ** 2).sum()
            vb = norm * (w2 * (pb - mb) ** 2).sum()
            cov = norm * (w2 * (pa - ma) * (pb - mb)).sum()
            values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def _fspecial_gaussian(size: int, sigma: float) -> np.ndarray:
    r = np.arange(size) - (size - 1) / 2
    h = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return h / h.sum()


# ---------------------------------------------------------------- rgb_to_y, quantize

@pytest.mark.parametrize(("rgb", "y255"), [
    ((0, 0, 0), 16.0), ((1, 1, 1), 235.0), ((1, 0, 0), 16 + 65.481), ((0, 1, 0), 16 + 128.553),
    ((0, 0, 1), 16 + 24.966), ((0.5, 0.25, 0.75), 16 + 65.481 * 0.5 + 128.553 * 0.25 + 24.966 * 0.75),
])
def test_rgb_to_y_pure_colours(rgb: tuple[float, float, float], y255: float) -> None:
    x = torch.tensor(rgb, dtype=torch.float64).view(1, 3, 1, 1).expand(2, 3, 4, 5)
    y = rgb_to_y(x)
    assert y.shape == (2, 1, 4, 5) and y.dtype == torch.float64
    torch.testing.assert_close(y, torch.full_like(y, y255 / 255), rtol=0, atol=1e-15)
    assert rgb_to_y(x.float()).dtype == torch.float32


def test_rgb_to_y_rejects_grey() -> None:
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        rgb_to_y(torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_quantize_ties_and_truncation(dtype: torch.dtype) -> None:
    k = torch.arange(255, dtype=dtype)
    half = (k + 0.5) / 255  # 255 * half == k + 0.5 exactly in both dtypes
    assert torch.equal(half * 255, k + 0.5)
    even = k + (k % 2)  # round half to even: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, ...
    assert torch.equal(quantize(half, "round") * 255, even)
    assert torch.equal(quantize(half, "floor") * 255, k)
    below = (k + 1) / 255 - 1e-4  # just under the next level
    assert torch.equal(quantize(below, "floor") * 255, k)
    assert torch.equal(quantize(below, "round") * 255, k + 1)
    edges = torch.tensor([-0.3, 0.0, 1.0, 1.7], dtype=dtype)
    assert quantize(edges, "round").tolist() == [0.0, 0.0, 1.0, 1.0]
    assert quantize(edges, "floor").tolist() == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_quantize_is_identity_on_8bit_images_and_none_is_identity(dtype: torch.dtype) -> None:
    levels = torch.arange(256, dtype=torch.uint8).to(dtype) / 255
    assert torch.equal(quantize(levels, "floor"), levels)
    assert torch.equal(quantize(levels, "round"), levels)
    x = torch.tensor([-1.0, 0.123, 2.0], dtype=dtype)
    assert quantize(x, None) is x
    with pytest.raises(InputError, match="quantize mode"):
        quantize(x, "nearest")  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-0.5, 1.5), min_size=1, max_size=20), st.sampled_from(["floor", "round"]))
def test_quantize_lands_on_the_grid_and_is_idempotent(values: list[float], mode: str) -> None:
    x = torch.tensor(values, dtype=torch.float64)
    q = quantize(x, mode)  # type: ignore[arg-type]
    assert torch.equal(q * 255, torch.round(q * 255)) and float(q.min()) >= 0 and float(q.max()) <= 1
    assert torch.equal(quantize(q, mode), q)  # type: ignore[arg-type]
    assert float((q - x.clamp(0, 1)).abs().max()) <= 1 / 255 + 1e-12


# ---------------------------------------------------------------- PSNR

def test_psnr_closed_forms() -> None:
    x = torch.full((2, 3, 8, 9), 0.5, dtype=torch.float64)
    y = x + torch.tensor([0.1, 0.01], dtype=torch.float64).view(2, 1, 1, 1)
    p = psnr(x, y, data_range=1.0)
    assert p.shape == (2,) and p.dtype == torch.float64
    torch.testing.assert_close(p, torch.tensor([20.0, 40.0], dtype=torch.float64), rtol=0, atol=1e-10)
    torch.testing.assert_close(psnr(255 * x, 255 * y, data_range=255.0), p, rtol=0, atol=1e-10)
    p32 = psnr(x.float(), y.float(), data_range=1.0)  # float32 in, float64 out
    assert p32.dtype == torch.float64
    torch.testing.assert_close(p32, p, rtol=0, atol=1e-4)
    # Y: an offset d on R, G and B moves Y by d * 219 / 255.
    d = 219 / 255 * 0.1
    for scale in (1.0, 255.0):  # the Y offset 16/255 scales with data_range
        py = psnr(scale * x, scale * y, data_range=scale, y_channel=True)[0]
        assert float(py) == pytest.approx(-20 * math.log10(d), abs=1e-9)
    assert torch.isinf(psnr(x, x.clone(), data_range=1.0)).all()


def test_psnr_border_crops_both_images() -> None:
    x = torch.zeros(1, 1, 10, 12, dtype=torch.float64)
    y = x.clone()
    y[..., :2, :] = 1.0
    y[..., :, -2:] = 1.0
    assert math.isinf(float(psnr(x, y, data_range=1.0, border=2)[0]))
    y[..., 4, 5] = 0.3  # one error inside the 6x8 centre
    expected = 10 * math.log10(1 / (0.09 / 48))
    assert float(psnr(x, y, data_range=1.0, border=2)[0]) == pytest.approx(expected, abs=1e-9)
    with pytest.raises(InputError, match="border"):
        psnr(x, y, data_range=1.0, border=5)


def test_psnr_matches_skimage() -> None:
    a, b = _images(1, 3, 20, 30)
    ours = float(psnr(a, b, data_range=1.0)[0])
    want = peak_signal_noise_ratio(b[0].numpy(), a[0].numpy(), data_range=1.0)
    assert ours == pytest.approx(want, abs=1e-10)


# ---------------------------------------------------------------- SSIM: hand references

def test_ssim_of_identical_images_is_one() -> None:
    a, _ = _images(2, 3, 24, 26)
    for padding in ("valid", "same"):
        torch.testing.assert_close(ssim(a, a.clone(), data_range=1.0, padding=padding),
                                   torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    same = ssim(a, a.clone(), data_range=1.0, y_channel=True, window="uniform", window_size=7)
    torch.testing.assert_close(same, torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("window", "size", "padding", "sample"), [
    ("gaussian", 11, "valid", False), ("gaussian", 5, "same", False), ("uniform", 7, "valid", True),
    ("uniform", 3, "same", True),
])
def test_ssim_matches_direct_double_loop(window: str, size: int, padding: str, sample: bool) -> None:
    a, b = _images(2, 2, 13, 16, seed=3, noise=0.2)
    w2 = _fspecial_gaussian(size, 1.5) if window == "gaussian" else np.full((size, size), 1 / size**2)
    got = ssim(255 * a, 255 * b, data_range=255.0, window=window, window_size=size, padding=padding,  # type: ignore[arg-type]
               sample_covariance=sample)
    for n in range(2):
        want = np.mean([_direct_ssim(255 * a[n, c].numpy(), 255 * b[n, c].numpy(), w2, data_range=255.0,
                                     same=padding == "same", sample=sample) for c in range(2)])
        assert float(got[n]) == pytest.approx(want, abs=1e-12)


def test_ssim_keeps_float32_and_border_crops_the_map() -> None:
    a, b = _images(1, 3, 20, 22)
    s32 = ssim(a.float(), b.float(), data_range=1.0)
    assert s32.dtype == torch.float32 and s32.shape == (1,)
    assert float(s32[0]) == pytest.approx(float(ssim(a, b, data_range=1.0)[0]), abs=1e-5)
    # 'same' with the map's outer (size-1)//2 ring removed == 'valid'.
    cropped = ssim(a, b, data_range=1.0, padding="same", border=5)
    torch.testing.assert_close(cropped, ssim(a, b, data_range=1.0), rtol=0, atol=1e-12)


# ---------------------------------------------------------------- SSIM: scikit-image

def test_ssim_valid_matches_skimage_gaussian_on_y255() -> None:
    a, b = _images(1, 3, 41, 57, seed=5)
    ya, yb = (255 * rgb_to_y(a))[0, 0].numpy(), (255 * rgb_to_y(b))[0, 0].numpy()
    mssim, smap = structural_similarity(ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=255, full=True)
    # skimage filters with reflect padding and averages its map without the (11-1)//2 = 5 px rim: exactly the
    # positions whose 11x11 window lies inside the image, i.e. our 'valid' map.
    ours = ssim(255 * a, 255 * b, data_range=255.0, y_channel=True)
    assert float(ours[0]) == pytest.approx(mssim, abs=1e-6)
    assert float(ours[0]) == pytest.approx(smap[5:-5, 5:-5].mean(), abs=1e-6)
    ours_b2 = ssim(255 * a, 255 * b, data_range=255.0, y_channel=True, border=2)
    assert float(ours_b2[0]) == pytest.approx(smap[7:-7, 7:-7].mean(), abs=1e-6)


def test_skimage_legacy_protocol_matches_skimage() -> None:
    out, gt = _images(2, 3, 30, 35, seed=7)
    out = out * 1.1 - 0.05  # outside [0, 1]: the protocol clips
    p, s = measure(out, gt, protocol="skimage-legacy")
    for n in range(2):
        o = out[n].clamp(0, 1).permute(1, 2, 0).numpy()
        g = gt[n].permute(1, 2, 0).numpy()
        want = structural_similarity(o, g, data_range=2, channel_axis=-1, win_size=7,
                                     use_sample_covariance=True, gaussian_weights=False)
        assert float(s[n]) == pytest.approx(want, abs=1e-9)
        assert float(p[n]) == pytest.approx(peak_signal_noise_ratio(g, o, data_range=1), abs=1e-9)
    same = ssim(out.clamp(0, 1), gt, data_range=2.0, window="uniform", window_size=7, sample_covariance=True,
                padding="same", border=3)
    torch.testing.assert_close(same, s, rtol=0, atol=1e-12)


def test_matlab_y_protocol_composes_quantize_y_and_skimage_ssim() -> None:
    out, gt = _images(1, 3, 32, 40, seed=11)
    gt = torch.round(gt * 255) / 255  # targets are 8-bit images
    out = out + 0.3 / 255  # not on the grid, so round and floor differ
    for mode in ("round", "floor"):
        p, s = measure(out, gt, protocol="matlab-y", quantize=mode)  # type: ignore[arg-type]
        yo, yg = rgb_to_y(quantize(out, mode)), rgb_to_y(gt)  # type: ignore[arg-type]
        assert float(p[0]) == pytest.approx(10 * math.log10(1 / float((yo - yg).square().mean())), abs=1e-10)
        ya, yb = (255 * yo)[0, 0].numpy(), (255 * yg)[0, 0].numpy()
        want = structural_similarity(ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=255)
        assert float(s[0]) == pytest.approx(want, abs=1e-9)
    assert not torch.equal(measure(out, gt, protocol="matlab-y")[0],
                           measure(out, gt, protocol="matlab-y", quantize="floor")[0])
    assert torch.equal(measure(out, gt, protocol="matlab-y")[0],
                       measure(out, gt, protocol="matlab-y", quantize="round")[0])


def test_matlab_y_quantises_in_the_outputs_dtype() -> None:
    # The repos compute 255 * out in float32: for this float32 value the product rounds to exactly 0.5 (-> 0,
    # half to even), while in float64 it is just above 0.5 (-> 1).
    v = 0.0019607844296842813
    out32 = torch.full((1, 3, 16, 16), v, dtype=torch.float32)
    assert float(quantize(out32, "round").max()) == 0.0
    assert float(quantize(out32.double(), "round").max()) == 1 / 255
    gt = torch.zeros((1, 3, 16, 16), dtype=torch.float32)
    p32, _ = measure(out32, gt, protocol="matlab-y")
    p64, _ = measure(out32.double(), gt.double(), protocol="matlab-y")
    assert math.isinf(float(p32[0]))
    assert float(p64[0]) == pytest.approx(-20 * math.log10(1 / 255 * 219 / 255), abs=1e-9)


def test_torch_rgb_protocol_clips_psnr_but_not_ssim() -> None:
    out, gt = _images(1, 3, 24, 24, seed=2)
    out = out * 1.3 - 0.15
    p, s = measure(out, gt, protocol="torch-rgb")
    torch.testing.assert_close(p, psnr(out.clamp(0, 1), gt, data_range=1.0), rtol=0, atol=0)
    torch.testing.assert_close(s, ssim(out, gt, data_range=1.0, padding="same"), rtol=0, atol=1e-15)
    assert float(s[0]) != pytest.approx(float(ssim(out.clamp(0, 1), gt, data_range=1.0, padding="same")[0]))
    assert p.dtype == s.dtype == torch.float64
    p32, s32 = measure(out.float(), gt.float(), protocol="torch-rgb")
    assert p32.dtype == s32.dtype == torch.float64


# ---------------------------------------------------------------- ssim.m down-sampling

def _matlab_downsample(img: np.ndarray, f: int) -> np.ndarray:
    """imfilter(img, ones(f)/f^2, 'symmetric', 'same') then img(1:f:end, 1:f:end), written out directly."""
    before = (f + 1) // 2 - 1  # kernel centre floor((f+1)/2), 1-based
    padded = np.pad(img, ((before, f - 1 - before), (before, f - 1 - before)), mode="symmetric")
    h, w = img.shape
    out = np.zeros_like(img)
    for di in range(f):
        for dj in range(f):
            out += padded[di:di + h, dj:dj + w]
    return (out / f**2)[::f, ::f]


@pytest.mark.parametrize(("h", "w", "f"), [(400, 600, 2), (640, 650, 3), (896, 900, 4), (383, 500, 1)])
def test_downsample_matches_ssim_m(h: int, w: int, f: int) -> None:
    # 400/256 = 1.56 -> 2; 640/256 = 2.5 -> 3 (MATLAB rounds half away from zero); 896/256 = 3.5 -> 4
    a, b = _images(1, 1, h, w, seed=f, noise=0.15)
    a, b = 255 * a, 255 * b
    down = float(ssim(a, b, data_range=255.0, downsample=True)[0])
    plain = float(ssim(a, b, data_range=255.0)[0])
    da, db = _matlab_downsample(a[0, 0].numpy(), f), _matlab_downsample(b[0, 0].numpy(), f)
    assert da.shape == (math.ceil(h / f), math.ceil(w / f))
    want = structural_similarity(da, db, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255)
    assert down == pytest.approx(want, abs=1e-9)
    if f == 1:
        assert down == plain
    else:
        assert abs(down - plain) > 1e-3


def test_downsample_is_differentiable() -> None:
    a, b = _images(1, 1, 390, 400, seed=6)
    x = a.float().requires_grad_(True)
    ssim(x, b.float(), data_range=1.0, downsample=True).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


def test_measure_downsample_only_changes_ssim() -> None:
    out, gt = _images(1, 3, 400, 420, seed=1)
    p0, s0 = measure(out, gt, protocol="matlab-y")
    p1, s1 = measure(out, gt, protocol="matlab-y", downsample=True)
    assert torch.equal(p0, p1) and not torch.equal(s0, s1)


# ---------------------------------------------------------------- gradients

@pytest.mark.parametrize("padding", ["valid", "same"])
def test_ssim_gradcheck(padding: str) -> None:
    a, b = _images(1, 2, 12, 13, seed=4, noise=0.3)
    a.requires_grad_(True)
    size = 11 if padding == "valid" else 5
    assert torch.autograd.gradcheck(
        lambda t: ssim(t, b, data_range=1.0, window_size=size, padding=padding),  # type: ignore[arg-type]
        (a,), eps=1e-6, atol=1e-7,
    )


def test_one_minus_ssim_decreases_under_sgd() -> None:
    noisy, clean = _images(1, 3, 32, 32, seed=9, noise=0.3)
    x = noisy.float().clone().requires_grad_(True)
    target = clean.float()
    opt = torch.optim.SGD([x], lr=20.0)
    losses = []
    for _ in range(6):
        loss = 1 - ssim(x, target, data_range=1.0, padding="same").mean()
        assert loss.dtype == torch.float32
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0] and all(b < a for a, b in itertools.pairwise(losses))


# ---------------------------------------------------------------- protocol table, errors

def test_protocol_table() -> None:
    assert protocol_names() == ["matlab-y", "torch-rgb", "skimage-legacy"]
    assert set(PROTOCOLS) == set(protocol_names())
    with pytest.raises(dataclasses.FrozenInstanceError):
        PROTOCOLS["matlab-y"].window_size = 7  # type: ignore[misc]
    assert PROTOCOLS["matlab-y"].quantizes and not PROTOCOLS["torch-rgb"].quantizes


def test_measure_error_paths() -> None:
    a, b = _images(1, 3, 16, 16)
    with pytest.raises(InputError, match="matlab-y, torch-rgb, skimage-legacy"):
        measure(a, b, protocol="matlab")
    with pytest.raises(InputError, match=r"\(1, 3, 16, 16\) vs \(1, 3, 16, 15\)"):
        measure(a, b[..., :15], protocol="matlab-y")
    with pytest.raises(InputError, match="dtypes differ"):
        measure(a, b.float(), protocol="torch-rgb")
    for name in ("torch-rgb", "skimage-legacy"):
        with pytest.raises(InputError, match="does not quantise"):
            measure(a, b, protocol=name, quantize="round")
        with pytest.raises(InputError, match="down-sampling"):
            measure(a, b, protocol=name, downsample=True)
    with pytest.raises(InputError, match="quantize mode"):
        measure(a, b, protocol="matlab-y", quantize="ceil")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="RGB"):
        measure(a[:, :1], b[:, :1], protocol="matlab-y")
    # None is a valid choice everywhere: no 8-bit conversion.
    p, _ = measure(a, b, protocol="torch-rgb", quantize=None)
    assert p.shape == (1,)


def test_metric_error_paths() -> None:
    a, b = _images(1, 3, 16, 16)
    with pytest.raises(InputError, match="uint8"):
        psnr(a, (b * 255).to(torch.uint8), data_range=1.0)
    with pytest.raises(InputError, match="data_range"):
        ssim(a, b, data_range=0.0)
    with pytest.raises(InputError, match="odd"):
        ssim(a, b, data_range=1.0, window_size=8)
    with pytest.raises(InputError, match="smaller than"):
        ssim(a[..., :10, :], b[..., :10, :], data_range=1.0)
    with pytest.raises(InputError, match="window"):
        ssim(a, b, data_range=1.0, window="box")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="padding"):
        ssim(a, b, data_range=1.0, padding="reflect")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="shape"):
        ssim(a[0], b[0], data_range=1.0)


# ---------------------------------------------------------------- real data (../shared)

def _read_png(path: object) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:  # type: ignore[arg-type]
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].to(torch.float64) / 255


def test_rain100l_input_psnr_matches_published() -> None:
    root = require_shared("data", "rain100L")
    names = sorted(p.name for p in (root / "rain").glob("*.png"))
    assert len(names) == 100
    values = []
    for i, name in enumerate(names):
        rainy, clean = _read_png(root / "rain" / name), _read_png(root / "norain" / name)
        if i < 5:  # full protocol on a few: 8-bit inputs make round/floor/None the same
            p, s = measure(rainy, clean, protocol="matlab-y")
            for mode in ("floor", None):
                p2, s2 = measure(rainy, clean, protocol="matlab-y", quantize=mode)  # type: ignore[arg-type]
                assert torch.equal(p, p2) and torch.equal(s, s2)
            assert 0.3 < float(s[0]) < 1.0
            values.append(float(p[0]))
        else:
            values.append(float(psnr(rainy, clean, data_range=1.0, y_channel=True)[0]))
    assert np.mean(values) == pytest.approx(26.90, abs=0.01)  # published.md: input PSNR on Y, rain100L
