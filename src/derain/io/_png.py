"""A small PNG codec for what Pillow cannot do: 16-bit RGB and RGBA (Pillow reads them truncated to 8 bits and
cannot write them).

Decodes greyscale, grey+alpha, RGB and RGBA at 8 or 16 bits, non-interlaced or Adam7-interlaced, every
filter type; checks chunk CRCs and refuses truncated data. Encodes the same colour types, non-interlaced, with
a per-row adaptive filter choice. Pure numpy + zlib; errors are :class:`PngError` (the caller adds the file
name).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the complete (empty) closing chunk
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_IDAT_CHUNK = 1 << 20


class PngError(ValueError):
    """The bytes are not a PNG this codec can decode (the message says why)."""


@dataclass(frozen=True)
class PngHeader:
    width: int
    height: int
    bit_depth: int
    color_type: int
    interlace: int


@dataclass(frozen=True)
class PngImage:
    pixels: np.ndarray  # (H, W, C) uint8 or uint16, C = 1, 2, 3 or 4
    transparent: tuple[int, ...] | None  # tRNS colour key (grey or RGB) for colour types 0 and 2
    exif: bytes | None  # raw eXIf chunk


def read_header(data: bytes) -> PngHeader:
    """The IHDR fields; raises :class:`PngError` when ``data`` does not start like a PNG."""
    if data[:8] != SIGNATURE or len(data) < 33 or data[12:16] != b"IHDR":
        raise PngError("not a PNG file (bad signature or missing IHDR)")
    width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return PngHeader(width, height, depth, ctype, interlace)


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks = []
    pos = 8
    while True:
        if pos + 8 > len(data):
            raise PngError("truncated file (no IEND chunk)")
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise PngError(f"truncated file (chunk {kind!r} runs past the end of the data)")
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise PngError(f"corrupt file (CRC mismatch in chunk {kind!r})")
        chunks.append((kind, body))
        if kind == b"IEND":
            return chunks
        pos = end


def decode(data: bytes) -> PngImage:
    """Decode a PNG of colour type 0, 2, 4 or 6 at 8 or 16 bits."""
    head = read_header(data)
    if head.color_type not in CHANNELS or head.bit_depth not in (8, 16):
        raise PngError(f"colour type {head.color_type} at {head.bit_depth} bits is not handled by this "
                       "decoder")
    if head.interlace not in (0, 1):
        raise PngError(f"unknown interlace method {head.interlace}")
    if head.width == 0 or head.height == 0:
        raise PngError("image has zero width or height")
    idat, transparent, exif = [], None, None
    for kind, body in _chunks(data):
        if kind == b"IDAT":
            idat.append(body)
        elif kind == b"tRNS" and head.color_type in (0, 2):
            n = CHANNELS[head.color_type]
            transparent = struct.unpack(f">{n}H", body[:2 * n])
        elif kind == b"eXIf":
            exif = body
    if not idat:
        raise PngError("no image data (IDAT chunk missing)")

    channels = CHANNELS[head.color_type]
    bpp = channels * head.bit_depth // 8
    passes = ADAM7 if head.interlace else ((0, 0, 1, 1),)
    sizes = [(-(-(head.height - y0) // dy), -(-(head.width - x0) // dx)) for x0, y0, dx, dy in passes]
    expected = sum(h * (1 + w * bpp) for h, w in sizes if h and w)
    raw = inflate(b"".join(idat), expected, "image data")
    if len(raw) < expected:
        raise PngError(f"truncated image data ({len(raw)} of {expected} bytes)")

    dtype = np.dtype(">u2") if head.bit_depth == 16 else np.dtype(np.uint8)
    out = np.empty((head.height, head.width, channels), dtype.newbyteorder("="))
    buf = np.frombuffer(raw, np.uint8)
    pos = 0
    for (x0, y0, dx, dy), (h, w) in zip(passes, sizes, strict=True):
        if not (h and w):
            continue
        rows = buf[pos:pos + h * (1 + w * bpp)].reshape(h, 1 + w * bpp)
        pos += rows.size
        plain = unfilter(rows[:, 1:], rows[:, 0], bpp)
        out[y0::dy, x0::dx] = plain.view(dtype).reshape(h, w, channels)
    return PngImage(out, transparent, exif)


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def unfilter(filtered: np.ndarray, types: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG filtering of ``filtered`` ((H, row bytes) uint8) given each row's filter type."""
    if types.size and int(types.max()) > 4:
        raise PngError(f"invalid filter type {int(types.max())} (valid: 0-4)")
    h, rowbytes = filtered.shape
    w = rowbytes // bpp
    if not np.isin(types, (3, 4)).any():  # None / Sub / Up only: one vectorised step per row
        out = np.empty_like(filtered)
        prior = np.zeros(rowbytes, np.uint8)
        for y in range(h):
            row = filtered[y]
            if types[y] == 1:
                row = np.cumsum(row.reshape(w, bpp), axis=0, dtype=np.uint8).reshape(-1)
            elif types[y] == 2:
                row = row + prior
            out[y] = row
            prior = out[y]
        return out
    # Average and Paeth depend on the reconstructed left neighbour. Pixels on one anti-diagonal (x + y = d)
    # depend only on the two previous diagonals, so sweep diagonals, each one vectorised update. The buffers
    # are skewed (diagonal-major: rec[d + 2, y + 1] holds pixel (y, x = d - y)) so every neighbour is a plain
    # slice; cells with x outside the image stay zero, which is exactly PNG's padding.
    f = np.zeros((h + w - 1, h, bpp), np.int16)
    rec = np.zeros((h + w + 1, h + 1, bpp), np.int16)
    src = filtered.reshape(h, w, bpp)
    for y in range(h):
        f[y:y + w, y] = src[y]
    masks = {k: (types == k).astype(np.int16)[:, None] for k in (1, 2, 3, 4) if (types == k).any()}
    for d in range(h + w - 1):
        y0, y1 = max(0, d - w + 1), min(h, d + 1)
        a, b, c = rec[d + 1, y0 + 1:y1 + 1], rec[d + 1, y0:y1], rec[d, y0:y1]
        acc = f[d, y0:y1].copy()
        for k, m in masks.items():
            pred = a if k == 1 else b if k == 2 else (a + b) >> 1 if k == 3 else _paeth(a, b, c)
            acc += m[y0:y1] * pred
        np.bitwise_and(acc, 0xFF, out=rec[d + 2, y0 + 1:y1 + 1])
    out = np.empty((h, w, bpp), np.uint8)
    for y in range(h):
        out[y] = rec[y + 2:y + 2 + w, y + 1]
    return out.reshape(h, rowbytes)


def _filter_band(cur: np.ndarray, prev: np.ndarray, bpp: int, filter_type: int | None) -> np.ndarray:
    """Filter the rows ``cur`` ((h, row bytes) int16) whose row above the first is ``prev``; rows prefixed by
    their filter type: per row the type with the smallest sum of |signed bytes| (or ``filter_type``)."""
    above = np.concatenate([prev[None], cur[:-1]])
    left = np.zeros_like(cur)
    left[:, bpp:] = cur[:, :-bpp]
    upleft = np.zeros_like(cur)
    upleft[:, bpp:] = above[:, :-bpp]
    average, paeth = (left + above) >> 1, _paeth(left, above, upleft)
    candidates = np.stack([cur, cur - left, cur - above, cur - average, cur - paeth])
    candidates = (candidates & 0xFF).astype(np.uint8)
    if filter_type is None:
        cost = np.abs(candidates.view(np.int8).astype(np.int16)).sum(axis=2, dtype=np.int64)
        types = cost.argmin(axis=0)
    else:
        types = np.full(cur.shape[0], filter_type)
    rows = candidates[types, np.arange(cur.shape[0])]
    return np.concatenate([types.astype(np.uint8)[:, None], rows], axis=1)


def _filter_rows(raw: np.ndarray, bpp: int, filter_type: int | None, band: int = 64) -> np.ndarray:
    """Filter ``raw`` ((H, row bytes) uint8) in bands of rows, so memory stays a few times one band's."""
    out = np.empty((raw.shape[0], raw.shape[1] + 1), np.uint8)
    prev = np.zeros(raw.shape[1], np.int16)
    for top in range(0, raw.shape[0], band):
        cur = raw[top:top + band].astype(np.int16)
        out[top:top + band] = _filter_band(cur, prev, bpp, filter_type)
        prev = cur[-1]
    return out


def inflate(data: bytes, expected: int, what: str) -> bytes:
    """Decompress a zlib stream of (at least) ``expected`` bytes and check that it ends and that its Adler-32
    checksum holds, so corrupt data is an error, never wrong pixels. Output past ``expected`` (padding some writers
    add) is read only to reach the checksum, at most ``expected`` bytes more; a longer stream is refused."""
    inflater = zlib.decompressobj()
    extra = 0
    try:
        out = inflater.decompress(data, expected)
        while not inflater.eof and extra <= expected:
            more = inflater.decompress(inflater.unconsumed_tail, min(1 << 20, expected + 1 - extra))
            extra += len(more)
            if not more and not inflater.unconsumed_tail:
                break  # the input is used up before the end of the stream
    except zlib.error as exc:
        raise PngError(f"corrupt {what} ({exc})") from exc
    if not inflater.eof:
        why = "longer than the header says" if extra > expected else "cut short"
        raise PngError(f"corrupt {what} (the compressed stream is {why})")
    return out


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def encode(
    pixels: np.ndarray, *, filter_type: int | None = None, interlace: bool = False, level: int = 6
) -> bytes:
    """Encode ``pixels`` ((H, W, C) uint8 or uint16, C in 1..4) as PNG bytes.

    ``filter_type`` forces one filter for every row (tests use it to exercise the decoder); ``interlace``
    writes Adam7 (also for tests: interlacing only makes files larger).
    """
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4) or pixels.dtype not in (np.uint8, np.uint16):
        raise PngError(f"cannot encode an array of shape {pixels.shape} and dtype {pixels.dtype}")
    h, w, c = pixels.shape
    depth = pixels.dtype.itemsize * 8
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    bpp = c * depth // 8
    big = pixels.astype(pixels.dtype.newbyteorder(">"), copy=False)
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    parts = []
    for x0, y0, dx, dy in passes:
        sub = big[y0::dy, x0::dx]
        if sub.size:
            raw = np.ascontiguousarray(sub).view(np.uint8).reshape(sub.shape[0], sub.shape[1] * bpp)
            parts.append(_filter_rows(raw, bpp, filter_type).tobytes())
    stream = zlib.compress(b"".join(parts), level)
    header = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, int(interlace))
    idat = b"".join(_chunk(b"IDAT", stream[i:i + _IDAT_CHUNK]) for i in range(0, len(stream), _IDAT_CHUNK))
    return SIGNATURE + _chunk(b"IHDR", header) + idat + _chunk(b"IEND", b"")
