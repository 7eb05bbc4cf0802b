"""SSD (Triton): packing to the kernels' layout, the autograd Function and the checked public entry point."""

from __future__ import annotations

import torch
import triton

from seqssm.errors import InputError
from seqssm.kernels.ssd.checks import check_inputs
from seqssm.kernels.ssd.triton_bwd import ssd_bwd
from seqssm.kernels.ssd.triton_fwd import ssd_fwd

MAX_STATE = 256  # the state block [BP, BN] lives in registers


def chunk_offsets(cu_seqlens: torch.Tensor, chunk_size: int) -> tuple[torch.Tensor, int]:
    """[S + 1] index of each sequence's first chunk (chunks never straddle sequences), and their total."""
    n = (cu_seqlens[1:] - cu_seqlens[:-1] + chunk_size - 1) // chunk_size
    offsets = torch.cat([n.new_zeros(1), torch.cumsum(n, 0)])
    return offsets, int(offsets[-1])


class _SSDFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, init, cu_seqlens, chunk_size):
        coff, total = chunk_offsets(cu_seqlens, chunk_size)
        needs_grad = any(ctx.needs_input_grad[:6])
        y, final, states = ssd_fwd(x, dt, A, B, C, init, cu_seqlens, coff, total, chunk_size, needs_grad)
        if needs_grad:
            ctx.save_for_backward(x, dt, A, B, C, states, cu_seqlens, coff)
        ctx.chunk_size = chunk_size
        ctx.has_init = init is not None
        ctx.dtypes = (dt.dtype, A.dtype, B.dtype, C.dtype)
        ctx.mark_non_differentiable()
        ctx.set_materialize_grads(False)
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        x, dt, A, B, C, states, cu_seqlens, coff = ctx.saved_tensors
        if dy is None:
            dy = torch.zeros_like(x)
        dx, ddt, dA, dB, dC, dinit = ssd_bwd(
            x, dt, A, B, C, dy.contiguous(), states, None if dfinal is None else dfinal.contiguous(),
            cu_seqlens, coff, ctx.chunk_size, ctx.has_init)
        dt_t, A_t, B_t, C_t = ctx.dtypes
        return dx, ddt.to(dt_t), dA.to(A_t), dB.to(B_t), dC.to(C_t), dinit, None, None


def ssd_triton(x, dt, A, B, C, D=None, initial_states=None, cu_seqlens=None, chunk_size: int = 64,
               return_final_states: bool = False):
    """Mamba-2 SSD scan with Triton kernels, differentiable in x, dt, A, B, C, D and ``initial_states``.

    S_t = exp(dt_t A) S_{t-1} + dt_t x_t ⊗ B_t;  y_t = S_t C_t + D x_t (per head; see ``naive.py``).

    Args:
        x: [T, L, H, P]; dt: [T, L, H] positive (softplus applied); A: [H] negative (fp32 best).
        B, C: [T, L, G, N] with H % G == 0; D: [H] optional skip (applied in PyTorch).
        initial_states: [T, H, P, N] (or [S, H, P, N] with ``cu_seqlens``) state before position 0.
        cu_seqlens: [S + 1] offsets of S sequences packed into one row (T = 1), each from its own state.
        chunk_size: Q, a power of two >= 16.
        return_final_states: also return the fp32 states after each sequence.

    Returns:
        y [T, L, H, P] in x's dtype; and final_states [T or S, H, P, N] fp32 when asked.
    """
    fn = "ssd_triton"
    check_inputs(fn, x, dt, A, B, C, D, initial_states, cu_seqlens, chunk_size)
    if x.device.type == "cpu" and not triton.knobs.runtime.interpret:
        raise InputError(f"{fn}: inputs are on the CPU; move them to CUDA or use ssd(impl='chunked')")
    T, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    if max(P, N) > MAX_STATE:
        raise InputError(f"{fn}: head dim P = {P} and state size N = {N} must be <= {MAX_STATE}")
    if cu_seqlens is None:
        cu = torch.arange(T + 1, device=x.device, dtype=torch.int64) * L
    else:
        cu = cu_seqlens.to(device=x.device, dtype=torch.int64)
    packed = (x.reshape(T * L, H, P).contiguous(), dt.reshape(T * L, H).contiguous(), A.contiguous(),
              B.reshape(T * L, G, N).contiguous(), C.reshape(T * L, G, N).contiguous())
    init = None if initial_states is None else initial_states.float().contiguous()
    y, final = _SSDFn.apply(*packed, init, cu, chunk_size)
    y = y.view(T, L, H, P)
    if D is not None:
        y = (y + x * D[:, None].to(x.dtype)).to(x.dtype)
    return (y, final) if return_final_states else y
