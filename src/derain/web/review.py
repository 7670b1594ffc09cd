"""The review page of a real-rain dataset (SPANet §3's human step), served on localhost.

Every sequence of ``manifest.json`` gets a card: its numbers (N, density, p, coverage), the clean estimate, a few
rainy frames, the amplified difference ``|rain - clean|`` and the rain mask. A click opens any picture in a
viewer that zooms (1x to 16x, pixels kept sharp), flips between clean / rain / difference / mask of one frame and
steps through every frame. Accept, Reject and Rebuild +10/+20/+50 call :func:`derain.data.rainbuild.decide`,
which saves ``decisions.json`` and rewrites the list file at once: review survives a restart, and only accepted
sequences reach ``real_world.txt``. Sequences that failed or whose camera moves are listed with their reason.

Bad requests get a 4xx with a one-line reason, never a 500: a decision must be a small JSON object (finite
numbers, no deep nesting, a known sequence and decision); a picture missing from the disk is a 404. A
``decisions.json`` that cannot be read is shown on the page with how to fix it, and no click writes over it; a
dataset folder that cannot be written is refused at start. Who may connect: :mod:`derain.web.guard`.
"""

from __future__ import annotations

import html
import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from derain.data.rainbuild import (
    DECISIONS_FILE,
    LIST_FILE,
    MANIFEST,
    Decision,
    SequenceEntry,
    decide,
    read_decisions,
    read_manifest,
)
from derain.errors import InputError
from derain.web.guard import Access, Guard, one_line_errors

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.requests import ClientDisconnect
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise InputError('the review page needs the web extra: pip install "derain[web]" (or decide from the command '
                     "line: derain review DATASET --accept/--reject/--rebuild NAME)") from exc

from derain.web.static import add_static  # after the extra's check

DIFF_GAIN = 4
SHOWN_FRAMES = 3
KINDS = ("rain", "mask", "diff")
MAX_BODY = 64 << 10  # bytes of a decision request (one is under 100)
CONTENT_TYPES = ("application/json",)


State = dict[str, tuple[SequenceEntry, Decision]]


def decisions_problem(dataset: Path) -> str | None:
    """Why ``decisions.json`` cannot be read, and how to fix it; None when it can (or does not exist yet)."""
    try:
        read_decisions(dataset)
    except InputError as exc:
        return (f"{exc}. Review is paused so that nothing writes over it: fix the file (a JSON object such as "
                f'{{"street": {{"decision": "accepted"}}}}) or move it away (every sequence is then pending), then '
                "reload this page")
    return None


def _state(dataset: Path) -> State:
    manifest = read_manifest(dataset)
    decisions = read_decisions(dataset) if decisions_problem(dataset) is None else {}
    return {name: (manifest[name], decisions.get(name, Decision())) for name in sorted(manifest)}


def _as_json(state: State) -> dict[str, dict[str, Any]]:
    return {name: {**entry.to_json(), "decision": decision.decision, "more": decision.more or None}
            for name, (entry, decision) in state.items()}


def _counts(state: State) -> dict[str, int]:
    counts = {"accepted": 0, "rejected": 0, "rebuild": 0, "pending": 0, "not built": 0}
    for entry, decision in state.values():
        counts[decision.decision if entry.built else "not built"] += 1
    return counts


def _listed_pairs(dataset: Path) -> int:
    path = dataset / LIST_FILE
    return sum(1 for line in path.read_text().splitlines() if line.strip()) if path.exists() else 0


def difference_png(rain: Path, clean: Path, *, gain: int = DIFF_GAIN) -> bytes:
    """``|rain - clean| * gain`` as an 8-bit RGB PNG."""
    a = np.asarray(Image.open(rain).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(clean).convert("RGB"), dtype=np.int16)
    if a.shape != b.shape:
        raise InputError(f"{rain}: {a.shape[1]}x{a.shape[0]}, but the clean image is {b.shape[1]}x{b.shape[0]}")
    diff = np.clip(np.abs(a - b) * gain, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(diff).save(buffer, format="PNG")
    return buffer.getvalue()


def _shown(pairs: tuple[str, ...]) -> list[str]:
    if len(pairs) <= SHOWN_FRAMES:
        return list(pairs)
    step = (len(pairs) - 1) / (SHOWN_FRAMES - 1)
    return [pairs[round(k * step)] for k in range(SHOWN_FRAMES)]


def _card(name: str, entry: SequenceEntry, decision: Decision, *, paused: bool = False) -> str:
    e = html.escape
    if not entry.built:
        return (f'<section class="seq unbuilt" data-name="{e(name)}"><h2>{e(name)} <span class="decision" '
                f'data-decision="{e(entry.status)}">{e(entry.status)}</span></h2><p class="reason">'
                f'{e(entry.reason)}</p></section>')
    label = "unknown" if paused else decision.label
    head = (f'<h2>{e(name)} <span class="decision" data-decision="{e(decision.decision)}">{e(label)}</span>'
            "</h2>")
    pairs = entry.pairs
    stats = (f"N = {entry.frames_used} frames ({entry.extra} added by rebuilds); rain density "
             f"{entry.density:.1%} (the paper's rule gives N = {entry.n_from_density}); global rank "
             f"p = {entry.p:.3f}, inside {entry.coverage:.0%} of the mode ranges; source {e(entry.source)}")

    def figure(src: str, caption: str, kind: str, frame: str) -> str:
        return (f'<figure><img src="{e(src)}" alt="{e(caption)}" data-kind="{kind}" data-frame="{e(frame)}" '
                f'loading="lazy"><figcaption>{e(caption)}</figcaption></figure>')

    shown = _shown(pairs)
    figures = [figure(f"/img/{name}/clean", "clean estimate", "clean", shown[0])]
    figures += [figure(f"/img/{name}/rain/{p}", f"rain {p}", "rain", p) for p in shown]
    figures += [figure(f"/img/{name}/diff/{shown[0]}", f"|rain - clean| x{DIFF_GAIN}, {shown[0]}", "diff",
                       shown[0]),
                figure(f"/img/{name}/mask/{shown[0]}", f"mask {shown[0]}", "mask", shown[0])]
    buttons = ('<button data-decision="accepted">Accept</button><button data-decision="rejected">Reject</button>'
               + "".join(f'<button data-decision="rebuild" data-more="{m}">Rebuild +{m}</button>'
                         for m in (10, 20, 50))) if not paused else ""
    return (f'<section class="seq" data-name="{e(name)}" data-frames="{e(json.dumps(list(pairs)))}">{head}'
            f'<p class="stats">{stats}</p><div class="strip">{"".join(figures)}</div>'
            f'<div class="actions">{buttons}<span class="message"></span></div></section>')




def _summary(dataset: Path, state: State) -> str:
    if decisions_problem(dataset) is not None:
        return f"{len(state)} sequence(s); the decisions cannot be read"
    counts = _counts(state)
    parts = [f"{v} {k}" for k, v in counts.items() if v]
    return f"{len(state)} sequence(s): {', '.join(parts) or 'none'}; {LIST_FILE} lists {_listed_pairs(dataset)} pairs"


def page(dataset: Path) -> str:
    """The whole review page of ``dataset`` as HTML."""
    state = _state(dataset)
    problem = decisions_problem(dataset)
    cards = "".join(_card(name, *item, paused=problem is not None) for name, item in state.items()) or \
        "<p>No sequences in manifest.json.</p>"
    warning = f'<p id="problem" class="error">{html.escape(problem)}</p>' if problem else ""
    kinds = "".join(f'<button data-kind="{k}">{k}</button>' for k in ("clean", "rain", "diff", "mask"))
    viewer = (f'<div id="viewer"><div class="bar"><button id="close">Close (Esc)</button>{kinds}'
              '<label>zoom <input id="zoom" type="range" min="1" max="16" step="1" value="2"></label>'
              '<span id="zoomed">2x</span><label>frame <input id="frame" type="range" min="0" value="0"></label>'
              '<span id="where"></span></div><div class="pane"><img id="big" alt="zoomed view"></div></div>')
    title = f"derain review: {html.escape(dataset.name or str(dataset))}"
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f'<link rel="stylesheet" href="/static/review.css"></head><body><h1>{title}</h1>'
            f'<p id="counts">{html.escape(_summary(dataset, state))}</p>{warning}'
            "<p>Accept a sequence when its clean estimate shows no rain and no ghosts of moving objects; reject it "
            "otherwise, or rebuild it with more frames (the next <code>derain build-dataset</code> run does it). "
            "Click a picture to zoom.</p>"
            f'{cards}{viewer}<script src="/static/review.js"></script></body></html>')


def check_writable(dataset: Path) -> None:
    """Refuse a dataset folder this process cannot write: the page saves every decision into it at once."""
    try:
        with tempfile.NamedTemporaryFile(dir=dataset, prefix=".derain-review-"):
            pass
    except OSError as exc:
        raise InputError(f"{dataset}: cannot write to this folder ({exc.strerror or exc}); the review page saves "
                         f"{DECISIONS_FILE} and {LIST_FILE} there as you click. Make it writable, or copy the dataset "
                         "somewhere writable (derain review --list only reads)") from None


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is too large")
    return value


def _reject_constant(text: str) -> None:
    raise ValueError(f"{text} is not a number JSON allows")


def parse_decision(body: bytes) -> tuple[str, str, int]:
    """``{"name": ..., "decision": ..., "more": ...}`` -> (name, decision, more); InputError with the reason."""
    usage = 'the body must be a JSON object {"name": ..., "decision": ..., "more": 10, 20 or 50}'
    try:
        data = json.loads(body, parse_float=_parse_float, parse_constant=_reject_constant)
    except RecursionError:
        raise InputError(f"{usage}; this one is nested too deeply") from None
    except ValueError as exc:  # also UnicodeDecodeError
        raise InputError(f"{usage} ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(data, dict):
        raise InputError(usage)
    name, decision, more = data.get("name"), data.get("decision"), data.get("more")
    if not isinstance(name, str) or not isinstance(decision, str):
        raise InputError(f"{usage}; name and decision must be text")
    if more is None:
        more = 0
    if isinstance(more, bool) or not isinstance(more, int):
        raise InputError("more must be a whole number of frames: 10, 20 or 50")
    return name, decision, more


def create_app(dataset: str | Path, *, access: Access | None = None) -> FastAPI:
    """The review app of ``dataset`` (a folder made by ``derain build-dataset``); ``access``: how it is served
    (default: loopback, no token)."""
    dataset = Path(dataset)
    if not (dataset / MANIFEST).is_file():
        raise InputError(f"{dataset}: no {MANIFEST}; build the dataset with derain build-dataset first")
    read_manifest(dataset)  # fails early on a broken manifest
    check_writable(dataset)
    app = FastAPI(title="derain review", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, access=access or Access(), content_types=CONTENT_TYPES)
    one_line_errors(app)

    @app.exception_handler(InputError)
    async def dataset_problem(request: Request, exc: InputError) -> Response:
        # the dataset's files changed under the page (a broken manifest.json, an unreadable picture): say which
        return _problem(request, 409, " ".join(str(exc).split()))

    @app.exception_handler(OSError)
    async def disk_problem(request: Request, exc: OSError) -> Response:
        where = f"{exc.filename}: " if exc.filename else ""
        return _problem(request, 409, f"{where}{exc.strerror or exc} (the dataset folder could not be read or "
                                      "written)")

    def built(name: str) -> SequenceEntry:
        entry = read_manifest(dataset).get(name) if name not in ("", ".", "..") and "/" not in name else None
        if entry is None or not entry.built:
            raise HTTPException(404, f"no built sequence named {name!r}")
        return entry

    def on_disk(path: Path) -> Path:
        if not path.is_file():
            raise HTTPException(404, f"{path.relative_to(dataset)} is listed in {MANIFEST} but missing on disk; "
                                     "rebuild the sequence (derain review --rebuild NAME, then derain build-dataset)")
        return path

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page(dataset)

    add_static(app, ("review.css", "review.js"))

    @app.get("/api/sequences")
    def sequences() -> dict[str, Any]:
        problem = decisions_problem(dataset)
        if problem is not None:
            raise HTTPException(409, problem)
        state = _state(dataset)
        return {"sequences": _as_json(state), "counts": _counts(state), "summary": _summary(dataset, state)}

    @app.post("/api/decision")
    async def decision(request: Request) -> JSONResponse:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            raise HTTPException(413, f"a decision is a small JSON object; {int(length)} bytes is over {MAX_BODY}")
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY:
                    raise HTTPException(413, f"a decision is a small JSON object; this one is over {MAX_BODY} bytes")
        except ClientDisconnect:
            raise HTTPException(400, "the request was cut off") from None
        try:
            name, choice, more = parse_decision(bytes(body))
        except InputError as exc:
            raise HTTPException(400, str(exc)) from None
        problem = decisions_problem(dataset)
        if problem is not None:
            raise HTTPException(409, problem)  # never written over
        try:
            saved = decide(dataset, name, choice, more=more)
        except InputError as exc:
            raise HTTPException(400, str(exc)) from None
        return JSONResponse({"name": name, **saved.to_json(), "listed": _listed_pairs(dataset)})

    @app.get("/img/{name}/clean")
    def clean(name: str) -> FileResponse:
        built(name)
        return FileResponse(on_disk(dataset / name / "clean.png"), media_type="image/png")

    @app.get("/img/{name}/{kind}/{frame}")
    def frame(name: str, kind: str, frame: str) -> Response:
        entry = built(name)
        if kind not in KINDS or frame not in entry.pairs:  # only names the manifest lists: no path tricks
            raise HTTPException(404, f"{name}: no {kind} picture {frame!r}")
        if kind == "diff":
            rain, clean = on_disk(dataset / name / "rain" / frame), on_disk(dataset / name / "clean.png")
            try:
                return Response(difference_png(rain, clean), media_type="image/png")
            except InputError:
                raise
            except Exception as exc:  # Pillow reports a damaged file as OSError, ValueError, SyntaxError...
                raise InputError(f"{rain.relative_to(dataset)}: cannot be read ({exc})") from None
        return FileResponse(on_disk(dataset / name / kind / frame), media_type="image/png")

    return app


def _problem(request: Request, status: int, reason: str) -> Response:
    """The page itself gets the reason as a page; everything else as JSON ``{"detail": ...}``."""
    if request.url.path == "/":
        return HTMLResponse(f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>derain review'
                            f'</title></head><body><h1>derain review</h1><p class="error">{html.escape(reason)}</p>'
                            "</body></html>", status_code=status)
    return JSONResponse({"detail": reason}, status_code=status)
