"""Selective scan (Mamba-1 "S6"): entry points only."""

from seqssm.kernels.selective_scan.chunked import selective_scan_chunked
from seqssm.kernels.selective_scan.naive import selective_scan_ref, selective_state_update_ref

__all__ = ["selective_scan_chunked", "selective_scan_ref", "selective_state_update_ref"]
