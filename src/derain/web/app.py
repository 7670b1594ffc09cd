"""``derain web``: a local page to derain your own images in the browser.

Pick one or more images (or drop them on the page), choose the weights, and each result appears beside its input
with a before/after slider and a download link. The images go to this machine's server only; it reads them with
:func:`derain.io.read_image` (so every format, 16-bit, alpha and the decompression-bomb guard of ``derain run``
apply) and answers a PNG (16-bit and alpha kept). Bad files get their reason on the page.

Limits, checked before the work they guard: an upload of more than :data:`MAX_UPLOAD` bytes is refused from its
``Content-Length`` before a byte of it is read (a body sent without one is read in pieces to a temporary file and
refused when it passes the limit, so memory stays small whatever is sent); an image of more than
:data:`MAX_PIXELS` pixels is refused from its header, before it is decoded; ``tile`` is at least
:data:`MIN_TILE` (smaller tiles hold the one model for minutes while everyone else waits).
"""

from __future__ import annotations

import html
import tempfile
import threading
import time
import warnings
from pathlib import Path

import derain
from derain.errors import InputError
from derain.io import IMAGE_EXTENSIONS, read_image, write_image
from derain.web.guard import Access, Guard, one_line_errors

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import HTMLResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise InputError('the web page needs the web extra: pip install "derain[web]"') from exc

from derain.web.static import add_static  # after the extra's check

MAX_UPLOAD = 64 << 20  # bytes per image
MAX_PIXELS = 40_000_000  # width x height per image (about 480 MB as floats), checked from the header
MIN_TILE = 128  # the smallest tile the page runs
CONTENT_TYPES = ("image/", "application/octet-stream")  # what an upload may say it is


class Models:
    """The weights the page offers, read at start (a wrong name or file fails there, not on the first image);
    each model is built on first use; one image runs at a time."""

    def __init__(self, weights: list[str], device: str) -> None:
        self.names = list(dict.fromkeys(weights))
        self.device = device
        self.weights = {name: derain.weights.load_weights(name) for name in self.names}
        self.loaded: dict[str, derain.Restorer] = {}
        self.lock = threading.Lock()

    def check(self, name: str) -> None:
        if name not in self.names:
            raise InputError(f"unknown weights {name!r}; this page offers {', '.join(self.names)}")

    def get(self, name: str) -> derain.Restorer:
        self.check(name)
        if name not in self.loaded:
            self.loaded[name] = derain.load(self.weights[name], device=self.device)
        return self.loaded[name]


def check_request(models: Models, weights: str, filename: str, tile: int | None) -> str:
    """What can be checked before the body is read; returns the file's suffix."""
    suffix = Path(filename).suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise InputError(f"{filename}: not an image file name; use one of {', '.join(sorted(IMAGE_EXTENSIONS))}")
    models.check(weights)
    if tile is not None and tile < MIN_TILE:
        raise InputError(f"tile {tile} is under this page's smallest tile, {MIN_TILE}; leave it out (the page "
                         "tiles large images by itself) or use derain run --tile")
    return suffix


def _too_large(filename: str, size: int | None = None) -> InputError:
    got = f"{size / 2**20:.0f} MB is" if size is not None else "the file is"
    return InputError(f"{filename}: {got} over this page's {MAX_UPLOAD >> 20} MB limit; use derain run for large "
                      "files")


def image_pixels(path: Path) -> tuple[int, int] | None:
    """Width and height from the file's header (nothing decoded); None when Pillow cannot tell (read_image then
    says why)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                return im.size
        except Image.DecompressionBombError:
            return (2 * Image.MAX_IMAGE_PIXELS + 1, 1) if Image.MAX_IMAGE_PIXELS else None
        except Exception:
            return None


def derain_file(models: Models, weights: str, filename: str, src: Path, *, tile: int | None = None) -> bytes:
    """Derain one uploaded file saved at ``src`` (``filename``: the user's name for it); returns PNG bytes."""
    check_request(models, weights, filename, tile)
    size = src.stat().st_size
    if size == 0:
        raise InputError(f"{filename}: the file is empty")
    if size > MAX_UPLOAD:
        raise _too_large(filename, size)
    shape = image_pixels(src)
    if shape is not None and shape[0] * shape[1] > MAX_PIXELS:
        w, h = shape
        raise InputError(f"{filename}: {w}x{h} is {w * h / 1e6:.0f} Mpx, over this page's {MAX_PIXELS / 1e6:.0f} Mpx "
                         "budget; use derain run for large images")
    try:
        loaded = read_image(src, max_pixels=MAX_PIXELS)
    except InputError as exc:  # name the user's file, not the temporary copy
        raise InputError(str(exc).replace(str(src), filename)) from None
    with models.lock:
        restorer = models.get(weights)
        if tile is not None:
            auto = restorer.auto_tile(loaded.image.shape[-2], loaded.image.shape[-1])
            tile = min(tile, auto) if auto is not None else tile  # never a tile too large for the memory
        out = restorer(loaded.image, tile=tile)
    dst = src.with_name("output.png")
    write_image(dst, out, alpha=loaded.alpha, bit_depth=loaded.bit_depth)
    return dst.read_bytes()


def derain_bytes(models: Models, weights: str, filename: str, data: bytes, *, tile: int | None = None) -> bytes:
    """Derain one uploaded file held in memory (its name gives the format); returns the result as PNG bytes."""
    suffix = check_request(models, weights, filename, tile)
    if len(data) > MAX_UPLOAD:
        raise _too_large(filename, len(data))
    with tempfile.TemporaryDirectory(prefix="derain-web-") as folder:
        src = Path(folder) / f"input{suffix}"
        src.write_bytes(data)
        return derain_file(models, weights, filename, src, tile=tile)


def page(models: Models) -> str:
    options = "".join(f'<option value="{html.escape(n)}">{html.escape(n)}</option>' for n in models.names)
    accept = ",".join(sorted(IMAGE_EXTENSIONS))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>derain</title>'
        '<link rel="stylesheet" href="/static/app.css"></head>'
        f'<body data-max-upload="{MAX_UPLOAD}"><h1>derain</h1>'
        "<p>Remove rain from your images. They stay on this machine: the page talks only to the derain server "
        "you started.</p>"
        f'<p id="limits">Up to {MAX_UPLOAD >> 20} MB and {MAX_PIXELS / 1e6:.0f} Mpx per image (width x height); '
        "use <code>derain run</code> for larger ones.</p>"
        f'<div id="controls"><label>weights <select id="weights">{options}</select></label> '
        f'<label id="pick">images <input id="files" type="file" multiple accept="{accept}"></label></div>'
        '<div id="drop">or drop images here</div><div id="results"></div>'
        '<script src="/static/app.js"></script></body></html>'
    )


def create_app(weights: list[str] | None = None, *, device: str = "auto", access: Access | None = None) -> FastAPI:
    """The page's app; ``weights``: catalog names or checkpoint paths offered (default: the bundled model);
    ``access``: how it is served (default: loopback, no token)."""
    models = Models(weights or [derain.inference.DEFAULT_WEIGHTS], device)
    app = FastAPI(title="derain", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, access=access or Access(), content_types=CONTENT_TYPES)
    one_line_errors(app)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page(models)

    add_static(app, ("app.css", "app.js"))

    @app.post("/api/derain")
    async def run(request: Request, name: str, weights: str | None = None, tile: int | None = None) -> Response:
        weights = weights or models.names[0]
        try:
            suffix = check_request(models, weights, name, tile)
        except InputError as exc:
            raise HTTPException(400, str(exc)) from None
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_UPLOAD:
            raise HTTPException(413, str(_too_large(name, int(length))))  # before a byte of the body is read
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="derain-web-") as folder:
            src = Path(folder) / f"input{suffix}"
            size = 0
            try:
                with src.open("wb") as f:
                    async for chunk in request.stream():  # in pieces, to disk: memory stays small
                        size += len(chunk)
                        if size > MAX_UPLOAD:
                            raise HTTPException(413, str(_too_large(name)))
                        f.write(chunk)
            except ClientDisconnect:
                raise HTTPException(400, f"{name}: the upload was cut off") from None
            try:
                png = await run_in_threadpool(derain_file, models, weights, name, src, tile=tile)
            except InputError as exc:
                raise HTTPException(400, str(exc)) from None
        seconds = time.perf_counter() - start
        return Response(png, media_type="image/png", headers={"X-Derain-Seconds": f"{seconds:.3f}"})

    return app
