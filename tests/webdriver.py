"""A small W3C WebDriver client (standard library only) driving Debian's headless Chromium through chromedriver.

Without ``chromium`` and ``chromedriver`` on the PATH (Debian: ``apt-get install chromium chromium-driver``) the
browser tests skip with that reason; ``DERAIN_REQUIRE_BROWSER=1`` (set by ``.ci/run``) turns the skip into a failure.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
# Chromium as root on a machine with a closed network: no sandbox, no GPU, no background connections.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,2400"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_browser() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        reason = "Chromium and ChromeDriver are not installed (Debian: apt-get install chromium chromium-driver)"
        if os.environ.get("DERAIN_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return chromium, driver


def wait_for(check: Any, *, timeout: float = 20.0, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class Browser:
    def __init__(self, base: str, session: str) -> None:
        self.base, self.session = base, session

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base}/session/{self.session}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"WebDriver {method} {path}: {exc.read().decode()[:500]}") from None

    def get(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        return self._call("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def find_all(self, css: str) -> list[str]:
        return [e[ELEMENT] for e in self._call("POST", "/elements", {"using": "css selector", "value": css})]

    def click(self, css: str) -> None:
        self._call("POST", f"/element/{self.find(css)}/click", {})

    def text(self, css: str) -> str:
        return self._call("GET", f"/element/{self.find(css)}/text")

    def keys(self, css: str, keys: str) -> None:
        self._call("POST", f"/element/{self.find(css)}/value", {"text": keys})

    def script(self, source: str, *args: Any) -> Any:
        return self._call("POST", "/execute/sync", {"script": source, "args": list(args)})

    def screenshot(self) -> bytes:
        return base64.b64decode(self._call("GET", "/screenshot"))


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium session; it and its driver are stopped on exit."""
    binary, driver = require_browser()
    port = free_port()
    profile = tempfile.mkdtemp(prefix="derain-chromium-")
    proc = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    session = None
    try:
        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{base}/status", timeout=2) as r:
                    return bool(json.loads(r.read())["value"]["ready"])
            except OSError:
                return False

        wait_for(ready, what="chromedriver")
        options = {"binary": binary, "args": [*FLAGS, f"--user-data-dir={profile}"]}
        body = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}}
        request = urllib.request.Request(f"{base}/session", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            session = json.loads(response.read())["value"]["sessionId"]
        yield Browser(base, session)
    finally:
        if session is not None:
            with suppress(OSError):
                urllib.request.urlopen(urllib.request.Request(f"{base}/session/{session}", method="DELETE"),
                                       timeout=30).close()
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)
