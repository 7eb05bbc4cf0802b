"""The one exception type for user mistakes.

Anything a user can fix (a missing file, a malformed FASTA, a window longer than the genome, a
directory that is not a checkpoint) raises :class:`InputError` with one line saying what, where and
how to fix it. The CLI prints that line and exits with code 2, without a traceback; any other
exception is a bug in seqssm and keeps its traceback.
"""

from __future__ import annotations

import os
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
