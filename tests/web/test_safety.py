"""Issue 32: the pages are safe to leave running (DESIGN rule 13). Each of the probe's cases 1-4 and 8 is a test here:
uploads are refused before they are read and memory stays bounded (1), another address needs --allow-remote and a
token (2), other web sites cannot drive the review page (3), the review page answers every bad request with a 4xx
and a reason (4), small tiles and tiny images (8); and a bounded fuzz test of both pages. Loopback only."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from derain.data.rainbuild import build_dataset
from derain.errors import InputError
from tests.conftest import frames_folder, free_port, synthetic_video, wait_for
from tests.web.conftest import serving

pytest.importorskip("fastapi", reason='the pages need the web extra: pip install -e ".[web]"')
uvicorn = pytest.importorskip("uvicorn", reason='the pages need the web extra: pip install -e ".[web]"')

from derain.web.guard import Access  # noqa: E402  (after the extra's check)
from derain.web.review import create_app as review_app  # noqa: E402

SEQUENCES = ("roof", "street")


# --- servers and requests ------------------------------------------------------------------------------------------


def ask(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
        ) -> tuple[int, bytes, http.client.HTTPResponse]:
    """One request to 127.0.0.1:``port``; ``headers`` may name the Host (default: the page's own)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Host": f"127.0.0.1:{port}", **(headers or {})}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(), response
    finally:
        connection.close()


def detail(body: bytes) -> str:
    return json.loads(body)["detail"]


def post_json(port: int, path: str, data: object | bytes, **headers: str) -> tuple[int, bytes]:
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    status, answer, _ = ask(port, "POST", path, body, {"Content-Type": "application/json", **headers})
    return status, answer


# --- a small dataset and the web page's model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("safety")
    video = [f[..., :24, :32].contiguous() for f in synthetic_video("normal", 3)]
    build_dataset([frames_folder(root / "in" / name, video) for name in SEQUENCES], root / "ds", frames=3)
    return root / "ds"


@pytest.fixture
def dataset(built: Path, tmp_path: Path) -> Path:
    """A fresh copy of the dataset for a test that changes it."""
    return Path(shutil.copytree(built, tmp_path / "ds"))


@pytest.fixture(scope="module")
def web_app():
    from derain.web.app import create_app

    return create_app(device="cpu")


def tiny_png(width: int, height: int, *, pixels: bool = True) -> bytes:
    """A greyscale PNG; ``pixels=False``: the header of a ``width x height`` image with no pixel data (a file that
    only a reader deciding from the header refuses without trying to decode it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + bytes(range(width)) for _ in range(height)) if pixels else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


# --- 1. uploads: limits before reading, memory bounded -------------------------------------------------------------


def test_upload_over_the_limit_is_refused_from_its_content_length(web_app) -> None:
    from derain.web.app import MAX_UPLOAD

    with serving(web_app) as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.putrequest("POST", "/api/derain?name=big.png")
        connection.putheader("Content-Type", "image/png")
        connection.putheader("Content-Length", str(10 << 30))  # 10 GiB, never sent: the answer comes first
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        assert "over this page's 64 MB limit" in detail(response.read())
        connection.close()
        # a chunked body (no Content-Length) is read in pieces and refused at the limit
        def pieces() -> Iterator[bytes]:
            for _ in range((MAX_UPLOAD >> 20) + 2):
                yield bytes(1 << 20)

        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            connection.request("POST", "/api/derain?name=big.png", body=pieces(), encode_chunked=True,
                               headers={"Content-Type": "image/png"})
            response = connection.getresponse()
            assert response.status == 413 and "64 MB limit" in detail(response.read())
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the last pieces were sent
        finally:
            connection.close()
        assert ask(port, "GET", "/")[0] == 200


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM) in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) * 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak memory from /proc (Linux)")
def test_a_512_mib_stream_leaves_the_server_memory_bounded() -> None:
    """The probe: a 512 MiB chunked upload raised derain web's memory from 354 MB to 1.39 GB (read whole, then
    refused). Now it is read in pieces to disk and refused at 64 MB; the server's peak grows by < 100 MB."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "derain", "web", "--port", str(port), "--no-browser", "--device",
                             "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def up() -> bool:
            try:
                return ask(port, "GET", "/")[0] == 200
            except OSError:
                return proc.poll() is not None

        wait_for(up, timeout=120, what="derain web")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        before = _peak_rss(proc.pid)
        chunk = bytes(1 << 20)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        status = None
        try:
            connection.request("POST", "/api/derain?name=stream.png", body=(chunk for _ in range(512)),
                               encode_chunked=True, headers={"Content-Type": "image/png"})
            status = connection.getresponse().status
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (413) and closed while the rest was still being sent
        finally:
            connection.close()
        grown = _peak_rss(proc.pid) - before
        assert grown < 100 << 20, f"the server's peak memory grew by {grown >> 20} MB"
        assert status in (None, 413)
        assert ask(port, "GET", "/")[0] == 200  # still serving
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_pixel_budget_is_checked_from_the_header(web_app) -> None:
    from derain.web.app import MAX_PIXELS

    header_only = tiny_png(8000, MAX_PIXELS // 8000 + 1, pixels=False)  # 40 Mpx + a row, a few dozen bytes
    with serving(web_app) as port:
        status, body, _ = ask(port, "POST", "/api/derain?name=wide.png", header_only, {"Content-Type": "image/png"})
        assert status == 400 and "over this page's 40 Mpx budget" in detail(body), body
        assert b"40 Mpx per image" in ask(port, "GET", "/")[1]  # the page states it


# --- 2. another address needs --allow-remote, and then a token -----------------------------------------------------


def test_a_non_loopback_host_needs_allow_remote(built: Path) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.1", "example.com"):
        with pytest.raises(InputError, match="--allow-remote"):
            Access(host=host)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert Access(host=host).token == ""
    assert len(Access(host="0.0.0.0", allow_remote=True).token) >= 24
    # the commands refuse before anything is bound (192.0.2.1: a documentation address, on no machine)
    for command in (["web", "--device", "cpu"], ["review", str(built)]):
        done = subprocess.run([sys.executable, "-m", "derain", *command, "--host", "192.0.2.1", "--no-browser"],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 1 and "pass --allow-remote" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_allow_remote_requires_the_token_on_every_request(built: Path) -> None:
    app = review_app(built, access=Access(host="127.0.0.1", allow_remote=True, token="s3cret-token"))
    with serving(app) as port:
        for path in ("/", "/api/sequences", "/static/review.js", "/img/roof/clean", "/?token=wrong"):
            status, body, _ = ask(port, "GET", path)
            assert status == 403 and "needs its token" in detail(body), path
        status, _, response = ask(port, "GET", "/?token=s3cret-token")
        cookie = response.getheader("Set-Cookie")
        assert status == 200 and cookie.startswith(f"derain-token-{port}=s3cret-token") and "HttpOnly" in cookie
        assert ask(port, "GET", "/api/sequences", headers={"Cookie": cookie.split(";")[0]})[0] == 200
        assert ask(port, "GET", "/img/roof/clean", headers={"Authorization": "token s3cret-token"})[0] == 200
        assert post_json(port, "/api/decision", {"name": "roof", "decision": "accepted"})[0] == 403
    # derain review --allow-remote prints the URL with its token (served on loopback here)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "derain", "review", str(built), "--allow-remote", "--port",
                             str(port), "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while "token=" not in line and proc.poll() is None:
            line = proc.stdout.readline()
        match = re.search(r"http://\S+:(\d+)/\?token=([\w-]+)", line)
        assert match and int(match.group(1)) == port, line
        wait_for(lambda: _answers(port), timeout=60, what="derain review")
        assert ask(port, "GET", "/")[0] == 403
        assert ask(port, "GET", f"/?token={match.group(2)}")[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _answers(port: int) -> bool:
    try:
        ask(port, "GET", "/")
        return True
    except OSError:
        return False


# --- 3. other web sites cannot drive the pages ---------------------------------------------------------------------


def test_other_sites_cannot_change_decisions(dataset: Path, web_app) -> None:
    """The probe: a text/plain POST with Origin https://evil.example (and Host evil.example, DNS rebinding) was
    accepted and changed decisions.json."""
    decision = json.dumps({"name": "roof", "decision": "accepted"}).encode()
    before = (dataset / "decisions.json").read_bytes()
    with serving(review_app(dataset)) as port:
        refused = [
            {"Content-Type": "text/plain", "Origin": "https://evil.example"},
            {"Content-Type": "text/plain"},
            {"Content-Type": "application/json", "Origin": "https://evil.example"},
            {"Content-Type": "application/json", "Origin": "null"},
            {"Content-Type": "application/json", "Host": "evil.example"},
            {"Content-Type": "application/json", "Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"},
            {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"},
        ]
        for headers in refused:
            status, body, _ = ask(port, "POST", "/api/decision", decision, headers)
            assert status == 403 and detail(body), headers
        assert (dataset / "decisions.json").read_bytes() == before
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
            assert ask(port, "GET", "/", headers={"Host": host})[0] == 403, host
        for host in (f"localhost:{port}", f"[::1]:{port}", "127.0.0.1"):
            assert ask(port, "GET", "/api/sequences", headers={"Host": host})[0] == 200, host
        # the page itself (same origin, JSON) and a command-line client (no Origin) still decide
        assert post_json(port, "/api/decision", {"name": "roof", "decision": "accepted"},
                         Origin=f"http://127.0.0.1:{port}")[0] == 200
        assert post_json(port, "/api/decision", {"name": "street", "decision": "rejected"})[0] == 200
    with serving(web_app) as port:
        status, body, _ = ask(port, "POST", "/api/derain?name=a.png", tiny_png(4, 4),
                              {"Content-Type": "text/plain", "Origin": "https://evil.example"})
        assert status == 403
        assert ask(port, "GET", "/", headers={"Host": "evil.example"})[0] == 403
        status, body, _ = ask(port, "POST", "/api/derain?name=a.png", tiny_png(4, 4), {"Content-Type": "image/png",
                              "Origin": f"http://127.0.0.1:{port}"})
        assert status == 200 and body.startswith(b"\x89PNG")


# --- 4. the review page: a 4xx with a reason for every bad request -------------------------------------------------


def test_review_answers_bad_decisions_with_a_4xx_and_a_reason(dataset: Path) -> None:
    before = (dataset / "decisions.json").read_bytes()
    with serving(review_app(dataset)) as port:
        cases = [
            b'{"name": "roof", "decision": "rebuild", "more": 1e400}',
            b'{"name": "roof", "decision": "rebuild", "more": NaN}',
            b'{"name": "roof", "decision": "rebuild", "more": "20"}',
            b'{"name": "roof", "decision": "rebuild", "more": true}',
            b'{"name": "roof", "decision": "rebuild", "more": 20.5}',
            b"[" * 20_000 + b"]" * 20_000,  # deep, but under the size limit: the parser's recursion
            b"[" * 100_000 + b"]" * 100_000,  # the probe's 100,000-deep JSON: over the size limit
            b'{"name": ["roof"], "decision": "accepted"}',
            b'{"name": "nope", "decision": "accepted"}',
            b'{"name": "roof", "decision": "maybe"}',
            b'{"name": "roof"',
            b"\xff\xfe",
            b"",
        ]
        for body in cases:
            status, answer = post_json(port, "/api/decision", body)
            assert 400 <= status < 500, (body[:60], status, answer[:300])
            reason = detail(answer)
            assert reason and "\n" not in reason and "Traceback" not in reason, reason
        assert ask(port, "GET", "/api/decision")[0] == 405
        assert ask(port, "GET", "/img/nope/clean")[0] == 404
    assert (dataset / "decisions.json").read_bytes() == before


def test_corrupt_decisions_are_reported_and_never_overwritten(dataset: Path) -> None:
    broken = b'{"roof": {"decision": "acc'  # the probe's truncated decisions.json
    (dataset / "decisions.json").write_bytes(broken)
    with serving(review_app(dataset)) as port:
        status, page, _ = ask(port, "GET", "/")
        assert status == 200 and b'id="problem"' in page and b"decisions.json" in page
        assert b"fix the file" in page and b"move it away" in page
        assert b'data-decision="accepted">Accept' not in page  # no buttons while review is paused
        status, body, _ = ask(port, "GET", "/api/sequences")
        assert status == 409 and "decisions.json" in detail(body)
        status, body = post_json(port, "/api/decision", {"name": "roof", "decision": "accepted"})
        assert status == 409 and "nothing writes over it" in detail(body)
    assert (dataset / "decisions.json").read_bytes() == broken


def test_missing_pictures_are_404(dataset: Path) -> None:
    (dataset / "roof" / "mask" / "0001.png").unlink()
    (dataset / "street" / "rain" / "0002.png").unlink()
    with serving(review_app(dataset)) as port:
        for path in ("/img/roof/mask/0001.png", "/img/street/rain/0002.png", "/img/street/diff/0002.png"):
            status, body, _ = ask(port, "GET", path)
            assert status == 404 and "missing on disk" in detail(body), path
        assert ask(port, "GET", "/img/roof/rain/0001.png")[0] == 200
        (dataset / "roof" / "rain" / "0002.png").write_bytes(b"not a png")
        status, body, _ = ask(port, "GET", "/img/roof/diff/0002.png")
        assert status == 409 and "cannot be read" in detail(body)
        (dataset / "manifest.json").write_text("{")  # broken under the running page
        status, page, _ = ask(port, "GET", "/")
        assert status == 409 and b"manifest.json" in page


def test_a_read_only_dataset_is_refused_at_start(dataset: Path) -> None:
    command = [sys.executable, "-m", "derain", "review", str(dataset), "--no-browser", "--port", str(free_port())]
    if os.geteuid() != 0:
        dataset.chmod(0o555)
    elif shutil.which("unshare") and subprocess.run(["unshare", "-rm", "true"], capture_output=True,
                                                     check=False).returncode == 0:
        # root writes through permissions: make the folder truly read-only (a bind mount in a private namespace)
        command = ["unshare", "-rm", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(dataset),
                   *command]
    else:
        pytest.skip("running as root without unshare: no way to make a read-only folder")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("derain review served a read-only dataset instead of refusing it")
    finally:
        dataset.chmod(0o755)
    assert done.returncode == 1 and "cannot write to this folder" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


# --- 8. the page's bounds: tile size, tiny images ------------------------------------------------------------------


def test_small_tiles_are_refused_and_tiny_images_log_nothing(web_app) -> None:
    from derain.web.app import MIN_TILE, Models, derain_bytes

    with serving(web_app) as port:
        status, body, _ = ask(port, "POST", "/api/derain?name=a.png&tile=8", tiny_png(16, 16),
                              {"Content-Type": "image/png"})
        assert status == 400 and f"smallest tile, {MIN_TILE}" in detail(body)
        status, body, _ = ask(port, "POST", "/api/derain?name=a.png&tile=x", tiny_png(16, 16),
                              {"Content-Type": "image/png"})
        assert status == 400 and "tile" in detail(body) and isinstance(detail(body), str)
        status, _, _ = ask(port, "POST", f"/api/derain?name=a.png&tile={MIN_TILE}", tiny_png(16, 16),
                           {"Content-Type": "image/png"})
        assert status == 200
    models = Models(["derain.default"], "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the probe: a 1x1 image logged torch's std() warning
        for w, h in ((1, 1), (1, 2), (3, 1)):
            assert derain_bytes(models, "derain.default", "dot.png", tiny_png(w, h)).startswith(b"\x89PNG")


# --- a bounded fuzz test of both pages -----------------------------------------------------------------------------


def test_fuzz_both_pages(dataset: Path, web_app) -> None:
    """Random methods, paths, headers and bodies (JSON and bytes) against every route of both pages: never a 5xx,
    the pages answer afterwards, and decisions.json always parses."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    with serving(review_app(dataset)) as review, serving(web_app) as web:
        json_values = st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
            max_leaves=12)
        decisions = st.fixed_dictionaries({
            "name": st.sampled_from([*SEQUENCES, "nope", "", "..", "roof/../street"]) | json_values,
            "decision": st.sampled_from(["accepted", "rejected", "rebuild", "pending", ""]) | json_values},
            optional={"more": st.sampled_from([10, 20, 50, 0, -1, 1e308, 2**70]) | json_values})
        tricks = st.sampled_from([  # what a hostile page or a probe sends: huge and non-finite numbers, deep nesting
            b'{"name": "roof", "decision": "rebuild", "more": 1e400}', b'{"name": "street", "decision": "rebuild", '
            b'"more": -Infinity}', b'{"name": "roof", "decision": "rebuild", "more": NaN}', b"[" * 5000 + b"]" * 5000,
            b'{"name": "roof", "decision": ' + b"[" * 3000 + b"]" * 3000 + b"}", b'{"name": "roof"', b"\xff"])
        bodies = (decisions.map(lambda d: json.dumps(d).encode()) | json_values.map(lambda v: json.dumps(v).encode())
                  | tricks | st.binary(max_size=256) | st.none())
        segment = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=10).map(
            lambda t: __import__("urllib.parse").parse.quote(t, safe=""))
        paths = st.one_of(
            st.sampled_from(["/", "/api/sequences", "/api/decision", "/api/derain?name=a.png",
                             "/api/derain?name=a.png&tile=200&weights=derain.default", "/api/derain",
                             "/static/review.js", "/static/app.js", "/static/app.py", "/img/roof/clean",
                             "/img/roof/rain/0001.png", "/img/street/diff/0002.png", "/img/roof/mask/0003.png",
                             "/img/..%2Fmanifest.json/clean", "/docs", "/nope"]),
            st.tuples(st.sampled_from(["/img/", "/static/", "/api/derain?name=", "/api/derain?name=a.png&tile=",
                                       "/?token=", "/img/roof/"]), segment).map("".join))
        printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
        # half the requests are the page's own kind (its Host, its content type): they reach the routes' code;
        # the other half are anything at all (other hosts and origins, any method, type and header)
        own_routes = {"review": st.sampled_from([("POST", "/api/decision")] * 4 + [
                          ("GET", "/"), ("GET", "/api/sequences"), ("GET", "/img/roof/diff/0001.png")]),
                      "web": st.sampled_from([("POST", "/api/derain?name=a.png"), ("POST", "/api/derain?name=a.jpg"
                          "&tile=300"), ("POST", "/api/derain?name=a.tif&weights=nope"), ("GET", "/")])}
        own_types = {"review": "application/json", "web": "image/png"}

        @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(data=st.data())
        def one(data) -> None:
            page = data.draw(st.sampled_from(["review", "web"]), label="page")
            port = review if page == "review" else web
            own = f"127.0.0.1:{port}"
            if data.draw(st.booleans(), label="the page's own kind"):
                method, path = data.draw(own_routes[page], label="route")
                headers = {"Host": own, "Content-Type": own_types[page]}
                if data.draw(st.booleans(), label="with Origin"):
                    headers["Origin"] = f"http://{own}"
            else:
                method = data.draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
                path = data.draw(paths, label="path")
                host = data.draw(st.sampled_from(["own", "localhost", "evil.example", "[::1]"]) | printable)
                headers = {"Host": own if host == "own" else host}
                origin = data.draw(st.sampled_from([None, "own", "https://evil.example", "null"]) | printable)
                if origin is not None:
                    headers["Origin"] = f"http://{own}" if origin == "own" else origin
                kind = data.draw(st.sampled_from([None, "application/json", "image/png", "text/plain",
                                                  "application/octet-stream"]) | printable)
                if kind is not None:
                    headers["Content-Type"] = kind
                headers.update(data.draw(st.dictionaries(st.sampled_from(["Cookie", "Authorization",
                                                                          "Sec-Fetch-Site", "X-Anything"]),
                                                         printable, max_size=2)))
            body = data.draw(bodies, label="body")
            status, answer, _ = ask(port, method, path, body, headers)
            assert status < 500, (method, path, headers, body, status, answer[:300])
            json.loads((dataset / "decisions.json").read_text())  # always whole JSON

        start = time.monotonic()
        one()
        assert time.monotonic() - start < 120  # bounded: a few seconds in practice
        assert ask(review, "GET", "/")[0] == 200 and ask(web, "GET", "/")[0] == 200
