"""Files from where their authors put them: fetched on first use, verified against a pin, cached atomically.

A :class:`Source` names a file in a GitHub repository at a fixed commit, with an integrity pin: its sha256 and/or
its git blob id (``sha1(b"blob <size>\\0" + content)``, the id git itself records, a full-content pin). The file
is fetched from ``$DERAIN_HUB/<owner>/<repo>/<commit>/<path>`` (default hub: ``https://raw.githubusercontent.com``;
a mirror or a test server can replace it).

The transfer is urllib's, with a ``tqdm`` progress bar (size and speed, stderr, on a terminal only), a timeout, a
few retries that resume from the bytes already received (HTTP Range) or restart, a check that the body is as long
as announced, a full-content check of every pin (sha256 and git blob, in one pass), a lock so that two processes
fetching the same file end with one good file, and one-line errors that say the URL and where to put the file by
hand. ``torch.hub.download_url_to_file`` was the first choice and was measured against these needs: it accepts a
body cut short without an error (urllib's ``read(n)`` returns what arrived), has no timeout (only the process-wide
socket default, which a web server in the same process would share), cannot resume, and checks a sha256 prefix
only; ``pooch`` would add the requests stack (seven packages) and still lacks resume, git-blob pins and a lock.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import quote
from urllib.request import Request, urlopen

from filelock import FileLock, Timeout
from tqdm import tqdm

from derain.errors import DownloadError
from derain.io.atomic import commit

HUB_ENV, DEFAULT_HUB = "DERAIN_HUB", "https://raw.githubusercontent.com"
CACHE_ENV = "DERAIN_CACHE"
TIMEOUT_ENV, RETRIES_ENV = "DERAIN_HUB_TIMEOUT", "DERAIN_HUB_RETRIES"
_LOCK_WAIT = 1800.0  # seconds a process waits for another one fetching the same file


@dataclass(frozen=True)
class Source:
    """A file in a GitHub repository at a commit, and the pins it must match (at least one of sha256, git_blob)."""

    repo: str            # "owner/name"
    commit: str          # the commit where the file exists
    path: str            # its path in the repository
    sha256: str = ""
    git_blob: str = ""   # git's blob id: sha1 of b"blob <size>\0" + content
    size: int | None = None

    def __post_init__(self) -> None:
        if not (self.sha256 or self.git_blob):
            raise ValueError(f"{self.repo}/{self.path}: a source needs a sha256 or a git blob pin")

    def url(self, hub: str | None = None) -> str:
        base = (hub if hub is not None else hub_url()).rstrip("/")
        return f"{base}/{self.repo}/{self.commit}/{quote(self.path)}"

    @property
    def where(self) -> str:
        """``owner/repo@commit8:path``, for listings."""
        return f"{self.repo}@{self.commit[:8]}:{self.path}"

    @property
    def pin(self) -> str:
        return f"sha256 {self.sha256}" if self.sha256 else f"git blob {self.git_blob}"


def hub_url() -> str:
    return os.environ.get(HUB_ENV) or DEFAULT_HUB


def cache_dir() -> Path:
    """``$DERAIN_CACHE``, else ``$XDG_CACHE_HOME/derain``, else ``~/.cache/derain``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "derain"


@dataclass(frozen=True)
class Digest:
    sha256: str
    git_blob: str
    size: int


def file_digest(path: str | os.PathLike[str]) -> Digest:
    """The sha256 and the git blob id of a file, in one read."""
    size = os.path.getsize(path)
    sha, blob = hashlib.sha256(), hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
            blob.update(block)
    return Digest(sha.hexdigest(), blob.hexdigest(), size)


def mismatch(source: Source, digest: Digest) -> str:
    """'' when ``digest`` meets every pin of ``source``, else what differs (expected and actual)."""
    problems = []
    if source.sha256 and digest.sha256 != source.sha256:
        problems.append(f"sha256 expected {source.sha256}, got {digest.sha256}")
    if source.git_blob and digest.git_blob != source.git_blob:
        problems.append(f"git blob expected {source.git_blob}, got {digest.git_blob}")
    return "; ".join(problems)


def matches(path: Path, source: Source) -> bool:
    return path.is_file() and (source.size is None or path.stat().st_size == source.size) \
        and not mismatch(source, file_digest(path))


class _Truncated(OSError):
    """The body ended before the length the server announced."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, URLError):
        return str(exc.reason)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def fetch(source: Source, dest: str | os.PathLike[str], *, label: str, by_hand: str = "",
          progress: bool | None = None, notice: Callable[[str], None] | None = None,
          first_download: str = "") -> Path:
    """``dest`` holding ``source``'s file, downloaded when it is not there yet; returns ``dest``.

    The file arrives atomically (a temporary file in ``dest``'s folder, verified, then renamed): a cut or a
    mismatch never leaves a file at ``dest``. A second process asking for the same file waits for the first and
    uses its result. ``label`` names the file in messages, ``by_hand`` adds where else the user may put it,
    ``first_download`` is said once (through ``notice``, default stderr) when the file is actually downloaded.
    """
    dest = Path(dest)
    if matches(dest, source):
        return dest
    url = source.url()
    say = notice or (lambda text: print(text, file=sys.stderr))
    locks = cache_dir() / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    lock_name = hashlib.sha1(str(dest.resolve()).encode()).hexdigest()[:16] + ".lock"
    try:
        with FileLock(str(locks / lock_name), timeout=_LOCK_WAIT):
            if matches(dest, source):  # another process fetched it while this one waited
                return dest
            dest.parent.mkdir(parents=True, exist_ok=True)
            _download(source, url, dest, label=label, by_hand=by_hand,
                      progress=sys.stderr.isatty() if progress is None else progress)
    except Timeout:
        raise DownloadError(f"{label}: another process has been fetching {dest} for {_LOCK_WAIT:.0f} s; "
                            f"remove {locks / lock_name} if no download is running") from None
    if first_download:
        say(first_download)
    return dest


def _transfer(url: str, staging: Path, *, timeout: float, progress: bool, label: str) -> None:
    """Append the file at ``url`` to ``staging``, resuming after the bytes it holds when the server allows it
    (HTTP Range), restarting otherwise; raises ``IncompleteRead`` when the body is shorter than announced."""
    have = staging.stat().st_size if staging.exists() else 0
    headers = {"User-Agent": "derain", **({"Range": f"bytes={have}-"} if have else {})}
    with urlopen(Request(url, headers=headers), timeout=timeout) as response:
        resumed = have > 0 and response.status == 206
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None and length.isdigit() else None
        received = 0
        with open(staging, "ab" if resumed else "wb") as out, tqdm(
                total=None if expected is None else have + expected, initial=have, desc=label, unit="B",
                unit_scale=True, unit_divisor=1024, file=sys.stderr, disable=not progress, leave=False) as bar:
            while block := response.read(1 << 16):
                out.write(block)
                received += len(block)
                bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
    if expected is not None and received < expected:
        raise _Truncated(f"connection closed after {have + received} of {have + expected} bytes")


def _download(source: Source, url: str, dest: Path, *, label: str, by_hand: str, progress: bool) -> None:
    attempts = max(1, int(_env_number(RETRIES_ENV, 3)))
    timeout = _env_number(TIMEOUT_ENV, 30.0)
    staging = dest.with_name(f".{dest.name}.download")  # kept between attempts (and calls) to resume
    hand = f"; download it by hand and put it at {dest}" + (f" ({by_hand})" if by_hand else "")
    last = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(0.5 * 2 ** (attempt - 1), 4.0))
        try:
            _transfer(url, staging, timeout=timeout, progress=progress, label=label)
        except HTTPError as exc:
            last = _reason(exc)
            if exc.code == 416:  # the partial file is not a prefix the server knows: start again
                staging.unlink(missing_ok=True)
                continue
            if exc.code in (400, 401, 403, 404, 410):  # the file is not there: asking again will not help
                break
            continue
        except (URLError, http.client.HTTPException, OSError) as exc:
            last = _reason(exc)
            continue
        wrong = mismatch(source, file_digest(staging))
        if wrong:
            staging.unlink(missing_ok=True)
            raise DownloadError(f"{label}: the file served at {url} is not the expected one ({wrong}); nothing "
                                "was kept")
        commit(staging, dest)
        return
    tries = f" after {attempts} attempts" if attempts > 1 and not last.startswith("HTTP 4") else ""
    raise DownloadError(f"{label}: could not download {url} ({last}{tries}){hand}")
