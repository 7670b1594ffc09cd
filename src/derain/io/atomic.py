"""The one way derain writes a file: a temporary file in the target's folder, synced, then renamed onto the target.

A reader therefore sees the old file or the complete new one, never a part; a failure leaves the target as it was
and removes the temporary file. Protected paths (a run's inputs) are never written, whatever their name, and with
``overwrite=False`` a file that appears while the new one is being written is not replaced either.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from derain.errors import InputError

PathLike = str | os.PathLike[str]


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (the same path, or links to one file)."""
    if a.resolve() == b.resolve():
        return True
    with contextlib.suppress(OSError):
        return a.exists() and b.exists() and os.path.samefile(a, b)
    return False


def check_target(path: PathLike, *, overwrite: bool = True, protect: Iterable[PathLike] | PathLike = ()) -> Path:
    """``path`` if a file may be written there: not a protected path, not a folder, not an existing file unless
    ``overwrite``; otherwise an :class:`InputError` that says so."""
    path = Path(path)
    protected = [protect] if isinstance(protect, str | os.PathLike) else list(protect)
    for other in protected:
        if same_file(path, Path(other)):
            raise InputError(f"{path}: refusing to write over a protected file ({other}); choose another output path")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name")
    if path.exists() and not overwrite:
        raise InputError(f"{path}: already exists; pass overwrite=True to replace it")
    return path


def temp_path(path: Path, suffix: str = "") -> Path:
    """A new, empty, hidden file beside ``path`` (created here, so no other process can take the name)."""
    while True:
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{suffix}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


def commit(tmp: Path, path: Path, *, overwrite: bool = True) -> None:
    """Sync ``tmp`` and rename it onto ``path``. Without ``overwrite``, a hard link puts it in place, which never
    replaces a file that appeared in the meantime."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise InputError(f"{path}: already exists; pass overwrite=True to replace it") from None
    except OSError:  # a file system without hard links
        if path.exists():
            raise InputError(f"{path}: already exists; pass overwrite=True to replace it") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


@contextlib.contextmanager
def atomic_write(path: PathLike, *, overwrite: bool = True, protect: Iterable[PathLike] | PathLike = (),
                 suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; when the block ends, it becomes ``path``.

    ``suffix`` ends the temporary name (writers that pick the format from the extension need it). The target's
    folder is created. On an error the temporary file (and any file a writer put beside it under its name) is
    removed and ``path`` is left as it was.
    """
    path = check_target(path, overwrite=overwrite, protect=protect)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{path}: cannot create the folder {path.parent} ({exc.strerror or exc})") from exc
    tmp = temp_path(path, suffix)
    mode = tmp.stat().st_mode & 0o777  # what a new file gets here (0o666 less the umask)
    try:
        yield tmp
        if tmp.stat().st_mode & 0o777 != mode:  # a writer that made its own private file (safetensors: 0o600)
            tmp.chmod(mode)
        commit(tmp, path, overwrite=overwrite)
    finally:
        tmp.unlink(missing_ok=True)
        for extra in tmp.parent.glob(f"{tmp.name}?*"):  # side files a writer named after the temporary file
            extra.unlink(missing_ok=True)
