"""Browser tests: Debian's headless Chromium driven by Selenium through Debian's chromedriver.

Without ``chromium`` and ``chromedriver`` on the PATH (Debian: ``apt-get install chromium chromium-driver``) or
without Selenium (``pip install -e ".[dev]"``) the browser tests skip with that reason; ``DERAIN_REQUIRE_BROWSER=1``
(set by ``.ci/run``) turns the skip into a failure. The driver is given by path, so Selenium Manager never tries to
download one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

# Chromium as root on a machine with a closed network: no sandbox, no GPU, no background connections.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,2400"]


def _unavailable(reason: str) -> None:
    if os.environ.get("DERAIN_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[WebDriver]:
    """A headless Chromium session (a Selenium ``WebDriver``); it and its driver are stopped on exit."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        _unavailable("Chromium and ChromeDriver are not installed (Debian: apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
    except ImportError:
        _unavailable('Selenium is not installed (pip install -e ".[dev]")')
    profile = tempfile.mkdtemp(prefix="derain-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@contextmanager
def serving(app, *, log_level: str = "critical") -> Iterator[int]:
    """``app`` served by uvicorn on 127.0.0.1 in a thread (the web extra must be installed); yields its port."""
    import threading

    import uvicorn

    from tests.conftest import free_port, wait_for

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="the server")
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)
