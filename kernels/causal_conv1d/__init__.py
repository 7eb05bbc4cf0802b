"""Depthwise causal conv1d: entry points only."""

from seqssm.kernels.causal_conv1d.naive import causal_conv1d_ref, causal_conv1d_update_ref

__all__ = ["causal_conv1d_ref", "causal_conv1d_update_ref"]
