"""Data sources and torch datasets: FASTA, genome windows, reads, intervals, tables, audio.

Import the submodule you need (``seqssm.datasets.fasta``, ``seqssm.datasets.windows``, ...); the names
below are the genome entry points most callers want.
"""

from seqssm.datasets.fasta import FastaFile, iter_fasta
from seqssm.datasets.windows import GenomeWindowDataset, Window, tile_windows

__all__ = ["FastaFile", "GenomeWindowDataset", "Window", "iter_fasta", "tile_windows"]
