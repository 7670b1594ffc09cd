"""derain's own 16-bit PNG / TIFF codecs against kept libraries: fidelity, robustness, speed and footprint.

Codecs (a library that is not installed is skipped with a note):

    derain                derain.io._png / derain.io._tiff (numpy + zlib), what read_image / write_image use
    tifffile+imagecodecs  imagecodecs.png_encode / png_decode (libpng) for PNG; tifffile with imagecodecs for TIFF
    tifffile-only         tifffile without imagecodecs (its pure-Python fallbacks), TIFF only
    opencv                cv2.imencode / cv2.imdecode(IMREAD_UNCHANGED) (libpng, libtiff; BGR(A) swapped to RGB(A))
    pypng                 pypng (pure Python), PNG only
    pillow                reference only (fidelity): what derain would get from Pillow without its own codecs

1. fidelity: bit-exact round trips of random uint16 RGB / RGBA and uint8 RGB, cross-reads against derain's codecs,
   and reads of foreign variants (TIFF: LZW, PackBits, Deflate+predictor, big-endian, tiled, planar, written by
   tifffile; PNG: Adam7-interlaced, written by pypng or derain).
2. robustness: a fixed-seed corpus of corrupted 16-bit RGB files (truncations, byte flips, structural damage),
   each codec decoding them in a child process so a crash or hang is counted, not fatal.
3. speed at --size (smooth gradient + noise, uint16 RGB, Deflate level 6 everywhere): median encode / decode over
   --repeats, each in its own process (peak memory = growth of the peak RSS during the operation).
4. footprint: installed size, dependencies and Python requirement of each library (wheel sizes with --wheel-dir).

    python benchmarks/codecs.py [--size 6000x4000] [--repeats 3] [--fuzz-cases 200] [--json PATH]
    python benchmarks/codecs.py --sections fidelity fuzz --codecs derain opencv
    python benchmarks/codecs.py --size 3000x2000 --wheel-dir /tmp/wheels --json /tmp/codecs.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import io
import json
import os
import queue
import random
import resource
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CODEC_NAMES = ("derain", "tifffile+imagecodecs", "tifffile-only", "opencv", "pypng", "pillow")
DISTRIBUTIONS = {"derain": (), "tifffile+imagecodecs": ("tifffile", "imagecodecs"), "tifffile-only": ("tifffile",),
                 "opencv": ("opencv-python-headless",), "pypng": ("pypng",), "pillow": ("pillow",)}
KINDS = {"u16 RGB": (np.uint16, 3), "u16 RGBA": (np.uint16, 4), "u8 RGB": (np.uint8, 3)}
FORMATS = ("PNG", "TIFF")
LEVEL = 6  # zlib level for every encoder (derain's default)
FUZZ_SHAPE = (48, 64, 3)
CASE_TIMEOUT_S = 60.0
MEMORY_MARGIN = 4 << 30  # fuzz workers may grow this far past their size after imports (then: MemoryError)

Encode = Callable[[np.ndarray], bytes]
Decode = Callable[[bytes], np.ndarray]


@dataclass
class Codec:
    name: str
    formats: dict[str, tuple[Encode | None, Decode]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------ codecs


def _rgb_swap(a: np.ndarray) -> np.ndarray:
    """RGB(A) <-> BGR(A) for OpenCV."""
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return np.ascontiguousarray(a[..., [2, 1, 0, 3][:a.shape[2]]])
    return a


def _hwc(a: np.ndarray) -> np.ndarray:
    return a[:, :, None] if a.ndim == 2 else a


def _tifffile_without_imagecodecs() -> Any:
    """A second copy of tifffile's module that sees no imagecodecs (as when only tifffile is installed)."""
    import tifffile
    from tifffile import _imagecodecs as fallback

    saved = sys.modules.get("imagecodecs", None)
    sys.modules["imagecodecs"] = None  # type: ignore[assignment]  # makes `import imagecodecs` fail
    sys.modules["_imagecodecs"] = fallback  # tifffile's `import _imagecodecs` fallback, also used lazily
    try:
        spec = importlib.util.spec_from_file_location("_tifffile_pure", tifffile.tifffile.__file__)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["_tifffile_pure"] = module
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["imagecodecs"]
        else:
            sys.modules["imagecodecs"] = saved
    return module


def _tifffile_pair(tf: Any) -> tuple[Encode, Decode]:
    def encode(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        tf.imwrite(buf, a, photometric="rgb" if a.shape[2] >= 3 else "minisblack", compression="zlib",
                   compressionargs={"level": LEVEL}, predictor=True, metadata=None,
                   extrasamples=("unassalpha",) if a.shape[2] in (2, 4) else None)
        return buf.getvalue()

    def decode(data: bytes) -> np.ndarray:
        with tf.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            out = page.asarray()
            if page.planarconfig == 2 and out.ndim == 3:
                out = np.moveaxis(out, 0, -1)
        return _hwc(out)

    return encode, decode


def build_codec(name: str) -> Codec:
    """The codec ``name``; ImportError when its library is not installed."""
    codec = Codec(name)
    if name == "derain":
        from derain.io import _png, _tiff

        codec.formats["PNG"] = (lambda a: _png.encode(a, level=LEVEL), lambda d: _png.decode(d).pixels)
        codec.formats["TIFF"] = (_tiff.encode, _tiff.decode)
    elif name == "tifffile+imagecodecs":
        import imagecodecs
        import tifffile

        codec.formats["PNG"] = (lambda a: imagecodecs.png_encode(a, level=LEVEL),
                                lambda d: _hwc(imagecodecs.png_decode(d)))
        codec.formats["TIFF"] = _tifffile_pair(tifffile)
    elif name == "tifffile-only":
        codec.formats["TIFF"] = _tifffile_pair(_tifffile_without_imagecodecs())
    elif name == "opencv":
        import cv2

        def cv_encode(ext: str, params: list[int]) -> Encode:
            def encode(a: np.ndarray) -> bytes:
                ok, buf = cv2.imencode(ext, _rgb_swap(a), params)
                if not ok:
                    raise ValueError(f"cv2.imencode({ext!r}) returned False")
                return buf.tobytes()
            return encode

        def cv_decode(data: bytes) -> np.ndarray:
            out = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            if out is None:
                raise ValueError("cv2.imdecode returned None")
            return _hwc(_rgb_swap(out))

        tiff_params = [cv2.IMWRITE_TIFF_COMPRESSION, cv2.IMWRITE_TIFF_COMPRESSION_ADOBE_DEFLATE,
                       cv2.IMWRITE_TIFF_PREDICTOR, cv2.IMWRITE_TIFF_PREDICTOR_HORIZONTAL]
        codec.formats["PNG"] = (cv_encode(".png", [cv2.IMWRITE_PNG_COMPRESSION, LEVEL]), cv_decode)
        codec.formats["TIFF"] = (cv_encode(".tiff", tiff_params), cv_decode)
    elif name == "pypng":
        import png

        def pypng_encode(a: np.ndarray, interlace: bool = False) -> bytes:
            h, w, c = a.shape
            writer = png.Writer(w, h, greyscale=c < 3, alpha=c in (2, 4), bitdepth=8 * a.itemsize,
                                compression=LEVEL, interlace=interlace)
            buf = io.BytesIO()
            writer.write(buf, a.reshape(h, w * c))
            return buf.getvalue()

        def pypng_decode(data: bytes) -> np.ndarray:
            w, h, rows, info = png.Reader(bytes=data).read()
            dtype = np.uint16 if info["bitdepth"] == 16 else np.uint8
            out = np.stack([np.frombuffer(bytes(row) if dtype == np.uint8 else row, dtype) for row in rows])
            return out.reshape(h, w, info["planes"])

        codec.formats["PNG"] = (pypng_encode, pypng_decode)
    elif name == "pillow":
        from PIL import Image

        def pil_encode(fmt: str) -> Encode:
            def encode(a: np.ndarray) -> bytes:
                buf = io.BytesIO()
                options = {"compression": "tiff_adobe_deflate"} if fmt == "TIFF" else {}
                Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).save(buf, format=fmt, **options)
                return buf.getvalue()
            return encode

        def pil_decode(data: bytes) -> np.ndarray:
            with Image.open(io.BytesIO(data)) as im:
                return _hwc(np.asarray(im))

        codec.formats["PNG"] = (pil_encode("PNG"), pil_decode)
        codec.formats["TIFF"] = (pil_encode("TIFF"), pil_decode)
    else:
        raise ValueError(f"unknown codec {name!r}")
    return codec


def load_codecs(names: list[str]) -> tuple[dict[str, Codec], list[str]]:
    codecs, notes = {}, []
    for name in names:
        try:
            codecs[name] = build_codec(name)
        except ImportError as exc:
            notes.append(f"{name}: skipped, not installed ({exc})")
    return codecs, notes


# ------------------------------------------------------------------------------------------------------ images


def random_image(kind: str, shape: tuple[int, int] = (61, 97), seed: int = 0) -> np.ndarray:
    dtype, c = KINDS[kind]
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max, (*shape, c), dtype=dtype, endpoint=True)


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint16 RGB: smooth gradients plus Gaussian noise of 48 levels (about a 16-bit sensor's shot noise)."""
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    planes = [0.7 * x + 0.3 * y, 0.5 * (1 - x) + 0.5 * y, 0.5 + 0.4 * np.sin(6 * x + 4 * y)]
    rng = np.random.default_rng(seed)
    out = np.empty((h, w, 3), np.uint16)
    for i, plane in enumerate(planes):
        noise = rng.standard_normal((h, w), dtype=np.float32) * 48
        out[..., i] = np.clip(plane * 60000 + 2000 + noise, 0, 65535)
    return out


def compare(out: Any, ref: np.ndarray) -> str:
    if not isinstance(out, np.ndarray):
        return f"returned {type(out).__name__}"
    if out.dtype != ref.dtype:
        return f"dtype {out.dtype}"
    if out.shape != ref.shape:
        return f"shape {'x'.join(map(str, out.shape))}"
    if not np.array_equal(out, ref):
        return f"values (max diff {int(np.abs(out.astype(np.int64) - ref).max())})"
    return "ok"


def _short(exc: BaseException, limit: int = 90) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------- fidelity


def _trial(encode: Encode | None, decode: Decode | None, ref: np.ndarray, notes: dict[str, str]) -> str:
    if encode is None or decode is None:
        return "-"
    try:
        data = encode(ref)
    except Exception as exc:
        notes.setdefault("enc-err", _short(exc))
        return "enc-err"
    try:
        out = decode(data)
    except Exception as exc:
        notes.setdefault("dec-err", _short(exc))
        return "dec-err"
    return compare(out, ref)


def _foreign_variants(codecs: dict[str, Codec]) -> tuple[dict[str, tuple[bytes, np.ndarray]], list[str]]:
    """16-bit files as other software writes them: TIFF by tifffile (+imagecodecs), Adam7 PNG by pypng/derain."""
    variants: dict[str, tuple[bytes, np.ndarray]] = {}
    notes = []
    rgb, rgba = random_image("u16 RGB", seed=11), random_image("u16 RGBA", seed=12)
    try:
        import imagecodecs  # noqa: F401  (tifffile needs it for LZW and PackBits)
        import tifffile
    except ImportError:
        notes.append("TIFF variants skipped: they are written by tifffile with imagecodecs")
    else:
        settings = {
            "TIFF none": {}, "TIFF LZW": {"compression": "lzw"},
            "TIFF LZW+pred": {"compression": "lzw", "predictor": True},
            "TIFF PackBits": {"compression": "packbits"},
            "TIFF Deflate+pred": {"compression": "zlib", "predictor": True},
            "TIFF Deflate+pred BE": {"compression": "zlib", "predictor": True, "byteorder": ">"},
            "TIFF tiled": {"compression": "zlib", "tile": (16, 16)},
            "TIFF planar": {"compression": "zlib", "planarconfig": "separate"},
            "TIFF RGBA LZW": {"compression": "lzw", "extrasamples": ("unassalpha",)},
        }
        for name, kw in settings.items():
            ref = rgba if "RGBA" in name else rgb
            data = np.moveaxis(ref, -1, 0) if kw.get("planarconfig") == "separate" else ref
            buf = io.BytesIO()
            tifffile.imwrite(buf, data, photometric="rgb", metadata=None, **kw)  # type: ignore[arg-type]
            variants[name] = (buf.getvalue(), ref)
    try:
        import png

        for name, ref in (("PNG Adam7 RGB", rgb), ("PNG Adam7 RGBA", rgba)):
            h, w, c = ref.shape
            buf = io.BytesIO()
            png.Writer(w, h, greyscale=False, alpha=c == 4, bitdepth=16, interlace=True).write(
                buf, ref.reshape(h, w * c))
            variants[name] = (buf.getvalue(), ref)
        notes.append("Adam7 PNGs written by pypng")
    except ImportError:
        from derain.io import _png

        for name, ref in (("PNG Adam7 RGB", rgb), ("PNG Adam7 RGBA", rgba)):
            variants[name] = (_png.encode(ref, interlace=True), ref)
        notes.append("Adam7 PNGs written by derain (pypng not installed)")
    return variants, notes


def fidelity(codecs: dict[str, Codec]) -> dict[str, Any]:
    result: dict[str, Any] = {"roundtrip": {}, "cross": {}, "foreign": {}, "errors": {}}
    images = {kind: random_image(kind, seed=i) for i, kind in enumerate(KINDS)}
    columns = [f"{fmt} {kind}" for fmt in FORMATS for kind in KINDS]
    rows = []
    for name, codec in codecs.items():
        notes: dict[str, str] = {}
        row = {}
        for fmt in FORMATS:
            enc, dec = codec.formats.get(fmt, (None, None))
            for kind, ref in images.items():
                row[f"{fmt} {kind}"] = _trial(enc, dec, ref, notes)
        result["roundtrip"][name] = row
        result["errors"][f"roundtrip {name}"] = notes
        rows.append([name, *(row[c] for c in columns)])
    print("\n1a. round trip (encode, decode, bit-exact compare); 61x97 random pixels")
    print_table(["codec", *columns], rows)

    ours = codecs.get("derain")
    cross_cols = [f"{fmt} {kind}" for fmt in FORMATS for kind in ("u16 RGB", "u16 RGBA")]
    rows = []
    for name, codec in codecs.items():
        if ours is None or name == "derain":
            continue
        notes = {}
        cells = {}
        for fmt in FORMATS:
            for kind in ("u16 RGB", "u16 RGBA"):
                ref = images[kind]
                lib_enc, lib_dec = codec.formats.get(fmt, (None, None))
                our_enc, our_dec = ours.formats[fmt]
                cells[f"derain->lib {fmt} {kind}"] = _trial(our_enc, lib_dec, ref, notes)
                cells[f"lib->derain {fmt} {kind}"] = _trial(lib_enc, our_dec, ref, notes)
        result["cross"][name] = cells
        result["errors"][f"cross {name}"] = notes
        rows.append([name, *(cells[f"derain->lib {c}"] for c in cross_cols),
                     *(cells[f"lib->derain {c}"] for c in cross_cols)])
    if rows:
        print("\n1b. cross-reads: written by derain, read by the library | written by the library, read by derain")
        print_table(["codec", *(f"d->L {c}" for c in cross_cols), *(f"L->d {c}" for c in cross_cols)], rows)

    variants, notes_v = _foreign_variants(codecs)
    if variants:
        rows = []
        for name, codec in codecs.items():
            notes = {}
            cells = {}
            for vname, (data, ref) in variants.items():
                fmt = vname.split()[0]
                dec = codec.formats.get(fmt, (None, None))[1]
                cells[vname] = _trial(lambda _a, d=data: d, dec, ref, notes)
            result["foreign"][name] = cells
            result["errors"][f"foreign {name}"] = notes
            rows.append([name, *cells.values()])
        print(f"\n1c. reading foreign 16-bit files (61x97 random; TIFF by tifffile+imagecodecs; {'; '.join(notes_v)})")
        print_table(["codec", *(v.replace("TIFF ", "").replace("PNG ", "") for v in variants)], rows)
        print("   columns: " + ", ".join(variants))
    errors = [(k, kind, msg) for k, v in result["errors"].items() for kind, msg in v.items()]
    if errors:
        print("   first error of each kind:")
        for where, kind, msg in errors:
            print(f"     {where} {kind}: {msg}")
    return result


# -------------------------------------------------------------------------------------------------- robustness


def _png_chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    chunks, pos = [], 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append((pos, length, data[pos + 4:pos + 8]))
        if data[pos + 4:pos + 8] == b"IEND":
            break
        pos += 12 + length
    return chunks


def _fix_crc(buf: bytearray, pos: int) -> None:
    (length,) = struct.unpack(">I", buf[pos:pos + 4])
    crc = zlib.crc32(bytes(buf[pos + 4:pos + 8 + length])) & 0xFFFFFFFF
    buf[pos + 8 + length:pos + 12 + length] = struct.pack(">I", crc)


def _other(rng: random.Random, v: int, candidates: list[int]) -> int:
    """One of ``candidates`` that differs from ``v`` (every mutation changes something)."""
    return rng.choice([c for c in candidates if c != v])


def _near(rng: random.Random, v: int, top: int) -> int:
    return _other(rng, v, [0, 1, max(v - 1, 0), min(v + 1, top), min(2 * v, top), v // 2, top, rng.randint(0, top)])


def _png_struct(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    buf = bytearray(data)
    chunks = _png_chunks(data)
    idat = [c for c in chunks if c[2] == b"IDAT"]
    op = rng.choice(["ihdr", "ihdr", "idat-flip+crc", "idat-short+crc", "idat-extra+crc", "length", "drop", "type"])
    if op == "ihdr":
        fields = {"width": (16, 4), "height": (20, 4), "depth": (24, 1), "colour": (25, 1), "compression": (26, 1),
                  "filter": (27, 1), "interlace": (28, 1)}
        name = rng.choice(list(fields))
        off, size = fields[name]
        old = int.from_bytes(buf[off:off + size], "big")
        new = _near(rng, old, 2**31 - 1) if size == 4 else _other(rng, old, [0, 1, 2, 3, 4, 6, 7, 8, 16, 255])
        buf[off:off + size] = new.to_bytes(size, "big")
        _fix_crc(buf, 8)
        return bytes(buf), f"IHDR {name} {old}->{new}, CRC fixed"
    if op == "idat-flip+crc":
        pos, length, _ = rng.choice(idat)
        spots = sorted(rng.randrange(length) for _ in range(rng.randint(1, 3)))
        for s in spots:
            buf[pos + 8 + s] ^= rng.randint(1, 255)
        _fix_crc(buf, pos)
        return bytes(buf), f"IDAT bytes {spots} of {length} flipped, CRC fixed"
    if op == "idat-short+crc":
        pos, length, _ = idat[-1]
        keep = rng.randrange(length)
        body = bytes(buf[pos + 8:pos + 8 + keep])
        crc = zlib.crc32(b"IDAT" + body) & 0xFFFFFFFF
        chunk = struct.pack(">I", keep) + b"IDAT" + body + struct.pack(">I", crc)
        new = buf[:pos] + chunk + buf[pos + 12 + length:]
        return bytes(new), f"last IDAT cut to {keep} of {length} bytes, length and CRC fixed"
    if op == "idat-extra+crc":
        pos, length, _ = idat[-1]
        body = bytes(buf[pos + 8:pos + 8 + length]) + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        crc = zlib.crc32(b"IDAT" + body) & 0xFFFFFFFF
        chunk = struct.pack(">I", len(body)) + b"IDAT" + body + struct.pack(">I", crc)
        new = buf[:pos] + chunk + buf[pos + 12 + length:]
        return bytes(new), f"junk appended to the last IDAT ({len(body) - length} bytes), CRC fixed"
    pos, length, kind = rng.choice(chunks)
    if op == "length":
        new = _near(rng, length, 2**32 - 1)
        buf[pos:pos + 4] = struct.pack(">I", new)
        return bytes(buf), f"{kind.decode()} length {length}->{new}"
    if op == "drop":
        return bytes(buf[:pos] + buf[pos + 12 + length:]), f"{kind.decode()} chunk removed"
    i = rng.randrange(4)
    buf[pos + 4 + i] = _other(rng, buf[pos + 4 + i], list(b"AZaz@["))
    return bytes(buf), f"{kind.decode()} type byte {i} -> {bytes(buf[pos + 4:pos + 8])!r} (CRC not fixed)"


_TIFF_TYPES = {1: ("B", 1), 3: ("H", 2), 4: ("I", 4), 6: ("b", 1), 8: ("h", 2), 9: ("i", 4)}


def _tiff_entries(data: bytes) -> tuple[str, int, list[tuple[int, int, int, int]]]:
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (n,) = struct.unpack(order + "H", data[ifd:ifd + 2])
    entries = [(ifd + 2 + 12 * i, *struct.unpack(order + "HHI", data[ifd + 2 + 12 * i:ifd + 10 + 12 * i]))
               for i in range(n)]
    return order, ifd, entries


def _tiff_slots(data: bytes, order: str, entry: tuple[int, int, int, int]) -> tuple[list[int], str, int]:
    """Byte positions of an integer tag's values, its struct code and size ([] for other types)."""
    pos, _, typ, count = entry
    if typ not in _TIFF_TYPES:
        return [], "", 0
    code, size = _TIFF_TYPES[typ]
    start = pos + 8 if count * size <= 4 else struct.unpack(order + "I", data[pos + 8:pos + 12])[0]
    return [start + size * i for i in range(count)], code, size


def _tiff_struct(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    buf = bytearray(data)
    order, ifd, entries = _tiff_entries(data)
    by_tag = {e[1]: e for e in entries}
    op = rng.choice(["value", "value", "value", "type", "count", "entries", "ifd-offset", "strip-short",
                     "strip-flip"])
    if op in ("strip-short", "strip-flip"):
        offsets, code, size = _tiff_slots(data, order, by_tag[273])
        counts, ccode, csize = _tiff_slots(data, order, by_tag[279])
        k = rng.randrange(len(offsets))
        start = struct.unpack(order + code, data[offsets[k]:offsets[k] + size])[0]
        count = struct.unpack(order + ccode, data[counts[k]:counts[k] + csize])[0]
        if op == "strip-short":
            new = rng.randrange(count)
            buf[counts[k]:counts[k] + csize] = struct.pack(order + ccode, new)
            return bytes(buf), f"StripByteCounts[{k}] {count}->{new}"
        spots = sorted(rng.randrange(count) for _ in range(rng.randint(1, 3)))
        for s in spots:
            buf[start + s] ^= rng.randint(1, 255)
        return bytes(buf), f"strip {k} bytes {spots} of {count} flipped"
    if op == "entries":
        n = len(entries)
        new = _other(rng, n, [0, 1, n - 1, n + 1, 0xFFFF])
        buf[ifd:ifd + 2] = struct.pack(order + "H", new)
        return bytes(buf), f"IFD entry count {n}->{new}"
    if op == "ifd-offset":
        new = _other(rng, ifd, [0, 1, 7, len(data) - 2, len(data), rng.randrange(len(data)), ifd + 1])
        buf[4:8] = struct.pack(order + "I", new)
        return bytes(buf), f"IFD offset {ifd}->{new}"
    entry = rng.choice(entries)
    pos, tag, typ, count = entry
    if op == "type":
        new = _other(rng, typ, [0, 1, 2, 3, 4, 5, 7, 13, 16, 0xFFFF])
        buf[pos + 2:pos + 4] = struct.pack(order + "H", new)
        return bytes(buf), f"tag {tag} type {typ}->{new}"
    if op == "count":
        new = _near(rng, count, 2**32 - 1)
        buf[pos + 4:pos + 8] = struct.pack(order + "I", new)
        return bytes(buf), f"tag {tag} count {count}->{new}"
    slots, code, size = _tiff_slots(data, order, entry)
    if not slots or (count * size > 4 and rng.random() < 0.3):  # damage the pointer (or a non-integer value)
        old = struct.unpack(order + "I", data[pos + 8:pos + 12])[0]
        new = _near(rng, old, 2**32 - 1)
        buf[pos + 8:pos + 12] = struct.pack(order + "I", new)
        return bytes(buf), f"tag {tag} value/offset field {old}->{new}"
    i = rng.randrange(len(slots))
    old = struct.unpack(order + code, data[slots[i]:slots[i] + size])[0]
    top = 2 ** (8 * size - (1 if code.islower() else 0)) - 1
    new = _near(rng, old, top)
    buf[slots[i]:slots[i] + size] = struct.pack(order + code, new)
    return bytes(buf), f"tag {tag} value[{i}] {old}->{new}"


def make_corpus(data: bytes, fmt: str, n: int, seed: int) -> list[tuple[str, str, bytes]]:
    """``n`` corrupted copies of ``data``: (kind, description, bytes); about 35% truncations, 35% flips."""
    rng = random.Random(seed)
    n_trunc = n_flip = round(0.35 * n)
    cases = []
    for _ in range(n_trunc):
        cut = rng.randint(1, len(data) - 1)
        cases.append(("truncate", f"cut at {cut} of {len(data)}", data[:cut]))
    for _ in range(n_flip):
        buf = bytearray(data)
        spots = sorted(rng.randrange(len(data)) for _ in range(rng.randint(1, 4)))
        for s in spots:
            buf[s] ^= rng.randint(1, 255)
        cases.append(("flip", f"bytes {spots} flipped", bytes(buf)))
    mutate = _png_struct if fmt == "PNG" else _tiff_struct
    for _ in range(n - n_trunc - n_flip):
        mutated, desc = mutate(data, rng)
        cases.append(("struct", desc, mutated))
    return cases


def _fuzz_worker(codec_name: str, fmt: str, folder: str, start: int) -> None:
    """Child process: decode cases start.. of ``folder``, one result line each on the original stdout."""
    out = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # libraries that print to stdout cannot garble the result lines
    codec = build_codec(codec_name)
    decode = codec.formats[fmt][1]
    vm_pages = int(Path("/proc/self/statm").read_text().split()[0])
    limit = vm_pages * os.sysconf("SC_PAGE_SIZE") + MEMORY_MARGIN
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    ref = np.load(Path(folder) / "original.npy")
    n = len(list(Path(folder).glob("*.bin")))
    print("ready", file=out, flush=True)
    for i in range(start, n):
        data = (Path(folder) / f"{i:04d}.bin").read_bytes()
        try:
            got = decode(data)
        except Exception as exc:
            status, detail = "error", _short(exc, 70)
        else:
            detail = compare(got, ref)
            status = "same" if detail == "ok" else "wrong"
        print(f"{i}\t{status}\t{detail}", file=out, flush=True)


def _reader(stream: Any, q: queue.Queue[str | None]) -> None:
    for line in stream:
        q.put(line)
    q.put(None)


def run_corpus(codec_name: str, fmt: str, folder: Path, n: int) -> list[tuple[str, str]]:
    """Decode every case in child processes; a case that kills or stalls its process is a crash / hang."""
    results: list[tuple[str, str]] = [("missing", "")] * n
    start = 0
    while start < n:
        cmd = [sys.executable, str(Path(__file__).resolve()), "_fuzz-worker", codec_name, fmt, str(folder), str(start)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_reader, args=(proc.stdout, q), daemon=True).start()
        expect, ready = start, False
        while True:
            try:
                line = q.get(timeout=CASE_TIMEOUT_S if ready else 300)
            except queue.Empty:
                proc.kill()
                proc.wait()
                results[expect] = ("hang", f"no answer in {CASE_TIMEOUT_S:.0f} s")
                start = expect + 1
                break
            if line is None:
                rc = proc.wait()
                if not ready:
                    raise RuntimeError(f"fuzz worker for {codec_name} failed to start (exit {rc})")
                if expect < n:
                    how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
                    results[expect] = ("crash", how)
                start = expect + 1 if expect < n else n
                break
            if line.strip() == "ready":
                ready = True
                continue
            idx, status, detail = line.rstrip("\n").split("\t", 2)
            results[int(idx)] = (status, detail)
            expect = int(idx) + 1
    return results


def robustness(codecs: dict[str, Codec], n: int, seed: int, workdir: Path) -> dict[str, Any]:
    base = smooth_image(*FUZZ_SHAPE[:2], seed=seed)
    corpora: dict[str, tuple[str, bytes]] = {}
    if "derain" in codecs:
        corpora["PNG (derain-written)"] = ("PNG", codecs["derain"].formats["PNG"][0](base))  # type: ignore[misc]
        corpora["TIFF (derain, IFD last)"] = ("TIFF", codecs["derain"].formats["TIFF"][0](base))  # type: ignore[misc]
    try:
        import tifffile

        buf = io.BytesIO()
        tifffile.imwrite(buf, base, photometric="rgb", compression="zlib", predictor=True, rowsperstrip=16,
                         metadata=None)
        corpora["TIFF (tifffile, IFD first)"] = ("TIFF", buf.getvalue())
    except ImportError:
        pass
    kinds = ("truncate", "flip", "struct")
    out: dict[str, Any] = {"seed": seed, "cases": n, "corpora": {}}
    rows, remarks = [], []
    for cname, (fmt, data) in corpora.items():
        folder = workdir / f"fuzz-{cname.split()[0]}-{len(out['corpora'])}"
        folder.mkdir()
        np.save(folder / "original.npy", base)
        cases = make_corpus(data, fmt, n, seed)
        for i, (_, _, blob) in enumerate(cases):
            (folder / f"{i:04d}.bin").write_bytes(blob)
        out["corpora"][cname] = {"bytes": len(data), "codecs": {}}
        for name, codec in codecs.items():
            if fmt not in codec.formats or name == "pillow":
                continue
            t0 = time.perf_counter()
            results = run_corpus(name, fmt, folder, n)
            out["corpora"][cname]["codecs"][name] = [
                {"kind": k, "mutation": d, "status": s, "detail": det}
                for (k, d, _), (s, det) in zip(cases, results, strict=True)]
            cells = []
            for kind in kinds:
                stats = [s for (k, _, _), (s, _) in zip(cases, results, strict=True) if k == kind]
                cells.append("/".join(str(stats.count(s)) for s in ("error", "same", "wrong")))
            statuses = [s for s, _ in results]
            rows.append([cname, name, *cells, statuses.count("crash"), statuses.count("hang"),
                         f"{time.perf_counter() - t0:.0f}"])
            shown = 0
            for (k, d, _), (s, det) in zip(cases, results, strict=True):
                if s in ("crash", "hang", "missing") or (s == "wrong" and k == "truncate"):
                    if shown < 4:
                        remarks.append(f"   {cname} / {name}: {s.upper()} on {k} ({d}): {det}")
                    shown += 1
            if shown > 4:
                remarks.append(f"   {cname} / {name}: ... and {shown - 4} more crash / hang / truncation-garbage")
    n_trunc = round(0.35 * n)
    print(f"\n2. robustness: {n} corrupted variants of a {FUZZ_SHAPE[1]}x{FUZZ_SHAPE[0]} 16-bit RGB file per corpus "
          f"(seed {seed}): {n_trunc} truncations, {n_trunc} flips of 1-4 random bytes, {n - 2 * n_trunc} structural")
    print("   cells error/same/wrong: error = clean exception, same = decoded to the original pixels, wrong = "
          "returned other pixels silently;\n   crash = child process killed by a signal, hang = no answer in "
          f"{CASE_TIMEOUT_S:.0f} s. Decoding runs under an address-space limit (MemoryError = error).")
    print_table(["corpus", "codec", "truncate e/s/w", "flip e/s/w", "struct e/s/w", "crash", "hang", "s"], rows)
    for line in remarks:
        print(line)
    return out


# ------------------------------------------------------------------------------------------------------ speed


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> None:
    """Start a fresh peak-RSS (VmHWM) count here (Linux >= 4.0; otherwise the peak includes the imports)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _speed_worker(op: str, codec_name: str, fmt: str, image_path: str, file_path: str, repeats: int) -> None:
    codec = build_codec(codec_name)
    encode, decode = codec.formats[fmt]
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    available = int(meminfo["MemAvailable"].split()[0]) * 1024  # fail with MemoryError, not the OOM killer
    vm = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (vm + int(0.85 * available), resource.getrlimit(resource.RLIMIT_AS)[1]))
    times: list[float] = []
    result: dict[str, Any] = {}
    if op == "enc":
        assert encode is not None
        image = np.load(image_path)
        base = _rss_bytes()
        _reset_peak_rss()
        for _ in range(repeats):
            t0 = time.perf_counter()
            data = encode(image)
            times.append(time.perf_counter() - t0)
        Path(file_path).write_bytes(data)
        result["bytes"] = len(data)
    else:
        data = Path(file_path).read_bytes()
        base = _rss_bytes()
        _reset_peak_rss()
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = decode(data)
            times.append(time.perf_counter() - t0)
        result["exact"] = compare(out, np.load(image_path))
    result["times"] = times
    result["peak_extra_mb"] = max(0, _peak_rss_bytes() - base) / 2**20
    print(json.dumps(result))


def _run_speed(op: str, name: str, fmt: str, image: Path, file: Path, repeats: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "_speed-worker", op, name, fmt, str(image), str(file),
           str(repeats)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 3600 s"}
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        return {"error": lines[-1][:100]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def speed(codecs: dict[str, Codec], width: int, height: int, repeats: int, workdir: Path) -> dict[str, Any]:
    image_path = workdir / "speed.npy"
    np.save(image_path, smooth_image(height, width))
    raw_mb = width * height * 6 / 2**20
    results: dict[str, Any] = {"size": [width, height], "repeats": repeats}
    names = [n for n in codecs if n != "pillow"]
    for name in names:
        for fmt in FORMATS:
            if fmt in codecs[name].formats:
                file = workdir / f"speed-{name}.{fmt.lower()}"
                results[f"{name} {fmt}"] = {"enc": _run_speed("enc", name, fmt, image_path, file, repeats)}
    refs = {"PNG": next((n for n in ("tifffile+imagecodecs", "opencv", "derain") if f"{n} PNG" in results), None),
            "TIFF": next((n for n in ("tifffile+imagecodecs", "tifffile-only", "opencv", "derain")
                          if f"{n} TIFF" in results), None)}
    for name in names:
        for fmt in FORMATS:
            key = f"{name} {fmt}"
            if key not in results or "error" in results[key]["enc"]:
                continue
            file = workdir / f"speed-{name}.{fmt.lower()}"
            results[key]["dec"] = _run_speed("dec", name, fmt, image_path, file, repeats)
            ref = refs[fmt]
            if ref is not None and ref != name and "error" not in results[f"{ref} {fmt}"]["enc"]:
                ref_file = workdir / f"speed-{ref}.{fmt.lower()}"
                results[key]["dec_ref"] = _run_speed("dec", name, fmt, image_path, ref_file, repeats)

    def med(entry: dict[str, Any] | None) -> float | None:
        return statistics.median(entry["times"]) if entry and "times" in entry else None

    def fmt_s(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    rows = []
    for fmt in FORMATS:
        ours_enc, ours_dec = (med(results.get(f"derain {fmt}", {}).get(k)) for k in ("enc", "dec"))
        for name in names:
            r = results.get(f"{name} {fmt}")
            if r is None:
                continue
            enc, dec, dref = med(r["enc"]), med(r.get("dec")), med(r.get("dec_ref"))
            size = r["enc"].get("bytes")
            err = r["enc"].get("error") or r.get("dec", {}).get("error") or ""
            rows.append([
                fmt, name, fmt_s(enc), fmt_s(dec), fmt_s(dref) if name != refs[fmt] else "(ref)",
                "-" if size is None else f"{size / 2**20:.1f}", "-" if size is None else f"{size / 2**20 / raw_mb:.3f}",
                f"{ours_enc / enc:.2f}" if ours_enc and enc else "-",
                f"{ours_dec / dec:.2f}" if ours_dec and dec else "-",
                r.get("dec", {}).get("exact", "-"), f"{r['enc'].get('peak_extra_mb', 0):.0f}",
                f"{r.get('dec', {}).get('peak_extra_mb', 0):.0f}", err[:60]])
    print(f"\n3. speed: {width}x{height} uint16 RGB ({raw_mb:.0f} MiB raw), gradient + noise, Deflate level {LEVEL}, "
          f"median of {repeats}; each in a fresh process; 'dec ref' = decoding the file written by "
          f"{refs['PNG']} (PNG) / {refs['TIFF']} (TIFF); speedup = derain time / codec time (>1: faster than derain)")
    print_table(["fmt", "codec", "enc s", "dec s", "dec ref s", "MiB", "ratio", "enc x", "dec x", "exact",
                 "enc peak MiB", "dec peak MiB", "error"], rows)
    results["refs"] = refs
    return results


# --------------------------------------------------------------------------------------------------- footprint


def _applies(requirement: str) -> bool:
    """Whether a Requires-Dist line applies to this interpreter without extras."""
    if ";" not in requirement:
        return True
    marker = requirement.split(";", 1)[1]
    try:
        from packaging.markers import Marker
    except ImportError:
        return "extra ==" not in marker
    return Marker(marker).evaluate({"extra": ""})


def footprint(codecs: dict[str, Codec], wheel_dir: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rows = []
    src = Path(__file__).resolve().parents[1] / "src" / "derain" / "io"
    own = [src / "_png.py", src / "_tiff.py"]
    if all(p.exists() for p in own):
        lines = sum(len(p.read_text().splitlines()) for p in own)
        size = sum(p.stat().st_size for p in own)
        out["derain"] = {"lines": lines, "bytes": size}
        rows.append(["derain _png.py + _tiff.py", "-", f"{size / 1024:.0f} KiB ({lines} lines)", "-", "numpy (+zlib)",
                     "(derain's)"])
    dists = sorted({d for name in codecs for d in DISTRIBUTIONS[name]})
    for dist_name in dists:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            continue
        files = dist.files or []
        installed = 0
        for f in files:
            path = Path(str(f.locate()))
            if path.is_file():
                installed += path.stat().st_size
        requires = [r.split(";")[0].strip() for r in dist.requires or [] if _applies(r)]
        wheel = "-"
        if wheel_dir is not None:
            stem = dist_name.replace("-", "_").lower()
            found = [w for w in wheel_dir.glob("*.whl") if w.name.lower().startswith(stem + "-")]
            if found:
                wheel = f"{found[0].stat().st_size / 2**20:.2f} MiB"
        meta = dist.metadata
        out[dist_name] = {"version": dist.version, "installed_bytes": installed, "requires": requires,
                          "requires_python": meta.get("Requires-Python"), "wheel": wheel}
        rows.append([dist_name, dist.version, f"{installed / 2**20:.1f} MiB", wheel,
                     ", ".join(requires) or "-", meta.get("Requires-Python") or "-"])
    print("\n4. footprint (installed size from each distribution's RECORD, bundled .libs included)")
    print_table(["distribution", "version", "installed", "wheel", "requires", "python"], rows)
    return out


# -------------------------------------------------------------------------------------------------------- main


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(headers[i]), *(len(r[i]) for r in cells)) if cells else len(headers[i])
              for i in range(len(headers))]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like 6000x4000, got {text!r}") from exc
    return w, h


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_fuzz-worker":
        _fuzz_worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_speed-worker":
        _speed_worker(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], int(sys.argv[7]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=(6000, 4000), help="speed image, WxH (default 6000x4000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fuzz-cases", type=int, default=200, help="corrupted variants per corpus file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--codecs", nargs="+", choices=CODEC_NAMES, default=list(CODEC_NAMES))
    parser.add_argument("--sections", nargs="+", choices=("fidelity", "fuzz", "speed", "footprint"),
                        default=["fidelity", "fuzz", "speed", "footprint"])
    parser.add_argument("--wheel-dir", type=Path, default=None, help="folder of downloaded wheels, for their sizes")
    parser.add_argument("--json", type=Path, default=None, help="also write every result here")
    args = parser.parse_args()

    codecs, notes = load_codecs(args.codecs)
    versions = {}
    for name in codecs:
        for dist in DISTRIBUTIONS[name]:
            versions[dist] = importlib.metadata.version(dist)
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs; "
          + ", ".join(f"{k} {v}" for k, v in versions.items()))
    for note in notes:
        print(note)
    report: dict[str, Any] = {"versions": versions, "notes": notes}
    with tempfile.TemporaryDirectory(prefix="derain-codecs-") as tmp:
        if "fidelity" in args.sections:
            report["fidelity"] = fidelity(codecs)
        if "fuzz" in args.sections:
            report["robustness"] = robustness(codecs, args.fuzz_cases, args.seed, Path(tmp))
        if "speed" in args.sections:
            report["speed"] = speed(codecs, *args.size, args.repeats, Path(tmp))
        if "footprint" in args.sections:
            report["footprint"] = footprint(codecs, args.wheel_dir)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1, default=str))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
