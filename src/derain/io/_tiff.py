"""A small baseline-TIFF codec for what Pillow cannot do: 16-bit RGB and RGBA (Pillow reads them truncated to
8 bits and cannot write them).

Decodes strip-organised, unsigned 8- or 16-bit greyscale / RGB images with optional extra (alpha) samples,
interleaved (chunky), uncompressed, Deflate, LZW or PackBits, with or without horizontal differencing. Encodes
the same (Deflate + horizontal differencing, chunky, little-endian). Errors are :class:`TiffError`; the
caller adds the file name. Everything else (JPEG-in-TIFF, tiles, floats, palettes, CMYK...) is left to
Pillow or refused.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from derain.io._png import PngError, inflate

_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
_TYPE_CODES = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i"}
_STRIP_BYTES = 1 << 18

WIDTH, HEIGHT, BITS, COMPRESSION, PHOTOMETRIC = 256, 257, 258, 259, 262
STRIP_OFFSETS, SAMPLES, ROWS_PER_STRIP, STRIP_COUNTS, PLANAR = 273, 277, 278, 279, 284
PREDICTOR, TILE_WIDTH, EXTRA_SAMPLES, SAMPLE_FORMAT = 317, 322, 338, 339


class TiffError(ValueError):
    """The bytes are not a TIFF this codec can decode (the message says why)."""


def read_tags(data: bytes) -> tuple[str, dict[int, tuple[int, ...]]]:
    """Byte order (``"<"`` or ``">"``) and the integer-valued tags of the first image directory."""
    if data[:4] == b"II*\x00":
        order = "<"
    elif data[:4] == b"MM\x00*":
        order = ">"
    elif data[:4] in (b"II+\x00", b"MM\x00+"):
        raise TiffError("BigTIFF files are not supported")
    else:
        raise TiffError("not a TIFF file (bad header)")
    (ifd,) = struct.unpack(order + "I", data[4:8])
    if ifd + 2 > len(data):
        raise TiffError("truncated file (image directory missing)")
    (count,) = struct.unpack(order + "H", data[ifd:ifd + 2])
    if ifd + 2 + 12 * count > len(data):
        raise TiffError("truncated file (image directory cut short)")
    tags: dict[int, tuple[int, ...]] = {}
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, typ, n = struct.unpack(order + "HHI", data[entry:entry + 8])
        if typ not in _TYPE_CODES:
            continue
        size = _TYPE_SIZES[typ] * n
        if size <= 4:
            start = entry + 8
        else:
            (start,) = struct.unpack(order + "I", data[entry + 8:entry + 12])
        if start + size > len(data):
            raise TiffError(f"truncated file (values of tag {tag} lie past the end)")
        tags[tag] = struct.unpack(f"{order}{n}{_TYPE_CODES[typ]}", data[start:start + size])
    return order, tags


def _lzw_decode(data: bytes, expected: int) -> bytes:
    """TIFF LZW (MSB-first codes, 9-12 bits, early code-width change)."""
    if data[:2] == b"\x00\x01":
        raise TiffError("old-style (pre-TIFF 6.0) LZW data is not supported")
    out = bytearray()
    table = [bytes([i]) for i in range(256)] + [b"", b""]
    padded = data + b"\x00\x00\x00"
    total, pos, width, prev = 8 * len(data), 0, 9, b""
    while pos + width <= total and len(out) < expected:
        i = pos >> 3
        code = ((padded[i] << 16 | padded[i + 1] << 8 | padded[i + 2]) >> (24 - (pos & 7) - width)) & (
            (1 << width) - 1)
        pos += width
        if code == 256:
            del table[258:]
            width, prev = 9, b""
            continue
        if code == 257:
            break
        if not prev:
            if code > 255:
                raise TiffError("corrupt LZW data (stream does not start with a literal)")
            entry = table[code]
        elif code < len(table):
            entry = table[code]
            table.append(prev + entry[:1])
        elif code == len(table):
            entry = prev + prev[:1]
            table.append(entry)
        else:
            raise TiffError(f"corrupt LZW data (code {code} before it was defined)")
        out += entry
        prev = entry
        if len(table) >= (1 << width) - 1 and width < 12:
            width += 1
    return bytes(out)


def _unpack_bits(data: bytes, expected: int) -> bytes:
    """PackBits run-length decoding."""
    out = bytearray()
    i = 0
    while i < len(data) and len(out) < expected:
        n = data[i]
        if n < 128:
            out += data[i + 1:i + 2 + n]
            i += 2 + n
        else:
            if n > 128:
                out += data[i + 1:i + 2] * (257 - n)
            i += 2 if n > 128 else 1
    return bytes(out)


def _inflate(chunk: bytes, compression: int, expected: int) -> bytes:
    if compression == 1:
        return chunk
    if compression in (8, 32946):
        try:
            return inflate(chunk, expected, "Deflate data")
        except PngError as exc:  # one zlib stream checker, shared with the PNG codec
            raise TiffError(str(exc)) from exc
    if compression == 5:
        return _lzw_decode(chunk, expected)
    if compression == 32773:
        return _unpack_bits(chunk, expected)
    raise TiffError(f"compression {compression} is not supported (only none, Deflate, LZW and PackBits)")


def decode(data: bytes) -> np.ndarray:
    """Decode the first image as an (H, W, C) uint8 or uint16 array (C = grey/RGB samples + extra samples)."""
    order, tags = read_tags(data)

    def one(tag: int, default: int | None = None) -> int:
        if tag in tags:
            return tags[tag][0]
        if default is None:
            raise TiffError(f"required tag {tag} is missing")
        return default

    if TILE_WIDTH in tags:
        raise TiffError("tiled TIFF is not supported here (only strips)")
    width, height, samples = one(WIDTH), one(HEIGHT), one(SAMPLES, 1)
    bits = set(tags.get(BITS, (1,)))
    photometric, compression = one(PHOTOMETRIC), one(COMPRESSION, 1)
    planar, predictor = one(PLANAR, 1), one(PREDICTOR, 1)
    if len(bits) != 1 or next(iter(bits)) not in (8, 16) or set(tags.get(SAMPLE_FORMAT, (1,))) != {1}:
        raise TiffError(f"samples of {sorted(bits)} bits / format {tags.get(SAMPLE_FORMAT)} are not "
                        "supported (only unsigned 8 or 16 bits)")
    colour = {0: 1, 1: 1, 2: 3}.get(photometric)
    if colour is None or samples < colour or samples > colour + 1:
        raise TiffError(f"photometric interpretation {photometric} with {samples} samples is not supported "
                        "(only greyscale or RGB, optionally with alpha)")
    if predictor not in (1, 2):  # 3 is the floating-point predictor
        raise TiffError(f"predictor {predictor} is not supported")
    if planar != 1:
        raise TiffError("planar (separate) sample layout is not supported, only interleaved")
    if width == 0 or height == 0:
        raise TiffError("image has zero width or height")
    depth = next(iter(bits))
    dtype = np.dtype(order + ("u2" if depth == 16 else "u1"))
    rps = min(one(ROWS_PER_STRIP, height), height)
    offsets = tags.get(STRIP_OFFSETS)
    strips = -(-height // rps)
    if offsets is None or len(offsets) < strips:
        raise TiffError("strip offsets missing or too few")
    counts = tags.get(STRIP_COUNTS)
    if counts is None:
        if compression != 1:
            raise TiffError("strip byte counts missing")
        counts = tuple(rps * width * samples * dtype.itemsize for _ in offsets)

    out = np.empty((height, width, samples), dtype.newbyteorder("="))
    for k in range(strips):
        rows = min(rps, height - k * rps)
        expected = rows * width * samples * dtype.itemsize
        start, size = offsets[k], counts[k]
        if start + size > len(data):
            raise TiffError(f"truncated file (strip {k} lies past the end of the data)")
        raw = _inflate(data[start:start + size], compression, expected)
        if len(raw) < expected:
            raise TiffError(f"truncated image data (strip {k}: {len(raw)} of {expected} bytes)")
        block = np.frombuffer(raw[:expected], dtype).reshape(rows, width, samples)
        if predictor == 2 and compression not in (1, 32773):  # as libtiff: for LZW and Deflate only
            block = np.cumsum(block, axis=1, dtype=block.dtype.newbyteorder("="))
        out[k * rps:k * rps + rows] = block
    if photometric == 0:  # WhiteIsZero
        out[..., 0] = np.iinfo(out.dtype).max - out[..., 0]
    return out


def encode(pixels: np.ndarray) -> bytes:
    """Encode ``pixels`` ((H, W, C) uint8 or uint16, C in 1..4; 2 and 4 carry alpha) as little-endian TIFF."""
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4) or pixels.dtype not in (np.uint8, np.uint16):
        raise TiffError(f"cannot encode an array of shape {pixels.shape} and dtype {pixels.dtype}")
    height, width, samples = pixels.shape
    little = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False)
    diff = little.copy()
    diff[:, 1:] -= little[:, :-1]  # horizontal differencing (predictor 2), modulo 2**bits
    rowbytes = width * samples * pixels.dtype.itemsize
    rps = max(1, min(height, _STRIP_BYTES // max(rowbytes, 1)))
    strips = [zlib.compress(diff[y:y + rps].tobytes(), 6) for y in range(0, height, rps)]

    body = bytearray(b"II*\x00\x00\x00\x00\x00")
    offsets = []
    for strip in strips:
        offsets.append(len(body))
        body += strip
    if len(body) % 2:
        body += b"\x00"
    entries: list[tuple[int, int, tuple[int, ...]]] = [
        (WIDTH, 4, (width,)), (HEIGHT, 4, (height,)), (BITS, 3, (8 * pixels.dtype.itemsize,) * samples),
        (COMPRESSION, 3, (8,)), (PHOTOMETRIC, 3, (2 if samples >= 3 else 1,)),
        (STRIP_OFFSETS, 4, tuple(offsets)), (SAMPLES, 3, (samples,)), (ROWS_PER_STRIP, 4, (rps,)),
        (STRIP_COUNTS, 4, tuple(len(s) for s in strips)), (PLANAR, 3, (1,)), (PREDICTOR, 3, (2,)),
    ]
    if samples in (2, 4):
        entries.append((EXTRA_SAMPLES, 3, (2,)))  # unassociated alpha
    entries.append((SAMPLE_FORMAT, 3, (1,) * samples))

    ifd = len(body)
    extra = ifd + 2 + 12 * len(entries) + 4
    directory = bytearray(struct.pack("<H", len(entries)))
    overflow = bytearray()
    for tag, typ, values in entries:
        packed = struct.pack(f"<{len(values)}{_TYPE_CODES[typ]}", *values)
        if len(packed) <= 4:
            directory += struct.pack("<HHI", tag, typ, len(values)) + packed.ljust(4, b"\x00")
        else:
            directory += struct.pack("<HHII", tag, typ, len(values), extra + len(overflow))
            overflow += packed
    directory += b"\x00\x00\x00\x00"  # no further directories
    body[4:8] = struct.pack("<I", ifd)
    return bytes(body + directory + overflow)
