"""Shared fixtures. Tests that need ../shared read its path from DERAIN_SHARED (default: ../shared beside the
repository) and skip with a reason when it is absent; DERAIN_REQUIRE_SHARED=1 (set by .ci/run) turns those
skips into failures."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from derain.data.synthetic import RainStyle, StreakParams, add_rain, generator
from derain.io import write_image

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback port nothing listens on now (free to serve on; connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], *, timeout: float = 20.0, what: str = "the condition") -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


# No test reaches the internet or the user's cache: downloads go to a dead loopback port unless a test starts the
# loopback hub (tests/io/test_hub.py), and the cache is a fresh folder for the session.
os.environ["DERAIN_HUB"] = f"http://127.0.0.1:{free_port()}"
os.environ["DERAIN_CACHE"] = tempfile.mkdtemp(prefix="derain-test-cache-")
os.environ["DERAIN_HUB_RETRIES"] = "1"


def _shared_root() -> Path:
    return Path(os.environ.get("DERAIN_SHARED", REPO.parent / "shared")).resolve()


# DERAIN_SHARED is the tests' own variable. The library finds a local copy of a data set only through
# $DERAIN_DATA (it never guesses ../shared), so the shared folder's data/ is exported as that mirror, and the
# shared folder itself for the scripts the tests start.
os.environ["DERAIN_SHARED"] = str(_shared_root())
os.environ["DERAIN_DATA"] = str(_shared_root() / "data")


def run_script(path: Path, *args: object) -> subprocess.CompletedProcess[str]:
    """Run a repository script (``scripts/``, ``benchmarks/``) in this Python from the repository root, its output
    captured; the caller checks the return code (some tests expect a refusal)."""
    return subprocess.run([sys.executable, str(path), *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          check=False)


def require_shared(*parts: str) -> Path:
    """Return ``$DERAIN_SHARED/<parts>``; skip (or fail under DERAIN_REQUIRE_SHARED=1) when it is missing."""
    path = _shared_root().joinpath(*parts)
    if not path.exists():
        reason = f"{path} not found (set DERAIN_SHARED to the shared folder)"
        if os.environ.get("DERAIN_REQUIRE_SHARED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder (data, official weights, references)."""
    return require_shared()


def official_jdnet_state(*, seed: int = 0) -> dict:
    """A state dict with exactly the keys and shapes of ``specs/keys/jdnet_keys.txt`` (the official DataParallel
    layout, ``module.`` prefix), random positive values; BatchNorm step counters are integers."""
    import torch

    listing = require_shared("specs", "keys", "jdnet_keys.txt").read_text().splitlines()
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for line in filter(str.strip, listing):
        key, shape_text = line.split(" ", 1)
        shape = tuple(int(v) for v in shape_text.strip("()").split(",") if v.strip())
        state[key] = (torch.tensor(7) if key.endswith("num_batches_tracked")
                      else torch.rand(shape, generator=gen) + 0.5)
    return state


class LoopbackHub:
    """A loopback HTTP server standing in for raw.githubusercontent.com: serves local files under the
    ``/<owner>/<repo>/<commit>/<path>`` URLs of their sources, with switches that break it on purpose.

    mode: ``ok``; ``corrupt`` (one byte changed); ``cut`` (the connection closes halfway through the body,
    ``cuts`` times, then ``ok``); ``slow`` (the body in 16 pieces, ``delay`` seconds apart); ``missing`` (404).
    Range requests (``bytes=N-``) are answered with the rest of the file. ``hits`` counts the requests per path.
    """

    def __init__(self, files: dict[str, Path]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import unquote, urlsplit

        self.files = dict(files)
        self.mode, self.cuts, self.delay = "ok", 1, 0.05
        self.hits: dict[str, int] = {}
        self.ranges: list[int] = []  # the start of every Range request (a resumed download)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                import time

                path = unquote(urlsplit(self.path).path)
                hub.hits[path] = hub.hits.get(path, 0) + 1
                local = hub.files.get(path)
                if local is None or hub.mode == "missing":
                    self.send_error(404)
                    return
                body = local.read_bytes()
                if hub.mode == "corrupt":
                    body = body[:-1] + bytes([body[-1] ^ 0xFF])
                start = 0
                asked = self.headers.get("Range", "")
                if asked.startswith("bytes=") and asked.endswith("-"):  # resume: the rest of the file
                    start = int(asked[len("bytes="):-1])
                    hub.ranges.append(start)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                    body = body[start:]
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if hub.mode == "cut" and hub.cuts > 0:
                    hub.cuts -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if hub.mode == "slow":
                    step = max(1, len(body) // 16)
                    for start in range(0, len(body), step):
                        self.wfile.write(body[start:start + step])
                        self.wfile.flush()
                        time.sleep(hub.delay)
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def add(self, source: object, local: Path) -> None:
        """Serve ``local`` at the URL of ``source`` (a derain.io.download.Source)."""
        from urllib.parse import unquote, urlsplit

        self.files[unquote(urlsplit(source.url(self.url)).path)] = local  # type: ignore[attr-defined]

    def downloads(self) -> int:
        return sum(self.hits.values())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A loopback hub serving ../shared/weights/official and ../shared/data under their sources' URLs, with an
    empty cache (``DERAIN_CACHE``), no ``DERAIN_WEIGHTS`` and no ``DERAIN_DATA`` mirror."""
    from derain.data import sets
    from derain.weights import CATALOG

    official = require_shared("weights", "official")
    data = require_shared("data")
    by_sha = {}
    for line in (official / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            sha, rel = line.split()
            by_sha[sha] = official / rel.removeprefix("./")
    server = LoopbackHub({})
    for record in CATALOG.values():
        if record.source is not None and record.source.sha256:
            server.add(record.source, by_sha[record.source.sha256])
    for name, dataset in sets.SETS.items():
        for entry in sets.entries(dataset):
            server.add(entry.source, data / name / entry.file)
    cache = tmp_path / "cache"
    monkeypatch.setenv("DERAIN_HUB", server.url)
    monkeypatch.setenv("DERAIN_CACHE", str(cache))
    monkeypatch.setenv("DERAIN_HUB_RETRIES", "3")
    monkeypatch.setenv("DERAIN_HUB_TIMEOUT", "10")
    monkeypatch.delenv("DERAIN_WEIGHTS", raising=False)
    monkeypatch.delenv("DERAIN_DATA", raising=False)
    monkeypatch.delenv("DERAIN_SHARED", raising=False)  # nor the mirror's deprecated name
    server.cache = cache  # type: ignore[attr-defined]
    yield server
    server.close()


# ------------------------------------------------------------ synthetic rain videos (real-rain and web tests)

# The rain of these synthetic videos is fixed here (the first light and heavy styles), so that the training styles'
# calibration (derain.data.synthetic.STYLES) never moves this measurement.
_STREAKS = StreakParams(density=(0.003, 0.006), length=(8, 24), width=(0.0, 0.4), gain=(0.35, 0.75), spread=0.0)
_DENSE = StreakParams(density=(0.0015, 0.004), length=(20, 45), width=(0.3, 0.9), gain=(0.4, 0.8), spread=12.0)
# rain streaks only (no haze): what a static camera sees come and go
VIDEO_STYLES = {"normal": RainStyle(layers=(1, 1), angle=25.0, streaks=_STREAKS, haze=(0.0, 0.0), light=(0.8, 0.9),
                             texture_chance=0.0),
         "dense": RainStyle(layers=(2, 3), angle=20.0, streaks=_DENSE, haze=(0.0, 0.0), light=(0.75, 0.95),
                            texture_chance=0.0)}


def video_background(h: int = 64, w: int = 80) -> torch.Tensor:
    g = generator("bg")
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([0.3 + 0.4 * x, 0.2 + 0.5 * y, 0.6 - 0.3 * x * y])
    return ((base + 0.1 * torch.rand(3, h, w, generator=g)).clamp(0, 1) * 255).round() / 255


def synthetic_video(kind: str, frames: int = 100, *, noise: float = 1.5) -> list[torch.Tensor]:
    """Frames of a static camera in synthetic rain (``kind``: normal or dense), 8-bit levels, with sensor noise."""
    bg = video_background()
    out = []
    for t in range(frames):
        rainy, _ = add_rain(bg, style=VIDEO_STYLES[kind], g=generator("video", kind, t))
        noisy = rainy + torch.randn(bg.shape, generator=generator("noise", kind, t)) * noise / 255
        out.append(((noisy.clamp(0, 1) * 255).round() / 255)[None])
    return out


def frames_folder(folder: Path, frames: list[torch.Tensor]) -> Path:
    """Write frames as numbered PNGs (a sequence folder for derain build-dataset)."""
    for k, f in enumerate(frames):
        write_image(folder / f"f{k:03d}.png", f)
    return folder


def phone_video(path: Path, upright: list[torch.Tensor], *, rotation: int = -90, fps: int = 24) -> Path:
    """A video as a phone writes it: the ``upright`` frames ((1, 3, H, W) in [0, 1]) stored turned a quarter turn
    the other way, with a display rotation of ``rotation`` degrees (counter-clockwise, FFmpeg's and PyAV's sign:
    -90 is a phone's portrait clip, which players turn clockwise). The stored frames are made with NumPy's rot90
    (counter-clockwise for k > 0), independently of derain's own turning code; near-lossless H.264 (4:4:4, crf 0).
    PyAV 18 writes the display matrix itself (``VideoStream.set_display_rotation``)."""
    from fractions import Fraction

    import numpy as np

    av = pytest.importorskip("av", reason="video tests need PyAV (pip install 'derain[video]')")
    stored = [np.rot90((f[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), -rotation // 90)
              for f in upright]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.height, stream.width = stored[0].shape[:2]
        stream.pix_fmt, stream.options = "yuv444p", {"crf": "0"}
        stream.set_display_rotation(rotation)
        for img in stored:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
