"""Re-measure the decision to keep derain's own 16-bit PNG / TIFF codecs (docs/codecs.md) against the kept libraries.

Codecs (a library that is not installed is skipped with a note):

    derain                derain.io._png / derain.io._tiff (numpy + zlib), what read_image / write_image use
    tifffile+imagecodecs  imagecodecs.png_encode / png_decode (libpng) for PNG; tifffile with imagecodecs for TIFF
    opencv                cv2.imencode / cv2.imdecode(IMREAD_UNCHANGED) (libpng, libtiff; BGR(A) swapped to RGB(A))
    pypng                 pypng (pure Python), PNG only

1. fidelity: bit-exact round trips of random uint16 RGB / RGBA and uint8 RGB, cross-reads against derain's codecs,
   and reads of the 16-bit TIFF layouts derain refuses (tiled, planar; written by tifffile).
2. speed at --size (smooth gradient + noise, uint16 RGB, Deflate level 6 everywhere): median encode / decode over
   --repeats, each in its own process (peak memory = growth of the peak RSS during the operation).
3. footprint: installed size, dependencies and Python requirement of each library.

The decision stands while every library round-trips as exactly as derain's codecs and the one faster library
(tifffile+imagecodecs, 2-5x) still costs tens of MB of native code. The two gaps the first measurement found stay
checked: corrupt and truncated files, Deflate checksums included, by tests/io/test_io.py; the PNG encoder's peak
memory (it once reached ~8 GB on a 137 MB image) by the speed section's peak column.

    python benchmarks/codecs.py [--size 6000x4000] [--repeats 3] [--json PATH]     # about 10 minutes here
    python benchmarks/codecs.py --sections fidelity footprint                       # seconds
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CODEC_NAMES = ("derain", "tifffile+imagecodecs", "opencv", "pypng")
DISTRIBUTIONS = {"derain": (), "tifffile+imagecodecs": ("tifffile", "imagecodecs"),
                 "opencv": ("opencv-python-headless",), "pypng": ("pypng",)}
KINDS = {"u16 RGB": (np.uint16, 3), "u16 RGBA": (np.uint16, 4), "u8 RGB": (np.uint8, 3)}
FORMATS = ("PNG", "TIFF")
LEVEL = 6  # zlib level for every encoder (derain's default)

Encode = Callable[[np.ndarray], bytes]
Decode = Callable[[bytes], np.ndarray]
Codec = dict[str, tuple[Encode, Decode]]  # format -> (encode, decode)


def _rgb_swap(a: np.ndarray) -> np.ndarray:
    """RGB(A) <-> BGR(A) for OpenCV."""
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return np.ascontiguousarray(a[..., [2, 1, 0, 3][:a.shape[2]]])
    return a


def _hwc(a: np.ndarray) -> np.ndarray:
    return a[:, :, None] if a.ndim == 2 else a


def build_codec(name: str) -> Codec:
    """The codec ``name``; ImportError when its library is not installed."""
    if name == "derain":
        from derain.io import _png, _tiff

        return {"PNG": (lambda a: _png.encode(a, level=LEVEL), lambda d: _png.decode(d).pixels),
                "TIFF": (_tiff.encode, _tiff.decode)}
    if name == "tifffile+imagecodecs":
        import imagecodecs
        import tifffile

        def tiff_encode(a: np.ndarray) -> bytes:
            buf = io.BytesIO()
            tifffile.imwrite(buf, a, photometric="rgb", compression="zlib", compressionargs={"level": LEVEL},
                             predictor=True, metadata=None, extrasamples=("unassalpha",) if a.shape[2] == 4 else None)
            return buf.getvalue()

        def tiff_decode(data: bytes) -> np.ndarray:
            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                page = tif.pages.first
                out = page.asarray()
                return _hwc(np.moveaxis(out, 0, -1) if page.planarconfig == 2 and out.ndim == 3 else out)

        return {"PNG": (lambda a: imagecodecs.png_encode(a, level=LEVEL), lambda d: _hwc(imagecodecs.png_decode(d))),
                "TIFF": (tiff_encode, tiff_decode)}
    if name == "opencv":
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

        tiff = [cv2.IMWRITE_TIFF_COMPRESSION, cv2.IMWRITE_TIFF_COMPRESSION_ADOBE_DEFLATE,
                cv2.IMWRITE_TIFF_PREDICTOR, cv2.IMWRITE_TIFF_PREDICTOR_HORIZONTAL]
        return {"PNG": (cv_encode(".png", [cv2.IMWRITE_PNG_COMPRESSION, LEVEL]), cv_decode),
                "TIFF": (cv_encode(".tiff", tiff), cv_decode)}
    if name == "pypng":
        import png

        def pypng_encode(a: np.ndarray) -> bytes:
            h, w, c = a.shape
            buf = io.BytesIO()
            png.Writer(w, h, greyscale=c < 3, alpha=c in (2, 4), bitdepth=8 * a.itemsize,
                       compression=LEVEL).write(buf, a.reshape(h, w * c))
            return buf.getvalue()

        def pypng_decode(data: bytes) -> np.ndarray:
            w, h, rows, info = png.Reader(bytes=data).read()
            dtype = np.uint16 if info["bitdepth"] == 16 else np.uint8
            out = np.stack([np.frombuffer(bytes(row) if dtype == np.uint8 else row, dtype) for row in rows])
            return out.reshape(h, w, info["planes"])

        return {"PNG": (pypng_encode, pypng_decode)}
    raise ValueError(f"unknown codec {name!r}")


def random_image(kind: str, seed: int = 0) -> np.ndarray:
    dtype, c = KINDS[kind]
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, (61, 97, c), dtype=dtype, endpoint=True)


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint16 RGB: smooth gradients plus Gaussian noise of 48 levels (about a 16-bit sensor's shot noise)."""
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    planes = [0.7 * x + 0.3 * y, 0.5 * (1 - x) + 0.5 * y, 0.5 + 0.4 * np.sin(6 * x + 4 * y)]
    rng = np.random.default_rng(seed)
    out = np.empty((h, w, 3), np.uint16)
    for i, plane in enumerate(planes):
        out[..., i] = np.clip(plane * 60000 + 2000 + rng.standard_normal((h, w), dtype=np.float32) * 48, 0, 65535)
    return out


def trial(encode: Encode | None, decode: Decode | None, ref: np.ndarray) -> str:
    """``ok`` for a bit-exact round trip, otherwise what went wrong."""
    if encode is None or decode is None:
        return "-"
    try:
        out = decode(encode(ref))
    except Exception as exc:
        return type(exc).__name__  # e.g. derain's TiffError for the tiled and planar layouts it refuses
    if out.dtype != ref.dtype or out.shape != ref.shape:
        return f"{out.dtype} {'x'.join(map(str, out.shape))}"
    return "ok" if np.array_equal(out, ref) else f"values (max diff {int(np.abs(out.astype(np.int64) - ref).max())})"


def fidelity(codecs: dict[str, Codec]) -> dict[str, dict[str, str]]:
    images = {kind: random_image(kind, seed=i) for i, kind in enumerate(KINDS)}
    ours = codecs.get("derain", {})
    foreign: dict[str, tuple[bytes, np.ndarray]] = {}
    with contextlib.suppress(ImportError):
        import tifffile

        rgb = images["u16 RGB"]
        for layout, kw, data in (("tiled", {"tile": (16, 16)}, rgb),
                                 ("planar", {"planarconfig": "separate"}, np.moveaxis(rgb, -1, 0))):
            buf = io.BytesIO()
            tifffile.imwrite(buf, data, photometric="rgb", compression="zlib", metadata=None, **kw)
            foreign[f"TIFF {layout}"] = (buf.getvalue(), rgb)
    result: dict[str, dict[str, str]] = {}
    for name, codec in codecs.items():
        row = {f"{fmt} {kind}": trial(*codec.get(fmt, (None, None)), ref) for fmt in FORMATS
               for kind, ref in images.items()}
        for fmt in FORMATS:
            if name != "derain" and fmt in codec and fmt in ours:
                ref = images["u16 RGBA"]
                row[f"{fmt} d->L"] = trial(ours[fmt][0], codec[fmt][1], ref)
                row[f"{fmt} L->d"] = trial(codec[fmt][0], ours[fmt][1], ref)
        for label, (data, ref) in foreign.items():
            row[label] = trial(lambda _a, d=data: d, codec.get("TIFF", (None, None))[1], ref)
        result[name] = row
    columns = list(dict.fromkeys(c for row in result.values() for c in row))
    print("\n1. fidelity (61x97 random pixels; ok = bit-exact). d->L: written by derain, read by the library; L->d:"
          " the reverse (u16 RGBA); TIFF tiled / planar: 16-bit RGB written by tifffile")
    print_table(["codec", *columns], [[name, *(row.get(c, "-") for c in columns)] for name, row in result.items()])
    return result


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _speed_worker(op: str, name: str, fmt: str, image_path: str, file_path: str, repeats: int) -> None:
    encode, decode = build_codec(name)[fmt]
    image = np.load(image_path)
    data = Path(file_path).read_bytes() if op == "dec" else b""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # a fresh peak-RSS count from here (Linux >= 4.0)
    base = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = encode(image) if op == "enc" else decode(data)
        times.append(time.perf_counter() - t0)
    result: dict[str, Any] = {"times": times, "peak_extra_mb": max(0, _peak_rss_bytes() - base) / 2**20}
    if op == "enc":
        Path(file_path).write_bytes(out)
        result["bytes"] = len(out)
    else:
        result["exact"] = bool(np.array_equal(out, image))
    print(json.dumps(result))


def _run_speed(op: str, name: str, fmt: str, image: Path, file: Path, repeats: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "_speed-worker", op, name, fmt, str(image), str(file),
           str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1][:80]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def speed(codecs: dict[str, Codec], width: int, height: int, repeats: int, workdir: Path) -> dict[str, Any]:
    image = workdir / "speed.npy"
    np.save(image, smooth_image(height, width))
    results: dict[str, Any] = {}
    for fmt in FORMATS:
        for name in (n for n in codecs if fmt in codecs[n]):
            file = workdir / f"{name}.{fmt.lower()}"
            enc = _run_speed("enc", name, fmt, image, file, repeats)
            dec = _run_speed("dec", name, fmt, image, file, repeats) if "error" not in enc else {}
            results[f"{name} {fmt}"] = {"enc": enc, "dec": dec}
    rows = []
    for key, r in results.items():
        enc, dec = (statistics.median(r[op]["times"]) if "times" in r[op] else None for op in ("enc", "dec"))
        ours = results.get(f"derain {key.split()[-1]}", {})
        ours_enc, ours_dec = (statistics.median(ours[op]["times"]) if "times" in ours.get(op, {}) else None
                              for op in ("enc", "dec"))
        rows.append([key, f"{enc:.2f}" if enc else "-", f"{dec:.2f}" if dec else "-",
                     f"{ours_enc / enc:.2f}" if enc and ours_enc else "-",
                     f"{ours_dec / dec:.2f}" if dec and ours_dec else "-",
                     f"{r['enc'].get('bytes', 0) / 2**20:.1f}", r["dec"].get("exact", "-"),
                     f"{r['enc'].get('peak_extra_mb', 0):.0f} / {r['dec'].get('peak_extra_mb', 0):.0f}",
                     r["enc"].get("error") or r["dec"].get("error") or ""])
    print(f"\n2. speed: {width}x{height} uint16 RGB, gradient + noise, Deflate level {LEVEL}, median of {repeats}, "
          "each in a fresh process; x = derain's time / the codec's (> 1: faster than derain)")
    print_table(["codec", "enc s", "dec s", "enc x", "dec x", "MiB", "exact", "peak MiB enc / dec", "error"], rows)
    return results


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


def footprint(codecs: dict[str, Codec]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    own = [Path(__file__).resolve().parents[1] / "src" / "derain" / "io" / f for f in ("_png.py", "_tiff.py")]
    lines = sum(len(p.read_text().splitlines()) for p in own)
    rows = [["derain _png.py + _tiff.py", "-", f"{sum(p.stat().st_size for p in own) / 1024:.0f} KiB ({lines} lines)",
             "numpy (+zlib)", "(derain's)"]]
    for dist_name in sorted({d for name in codecs for d in DISTRIBUTIONS[name]}):
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            continue
        installed = sum(p.stat().st_size for f in dist.files or [] if (p := Path(str(f.locate()))).is_file())
        requires = [r.split(";")[0].strip() for r in dist.requires or [] if _applies(r)]
        python = dist.metadata.get("Requires-Python") or "-"
        out[dist_name] = {"version": dist.version, "installed_bytes": installed, "requires": requires,
                          "requires_python": python}
        rows.append([dist_name, dist.version, f"{installed / 2**20:.1f} MiB", ", ".join(requires) or "-", python])
    print("\n3. footprint (installed size from each distribution's RECORD, bundled native libraries included)")
    print_table(["distribution", "version", "installed", "requires", "python"], rows)
    return out


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for row in [headers, *cells]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like 6000x4000, got {text!r}") from exc
    return w, h


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_speed-worker":
        _speed_worker(*sys.argv[2:7], int(sys.argv[7]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=(6000, 4000), help="speed image, WxH (default 6000x4000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--codecs", nargs="+", choices=CODEC_NAMES, default=list(CODEC_NAMES))
    parser.add_argument("--sections", nargs="+", choices=("fidelity", "speed", "footprint"),
                        default=["fidelity", "speed", "footprint"])
    parser.add_argument("--json", type=Path, default=None, help="also write every result here")
    args = parser.parse_args()

    codecs: dict[str, Codec] = {}
    for name in args.codecs:
        try:
            codecs[name] = build_codec(name)
        except ImportError as exc:
            print(f"{name}: skipped, not installed ({exc})")
    versions = {d: importlib.metadata.version(d) for name in codecs for d in DISTRIBUTIONS[name]}
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs; "
          + ", ".join(f"{k} {v}" for k, v in versions.items()))
    report: dict[str, Any] = {"versions": versions}
    with tempfile.TemporaryDirectory(prefix="derain-codecs-") as tmp:
        if "fidelity" in args.sections:
            report["fidelity"] = fidelity(codecs)
        if "speed" in args.sections:
            report["speed"] = speed(codecs, *args.size, args.repeats, Path(tmp))
        if "footprint" in args.sections:
            report["footprint"] = footprint(codecs)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1, default=str))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
