"""Who may talk to the local pages (DESIGN rule 13, "serve like Jupyter, not like a demo").

:class:`Access` says how a page is served: on a loopback address (the default) or, with ``--allow-remote``, on any
address behind a random token. :class:`Guard` is the ASGI middleware that enforces it before any route runs:

* loopback serving answers only requests whose ``Host`` is a loopback name (``localhost``, ``127.0.0.1``,
  ``::1``) or the bound address, so a web page that rebinds its own DNS name to 127.0.0.1 gets a 403;
* with ``--allow-remote`` every request carries the token: ``?token=...`` in the printed URL (the answer sets a
  cookie, so the page's own requests need nothing more), an ``Authorization: token ...`` header, or that cookie;
* a state-changing request (anything but GET and HEAD) must come from the page itself: an ``Origin``, when a
  browser sends one, equal to the page's own, and a ``Content-Type`` the route takes (JSON for the review page;
  other sites can send neither without the browser asking first, and this server never says yes).

Everything refused is a 403 with a one-line reason as JSON ``{"detail": ...}``, like the routes' own errors.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from derain.errors import InputError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine only; other names count as remote."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    """How a page is served: ``host`` (the bound address) and, with ``allow_remote``, the ``token`` every request
    must carry (a fresh random one unless given)."""

    host: str = "127.0.0.1"
    allow_remote: bool = False
    token: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not self.allow_remote and not is_loopback(self.host):
            raise InputError(f"--host {self.host} would serve this page to other machines; pass --allow-remote as "
                             "well to do that (every request then needs the token printed in the URL), or serve "
                             "on 127.0.0.1 (the default)")
        if self.allow_remote and not self.token:
            object.__setattr__(self, "token", secrets.token_urlsafe(24))

    def url(self, port: int) -> str:
        """The URL to print and open: the bound address (this machine's name for 0.0.0.0 / ::), plus the token."""
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        if ":" in host:
            host = f"[{host.strip('[]')}]"
        return f"http://{host}:{port}/" + (f"?token={self.token}" if self.token else "")


def _host_name(value: str) -> str:
    """The name part of a ``Host`` header (``[::1]:8000`` -> ``::1``, ``localhost:8000`` -> ``localhost``)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """ASGI middleware: ``Guard(app, access=Access(...), content_types=("application/json",))``.

    ``content_types``: what a state-changing request may send (an entry ending in ``/`` takes the whole type,
    ``image/`` takes ``image/png``...).
    """

    def __init__(self, app: ASGIApp, *, access: Access, content_types: tuple[str, ...]) -> None:
        self.app = app
        self.access = access
        self.content_types = content_types
        self.hosts = LOOPBACK_NAMES | {access.host.strip("[]").lower()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for key, value in scope.get("headers", []):
            headers.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
        port = (scope.get("server") or ("", 0))[1]
        cookie_name = f"derain-token-{port}"
        refusal, set_cookie = self._check(scope, headers, cookie_name)
        if refusal is not None:
            await _refuse(send, refusal)
            return
        if not set_cookie:
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie = f"{cookie_name}={self.access.token}; Path=/; HttpOnly; SameSite=Strict"
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode("latin-1"))]
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def _check(self, scope: Scope, headers: dict[str, str], cookie_name: str) -> tuple[str | None, bool]:
        """(the reason to refuse, or None; whether to set the token's cookie)."""
        host = headers.get("host", "")
        set_cookie = False
        if self.access.token:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = query.get("token", [""])[0]
            authorization = headers.get("authorization", "")
            if authorization.lower().startswith("token "):
                given = given or authorization[6:].strip()
            from_cookie = ""
            if "cookie" in headers:
                try:
                    jar = SimpleCookie(headers["cookie"])
                except Exception:  # a malformed cookie header is no token
                    jar = SimpleCookie()
                if cookie_name in jar:
                    from_cookie = jar[cookie_name].value
            if _same(given, self.access.token):
                set_cookie = from_cookie != self.access.token
            elif not _same(from_cookie, self.access.token):
                return ("this page needs its token: open the URL that derain printed when it started "
                        "(http://...?token=...)"), False
        elif _host_name(host) not in self.hosts:
            return (f"Host {host!r} is not this machine's loopback address; open the page at "
                    "http://127.0.0.1 (pages on other sites may not reach it)"), False
        if scope.get("method", "GET") not in SAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None and origin.lower() not in (f"http://{host}".lower(), f"https://{host}".lower()):
                return f"Origin {origin!r} is not this page; only the page itself may change things", False
            fetch_site = headers.get("sec-fetch-site")
            if fetch_site is not None and fetch_site not in ("same-origin", "none"):
                return f"a {fetch_site} request may not change things; only the page itself may", False
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if not any(kind == t or (t.endswith("/") and kind.startswith(t) and len(kind) > len(t))
                       for t in self.content_types):
                wanted = " or ".join(t + "*" if t.endswith("/") else t for t in self.content_types)
                return f"a {scope.get('method')} must send Content-Type {wanted} (got {kind or 'none'!r})", False
        return None, set_cookie


def _same(given: str, token: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


async def _refuse(send: Send, reason: str) -> None:
    body = json.dumps({"detail": reason}).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def one_line_errors(app: Any) -> None:
    """Answer a request that does not fit a route's parameters (a missing ``name``, a ``tile`` that is no number)
    with a 400 and one line naming the parameter, instead of FastAPI's 422 with a list of objects."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    async def invalid(request: Any, exc: Exception) -> JSONResponse:
        errors = getattr(exc, "errors", lambda: [])()
        parts = []
        for error in errors[:3]:
            where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "path", "body"))
            parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
        return JSONResponse({"detail": " ".join(("bad request: " + "; ".join(parts)).split())}, status_code=400)

    app.add_exception_handler(RequestValidationError, invalid)
