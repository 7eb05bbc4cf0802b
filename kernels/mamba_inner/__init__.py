"""The inner Mamba-1 block (in_proj → conv + SiLU → x_proj/dt_proj → selective scan → out_proj): entry points.

``mamba_inner_ref`` composes the per-op kernels under plain autograd; ``mamba_inner_fused`` is one autograd
Function over the Triton conv and scan that keeps every [*, B·L] activation channel-major, so that no
projection needs a transposed copy, and recomputes the conv output and Δ in the backward.
"""

from seqssm.kernels.mamba_inner.naive import mamba_inner_ref

__all__ = ["mamba_inner_ref"]

try:  # Triton exists on Linux x86-64 only; elsewhere the reference above still imports.
    from seqssm.kernels.mamba_inner.triton import mamba_inner_fused
except ImportError:
    pass
else:
    __all__ += ["mamba_inner_fused"]
