"""The pages' CSS and JavaScript, shipped beside the modules as package data."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, HTTPException
from fastapi.responses import Response

MEDIA_TYPES = {".css": "text/css", ".js": "text/javascript"}


def add_static(app: FastAPI, names: tuple[str, ...]) -> None:
    """Serve ``/static/<name>`` for each of ``names`` (files of the ``derain.web`` package); nothing else."""

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in names:
            raise HTTPException(404, f"no file {name!r}")
        data = resources.files("derain.web").joinpath(name).read_bytes()
        return Response(data, media_type=MEDIA_TYPES[name[name.rindex("."):]])
