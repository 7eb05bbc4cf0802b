"""Selective scan (Mamba-1 "S6"): entry points only. ``selective_scan`` picks one of the others by device."""

from seqssm.kernels.selective_scan.chunked import selective_scan_chunked
from seqssm.kernels.selective_scan.dispatch import selective_scan
from seqssm.kernels.selective_scan.naive import (
    selective_scan_ref,
    selective_state_update_ref,
    selective_state_update_x_dt_ref,
)

__all__ = ["selective_scan", "selective_scan_chunked", "selective_scan_ref", "selective_state_update_ref",
           "selective_state_update_x_dt_ref"]

try:  # Triton exists on Linux x86-64 only; elsewhere the PyTorch paths above still import.
    from seqssm.kernels.selective_scan.triton import selective_scan_fused
    from seqssm.kernels.selective_scan.triton_update import selective_state_update_fused, selective_state_update_x_dt
except ImportError:
    pass
else:
    __all__ += ["selective_scan_fused", "selective_state_update_fused", "selective_state_update_x_dt"]
