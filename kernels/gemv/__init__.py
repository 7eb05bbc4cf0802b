"""Small-batch projections (GEMV-shaped linears of a decode step): entry points only."""

from seqssm.kernels.gemv.naive import gemv_ref, gemv_x_dt_ref

__all__ = ["gemv_ref", "gemv_x_dt_ref"]

try:  # Triton exists on Linux x86-64 only; elsewhere the PyTorch references above still import.
    from seqssm.kernels.gemv.triton import GemvConfig, gemv, gemv_config, gemv_x_dt
except ImportError:
    pass
else:
    __all__ += ["GemvConfig", "gemv", "gemv_config", "gemv_x_dt"]
