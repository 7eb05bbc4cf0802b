"""The one exception type for user mistakes.

Anything a user can fix (a missing file, a malformed FASTA, a window longer than the genome, a
directory that is not a checkpoint) raises :class:`InputError` with one line saying what, where and
how to fix it. The CLI prints that line and exits with code 2, without a traceback; any other
exception is a bug in seqssm and keeps its traceback.
"""

from __future__ import annotations

import difflib
import os
import shutil
from pathlib import Path


class InputError(ValueError):
    """A problem with the user's input or arguments, reported in one line."""


def require_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path if it is an existing regular file, else an InputError naming ``what`` it should be."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {str(path)!r} does not exist; check the path")
    if not path.is_file():
        raise InputError(f"{what} {str(path)!r} is not a regular file")
    return path


def did_you_mean(name: str, choices) -> str:
    """" (did you mean 'x'?)" for the choice closest to ``name`` (difflib), or "" when none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def require_free_space(folder: str | os.PathLike, nbytes: int, what: str, flag: str = "--out") -> None:
    """InputError when the file system holding ``folder`` (or its nearest existing parent) has fewer than
    ``nbytes`` bytes free for ``what``: found before the work starts, not after hours of it."""
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if nbytes > free:
        raise InputError(f"{flag}: {what} needs {_size(nbytes)} but {folder} has {_size(free)} free; free some "
                         f"space or choose another {flag}")


def _size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
