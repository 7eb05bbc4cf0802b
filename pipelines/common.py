"""Small pieces every pipeline needs: device choice, seeding, atomic outputs, progress bars."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from seqssm.errors import InputError, require_file  # noqa: F401  (re-exported for the pipelines)


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" → CUDA when available, else CPU; anything else is checked and returned as a device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise InputError(f"unknown device {name!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} asked for, but no CUDA GPU is visible; use --device cpu")
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a torch Generator for the pipeline's own sampling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (the weights stay fp32); plain fp32 on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Works for files and directories, so an interrupted or failed run never leaves a half-written output
    and never destroys the previous one until the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()



def progress(iterable=None, **kwargs) -> tqdm:
    """A tqdm bar on stderr that stays quiet when stderr is not a terminal and SEQSSM_PROGRESS is unset."""
    disable = kwargs.pop("disable", None)
    if disable is None:
        disable = not (sys.stderr.isatty() or os.environ.get("SEQSSM_PROGRESS") == "1")
    return tqdm(iterable, disable=disable, dynamic_ncols=True, **kwargs)
