"""Mamba-2 state space duality (SSD) scan: entry points only. ``ssd`` picks one of the others by device."""

from seqssm.kernels.ssd.dispatch import ssd
from seqssm.kernels.ssd.naive import ssd_chunked_ref, ssd_sequential, ssd_step_ref

__all__ = ["ssd", "ssd_chunked_ref", "ssd_sequential", "ssd_step_ref"]

try:  # Triton exists on Linux x86-64 only; elsewhere the PyTorch paths above still import.
    from seqssm.kernels.ssd.triton import ssd_triton
except ImportError:
    pass
else:
    __all__ += ["ssd_triton"]
