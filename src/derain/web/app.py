"""``derain web``: a local page to derain your own images in the browser.

Pick one or more images (or drop them on the page), choose the weights, and each result appears beside its input
with a before/after slider and a download link. The images go to this machine's server only; it reads them with
:func:`derain.io.read_image` (so every format, 16-bit, alpha and the decompression-bomb guard of ``derain run``
apply) and answers a PNG (16-bit and alpha kept). Bad files get their reason on the page.
"""

from __future__ import annotations

import html
import tempfile
import threading
import time
from pathlib import Path

import derain
from derain.errors import InputError
from derain.io import IMAGE_EXTENSIONS, read_image, write_image

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import HTMLResponse, Response
    from starlette.concurrency import run_in_threadpool
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise InputError('the web page needs the web extra: pip install "derain[web]"') from exc

from derain.web.static import add_static  # after the extra's check

MAX_UPLOAD = 64 << 20  # bytes per image


class Models:
    """The weights the page offers, read at start (a wrong name or file fails there, not on the first image);
    each model is built on first use; one image runs at a time."""

    def __init__(self, weights: list[str], device: str) -> None:
        self.names = list(dict.fromkeys(weights))
        self.device = device
        self.weights = {name: derain.weights.load_weights(name) for name in self.names}
        self.loaded: dict[str, derain.Restorer] = {}
        self.lock = threading.Lock()

    def get(self, name: str) -> derain.Restorer:
        if name not in self.names:
            raise InputError(f"unknown weights {name!r}; this page offers {', '.join(self.names)}")
        if name not in self.loaded:
            self.loaded[name] = derain.load(self.weights[name], device=self.device)
        return self.loaded[name]


def derain_bytes(models: Models, weights: str, filename: str, data: bytes, *, tile: int | None = None) -> bytes:
    """Derain one uploaded file (its name gives the format); returns the result as PNG bytes."""
    suffix = Path(filename).suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise InputError(f"{filename}: not an image file name; use one of {', '.join(sorted(IMAGE_EXTENSIONS))}")
    if not data:
        raise InputError(f"{filename}: the file is empty")
    if len(data) > MAX_UPLOAD:
        raise InputError(f"{filename}: {len(data) / 2**20:.0f} MB is over this page's {MAX_UPLOAD >> 20} MB limit; "
                         "use derain run for large files")
    with tempfile.TemporaryDirectory(prefix="derain-web-") as folder:
        src = Path(folder) / f"input{suffix}"
        src.write_bytes(data)
        try:
            loaded = read_image(src)
        except InputError as exc:  # name the user's file, not the temporary copy
            raise InputError(str(exc).replace(str(src), filename)) from None
        with models.lock:
            out = models.get(weights)(loaded.image, tile=tile)
        dst = Path(folder) / "output.png"
        write_image(dst, out, alpha=loaded.alpha, bit_depth=loaded.bit_depth)
        return dst.read_bytes()


def page(models: Models) -> str:
    options = "".join(f'<option value="{html.escape(n)}">{html.escape(n)}</option>' for n in models.names)
    accept = ",".join(sorted(IMAGE_EXTENSIONS))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>derain</title>'
        '<link rel="stylesheet" href="/static/app.css"></head><body><h1>derain</h1>'
        "<p>Remove rain from your images. They stay on this machine: the page talks only to the derain server "
        "you started.</p>"
        f'<div id="controls"><label>weights <select id="weights">{options}</select></label> '
        f'<label id="pick">images <input id="files" type="file" multiple accept="{accept}"></label></div>'
        '<div id="drop">or drop images here</div><div id="results"></div>'
        '<script src="/static/app.js"></script></body></html>'
    )


def create_app(weights: list[str] | None = None, *, device: str = "auto") -> FastAPI:
    """The page's app; ``weights``: catalog names or checkpoint paths offered (default: the bundled model)."""
    models = Models(weights or [derain.inference.DEFAULT_WEIGHTS], device)
    app = FastAPI(title="derain", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page(models)

    add_static(app, ("app.css", "app.js"))

    @app.post("/api/derain")
    async def run(request: Request, name: str, weights: str | None = None, tile: int | None = None) -> Response:
        data = await request.body()
        start = time.perf_counter()
        try:
            png = await run_in_threadpool(derain_bytes, models, weights or models.names[0], name, data, tile=tile)
        except InputError as exc:
            raise HTTPException(400, str(exc)) from None
        seconds = time.perf_counter() - start
        return Response(png, media_type="image/png", headers={"X-Derain-Seconds": f"{seconds:.3f}"})

    return app
