"""Serving derain's local pages in this process: ``derain web`` (derain your images) and ``derain review`` (review a
real-rain dataset). Each runs until Ctrl+C or SIGTERM (uvicorn stops cleanly on both). They serve on loopback
unless ``allow_remote`` (``--allow-remote``) is given; then every request needs the token printed in the URL.

The web extra (fastapi, uvicorn) is imported here, on first use, so the CLI starts without it.
"""

from __future__ import annotations

import errno
import socket
import sys
import threading
import webbrowser
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from derain.device import resolve_device
from derain.errors import DerainError, InputError
from derain.web.guard import Access

_EXTRA = 'the web pages need the web extra: pip install "derain[web]"'


def check_port(host: str, port: int) -> None:
    """Fail with a clear message when ``host:port`` cannot be served on (in use, or not an address here)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be opened ({exc.strerror})"
            raise DerainError(f"port {port} on {host} {why}; pass another one with --port") from None


def _serve(make_app: Callable[[Access], Any], *, what: str, host: str, port: int, open_browser: bool, note: str,
           allow_remote: bool) -> None:
    access = Access(host=host, allow_remote=allow_remote)  # a non-loopback host without --allow-remote stops here
    try:
        import uvicorn
    except ImportError:
        raise InputError(_EXTRA) from None
    app = make_app(access)
    check_port(host, port)
    url = access.url(port)
    if allow_remote:
        print(f"{what}: serving on {host}, to other machines too: anyone with this URL (its token) can use the "
              "page", flush=True)
    print(f"{what}: {url} (Ctrl+C stops{note})", flush=True)
    if open_browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    uvicorn.run(app, host=host, port=port, log_level="warning")
    sys.stdout.flush()


def serve_derain(weights: Sequence[str] | None = None, *, device: str = "auto", host: str = "127.0.0.1",
                 port: int = 8000, open_browser: bool = True, allow_remote: bool = False) -> None:
    """The page that derains your images (``derain web``), offering ``weights`` (default: derain.default).
    ``allow_remote``: serve a non-loopback ``host`` too, behind a random token (see :mod:`derain.web.guard`)."""
    resolve_device(device)  # checked now: the page loads its models on first use

    def make(access: Access) -> Any:
        try:
            from derain.web.app import create_app
        except ImportError:
            raise InputError(_EXTRA) from None
        return create_app(list(weights) if weights else None, device=device, access=access)

    _serve(make, what="derain web", host=host, port=port, open_browser=open_browser, note="",
           allow_remote=allow_remote)


def serve_review(dataset: str | Path, *, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = True,
                 allow_remote: bool = False) -> None:
    """The review page of a dataset made by ``derain build-dataset`` (``derain review DATASET``).
    ``allow_remote``: serve a non-loopback ``host`` too, behind a random token (see :mod:`derain.web.guard`)."""
    def make(access: Access) -> Any:
        try:
            from derain.web.review import create_app
        except ImportError:
            raise InputError(_EXTRA) from None
        return create_app(dataset, access=access)

    _serve(make, what="derain review", host=host, port=port, open_browser=open_browser,
           note="; decisions are saved as you click", allow_remote=allow_remote)
