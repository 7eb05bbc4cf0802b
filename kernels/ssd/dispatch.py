"""One public SSD scan: the implementation chosen by device, as ``selective_scan``'s dispatch."""

from __future__ import annotations

import functools
import warnings

import torch

from seqssm.errors import InputError
from seqssm.kernels.ssd.checks import check_inputs
from seqssm.kernels.ssd.naive import ssd_chunked_ref, ssd_sequential

IMPLS = ("auto", "triton", "chunked", "ref")


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def ssd(x, dt, A, B, C, D=None, initial_states=None, cu_seqlens=None, *, chunk_size: int = 64,
        return_final_states: bool = False, impl: str = "auto"):
    """Mamba-2 SSD: S_t = exp(dt_t A) S_{t-1} + dt_t x_t ⊗ B_t;  y_t = S_t C_t + D x_t, per head.

    Args:
        x: [T, L, H, P]; dt: [T, L, H] positive (softplus applied); A: [H] negative.
        B, C: [T, L, G, N], H % G == 0; D: [H] optional.
        initial_states: [T, H, P, N] ([S, H, P, N] with ``cu_seqlens``) or None (zeros).
        cu_seqlens: [S + 1] offsets of S sequences packed into row 0 (T = 1), states reset at each.
        chunk_size: Q of the chunked algorithm (a power of two >= 16 for Triton).
        return_final_states: also return the fp32 [T or S, H, P, N] states after each sequence.
        impl: "auto" (Triton on CUDA, else the chunked PyTorch reference), "triton" (CUDA, or the CPU
            under TRITON_INTERPRET=1), "chunked" or "ref" (the sequential loop).

    Returns:
        y [T, L, H, P] in x's dtype, and final_states when asked.
    """
    if not isinstance(impl, str) or impl not in IMPLS:
        raise InputError(f"ssd: impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise InputError("ssd: x must be a [T, L, H, P] tensor")
    args = (x, dt, A, B, C, D, initial_states, cu_seqlens)
    if impl != "triton":  # ssd_triton checks its own (chunk_size included)
        check_inputs("ssd", *args, 16)
    use_triton = impl == "triton" or (impl == "auto" and x.device.type == "cuda")
    if use_triton:
        try:
            from seqssm.kernels.ssd.triton import ssd_triton
        except ImportError as err:
            if impl == "triton":
                raise InputError(f"ssd: impl='triton' asked for, but Triton cannot be imported ({err}); "
                                 "use impl='chunked'") from err
            _warn_once(f"seqssm: Triton SSD unavailable ({err}); impl='auto' falls back to PyTorch")
        else:
            return ssd_triton(*args, chunk_size=chunk_size, return_final_states=return_final_states)
    if impl == "ref":
        y, final = ssd_sequential(*args)
    else:
        y, final = ssd_chunked_ref(*args, chunk_size=chunk_size)
    return (y, final) if return_final_states else y
