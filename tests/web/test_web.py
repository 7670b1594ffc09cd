"""The review page of a real-rain dataset (issue 4): its HTTP API, and the page itself in headless Chromium."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from derain.data.rainbuild import build_dataset, read_json
from tests.conftest import frames_folder, free_port, synthetic_video, wait_for
from tests.web.conftest import chromium, serving

pytest.importorskip("fastapi", reason='the review page needs the web extra: pip install -e ".[web]"')
uvicorn = pytest.importorskip("uvicorn", reason='the review page needs the web extra: pip install -e ".[web]"')

from derain.web.review import create_app  # noqa: E402  (after the extra's check)

SEQUENCES = ("roof", "street", "yard")


def _css(browser, selector: str):  # a Selenium WebDriver -> its WebElement
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, selector)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("review")
    video = synthetic_video("normal", 14)
    inputs = [frames_folder(root / "in" / name, video) for name in SEQUENCES]
    pan = [torch.roll(f, shifts=3 * k, dims=3) for k, f in enumerate(video)]
    inputs.append(frames_folder(root / "in" / "pan", pan))
    build_dataset(inputs, root / "ds", frames=12)
    return root / "ds"


def serve(dataset: Path):  # the review page of ``dataset`` on a free port; yields its base URL
    return serve_app(create_app(dataset))


@contextmanager
def serve_app(app) -> Iterator[str]:
    with serving(app, log_level="warning") as port:
        yield f"http://127.0.0.1:{port}"


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post(url: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_api_serves_only_the_dataset_and_checks_decisions(dataset: Path) -> None:
    from PIL import Image

    with serve(dataset) as base:
        status, body = _get(base + "/")
        assert status == 200 and body.count(b'class="seq') == 4 and b"moving camera" in body
        for name, marker in (("review.css", b"#viewer"), ("review.js", b"/api/decision")):
            status, body = _get(f"{base}/static/{name}")
            assert status == 200 and marker in body, name
        assert _get(base + "/static/review.py")[0] == 404
        state = json.loads(_get(base + "/api/sequences")[1])
        assert state["sequences"]["pan"]["status"] == "moving camera" and state["counts"]["pending"] == 3
        frame = state["sequences"]["street"]["pairs"][0]
        for path in ("/img/street/clean", f"/img/street/rain/{frame}", f"/img/street/mask/{frame}",
                     f"/img/street/diff/{frame}"):
            status, png = _get(base + path)
            assert status == 200 and Image.open(io.BytesIO(png)).size == (80, 64), path
        # only pictures the manifest lists: no path tricks, no other files, no unbuilt sequence
        for path in ("/img/street/rain/..%2F..%2Fmanifest.json", "/img/street/rain/9999.png", "/img/pan/clean",
                     "/img/nope/clean", f"/img/street/clean.png/{frame}", "/img/..%2Fmanifest.json/clean"):
            assert _get(base + path)[0] == 404, path
        status, answer = _post(base + "/api/decision", {"name": "street", "decision": "maybe"})
        assert status == 400 and "unknown decision 'maybe'" in answer["detail"]
        status, answer = _post(base + "/api/decision", {"name": "street", "decision": "rebuild", "more": 7})
        assert status == 400 and "10, 20 or 50" in answer["detail"]
        status, answer = _post(base + "/api/decision", {"name": "nope", "decision": "accepted"})
        assert status == 400 and "no sequence named 'nope'" in answer["detail"]
        assert _post(base + "/api/decision", ["street"])[0] == 400
    assert read_json(dataset / "decisions.json").get("street", {}).get("decision", "pending") == "pending"


def test_review_in_headless_chromium(dataset: Path, tmp_path: Path) -> None:
    from PIL import Image

    with chromium() as browser, serve(dataset) as base:
        js = browser.execute_script
        browser.get(base + "/")
        assert js("return document.querySelectorAll('section.seq').length") == 4
        assert "moving camera" in _css(browser, 'section[data-name="pan"]').text
        assert js("return document.querySelectorAll('section[data-name=\"pan\"] button').length") == 0
        wait_for(lambda: js(
            "const s = [...document.querySelectorAll('.strip img')];"
            "return s.length === 18 && s.every(i => i.complete && i.naturalWidth === 80)"), what="every picture")
        _css(browser, 'section[data-name="street"] button[data-decision="accepted"]').click()
        _css(browser, 'section[data-name="yard"] button[data-decision="rejected"]').click()
        _css(browser, 'section[data-name="roof"] button[data-decision="rebuild"][data-more="50"]').click()
        wait_for(lambda: _css(browser, 'section[data-name="roof"] .decision').text == "rebuild +50",
                 what="the labels")
        assert _css(browser, 'section[data-name="street"] .decision').text == "accepted"
        assert _css(browser, 'section[data-name="yard"] .decision').text == "rejected"
        wait_for(lambda: "1 accepted" in _css(browser, "#counts").text, what="the counts")
        assert "lists 12 pairs" in _css(browser, "#counts").text
        # the zoomable viewer: open the difference view, zoom 4x, step a frame, flip to the mask
        viewer_display = "return getComputedStyle(document.getElementById('viewer')).display"
        assert js(viewer_display) == "none"  # the stylesheet hides the viewer until a click
        _css(browser, 'section[data-name="street"] img[data-kind="diff"]').click()
        assert js(viewer_display) == "flex"
        wait_for(lambda: js("return document.getElementById('big').naturalWidth") == 80, what="zoom")
        js("const z = document.getElementById('zoom'); z.value = 4; z.dispatchEvent(new Event('input'))")
        assert js("return document.getElementById('big').style.width") == "320px"
        first = _css(browser, "#where").text
        _css(browser, '#viewer button[data-kind="mask"]').click()
        js("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight'}))")
        assert _css(browser, "#where").text != first and "mask" in _css(browser, "#where").text
        assert "/img/street/mask/0002.png" in js("return document.getElementById('big').src")
        shot = Image.open(io.BytesIO(browser.get_screenshot_as_png()))
        assert shot.size[0] > 600 and len(np.unique(np.asarray(shot.convert("L")))) > 16  # a page, not a blank frame
        shot.save(tmp_path / "review.png")

    # saved at once: the files say so, and a new server (a restart) shows the same decisions
    decisions = read_json(dataset / "decisions.json")
    assert decisions == {"street": {"decision": "accepted"}, "yard": {"decision": "rejected"},
                         "roof": {"decision": "rebuild", "more": 50}}
    listed = (dataset / "real_world.txt").read_text().splitlines()
    assert len(listed) == 12 and all(line.startswith("street/") for line in listed)
    with chromium() as browser, serve(dataset) as base:
        js = browser.execute_script
        browser.get(base + "/")
        labels = js("return [...document.querySelectorAll('section.seq')].map("
                                "s => s.dataset.name + ':' + s.querySelector('.decision').textContent)")
        assert labels == ["pan:moving camera", "roof:rebuild +50", "street:accepted", "yard:rejected"]


def test_derain_review_serves_the_page(dataset: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "derain", "review", str(dataset), "--port", str(port),
                             "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: proc.poll() is not None or _ok(f"http://127.0.0.1:{port}/"), timeout=60, what="the page")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert b"derain review" in _get(f"http://127.0.0.1:{port}/")[1]
        # the port is taken now: a second page says so in one line
        busy = subprocess.run([sys.executable, "-m", "derain", "review", str(dataset), "--port", str(port),
                               "--no-browser"], capture_output=True, text=True, timeout=120, check=False)
        assert busy.returncode == 1 and f"port {port} on 127.0.0.1 is in use" in busy.stderr
        assert "Traceback" not in busy.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # stopping derain review stops the page it started (no server left behind)
    wait_for(lambda: not _ok(f"http://127.0.0.1:{port}/"), timeout=30, what="the page to stop")
    missing = subprocess.run([sys.executable, "-m", "derain", "review", str(dataset.parent / "none"), "--no-browser"],
                             capture_output=True, text=True, timeout=120, check=False)
    assert missing.returncode == 1 and "no manifest.json" in missing.stderr and "Traceback" not in missing.stderr


def _ok(url: str) -> bool:
    try:
        return _get(url)[0] == 200
    except OSError:
        return False


# --- derain web: derain your own images in the browser -------------------------------------------------------------


@pytest.fixture(scope="module")
def web_app():  # the page's app with the bundled default model, loaded once
    from derain.web.app import create_app as create_web_app

    return create_web_app(device="cpu")


def _headers_only(url: str, length: int, content_type: str = "image/png") -> tuple[int, bytes]:
    """POST the headers of a ``length``-byte upload and read the answer without sending the body: only a server
    that decides from Content-Length alone answers."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.putrequest("POST", f"{parts.path}?{parts.query}")
        connection.putheader("Content-Type", content_type)
        connection.putheader("Content-Length", str(length))
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _upload(url: str, data: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "image/png"})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_web_api_derains_uploads_like_the_python_api(web_app, tmp_path: Path) -> None:
    import derain
    from derain.io import read_image, write_image

    rainy = derain.sample_paths()[0]
    with serve_app(web_app) as base:
        status, png = _upload(base + "/api/derain?name=my%20photo.png", rainy.read_bytes())
        assert status == 200
        (tmp_path / "out.png").write_bytes(png)
        expected = derain.load(device="cpu")(read_image(rainy).image)
        write_image(tmp_path / "expected.png", expected)
        assert torch.equal(read_image(tmp_path / "out.png").image, read_image(tmp_path / "expected.png").image)
        status, body = _upload(base + "/api/derain?name=broken.png", b"\x89PNG\r\n\x1a\nnot really")
        detail = json.loads(body)["detail"]
        assert status == 400 and detail.startswith("broken.png:") and "input.png" not in detail
        status, body = _upload(base + "/api/derain?name=notes.txt", b"hello")
        assert status == 400 and "not an image file name" in json.loads(body)["detail"]
        status, body = _upload(base + "/api/derain?name=empty.png", b"")
        assert status == 400 and "empty" in json.loads(body)["detail"]
        status, body = _upload(base + "/api/derain?name=a.png&weights=nope", rainy.read_bytes())
        assert status == 400 and "unknown weights 'nope'" in json.loads(body)["detail"]
    from derain.errors import DerainError
    from derain.web.app import create_app as create_web_app

    with pytest.raises(DerainError):
        create_web_app(["no/such/checkpoint.pth"])


def test_web_page_in_headless_chromium(web_app, tmp_path: Path) -> None:
    import derain

    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with chromium() as browser, serve_app(web_app) as base:
        js = browser.execute_script
        browser.get(base + "/")
        assert js("return [...document.querySelectorAll('#weights option')].map(o => o.value)") == [
            "derain.default"
        ]
        _css(browser, "#files").send_keys(str(derain.sample_paths()[0]))
        wait_for(lambda: js(
            "const i = document.querySelector('.result img.after'); return i && i.complete && i.naturalWidth"),
            timeout=120, what="the derained image")
        size = js("const i = document.querySelector('.result img.after');"
                              "return [i.naturalWidth, i.naturalHeight]")
        assert size == list(read_image_size(derain.sample_paths()[0]))
        assert _css(browser, ".result h2").text == "sample_rain.png"
        assert "derain.default:" in _css(browser, ".status").text
        assert js("return document.querySelector('.result a').download") == "sample_rain_derained.png"
        js("const r = document.querySelector('.compare input'); r.value = 80;"
                       "r.dispatchEvent(new Event('input'))")
        assert "80%" in js("return document.querySelector('.result img.after').style.clipPath")
        # the stylesheet lays the result over the input
        assert js("return getComputedStyle(document.querySelector('.result img.after')).position") == (
            "absolute"
        )
        _css(browser, "#files").send_keys(str(bad))
        wait_for(lambda: "corrupt.png:" in js(
            "const e = document.querySelector('.result .status.error'); return e ? e.textContent : ''"),
            timeout=60, what="the error")


def read_image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def test_derain_web_serves_the_page() -> None:
    port = free_port()
    command = [sys.executable, "-m", "derain", "web", "--port", str(port), "--no-browser", "--device", "cpu"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: proc.poll() is not None or _ok(f"http://127.0.0.1:{port}/"), timeout=60, what="the page")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert b'<option value="derain.default">' in _get(f"http://127.0.0.1:{port}/")[1]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    wait_for(lambda: not _ok(f"http://127.0.0.1:{port}/"), timeout=30, what="the page to stop")
    bad = subprocess.run([*command[:-2], "--weights", "no-such-weights"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert bad.returncode == 1 and "no-such-weights" in bad.stderr and "Traceback" not in bad.stderr


def test_web_api_under_load(web_app, tmp_path: Path) -> None:
    """40 requests from 8 concurrent clients: varied sizes, corrupt files, one over the size limit. Every answer is
    right (results identical to derain.load()(image)), memory stays bounded (one model, one image at a time) and the
    server still serves afterwards."""
    import resource
    from concurrent.futures import ThreadPoolExecutor

    import derain
    from derain.io import read_image, write_image
    from derain.web.app import MAX_UPLOAD

    sample = read_image(derain.sample_paths()[0]).image
    restorer = derain.load(device="cpu")
    cases = []  # (name, bytes, expected status, expected image or None)
    for k in range(40):
        if k % 10 == 3:
            cases.append((f"bad{k}.png", b"\x89PNG\r\n\x1a\n" + bytes(k), 400, None))
            continue
        if k == 17:  # refused from its Content-Length, before the body is sent (see _headers_only)
            cases.append(("huge.png", b"", 413, None))
            continue
        h, w = 24 + 7 * (k % 9), 32 + 11 * (k % 7)
        crop = sample[..., k:k + h, 2 * k:2 * k + w].contiguous()
        path = tmp_path / f"in{k}.png"
        write_image(path, crop)
        data = path.read_bytes()
        write_image(tmp_path / f"want{k}.png", restorer(read_image(path).image))
        cases.append((f"in{k}.png", data, 200, read_image(tmp_path / f"want{k}.png").image))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    with serve_app(web_app) as base:
        def send(case):
            name, data, _, _ = case
            if name == "huge.png":
                return _headers_only(f"{base}/api/derain?name={name}", MAX_UPLOAD + 1)
            return _upload(f"{base}/api/derain?name={name}", data)

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(send, cases))
        for (name, _, status, want), (got_status, body) in zip(cases, answers, strict=True):
            assert got_status == status, (name, got_status, body[:200])
            if want is not None:
                (tmp_path / "got.png").write_bytes(body)
                assert torch.equal(read_image(tmp_path / "got.png").image, want), name
            elif name == "huge.png":
                assert "over this page's 64 MB limit" in json.loads(body)["detail"]
        status, _ = _upload(f"{base}/api/derain?name=again.png", (tmp_path / "in0.png").read_bytes())
        assert status == 200  # still serving
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20 - before
    assert grown < 2.0, f"peak memory grew by {grown:.2f} GiB"
