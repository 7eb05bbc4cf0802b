"""SSD backward (Triton): the forward's programs walked in reverse, carrying the state gradient dS.

Per chunk, with a the in-chunk cumulative sum of dt·A, M[t, s] = (C_t · B_s) exp(a_t - a_s) [s <= t],
w_s = exp(a_Q - a_s) dt_s, S0 the state entering the chunk (saved by the forward) and dS the gradient of the
state leaving it:

    dX  = (M · dt_s)ᵀ dY + w ⊙ (B dSᵀ)
    dC  = (G · decay · dt_s) B + exp(a) ⊙ (dY S0)         G[t, s] = dY_t · x_s
    dB  = (G · decay · dt_s)ᵀ C + w ⊙ (X dS)
    dS0 = exp(a_Q) dS + (exp(a) ⊙ dY)ᵀ C
    dt and A through a: da_t collects every exp(±a_t) term, d(dt·A)_u = sum_{t >= u} da_t.

dX and dS0 are exact per head-dim block; dB, dC, d(dt) and dA sum over the head dim and over the heads of a
group, so each program writes its own partial (leading axis: head-dim block) and the host sums them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from seqssm.kernels.host import cdiv
from seqssm.kernels.ssd.triton_fwd import blocks, empty


@triton.jit
def _ssd_bwd_kernel(
    X, DT, A, Bm, Cm, DY, STATES, DFINAL, CU, COFF,
    DX, DDT, DB, DC, DA, DINIT,
    T, H, P, N, heads_per_group,
    sx_t, sx_h, sdt_t, sb_t, sb_g, sdy_t, sdy_h,
    HAS_DFINAL: tl.constexpr, HAS_DINIT: tl.constexpr,
    Q: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
):
    pid_p = tl.program_id(0)
    head = tl.program_id(1).to(tl.int64)
    seq = tl.program_id(2)
    S = tl.num_programs(2)
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
    pn = offs_p[:, None].to(tl.int64) * N + offs_n[None, :]
    seq_state = (seq.to(tl.int64) * H + head) * P * N
    if HAS_DFINAL:
        ds = tl.load(DFINAL + seq_state + pn, mask=mask_pn, other=0.0)
    else:
        ds = tl.zeros([BP, BN], dtype=tl.float32)
    causal = offs_q[:, None] >= offs_q[None, :]
    # Partials of this head-dim block: [blocks, T, H, ...] and [blocks, S, H].
    part = pid_p.to(tl.int64) * T
    da_total = tl.zeros([Q], dtype=tl.float32)

    n_chunks = (eos - bos + Q - 1) // Q
    for i in range(0, n_chunks):
        c = n_chunks - 1 - i
        rows = bos + c * Q + offs_q
        valid = rows < eos
        xp_mask = valid[:, None] & mask_p[None, :]
        x = tl.load(X + rows[:, None] * sx_t + head * sx_h + offs_p[None, :], mask=xp_mask,
                    other=0.0).to(tl.float32)
        dy = tl.load(DY + rows[:, None] * sdy_t + head * sdy_h + offs_p[None, :], mask=xp_mask,
                     other=0.0).to(tl.float32)
        dt = tl.load(DT + rows * sdt_t + head, mask=valid, other=0.0).to(tl.float32)
        bc_off = rows[:, None] * sb_t + group * sb_g + offs_n[None, :]
        bc_mask = valid[:, None] & mask_n[None, :]
        b = tl.load(Bm + bc_off, mask=bc_mask, other=0.0).to(tl.float32)
        cm = tl.load(Cm + bc_off, mask=bc_mask, other=0.0).to(tl.float32)
        s0 = tl.load(STATES + ((first_chunk + c) * H + head) * P * N + pn, mask=mask_pn, other=0.0)

        a_cs = tl.cumsum(dt * a, axis=0)
        a_last = tl.sum(dt * a, axis=0)
        decay = tl.exp(tl.where(causal, a_cs[:, None] - a_cs[None, :], float("-inf")))
        exp_a = tl.exp(a_cs)
        w = tl.exp(a_last - a_cs) * dt

        m = tl.dot(cm, tl.trans(b), input_precision="ieee") * decay  # M [Q, Q]
        g = tl.dot(dy, tl.trans(x), input_precision="ieee")  # G [Q, Q]
        dm = g * decay * dt[None, :]
        xds = tl.dot(x, ds, input_precision="ieee")  # [Q, BN]
        dc = tl.dot(dm, b, input_precision="ieee") + exp_a[:, None] * tl.dot(dy, s0, input_precision="ieee")
        db = tl.dot(tl.trans(dm), cm, input_precision="ieee") + w[:, None] * xds
        dx = tl.dot(tl.trans(m * dt[None, :]), dy, input_precision="ieee") \
            + w[:, None] * tl.dot(b, tl.trans(ds), input_precision="ieee")

        xdsb = tl.sum(xds * b, axis=1)  # [Q]: (x_s ⊗ B_s) · dS
        ddt = tl.sum(m * g, axis=0) + tl.exp(a_last - a_cs) * xdsb
        k = m * g * dt[None, :]
        da = tl.sum(k, axis=1) - tl.sum(k, axis=0)
        da += exp_a * tl.sum(dy * tl.dot(cm, tl.trans(s0), input_precision="ieee"), axis=1)
        e = w * xdsb
        da -= e
        # a_last is the cumulative sum at every position's end: its gradient reaches every increment.
        da_last = tl.exp(a_last) * tl.sum(tl.sum(s0 * ds, axis=1), axis=0) + tl.sum(e, axis=0)
        dda = tl.sum(da, axis=0) - tl.cumsum(da, axis=0) + da + da_last  # reverse cumulative sum
        ddt += a * dda
        da_total += dt * dda

        tl.store(DX + rows[:, None] * sx_t + head * sx_h + offs_p[None, :], dx.to(DX.dtype.element_ty),
                 mask=xp_mask)
        th = (part + rows) * H + head  # [Q] row of the [blocks, T, H, ...] partials
        tl.store(DDT + th, ddt, mask=valid)
        th_n = th[:, None] * N + offs_n[None, :]
        tl.store(DB + th_n, db, mask=bc_mask)
        tl.store(DC + th_n, dc, mask=bc_mask)

        ds = tl.exp(a_last) * ds + tl.dot(tl.trans(dy * exp_a[:, None]), cm, input_precision="ieee")
    tl.store(DA + (pid_p.to(tl.int64) * S + seq) * H + head, tl.sum(da_total, axis=0))
    if HAS_DINIT:
        tl.store(DINIT + seq_state + pn, ds, mask=mask_pn)


def ssd_bwd(x, dt, A, B, C, dy, states, dfinal, cu_seqlens, chunk_offsets, chunk_size: int, need_dinit: bool):
    """Gradients of the packed forward: (dx [T, H, P] in x's dtype, ddt [T, H], dA [H], dB, dC [T, G, N]
    fp32, dinit [S, H, P, N] fp32 or None)."""
    T, H, P = x.shape
    G, N = B.shape[1], B.shape[2]
    S = cu_seqlens.shape[0] - 1
    BP, BN = blocks(P, N)
    n_pb = cdiv(P, BP)
    dev = x.device
    dx = empty(T, H, P, dtype=x.dtype, device=dev)
    ddt = empty(n_pb, T, H, dtype=torch.float32, device=dev)
    dB = empty(n_pb, T, H, N, dtype=torch.float32, device=dev)
    dC = empty(n_pb, T, H, N, dtype=torch.float32, device=dev)
    dA = empty(n_pb, S, H, dtype=torch.float32, device=dev)
    dinit = empty(S, H, P, N, dtype=torch.float32, device=dev) if need_dinit else None
    _ssd_bwd_kernel[(n_pb, H, S)](
        x, dt, A, B, C, dy, states, dfinal if dfinal is not None else states, cu_seqlens, chunk_offsets,
        dx, ddt, dB, dC, dA, dinit if dinit is not None else dA,
        T, H, P, N, H // G,
        x.stride(0), x.stride(1), dt.stride(0), B.stride(0), B.stride(1), dy.stride(0), dy.stride(1),
        HAS_DFINAL=dfinal is not None, HAS_DINIT=need_dinit, Q=chunk_size, BP=BP, BN=BN,
        num_warps=4,
    )
    # Sum the partials over head-dim blocks, then over the heads that share a group's B and C.
    dB = dB.sum(0).view(T, G, H // G, N).sum(2)
    dC = dC.sum(0).view(T, G, H // G, N).sum(2)
    return dx, ddt.sum(0), dA.sum((0, 1)), dB, dC, dinit
