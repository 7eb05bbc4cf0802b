"""One public selective scan: mamba_ssm's ``selective_scan_fn`` arguments, the implementation chosen by device."""

from __future__ import annotations

import functools
import warnings

import torch

from seqssm.errors import InputError
from seqssm.kernels.selective_scan.chunked import selective_scan_chunked
from seqssm.kernels.selective_scan.naive import selective_scan_ref

IMPLS = ("auto", "triton", "chunked", "ref")


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def _fused():
    """selective_scan_fused and whether Triton runs interpreted (TRITON_INTERPRET=1, tests only)."""
    import triton

    from seqssm.kernels.selective_scan.triton import selective_scan_fused

    return selective_scan_fused, bool(triton.knobs.runtime.interpret)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    *,
    impl: str = "auto",
):
    """Selective scan h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t;  y_t = C_t h_t + D u_t;  out = y · SiLU(z).

    The first nine arguments are mamba_ssm's ``selective_scan_fn``'s, in its order; its
    ``return_last_state`` is ``return_final_state`` here, after ``initial_state`` (pass both by name).

    Args:
        u, delta: [B, D, L]; z: [B, D, L] optional gate.
        A: [D, N] (real). B, C: [D, N], [B, N, L] or grouped [B, G, N, L].
        D, delta_bias: [D] optional. delta_softplus: Δ <- softplus(Δ + delta_bias).
        initial_state: [B, D, N] state before position 0 (zeros when None).
        return_final_state: also return the fp32 [B, D, N] state after the last position.
        impl: "auto" (Triton on CUDA tensors, else the chunked PyTorch scan; warns once when Triton is
            missing on CUDA), "triton" (CUDA, or the CPU under TRITON_INTERPRET=1), "chunked" (PyTorch,
            any device, CPU-fast) or "ref" (the fp32 loop of ``naive.py``).

    Returns:
        out [B, D, L] in u's dtype, and final_state [B, D, N] fp32 when asked.
    """
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_final_state)
    if not isinstance(impl, str) or impl not in IMPLS:
        raise InputError(f"selective_scan: impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    if not isinstance(u, torch.Tensor):
        raise InputError(f"selective_scan: u must be a [B, D, L] tensor, got {type(u).__name__}")
    if impl == "ref":
        return selective_scan_ref(*args)
    if impl == "chunked":
        return selective_scan_chunked(*args)
    on_cuda = u.device.type == "cuda"
    if impl == "auto" and not on_cuda:
        return selective_scan_chunked(*args)
    try:
        fused, interpreted = _fused()
    except ImportError as err:
        if impl == "triton":
            raise InputError(f"selective_scan: impl='triton' asked for, but Triton cannot be imported ({err}); "
                             "use impl='chunked'") from err
        _warn_once(f"seqssm: Triton selective scan unavailable ({err}); impl='auto' falls back to the chunked "
                   "PyTorch scan on CUDA")
        return selective_scan_chunked(*args)
    if not on_cuda and not interpreted:
        raise InputError(f"selective_scan: impl='triton' needs CUDA tensors, got u on {u.device}; move the "
                         "inputs to a GPU or use impl='auto' or 'chunked'")
    return fused(*args)
