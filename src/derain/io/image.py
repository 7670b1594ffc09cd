"""Read and write image files as derain's image convention: float32 ``(1, 3, H, W)`` RGB in ``[0, 1]``.

Formats: PNG, JPEG, BMP, TIFF and WebP, at 8 or 16 bits per sample. Greyscale, 1-bit and palette images are
expanded to RGB, CMYK and YCbCr converted to RGB; an alpha channel (RGBA, LA, palette transparency, a tRNS
colour key) is returned separately and can be written back; the EXIF orientation tag is applied.

Pillow reads 16-bit RGB(A) PNG and TIFF truncated to 8 bits and cannot write them, so those go through the
small numpy + zlib codecs in ``_png.py`` and ``_tiff.py``; 16-bit greyscale TIFF is read by Pillow, 16-bit
PNG of every colour type by ``_png.py``.

Decisions: alpha cannot be written to JPEG or BMP (:class:`InputError`: drop it explicitly with ``alpha=None``
or choose PNG/TIFF/WebP); 16 bits only for PNG and TIFF; WebP is written lossy at ``quality`` (alpha itself
losslessly); only the first frame of a multi-frame file is read.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from derain.errors import InputError
from derain.io import _png, _tiff
from derain.io.atomic import atomic_write, check_target
from derain.types import check_image

PathLike = str | os.PathLike[str]

FORMAT_BY_EXTENSION = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF",
                       ".tiff": "TIFF", ".webp": "WEBP"}
IMAGE_EXTENSIONS = frozenset(FORMAT_BY_EXTENSION)
FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")
DEFAULT_MAX_PIXELS = 89_478_485
"""Largest image (width x height) :func:`read_image` opens by default, Pillow's decompression-bomb limit."""

_PILLOW_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "BMP": "BMP", "TIFF": "TIFF", "WEBP": "WEBP"}
_ORIENT = {  # EXIF orientation -> how to turn the stored (H, W, C) array upright
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}
_MAX_SIDE = {"JPEG": 65_535, "WEBP": 16_383}
_PILLOW_LIMIT_LOCK = threading.Lock()


@dataclass(frozen=True)
class LoadedImage:
    """An image file's pixels in derain's convention, plus what the file held."""

    image: Tensor  # (1, 3, H, W) float32 RGB in [0, 1], upright (EXIF orientation applied)
    alpha: Tensor | None  # (1, 1, H, W) float32 in [0, 1], or None when the file has no transparency
    bit_depth: int  # 8 or 16
    format: str  # "PNG", "JPEG", "BMP", "TIFF" or "WEBP"
    path: Path


# ----------------------------------------------------------------------------------------- arrays <-> tensors


def to_tensor(array: np.ndarray) -> Tensor:
    """``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` uint8 / uint16 / float array -> ``(1, 3, H, W)`` float32.

    Integers are scaled by 1/255 or 1/65535; floats must already lie in [0, 1]; greyscale is repeated to RGB.
    """
    if not isinstance(array, np.ndarray):
        raise InputError(f"to_tensor expects a numpy array, got {type(array).__name__}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        has_alpha = array.ndim == 3 and array.shape[2] in (2, 4)
        hint = " (split off the alpha channel first: array[..., :3])" if has_alpha else ""
        raise InputError(f"array has shape {array.shape}; expected (H, W), (H, W, 1) or (H, W, 3){hint}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"array has shape {array.shape}; height and width must be at least 1")
    if array.dtype == np.uint8 or array.dtype == np.uint16:
        scale = np.float32(255 if array.dtype == np.uint8 else 65535)
        x = array.astype(np.float32) / scale
    elif np.issubdtype(array.dtype, np.floating):
        x = array.astype(np.float32)
        lo, hi = float(x.min()), float(x.max())
        if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
            raise InputError(f"float array has values in [{lo:.4g}, {hi:.4g}]; expected [0, 1] "
                             "(divide 8-bit data by 255, 16-bit data by 65535)")
    else:
        raise InputError(f"array has dtype {array.dtype}; expected uint8, uint16 or a float type in [0, 1]")
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)
    return t.expand(3, -1, -1).contiguous()[None]


def _quantize(x: Tensor, dtype: np.dtype[Any]) -> np.ndarray:
    """Float CHW tensor -> HWC array of ``dtype``; integers: clamp to [0, 1], round to nearest (ties even)."""
    x = x.detach().to("cpu", torch.float32)
    if dtype == np.uint8 or dtype == np.uint16:
        peak = 255.0 if dtype == np.uint8 else 65535.0
        x = (x.clamp(0, 1) * peak).round()
        return x.permute(1, 2, 0).numpy().astype(dtype)
    return np.ascontiguousarray(x.permute(1, 2, 0).numpy().astype(dtype))


def from_tensor(image: Tensor, *, dtype: Any = np.uint8) -> np.ndarray:
    """``(1, 3, H, W)`` or ``(3, H, W)`` float tensor -> ``(H, W, 3)`` array of ``dtype``.

    For uint8 / uint16 values are clamped to [0, 1] and rounded to the nearest level; float dtypes get the
    values unchanged. Values slightly outside [0, 1] (an unclamped model output) are accepted; values far
    outside (0-255 data, say) raise :class:`InputError`.
    """
    if isinstance(image, torch.Tensor) and image.ndim == 3:
        image = image[None]
    check_image(image, name="image", tolerance=0.5)
    if image.shape[0] != 1:
        raise InputError(f"image has shape {tuple(image.shape)}: a batch of {image.shape[0]}; "
                         "convert one image at a time (image[i])")
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        msg = f"dtype {dtype!r} is not a numpy dtype; use np.uint8, np.uint16 or np.float32"
        raise InputError(msg) from exc
    if dt not in (np.uint8, np.uint16) and not np.issubdtype(dt, np.floating):
        raise InputError(f"dtype {dt} is not supported; use np.uint8, np.uint16 or a float dtype")
    return _quantize(image[0], dt)


# --------------------------------------------------------------------------------------------------- reading


def _check_file(path: Path) -> None:
    if not path.exists():
        problem = "broken symbolic link" if path.is_symlink() else "no such file"
        raise InputError(f"{path}: {problem}")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image file (derain.data.PairedFolder reads folders)")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")


def _open(path: Path, max_pixels: int | None) -> Image.Image:
    """Open lazily (header only) with derain's own pixel limit in place of Pillow's."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                im = Image.open(path)
            except Image.DecompressionBombError:
                # Past twice Pillow's limit: reopen without it (header only) to learn the size; ours applies.
                with _PILLOW_LIMIT_LOCK:
                    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                    try:
                        im = Image.open(path)
                    finally:
                        Image.MAX_IMAGE_PIXELS = saved
    except UnidentifiedImageError as exc:
        raise InputError(f"{path}: not an image file, or a corrupt one (its content matches no image format; "
                         f"supported: {', '.join(FORMATS)})") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except Exception as exc:
        raise InputError(f"{path}: corrupt image header ({exc})") from exc
    w, h = im.size
    if max_pixels is not None and w * h > max_pixels:
        im.close()
        raise InputError(f"{path}: {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} pixels "
                         f"(a guard against decompression bombs); if you trust this file, pass "
                         f"max_pixels={w * h} (or max_pixels=None) to read_image")
    return im


_GREY16 = ("I;16", "I;16L", "I;16B", "I;16N")
_CONVERT = {"1": "L", "PA": "RGBA", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB", "CMYK": "RGB", "YCbCr": "RGB"}


def _pillow_pixels(im: Image.Image, path: Path) -> np.ndarray:
    """A loaded Pillow image -> (H, W, C) uint8 / uint16 array, C in 1..4 (2 and 4 carry alpha)."""
    mode = im.mode
    if mode in _GREY16:
        return np.asarray(im).astype(np.uint16)[:, :, None]
    rgba_palette = mode == "P" and im.palette is not None and im.palette.mode == "RGBA"
    keyed = "transparency" in im.info or rgba_palette
    if mode in ("L", "RGB", "P") and keyed:
        im = im.convert("LA" if mode == "L" else "RGBA")
    elif mode == "P":
        im = im.convert("RGB")
    elif mode in _CONVERT:
        im = im.convert(_CONVERT[mode])
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        raise InputError(f"{path}: image mode {mode!r} is not supported; save it as 8- or 16-bit "
                         "greyscale or RGB(A)")
    a = np.asarray(im)
    return a[:, :, None] if a.ndim == 2 else a


def _orientation(get_exif: Callable[[], Image.Exif]) -> int:
    """The EXIF orientation (1-8); 1 when there is none or the EXIF block cannot be parsed."""
    try:
        value = get_exif().get(0x0112, 1)
    except Exception:  # a damaged EXIF block should not make the pixels unreadable
        return 1
    return value if value in _ORIENT else 1


def _exif_from_bytes(data: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif.load(data)
    return exif


def _decode(im: Image.Image, path: Path, fmt: str) -> tuple[np.ndarray, int]:
    """Pixels as (H, W, C) integers plus the EXIF orientation, choosing the decoder that keeps every bit."""
    if fmt == "PNG":
        data = path.read_bytes()
        if _png.IEND not in data:  # Pillow reads a PNG cut right after its pixel data without complaint
            raise _png.PngError("truncated file (no IEND chunk)")
        if _png.read_header(data).bit_depth == 16:
            png = _png.decode(data)
            pixels = png.pixels
            if png.transparent is not None and pixels.shape[2] in (1, 3):
                key = (pixels == np.array(png.transparent, np.uint16)).all(axis=2, keepdims=True)
                pixels = np.concatenate([pixels, np.where(key, 0, 65535).astype(np.uint16)], axis=2)
            exif = png.exif
            return pixels, (1 if exif is None else _orientation(lambda: _exif_from_bytes(exif)))
    if fmt == "TIFF" and 16 in im.tag_v2.get(258, ()) and im.mode not in _GREY16:  # type: ignore[attr-defined]
        return _tiff.decode(path.read_bytes()), _orientation(im.getexif)
    im.load()
    return _pillow_pixels(im, path), _orientation(im.getexif)


def read_image(path: PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read an image file as a :class:`LoadedImage`.

    Raises :class:`InputError` naming the file when it is missing, a folder, empty, truncated, corrupt, not an
    image, in an unsupported format or mode, or larger than ``max_pixels`` (``None``: no limit).
    """
    path = Path(path)
    _check_file(path)
    with _open(path, max_pixels) as im:
        fmt = _PILLOW_FORMATS.get(im.format or "")
        if fmt is None:
            raise InputError(f"{path}: {im.format} images are not supported; supported: {', '.join(FORMATS)} "
                             "(convert it to PNG)")
        try:
            pixels, orientation = _decode(im, path, fmt)
        except (InputError, MemoryError):
            raise
        except _png.PngError as exc:
            raise InputError(f"{path}: cannot decode this PNG file: {exc}") from exc
        except _tiff.TiffError as exc:
            raise InputError(f"{path}: cannot decode this 16-bit TIFF file: {exc} (derain reads 16-bit "
                             "colour TIFF with its own small decoder; re-save it as 16-bit PNG)") from exc
        except Exception as exc:  # Pillow reports bad data as OSError, SyntaxError, ValueError, EOFError...
            raise InputError(f"{path}: truncated or corrupt {fmt} file ({exc})") from exc
    bit_depth = 16 if pixels.dtype == np.uint16 else 8
    pixels = _ORIENT[orientation](pixels)
    colour, alpha = (pixels[..., :-1], pixels[..., -1:]) if pixels.shape[2] in (2, 4) else (pixels, None)
    alpha_t = None if alpha is None else to_tensor(alpha)[:, :1]
    return LoadedImage(to_tensor(colour), alpha_t, bit_depth, fmt, path)


# --------------------------------------------------------------------------------------------------- writing


def _alpha_array(alpha: Tensor, height: int, width: int, dtype: np.dtype[Any]) -> np.ndarray:
    if not isinstance(alpha, torch.Tensor) or not alpha.is_floating_point():
        got = getattr(alpha, "dtype", type(alpha).__name__)
        raise InputError(f"alpha must be a float tensor in [0, 1], got {got}")
    shape = tuple(alpha.shape)
    if shape not in ((1, 1, height, width), (1, height, width), (height, width)):
        raise InputError(f"alpha has shape {shape}; expected (1, 1, {height}, {width}) to match the image")
    a = alpha.reshape(1, 1, height, width)
    check_image(a.expand(1, 3, height, width), name="alpha", tolerance=0.5)
    return _quantize(a[0], dtype)


def write_image(
    path: PathLike,
    image: Tensor,
    *,
    alpha: Tensor | None = None,
    bit_depth: int = 8,
    quality: int = 95,
    overwrite: bool = False,
    protect: Iterable[PathLike] | PathLike = (),
) -> Path:
    """Write ``image`` ((1, 3, H, W) or (3, H, W) float in [0, 1]) to ``path``, in the extension's format.

    Values are clamped and rounded to the nearest 8- or 16-bit level (16 bits: PNG and TIFF only). ``alpha``
    ((1, 1, H, W) in [0, 1]) is stored for PNG, TIFF and WebP. ``quality`` (1-100) applies to JPEG and WebP.
    Refuses to replace an existing file unless ``overwrite``, and never replaces any path in ``protect``
    (the inputs, say). Parent folders are created; the file appears atomically (temp file + rename).
    """
    path = Path(path)
    fmt = FORMAT_BY_EXTENSION.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unknown image extension {path.suffix!r}; "
                         f"valid: {', '.join(sorted(IMAGE_EXTENSIONS))}")
    if bit_depth not in (8, 16) or isinstance(bit_depth, bool):
        raise InputError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    if bit_depth == 16 and fmt not in ("PNG", "TIFF"):
        raise InputError(f"{path}: {fmt} cannot store 16 bits per sample; use .png or .tif, or bit_depth=8")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise InputError(f"quality must be an integer from 1 to 100, got {quality!r}")
    if alpha is not None and fmt in ("JPEG", "BMP"):
        raise InputError(f"{path}: {fmt} cannot store transparency; write .png, .tif or .webp, "
                         "or pass alpha=None to drop the alpha channel")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name with an image extension")
    check_target(path, overwrite=overwrite, protect=protect)

    dtype = np.dtype(np.uint16 if bit_depth == 16 else np.uint8)
    pixels = from_tensor(image, dtype=dtype)
    height, width = pixels.shape[:2]
    if fmt in _MAX_SIDE and max(height, width) > _MAX_SIDE[fmt]:
        raise InputError(f"{path}: {width}x{height} is too large for {fmt} (at most {_MAX_SIDE[fmt]} pixels "
                         "a side); use .png or .tif")
    if alpha is not None:
        pixels = np.concatenate([pixels, _alpha_array(alpha, height, width, dtype)], axis=2)

    with atomic_write(path, overwrite=overwrite, protect=protect) as tmp:
        if fmt == "TIFF":
            tmp.write_bytes(_tiff.encode(pixels))
        elif fmt == "PNG" and bit_depth == 16:
            tmp.write_bytes(_png.encode(pixels))
        else:
            options: dict[str, Any] = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
            if fmt == "WEBP" and alpha is not None:
                options["exact"] = True  # keep colours under transparent pixels
            Image.fromarray(pixels).save(tmp, format=fmt, **options)
    return path
