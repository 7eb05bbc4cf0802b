"""Small-batch projections (GEMV-shaped linears of a decode step): entry points only."""

from seqssm.kernels.gemv.naive import add_norm_gemv_ref, gemv_ref, gemv_x_dt_ref

__all__ = ["add_norm_gemv_ref", "gemv_ref", "gemv_x_dt_ref"]

try:  # Triton exists on Linux x86-64 only; elsewhere the PyTorch references above still import.
    from seqssm.kernels.gemv.triton import GemvConfig, gemv, gemv_config, gemv_x_dt
    from seqssm.kernels.gemv.triton_norm import add_norm_gemv
except ImportError:
    pass
else:
    __all__ += ["GemvConfig", "add_norm_gemv", "gemv", "gemv_config", "gemv_x_dt"]
