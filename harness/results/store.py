"""The one way Swarmbench writes a file: whole or not at all, and durable once written.

Every file goes to a unique temporary name in the same folder, is fsync'd, and
is then linked (``exclusive``: a result is never overwritten) or renamed into
place; the folder is fsync'd too, so a crash or power loss after the call keeps
the file. On a file system without hard links an exclusive write falls back to
``O_EXCL`` creation. Any failure (disk full, read-only) removes the temporary
file and raises a one-line :class:`ResultError`. A result file is first read back
by its own loader (:func:`write_loadable`): what is written, the loader reads.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from harness.results.format import ResultError

#: errno values that mean "this file system has no hard links".
NO_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV})


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _describe(path: Path, exc: OSError) -> str:
    return f"cannot write {path}: {exc.strerror or exc}"


def write_bytes(path: Path, data: bytes, *, exclusive: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; with ``exclusive``, refuse an existing file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise ResultError(f"{path} exists already: result files are never overwritten") from None
            except OSError as exc:
                if exc.errno not in NO_LINKS:
                    raise
                _write_exclusive(path, data)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        raise ResultError(_describe(path, exc)) from None
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass
    fsync_dir(path.parent)
    return path


def _write_exclusive(path: Path, data: bytes) -> None:
    """The fallback without hard links: create the file exclusively and write it in place."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise ResultError(f"{path} exists already: result files are never overwritten") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except OSError:
        path.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Mapping[str, Any], *, exclusive: bool = False) -> Path:
    return write_bytes(path, (json.dumps(data, indent=1) + "\n").encode(), exclusive=exclusive)


def write_new(path: Path, data: Mapping[str, Any]) -> Path:
    """A result file that must not exist yet (results are never overwritten)."""
    return write_json(path, data, exclusive=True)


def write_loadable(path: Path, data: Mapping[str, Any], load: Callable[[Any], object], *, exclusive: bool = False) -> Path:
    """Write ``data`` as JSON only if ``load``, its loader, reads the very text back; else a one-line ResultError.

    A file its own loader rejects would make the whole folder unreadable (no report) long after
    the sweep said all was well; refused here, the sweep stops on a write error instead.
    """
    text = json.dumps(data, indent=1) + "\n"
    try:
        load(json.loads(text))
    except ResultError as exc:
        raise ResultError(f"{path} not written: Swarmbench could not read it back ({exc})") from None
    return write_bytes(path, text.encode(), exclusive=exclusive)
