"""Depthwise causal conv1d: entry points only."""

from seqssm.kernels.causal_conv1d.naive import causal_conv1d_ref, causal_conv1d_update_ref

__all__ = ["causal_conv1d_ref", "causal_conv1d_update_ref"]

try:  # Triton exists on Linux x86-64 only; elsewhere the PyTorch references above still import.
    from seqssm.kernels.causal_conv1d.triton import causal_conv1d_fn, causal_conv1d_update_fn
except ImportError:
    pass
else:
    __all__ += ["causal_conv1d_fn", "causal_conv1d_update_fn"]
