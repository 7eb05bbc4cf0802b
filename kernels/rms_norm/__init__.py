"""Residual add + RMSNorm of a Mamba block: entry points only."""

from seqssm.kernels.rms_norm.naive import add_rms_norm_ref

__all__ = ["add_rms_norm_ref"]

try:  # Triton exists on Linux x86-64 only; elsewhere the PyTorch reference above still imports.
    from seqssm.kernels.rms_norm.triton import add_rms_norm_fused
except ImportError:
    pass
else:
    __all__ += ["add_rms_norm_fused"]
