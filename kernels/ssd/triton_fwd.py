"""SSD forward (Triton): one program per (head-dim block, head, sequence) walks its sequence chunk by chunk.

Inside a chunk of Q positions the output is the masked quadratic form of the Mamba-2 paper, two matmuls
(C Bᵀ masked and decayed, then times dt·x), plus the state entering the chunk read out by C; the state
[BP, BN] then advances by one more matmul and stays in registers for the next chunk. Parallel over heads,
head-dim blocks and sequences, sequential over chunks (flash-linear-attention's "fused chunk" form): one
launch, no inter-chunk pass. With ``STORE_STATES`` the state entering every chunk is written for the
backward (fp32, [chunks, H, P, N]).

Packed layout: x [T, H, P], dt [T, H], B/C [T, G, N] over all tokens T, sequences given by ``cu_seqlens``
and their first chunk's index by ``chunk_offsets``. Every address is computed in int64: a packed batch
passes 2^31 elements long before it passes memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from seqssm.kernels.host import cdiv, next_power_of_2

# Tests set POISON so that every fresh output buffer starts as NaN and an element no kernel wrote shows up.
POISON = False


def empty(*shape, dtype, device) -> torch.Tensor:
    X = torch.empty(*shape, dtype=dtype, device=device)
    return X.fill_(float("nan")) if POISON else X


def blocks(P: int, N: int) -> tuple[int, int]:
    """(BP, BN): the head-dim block (tl.dot needs >= 16) and the whole state size, a power of two."""
    return max(16, min(64, next_power_of_2(P))), max(16, next_power_of_2(N))


@triton.jit
def _ssd_fwd_kernel(
    X, DT, A, Bm, Cm, Y, INIT, FINAL, STATES, CU, COFF,
    H, P, N, heads_per_group,
    sx_t, sx_h, sdt_t, sb_t, sb_g, sy_t, sy_h,
    HAS_INIT: tl.constexpr, STORE_STATES: tl.constexpr,
    Q: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
):
    pid_p = tl.program_id(0)
    head = tl.program_id(1).to(tl.int64)
    seq = tl.program_id(2)
    bos = tl.load(CU + seq).to(tl.int64)
    eos = tl.load(CU + seq + 1).to(tl.int64)
    first_chunk = tl.load(COFF + seq).to(tl.int64)
    group = head // heads_per_group

    offs_q = tl.arange(0, Q)
    offs_p = pid_p * BP + tl.arange(0, BP)
    offs_n = tl.arange(0, BN)
    mask_p = offs_p < P
    mask_n = offs_n < N
    mask_pn = mask_p[:, None] & mask_n[None, :]
    a = tl.load(A + head).to(tl.float32)
    # State [P, N] of this (sequence, head), one block of P rows; contiguous [S or chunks, H, P, N] buffers.
    pn = offs_p[:, None].to(tl.int64) * N + offs_n[None, :]
    if HAS_INIT:
        state = tl.load(INIT + (seq.to(tl.int64) * H + head) * P * N + pn, mask=mask_pn, other=0.0)
    else:
        state = tl.zeros([BP, BN], dtype=tl.float32)
    causal = offs_q[:, None] >= offs_q[None, :]

    n_chunks = (eos - bos + Q - 1) // Q
    for c in range(0, n_chunks):
        if STORE_STATES:
            tl.store(STATES + ((first_chunk + c) * H + head) * P * N + pn, state, mask=mask_pn)
        rows = bos + c * Q + offs_q
        valid = rows < eos
        x = tl.load(X + rows[:, None] * sx_t + head * sx_h + offs_p[None, :],
                    mask=valid[:, None] & mask_p[None, :], other=0.0).to(tl.float32)
        dt = tl.load(DT + rows * sdt_t + head, mask=valid, other=0.0).to(tl.float32)
        bc_off = rows[:, None] * sb_t + group * sb_g + offs_n[None, :]
        bc_mask = valid[:, None] & mask_n[None, :]
        b = tl.load(Bm + bc_off, mask=bc_mask, other=0.0).to(tl.float32)
        cm = tl.load(Cm + bc_off, mask=bc_mask, other=0.0).to(tl.float32)

        a_cs = tl.cumsum(dt * a, axis=0)  # [Q]; padding rows add 0, so the last entry is the chunk's total
        a_last = tl.sum(dt * a, axis=0)
        # Masked before exp: above the diagonal a_t - a_s > 0 could overflow to inf, and inf * 0 is NaN.
        decay = tl.exp(tl.where(causal, a_cs[:, None] - a_cs[None, :], float("-inf")))
        cb = tl.dot(cm, tl.trans(b), input_precision="ieee")  # [Q, Q]
        y = tl.dot(cb * decay * dt[None, :], x, input_precision="ieee")  # [Q, BP]
        y += tl.exp(a_cs)[:, None] * tl.dot(cm, tl.trans(state), input_precision="ieee")
        tl.store(Y + rows[:, None] * sy_t + head * sy_h + offs_p[None, :], y.to(Y.dtype.element_ty),
                 mask=valid[:, None] & mask_p[None, :])

        w = tl.exp(a_last - a_cs) * dt  # each position's weight in the state at the chunk's end
        state = tl.exp(a_last) * state + tl.dot(tl.trans(x * w[:, None]), b, input_precision="ieee")
    tl.store(FINAL + (seq.to(tl.int64) * H + head) * P * N + pn, state, mask=mask_pn)


def ssd_fwd(x, dt, A, B, C, init, cu_seqlens, chunk_offsets, n_chunks_total: int, chunk_size: int,
            store_states: bool):
    """Launch the forward on packed inputs (see the module docstring).

    Returns:
        y [T, H, P] in x's dtype, final [S, H, P, N] fp32, states [chunks, H, P, N] fp32 or None.
    """
    T, H, P = x.shape
    G, N = B.shape[1], B.shape[2]
    S = cu_seqlens.shape[0] - 1
    BP, BN = blocks(P, N)
    y = empty(T, H, P, dtype=x.dtype, device=x.device)
    final = empty(S, H, P, N, dtype=torch.float32, device=x.device)
    states = empty(max(n_chunks_total, 1), H, P, N, dtype=torch.float32, device=x.device) \
        if store_states else final
    grid = (cdiv(P, BP), H, S)
    _ssd_fwd_kernel[grid](
        x, dt, A, B, C, y, init if init is not None else final, final, states, cu_seqlens, chunk_offsets,
        H, P, N, H // G,
        x.stride(0), x.stride(1), dt.stride(0), B.stride(0), B.stride(1), y.stride(0), y.stride(1),
        HAS_INIT=init is not None, STORE_STATES=store_states, Q=chunk_size, BP=BP, BN=BN,
        num_warps=4,
    )
    return y, final, states if store_states else None
