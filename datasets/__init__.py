"""Data sources and torch datasets: FASTA, genome windows, reads, intervals, tables, audio.

Import the submodule you need (``seqssm.datasets.fasta``, ``seqssm.datasets.windows``, ...); the names
below are the genome entry points most callers want. They are imported on first use, so that a torch-free
submodule (``seqssm.datasets.input_spec``, read by the CLI's option checks) does not pull in torch.
"""

from __future__ import annotations

import importlib

_NAMES = {"FastaFile": "fasta", "iter_fasta": "fasta", "GenomeWindowDataset": "windows", "Window": "windows",
          "tile_windows": "windows"}

__all__ = ["FastaFile", "GenomeWindowDataset", "Window", "iter_fasta", "tile_windows"]


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f"seqssm.datasets.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'seqssm.datasets' has no attribute {name!r}")
