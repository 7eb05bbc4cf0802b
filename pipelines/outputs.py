"""Safe outputs: every command that writes plans its outputs first (:class:`OutputPlan`) and writes each
through :func:`atomic_path`. Split from ``pipelines/common.py`` (which re-exports these names)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import glob
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from seqssm.errors import InputError

# ----------------------------------------------------------------------------------------------- outputs
#
# The rules every command that writes follows, checked by OutputPlan.check() before any work starts:
# a file never replaces a folder and a folder never replaces a file; no output is, holds or lies inside one
# of the command's inputs; an existing output is refused unless --overwrite is given; the folder it goes to
# must be writable. Writing then goes through atomic_path (a temporary beside the target, renamed when
# complete), so an output is either the old one or the complete new one, never half of either.

FILE, FOLDER = "file", "folder"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except (OverflowError, OSError):
        return False
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        path.unlink(missing_ok=True)


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove what killed runs left beside ``path``; returns the removed paths.

    That is ``.NAME.PID-XXXXXXXX.tmp`` of a process no longer running (or without a PID, from older
    seqssm versions), and ``.NAME.old``, a previous folder moved aside during a swap: removed when ``path``
    exists, put back when it does not.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)-)?\w+\.tmp")
    removed = []
    for entry in path.parent.glob(glob.escape(f".{path.name}.") + "*.tmp"):
        match = pattern.fullmatch(entry.name)
        if match is None or (match.group(1) is not None and _alive(int(match.group(1)))):
            continue
        _remove(entry)
        removed.append(entry)
    old = path.with_name(f".{path.name}.old")
    if os.path.lexists(old):
        if os.path.lexists(path):
            _remove(old)
            removed.append(old)
        else:
            old.rename(path)
    return removed


@functools.cache
def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system or file system cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _commit(tmp: Path, path: Path) -> None:
    """Move the finished ``tmp`` onto ``path``: a file over a file, a folder over a folder, each in one step."""
    new_is_dir = tmp.is_dir()
    if not os.path.lexists(path):
        os.replace(tmp, path)
        return
    old_is_dir = path.is_dir()
    if new_is_dir != old_is_dir:
        raise InputError(f"{path} is a {FOLDER if old_is_dir else FILE}; seqssm never replaces a "
                         f"{FOLDER if old_is_dir else FILE} by a {FOLDER if new_is_dir else FILE}: move it away "
                         "or choose another output path")
    if not new_is_dir:
        os.replace(tmp, path)
    elif not _exchange(tmp, path):  # after a swap tmp holds the old folder, which the caller removes
        # Two renames: a kill between them leaves the old folder at .NAME.old, which remove_stale_temps
        # puts back.
        old = path.with_name(f".{path.name}.old")
        _remove(old)
        path.rename(old)
        tmp.rename(path)
        _remove(old)


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; return the folders this call created, outermost first."""
    missing = []
    while not os.path.lexists(folder):
        missing.append(folder)
        folder = folder.parent
    created = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        created.append(d)
    return created


def _remove_empty(folders: list[Path]) -> None:
    for d in reversed(folders):
        try:
            d.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The block writes a file or a folder at the temporary path. On success it replaces ``path`` in one step,
    a file by a file (``os.replace``) or a folder by a folder (an atomic exchange on Linux), and never a file
    by a folder or a folder by a file (InputError). On failure the temporary is removed, and so are the
    parent folders this call created, so no empty output folder is left behind. The temporary is named
    ``.NAME.PID-XXXXXXXX.tmp``, so that :func:`remove_stale_temps` can tell a killed run's from a live one's.
    Whether an existing ``path`` may be replaced at all is :class:`OutputPlan`'s check, made before the work.
    """
    path = Path(path)
    created = _make_parents(path.parent)
    done = False
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        tmp.unlink()
        try:
            yield tmp
            _commit(tmp, path)
            done = True
        finally:
            _remove(tmp)
    finally:
        if not done:
            _remove_empty(created)


def _absolute(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(path)).resolve()


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:
        return False


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path):
        path = path.parent
    return path


class OutputPlan:
    """What one command writes, checked before its work starts by :meth:`check`.

    ``outputs``: (path, FILE or FOLDER) of every output. ``folder``: the ``--out`` folder that holds them,
    for commands whose ``--out`` names a folder (None when it names the file itself); other files in it are
    never touched. ``inputs``: (what, path) of every input the command reads, its checkpoint included
    (paths may be None: absent). ``overwrite``: an existing output may be replaced (an empty folder where a
    folder goes is not an existing output). ``flag``: the option the messages name. Each pipeline builds its
    plan in a ``*_outputs(cfg)`` function, so that ``demo`` can check all of its steps' before the first.
    """

    def __init__(self, outputs: Iterable[tuple[str | os.PathLike, str]], *,
                 inputs: Iterable[tuple[str, str | os.PathLike | None]] = (), folder: str | os.PathLike | None = None,
                 overwrite: bool = False, flag: str = "--out"):
        self.outputs = [(Path(p), kind) for p, kind in outputs]
        self.inputs = [(what, Path(p)) for what, p in inputs if p is not None]
        self.folder = Path(folder) if folder is not None else None
        self.overwrite = overwrite
        self.flag = flag

    def _targets(self) -> list[tuple[Path, str]]:
        return ([(self.folder, FOLDER)] if self.folder is not None else []) + self.outputs

    def _name(self, path: Path) -> str:
        """How messages name an output: by the flag when it is what the flag gave, else in its folder."""
        if self.folder is None or path == self.folder:
            return f"{self.flag} {path}"
        return f"{path} (in {self.flag} {self.folder})"

    def check(self) -> OutputPlan:
        """Raise InputError when an output cannot or may not be written; then remove stale temporaries.

        Nothing is created or changed unless every check passes.
        """
        flag = self.flag
        for what, given in self.inputs:
            source = _absolute(given)
            for path, kind in self._targets():
                target = _absolute(path)
                if _same(target, source):
                    raise InputError(f"{self._name(path)} is the {what} {given} itself: writing there would "
                                     f"destroy it; choose another {flag}")
                if kind == FOLDER and _inside(source, target):
                    raise InputError(f"{self._name(path)} holds the {what} {given}: writing there could destroy it; "
                                     f"choose a path outside it for {flag}")
                if _inside(target, source) and source.is_dir():
                    raise InputError(f"{self._name(path)} is inside the {what} {given}: seqssm never writes into "
                                     f"its inputs; choose a path outside it for {flag}")
        for path, kind in self._targets():
            base = _nearest_existing(path.parent) if not os.path.lexists(path) else path
            if base != path and not base.is_dir():
                raise InputError(f"{self._name(path)}: {base} is a file, not a folder; choose another {flag}")
            if base == path and kind == FILE and path.is_dir():
                raise InputError(f"{self._name(path)} is an existing folder; this command writes a file there and "
                                 "never replaces a folder by a file (not with --overwrite either): give a file path")
            if base == path and kind == FOLDER and not path.is_dir():
                raise InputError(f"{self._name(path)} is an existing file; this command writes a folder there and "
                                 "never replaces a file by a folder (not with --overwrite either): give a folder path")
        # An empty folder where a folder goes holds nothing to lose.
        existing = [path for path, kind in self.outputs if os.path.lexists(path)
                    and not (kind == FOLDER and path.is_dir() and not any(path.iterdir()))]
        if existing and not self.overwrite:
            if self.folder is not None:
                names = ", ".join(str(p.relative_to(self.folder)) if _inside(p, self.folder) else str(p)
                                  for p in existing)
                where = f"{flag} {self.folder} already holds {names}"
            else:
                where = f"{flag} {', '.join(map(str, existing))} already exist{'s' if len(existing) == 1 else ''}"
            raise InputError(f"{where} (an earlier run's?); pass --overwrite to replace "
                             f"{'it' if len(existing) == 1 else 'them'}, or choose another {flag}")
        for folder in dict.fromkeys(_nearest_existing(p.parent) for p, _ in self._targets()):
            try:
                fd, name = tempfile.mkstemp(prefix=".seqssm-write-check.", dir=folder)
                os.close(fd)
                os.unlink(name)
            except OSError as err:
                raise InputError(f"{flag}: cannot write in folder {folder} ({err.strerror}); choose a folder you "
                                 f"can write to for {flag}") from None
        for path, _ in self.outputs:
            remove_stale_temps(path)
        return self
