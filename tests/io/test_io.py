"""derain.io: every format and bit depth round-trips, conversions to RGB, EXIF orientation, error paths."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageOps

import derain.io.image as image_module
from derain.errors import InputError
from derain.io import (
    IMAGE_EXTENSIONS,
    LoadedImage,
    _png,
    _tiff,
    from_tensor,
    read_image,
    to_tensor,
    write_image,
)

RNG = np.random.default_rng(0)


def levels(shape: tuple[int, ...], bits: int = 8, seed: int = 0) -> torch.Tensor:
    """A float tensor holding exact 8- or 16-bit levels (survives a lossless round trip bit for bit)."""
    peak = 2**bits - 1
    k = np.random.default_rng(seed).integers(0, peak + 1, size=shape)
    return torch.from_numpy((k / peak).astype(np.float32))


def smooth(height: int = 48, width: int = 64) -> torch.Tensor:
    """A smooth image (lossy codecs keep it close)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    return torch.stack([x, y, (x + y) / 2])[None]


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(("ext", "bits"), [("png", 8), ("png", 16), ("tif", 8), ("tiff", 16), ("bmp", 8)])
def test_lossless_round_trip_is_exact(tmp_path: Path, ext: str, bits: int) -> None:
    x = levels((1, 3, 7, 11), bits)  # odd sizes
    path = write_image(tmp_path / f"a.{ext}", x, bit_depth=bits)
    loaded = read_image(path)
    assert isinstance(loaded, LoadedImage)
    assert loaded.image.dtype == torch.float32 and loaded.image.shape == (1, 3, 7, 11)
    assert torch.equal(loaded.image, x)
    assert loaded.alpha is None
    assert loaded.bit_depth == bits
    assert loaded.format == {"png": "PNG", "tif": "TIFF", "tiff": "TIFF", "bmp": "BMP"}[ext]
    assert loaded.path == path


@pytest.mark.parametrize(("ext", "fmt"), [("jpg", "JPEG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_lossy_round_trip_is_close(tmp_path: Path, ext: str, fmt: str) -> None:
    x = smooth()
    loaded = read_image(write_image(tmp_path / f"a.{ext}", x, quality=95))
    assert loaded.format == fmt and loaded.bit_depth == 8 and loaded.image.shape == x.shape
    assert float((loaded.image - x).abs().mean()) < 0.01


def test_quality_changes_jpeg_size(tmp_path: Path) -> None:
    x = levels((1, 3, 32, 32))
    low = write_image(tmp_path / "low.jpg", x, quality=10).stat().st_size
    high = write_image(tmp_path / "high.jpg", x, quality=100).stat().st_size
    assert low < high


def test_writes_three_dim_image_and_rounds_to_nearest(tmp_path: Path) -> None:
    x = torch.tensor([0.3, 0.7, 1.6, -0.2]) / 255  # -> 0, 1, 2, 0
    img = x.view(1, 1, 4).expand(3, 1, 4).contiguous()
    out = read_image(write_image(tmp_path / "r.png", img)).image
    assert (out[0, 0, 0] * 255).round().tolist() == [0, 1, 2, 0]
    clamped = read_image(write_image(tmp_path / "c.png", torch.full((3, 1, 2), 1.2))).image
    assert torch.equal(clamped, torch.ones(1, 3, 1, 2))


@pytest.mark.parametrize(("ext", "bits"), [("png", 8), ("png", 16), ("tif", 8), ("tif", 16), ("webp", 8)])
def test_alpha_round_trip(tmp_path: Path, ext: str, bits: int) -> None:
    x = levels((1, 3, 6, 9), bits) if ext != "webp" else smooth(6, 9)
    a = levels((1, 1, 6, 9), bits, seed=1)
    loaded = read_image(write_image(tmp_path / f"a.{ext}", x, alpha=a, bit_depth=bits))
    assert loaded.alpha is not None and loaded.alpha.shape == (1, 1, 6, 9)
    assert torch.equal(loaded.alpha, a)  # WebP stores alpha losslessly
    if ext != "webp":
        assert torch.equal(loaded.image, x)


@pytest.mark.parametrize("ext", ["jpg", "bmp"])
def test_alpha_refused_for_formats_without_transparency(tmp_path: Path, ext: str) -> None:
    with pytest.raises(InputError, match=r"cannot store transparency.*alpha=None"):
        write_image(tmp_path / f"a.{ext}", smooth(4, 4), alpha=torch.ones(1, 1, 4, 4))
    assert files_in(tmp_path) == []


# --------------------------------------------------------------------------------------- 16-bit codecs


@pytest.mark.parametrize("filter_type", [None, 0, 1, 2, 3, 4])
@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png16_codec_every_filter_and_interlace(filter_type: int | None, interlace: bool, channels: int
                                                ) -> None:
    a = RNG.integers(0, 65536, size=(13, 17, channels), dtype=np.uint16)
    data = _png.encode(a, filter_type=filter_type, interlace=interlace)
    assert np.array_equal(_png.decode(data).pixels, a)
    # An independent reader: Pillow keeps the high byte of 16-bit RGB(A) / grey+alpha samples.
    with Image.open(io.BytesIO(data)) as im:
        theirs = np.asarray(im)
    if channels == 1:
        assert np.array_equal(theirs, a[..., 0])
    elif channels == 2:  # Pillow opens 16-bit grey+alpha as RGBA
        assert np.array_equal(theirs[..., [0, 3]], (a >> 8).astype(np.uint8))
    else:
        assert np.array_equal(theirs.reshape(a.shape), (a >> 8).astype(np.uint8))


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_png_decoder_matches_pillow_on_pillow_files(mode: str) -> None:
    """Pillow's encoder chooses its own filters per row; our decoder must agree with Pillow's decoder."""
    y, x = np.mgrid[0:40, 0:50]
    base = np.stack([x * 5, y * 6, x * y % 256, (x + y) * 3], axis=2) % 256
    noisy = (base + RNG.integers(0, 20, size=base.shape)).astype(np.uint8)
    im = Image.fromarray(noisy[..., :len(mode)].squeeze(), mode=mode) if len(mode) > 1 else Image.fromarray(
        noisy[..., 0])
    buf = io.BytesIO()
    im.save(buf, "PNG")
    assert np.array_equal(_png.decode(buf.getvalue()).pixels.squeeze(), np.asarray(im))


def test_sixteen_bit_rgb_png_read_and_written_by_derain(tmp_path: Path) -> None:
    a = RNG.integers(0, 65536, size=(9, 10, 3), dtype=np.uint16)
    (tmp_path / "i.png").write_bytes(_png.encode(a, interlace=True))
    loaded = read_image(tmp_path / "i.png")
    assert loaded.bit_depth == 16
    assert np.array_equal(from_tensor(loaded.image, dtype=np.uint16), a)


def test_sixteen_bit_grey_png_and_tiff_written_by_pillow(tmp_path: Path) -> None:
    g = RNG.integers(0, 65536, size=(5, 7), dtype=np.uint16)
    for name in ("g.png", "g.tif"):
        Image.fromarray(g).save(tmp_path / name)
        loaded = read_image(tmp_path / name)
        assert loaded.bit_depth == 16 and loaded.alpha is None
        rgb = from_tensor(loaded.image, dtype=np.uint16)
        assert all(np.array_equal(rgb[..., c], g) for c in range(3)), name


def test_sixteen_bit_png_colour_key_becomes_alpha(tmp_path: Path) -> None:
    a = RNG.integers(0, 65536, size=(4, 5, 3), dtype=np.uint16)
    a[1, 2] = (100, 200, 300)
    data = _png.encode(a)
    trns = _png._chunk(b"tRNS", struct.pack(">3H", 100, 200, 300))
    at = data.index(b"IDAT") - 4
    (tmp_path / "k.png").write_bytes(data[:at] + trns + data[at:])
    alpha = read_image(tmp_path / "k.png").alpha
    assert alpha is not None
    expected = torch.ones(4, 5)
    expected[1, 2] = 0
    assert torch.equal(alpha[0, 0], expected)


@pytest.mark.parametrize("compression", ["raw", "tiff_deflate", "tiff_adobe_deflate", "tiff_lzw", "packbits"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_decoder_matches_pillow_on_pillow_files(compression: str, dtype: type) -> None:
    shape = (19, 23, 3) if dtype == np.uint8 else (19, 23)  # Pillow writes 16 bits only as greyscale
    a = RNG.integers(0, np.iinfo(dtype).max + 1, size=shape, dtype=dtype)
    a[:5] = a[0, 0]  # runs, for PackBits / LZW
    options: dict[str, object] = {"compression": compression}
    if compression != "raw":
        options["tiffinfo"] = {317: 2}  # horizontal differencing (applied by libtiff to LZW / Deflate only)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "TIFF", **options)
    assert np.array_equal(_tiff.decode(buf.getvalue()).reshape(a.shape), a)


@pytest.mark.parametrize("compression", ["raw", "tiff_lzw"])
def test_tiff_decoder_reads_big_endian(compression: str) -> None:
    g = RNG.integers(0, 65536, size=(5, 7), dtype=np.uint16)
    buf = io.BytesIO()
    Image.frombytes("I;16B", (7, 5), g.astype(">u2").tobytes()).save(buf, "TIFF", compression=compression)
    assert np.array_equal(_tiff.decode(buf.getvalue())[..., 0], g)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_tiff16_writer_is_readable_by_pillow(channels: int) -> None:
    a = RNG.integers(0, 65536, size=(300, 20, channels), dtype=np.uint16)  # several strips
    data = _tiff.encode(a)
    assert np.array_equal(_tiff.decode(data), a)
    if channels == 1:
        with Image.open(io.BytesIO(data)) as im:
            assert im.mode.startswith("I;16") and np.array_equal(np.asarray(im), a[..., 0])
    elif channels >= 3:
        with Image.open(io.BytesIO(data)) as im:
            assert np.array_equal(np.asarray(im).reshape(a.shape), (a >> 8).astype(np.uint8))


# ------------------------------------------------------------------------------------------ to RGB + alpha


def test_grey_one_bit_and_palette_become_rgb(tmp_path: Path) -> None:
    g = RNG.integers(0, 256, size=(6, 8), dtype=np.uint8)
    Image.fromarray(g).save(tmp_path / "l.png")
    Image.fromarray(g > 127).save(tmp_path / "b.png")
    Image.fromarray(np.stack([g, 255 - g, g // 2], axis=2)).convert("P").save(tmp_path / "p.png")
    grey = read_image(tmp_path / "l.png").image
    assert grey.shape == (1, 3, 6, 8) and torch.equal(grey[0, 0], torch.from_numpy(g / 255).float())
    assert torch.equal(grey[0, 0], grey[0, 1]) and torch.equal(grey[0, 0], grey[0, 2])
    bits = read_image(tmp_path / "b.png").image
    assert set(bits.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(bits[0, 0] == 1, torch.from_numpy(g > 127))
    with Image.open(tmp_path / "p.png") as im:
        expected = to_tensor(np.asarray(im.convert("RGB")))
    loaded = read_image(tmp_path / "p.png")
    assert torch.equal(loaded.image, expected) and loaded.alpha is None and loaded.bit_depth == 8


def test_palette_with_transparency_and_colour_keys_give_alpha(tmp_path: Path) -> None:
    p = Image.new("P", (4, 3))
    p.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    p.putpixel((1, 1), 1)
    p.putpixel((2, 2), 2)
    p.save(tmp_path / "p.png", transparency=0)
    loaded = read_image(tmp_path / "p.png")
    assert loaded.alpha is not None
    assert loaded.alpha[0, 0].tolist() == [[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    assert loaded.image[0, :, 1, 1].tolist() == [1, 0, 0]

    g = np.full((2, 3), 9, np.uint8)
    g[0, 0] = 7
    Image.fromarray(g).save(tmp_path / "l.png", transparency=7)
    alpha = read_image(tmp_path / "l.png").alpha
    assert alpha is not None and alpha[0, 0].tolist() == [[0, 1, 1], [1, 1, 1]]

    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[1, 1] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "rgb.png", transparency=(1, 2, 3))
    alpha = read_image(tmp_path / "rgb.png").alpha
    assert alpha is not None and alpha[0, 0].tolist() == [[1, 1], [1, 0]]


def test_grey_alpha_keeps_alpha(tmp_path: Path) -> None:
    la = RNG.integers(0, 256, size=(3, 4, 2), dtype=np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    loaded = read_image(tmp_path / "la.png")
    assert loaded.alpha is not None
    assert torch.equal(loaded.alpha[0, 0], torch.from_numpy(la[..., 1] / 255).float())
    assert torch.equal(loaded.image[0, 2], torch.from_numpy(la[..., 0] / 255).float())
    la16 = RNG.integers(0, 65536, size=(3, 4, 2), dtype=np.uint16)
    (tmp_path / "la16.png").write_bytes(_png.encode(la16))
    loaded = read_image(tmp_path / "la16.png")
    assert loaded.bit_depth == 16 and loaded.alpha is not None
    assert np.array_equal(np.round(loaded.alpha[0, 0].numpy() * 65535).astype(np.uint16), la16[..., 1])


@pytest.mark.parametrize("ext", ["jpg", "tif"])
def test_cmyk_becomes_rgb(tmp_path: Path, ext: str) -> None:
    im = Image.new("CMYK", (4, 4), (10, 20, 30, 40))
    im.save(tmp_path / f"c.{ext}")
    loaded = read_image(tmp_path / f"c.{ext}")
    assert loaded.image.shape == (1, 3, 4, 4)
    expected = np.asarray(im.convert("RGB"))[0, 0] / 255
    assert np.allclose(loaded.image[0, :, 0, 0].numpy(), expected, atol=3 / 255)


# ------------------------------------------------------------------------------------------ EXIF orientation

# EXIF orientation -> the Pillow transpose that stores an upright image so that orientation restores it.
T = Image.Transpose
STORE = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE, 6: T.ROTATE_90,
         7: T.TRANSVERSE, 8: T.ROTATE_270}


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_all_eight(tmp_path: Path, orientation: int) -> None:
    upright = RNG.integers(0, 256, size=(5, 8, 3), dtype=np.uint8)  # not square: rotations change the shape
    stored = Image.fromarray(upright)
    if orientation != 1:
        stored = stored.transpose(STORE[orientation])
    stored.save(tmp_path / "o.png", exif=_exif(orientation))
    loaded = read_image(tmp_path / "o.png")
    assert np.array_equal(from_tensor(loaded.image), upright)
    with Image.open(tmp_path / "o.png") as im:  # the same as Pillow's own exif_transpose
        assert np.array_equal(from_tensor(loaded.image), np.asarray(ImageOps.exif_transpose(im)))


@pytest.mark.parametrize(("ext", "orientation"), [("jpg", 6), ("jpg", 7), ("tif", 8), ("webp", 5)])
def test_exif_orientation_other_formats(tmp_path: Path, ext: str, orientation: int) -> None:
    upright = (from_tensor(smooth(24, 40))).copy()
    stored = Image.fromarray(upright).transpose(STORE[orientation])
    stored.save(tmp_path / f"o.{ext}", exif=_exif(orientation), **({"quality": 95} if ext != "tif" else {}))
    loaded = from_tensor(read_image(tmp_path / f"o.{ext}").image).astype(int)
    assert loaded.shape == upright.shape
    assert np.abs(loaded - upright).mean() < 3


def test_exif_orientation_sixteen_bit_png(tmp_path: Path) -> None:
    upright = RNG.integers(0, 65536, size=(3, 5, 3), dtype=np.uint16)
    data = _png.encode(np.rot90(upright, 1).copy())  # stored rotated 90 degrees counter-clockwise
    chunk = _png._chunk(b"eXIf", _exif(6).tobytes()[6:])  # eXIf holds the TIFF block without "Exif\0\0"
    at = data.index(b"IDAT") - 4
    (tmp_path / "o.png").write_bytes(data[:at] + chunk + data[at:])
    assert np.array_equal(from_tensor(read_image(tmp_path / "o.png").image, dtype=np.uint16), upright)


# ------------------------------------------------------------------------------------------ read errors


def _expect_read_error(path: Path, pattern: str, **kwargs: object) -> InputError:
    with pytest.raises(InputError, match=pattern) as info:
        read_image(path, **kwargs)  # type: ignore[arg-type]
    assert path.name in str(info.value)
    return info.value


def test_read_errors_name_the_file_and_problem(tmp_path: Path) -> None:
    _expect_read_error(tmp_path / "missing.png", "no such file")
    (tmp_path / "folder.png").mkdir()
    _expect_read_error(tmp_path / "folder.png", "is a folder")
    (tmp_path / "empty.png").write_bytes(b"")
    _expect_read_error(tmp_path / "empty.png", "empty file")
    (tmp_path / "text.png").write_text("this is not an image\n")
    _expect_read_error(tmp_path / "text.png", "not an image file")
    Image.new("RGB", (4, 4)).save(tmp_path / "anim.gif")
    _expect_read_error(tmp_path / "anim.gif", "GIF images are not supported")
    Image.fromarray(np.zeros((3, 3), np.float32)).save(tmp_path / "float.tif")
    _expect_read_error(tmp_path / "float.tif", "mode 'F' is not supported")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow, on a TIFF cut inside its directory
@pytest.mark.parametrize(("ext", "bits"), [("png", 8), ("png", 16), ("jpg", 8), ("webp", 8), ("tif", 16),
                                           ("bmp", 8)])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_files_raise(tmp_path: Path, ext: str, bits: int, keep: float) -> None:
    good = write_image(tmp_path / f"good.{ext}", levels((1, 3, 64, 64), bits), bit_depth=bits)
    data = good.read_bytes()
    bad = tmp_path / f"cut.{ext}"
    bad.write_bytes(data[: int(len(data) * keep)])
    _expect_read_error(bad, "truncated|corrupt|not an image")


def test_unsupported_sixteen_bit_tiff_variant(tmp_path: Path) -> None:
    data = _tiff.encode(RNG.integers(0, 65536, size=(4, 4, 3), dtype=np.uint16))
    deflate = struct.pack("<HHIHH", 259, 3, 1, 8, 0)
    assert data.count(deflate) == 1
    (tmp_path / "jpeg16.tif").write_bytes(data.replace(deflate, struct.pack("<HHIHH", 259, 3, 1, 7, 0)))
    _expect_read_error(tmp_path / "jpeg16.tif", "compression 7 is not supported.*16-bit PNG")


def test_png_without_iend_is_truncated(tmp_path: Path) -> None:
    data = write_image(tmp_path / "good.png", levels((1, 3, 8, 8))).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:-12])
    _expect_read_error(tmp_path / "cut.png", "truncated")


@pytest.mark.parametrize("bits", [8, 16])
def test_corrupt_png_data_raises(tmp_path: Path, bits: int) -> None:
    good = write_image(tmp_path / "good.png", levels((1, 3, 16, 16), bits), bit_depth=bits)
    data = bytearray(good.read_bytes())
    at = data.index(b"IDAT") + 20
    data[at:at + 8] = b"\xff" * 8
    (tmp_path / "bad.png").write_bytes(bytes(data))
    _expect_read_error(tmp_path / "bad.png", "corrupt|CRC|truncated")


def _png_header_only(path: Path, width: int, height: int) -> None:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    path.write_bytes(_png.SIGNATURE + _png._chunk(b"IHDR", ihdr) + _png._chunk(b"IDAT", idat) + _png.IEND)


def test_decompression_bomb_is_refused_with_pixel_count(tmp_path: Path) -> None:
    _png_header_only(tmp_path / "bomb.png", 30_000, 30_000)  # 900 M pixels: Pillow's own error
    err = _expect_read_error(tmp_path / "bomb.png", "900,000,000 pixels")
    assert "max_pixels=" in str(err)
    _png_header_only(tmp_path / "warn.png", 10_000, 10_000)  # 100 M pixels: Pillow would only warn
    _expect_read_error(tmp_path / "warn.png", "100,000,000 pixels exceeds the limit of 89,478,485")
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's global limit is left as it was


def test_max_pixels_is_adjustable(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.png", levels((1, 3, 10, 20)))
    _expect_read_error(path, "200 pixels exceeds the limit of 199", max_pixels=199)
    assert read_image(path, max_pixels=200).image.shape == (1, 3, 10, 20)
    assert read_image(path, max_pixels=None).image.shape == (1, 3, 10, 20)


def test_reading_leaks_no_file_handles(tmp_path: Path) -> None:
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("needs /proc/self/fd")
    paths = [write_image(tmp_path / f"a.{ext}", smooth(8, 8)) for ext in ("png", "jpg", "tif", "webp", "bmp")]
    (tmp_path / "bad.png").write_text("nope")
    before = len(os.listdir(fd_dir))
    for _ in range(5):
        for path in paths:
            read_image(path)
        with pytest.raises(InputError):
            read_image(tmp_path / "bad.png")
    assert len(os.listdir(fd_dir)) <= before


# ------------------------------------------------------------------------------------------ write rules


def test_write_errors(tmp_path: Path) -> None:
    x = smooth(4, 4)
    with pytest.raises(InputError, match=r"unknown image extension '\.gif'.*\.png"):
        write_image(tmp_path / "a.gif", x)
    with pytest.raises(InputError, match="unknown image extension ''"):
        write_image(tmp_path / "noext", x)
    for ext in ("jpg", "bmp", "webp"):
        with pytest.raises(InputError, match="cannot store 16 bits"):
            write_image(tmp_path / f"a.{ext}", x, bit_depth=16)
    with pytest.raises(InputError, match="bit_depth must be 8 or 16"):
        write_image(tmp_path / "a.png", x, bit_depth=12)
    with pytest.raises(InputError, match="quality"):
        write_image(tmp_path / "a.jpg", x, quality=0)
    with pytest.raises(InputError, match=r"shape \(1, 1, 4, 4\)"):
        write_image(tmp_path / "a.png", x[:, :1])
    with pytest.raises(InputError, match="batch of 2"):
        write_image(tmp_path / "a.png", x.expand(2, -1, -1, -1))
    with pytest.raises(InputError, match="divide 8-bit data by 255"):
        write_image(tmp_path / "a.png", x * 255)
    with pytest.raises(InputError, match="alpha has shape"):
        write_image(tmp_path / "a.png", x, alpha=torch.ones(1, 1, 3, 4))
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        write_image(tmp_path / "dir.png", x, overwrite=True)
    assert files_in(tmp_path) == ["dir.png"]


def test_overwrite_and_protect(tmp_path: Path) -> None:
    black, white = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    path = write_image(tmp_path / "a.png", black)
    with pytest.raises(InputError, match="already exists; pass overwrite=True"):
        write_image(path, white)
    assert torch.equal(read_image(path).image, black)
    write_image(path, white, overwrite=True)
    assert torch.equal(read_image(path).image, white)
    # protect: compared as resolved paths, refused even with overwrite=True
    other = tmp_path / "sub" / ".." / "a.png"
    for protect in ([other], other, str(other), [tmp_path / "x.png", os.fspath(path)]):
        with pytest.raises(InputError, match="protected"):
            write_image(path, black, overwrite=True, protect=protect)  # type: ignore[arg-type]
    link = tmp_path / "link.png"
    link.symlink_to(path)
    with pytest.raises(InputError, match="protected"):
        write_image(link, black, overwrite=True, protect=[path])
    with pytest.raises(InputError, match="protected"):
        write_image(tmp_path / "new.png", black, protect=[tmp_path / "new.png"])
    assert torch.equal(read_image(path).image, white)
    write_image(tmp_path / "b.png", black, protect=[path])  # other paths are fine
    assert files_in(tmp_path) == ["a.png", "b.png", "link.png"]


def test_creates_parent_folders(tmp_path: Path) -> None:
    path = write_image(tmp_path / "x" / "y" / "z.png", smooth(3, 3))
    assert path == tmp_path / "x" / "y" / "z.png" and path.is_file()
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="cannot create the folder"):
        write_image(tmp_path / "file" / "a.png", smooth(3, 3))


def test_failed_write_leaves_no_temp_file_and_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    old = write_image(tmp_path / "a.png", torch.zeros(1, 3, 2, 2))

    def broken_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        Path(fp).write_bytes(b"half an image")  # type: ignore[arg-type]
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_image(old, torch.ones(1, 3, 2, 2), overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        write_image(tmp_path / "sub" / "new.jpg", torch.ones(1, 3, 2, 2))
    monkeypatch.undo()
    assert files_in(tmp_path) == ["a.png", "sub"]
    assert files_in(tmp_path / "sub") == []
    assert torch.equal(read_image(old).image, torch.zeros(1, 3, 2, 2))


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    """Every file derain writes is readable as any new file is (0o666 less the umask), also weights, which
    safetensors on its own writes private (0o600)."""
    import torch

    from derain.weights.store import write_weights

    old = os.umask(0o022)
    try:
        write_image(tmp_path / "a.png", torch.zeros(1, 3, 4, 4))
        write_weights(tmp_path / "w.safetensors", model="prn", options={}, state_dict={"x": torch.zeros(2)})
    finally:
        os.umask(old)
    assert [oct(p.stat().st_mode & 0o777) for p in (tmp_path / "a.png", tmp_path / "w.safetensors")] == ["0o644"] * 2


def test_file_created_during_write_is_not_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a.png"
    real_encode = _png.encode

    def racing_encode(pixels: np.ndarray, **kwargs: object) -> bytes:
        target.write_bytes(b"someone else's file")
        return real_encode(pixels)

    monkeypatch.setattr(image_module._png, "encode", racing_encode)
    with pytest.raises(InputError, match="already exists"):
        write_image(target, smooth(3, 3), bit_depth=16)
    assert target.read_bytes() == b"someone else's file"
    assert files_in(tmp_path) == ["a.png"]


def test_image_extensions() -> None:
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"} == IMAGE_EXTENSIONS


# ----------------------------------------------------------------------------------------- tensors <-> arrays


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([np.uint8, np.uint16]).flatmap(lambda dt: hnp.arrays(
    dt, st.tuples(st.integers(1, 6), st.integers(1, 6), st.sampled_from([1, 3])))))
def test_to_tensor_from_tensor_round_trip(array: np.ndarray) -> None:
    t = to_tensor(array)
    assert t.dtype == torch.float32 and t.shape == (1, 3, *array.shape[:2])
    assert float(t.min()) >= 0 and float(t.max()) <= 1
    back = from_tensor(t, dtype=array.dtype)
    assert back.dtype == array.dtype and back.shape == (*array.shape[:2], 3)
    assert np.array_equal(back, np.broadcast_to(array, back.shape))
    assert np.array_equal(from_tensor(t[0], dtype=array.dtype), back)


def test_to_tensor_grey_and_float() -> None:
    g = np.array([[0, 255]], np.uint8)
    assert to_tensor(g).tolist() == [[[[0.0, 1.0]]] * 3]
    f = np.full((2, 2, 3), 0.25, np.float64)
    assert torch.equal(to_tensor(f), torch.full((1, 3, 2, 2), 0.25))


@pytest.mark.parametrize(("array", "pattern"), [
    (np.zeros((2, 2, 4), np.uint8), "split off the alpha"),
    (np.zeros((2, 2, 3, 1), np.uint8), "expected"),
    (np.zeros((0, 2, 3), np.uint8), "at least 1"),
    (np.zeros((2, 2), np.int32), "dtype int32"),
    (np.full((2, 2), 1.5, np.float32), "expected \\[0, 1\\]"),
    (np.full((2, 2), np.nan, np.float32), "expected \\[0, 1\\]"),
])
def test_to_tensor_errors(array: np.ndarray, pattern: str) -> None:
    with pytest.raises(InputError, match=pattern):
        to_tensor(array)
    with pytest.raises(InputError, match="numpy array"):
        to_tensor([[1, 2]])  # type: ignore[arg-type]


def test_from_tensor_rounding_clamping_and_errors() -> None:
    values = [-0.3, 0.0, 0.4 / 255, 0.6 / 255, 254.5 / 255, 1.0, 1.3]
    x = torch.tensor(values).view(1, 1, 1, 7).expand(1, 3, 1, 7)
    assert from_tensor(x)[0, :, 0].tolist() == [0, 0, 0, 1, 254, 255, 255]  # nearest; ties to even
    assert from_tensor(x, dtype=np.uint16)[0, :, 0].tolist()[-2:] == [65535, 65535]
    raw = from_tensor(x, dtype=np.float32)
    assert raw.dtype == np.float32 and raw[0, 0, 0] == pytest.approx(-0.3)  # floats unchanged
    with pytest.raises(InputError, match=r"dtype torch\.int64"):
        from_tensor(torch.zeros(1, 3, 2, 2, dtype=torch.int64))
    with pytest.raises(InputError, match="dtype int32 is not supported"):
        from_tensor(torch.zeros(1, 3, 2, 2), dtype=np.int32)
    with pytest.raises(InputError, match="NaN"):
        from_tensor(torch.full((3, 2, 2), float("nan")))
    with pytest.raises(InputError, match="batch of 3"):
        from_tensor(torch.zeros(3, 3, 2, 2))
    with pytest.raises(InputError, match=r"torch\.Tensor"):
        from_tensor(np.zeros((3, 2, 2)))  # type: ignore[arg-type]


def test_corrupt_zlib_streams_are_errors_never_wrong_pixels(tmp_path: Path) -> None:
    """The Adler-32 checksum at the end of every Deflate stream is checked (PNG image data, TIFF strips): a stream
    cut short, with a wrong checksum or longer than the header says is refused with the file's name."""
    from derain.io import _png

    pixels = np.random.default_rng(5).integers(0, 65535, (24, 20, 3)).astype(np.uint16)
    raw = np.concatenate([np.zeros((24, 1), np.uint8), pixels.astype(">u2").view(np.uint8).reshape(24, -1)], axis=1)
    stream = zlib.compress(raw.tobytes())
    header = struct.pack(">IIBBBBB", 20, 24, 16, 2, 0, 0, 0)

    def png(data: bytes) -> bytes:
        return _png.SIGNATURE + _png._chunk(b"IHDR", header) + _png._chunk(b"IDAT", data) + _png.IEND

    assert np.array_equal(_png.decode(png(stream)).pixels, pixels)
    wrong_sum = stream[:-4] + bytes(b ^ 0xFF for b in stream[-4:])
    longer = zlib.compress(raw.tobytes() + bytes(3 * raw.size))
    for data, why in ((wrong_sum, "incorrect data check"), (stream[:-6], "cut short"), (longer, "longer than")):
        (tmp_path / "bad.png").write_bytes(png(data))
        with pytest.raises(InputError, match=rf"bad\.png.*{why}"):
            read_image(tmp_path / "bad.png")
    # a TIFF strip whose Deflate checksum is wrong (our writer puts its one strip right after the 8-byte header)
    tif = bytearray(_tiff.encode(pixels))
    inflater = zlib.decompressobj()
    inflater.decompress(bytes(tif[8:]))
    tif[len(tif) - len(inflater.unused_data) - 1] ^= 0xFF  # the strip's last byte: its checksum
    (tmp_path / "bad.tif").write_bytes(bytes(tif))
    with pytest.raises(InputError, match=r"bad\.tif.*incorrect data check"):
        read_image(tmp_path / "bad.tif")
