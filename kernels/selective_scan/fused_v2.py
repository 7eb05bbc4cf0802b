"""Sequential selective-scan forward in Triton: one thread per channel, the state recurrence in registers.

The tile scan of ``fused.py`` spends most of its instructions on the warp-level ``tl.associative_scan``
(dependent shuffles, ~21 instructions per state update). Here a thread owns one channel and all N of its
states ([BLOCK_D, N] tile, channels across lanes) and walks positions one at a time: exp2, ΔBu, one FMA for
the state and one for C·h per update, no shuffles. A channel alone has too little parallelism at B = 1, so the
sequence is cut into S segments (whole CHUNKs each) run side by side:

1. ``_segment_state_kernel``: for every segment but the last, the state at its end starting from zero, and
   the sum of Δ over it (the segment's decay is exp(A ΣΔ), one exp per state).
2. ``_segment_start_kernel``: walks the S segments in order and turns those into each segment's start state.
3. ``_selective_scan_seq_fwd_kernel``: each segment scans again from its start state, writing the output,
   the final state and, every CHUNK positions, the state that ``fused.py``'s backward restarts from.

u, Δ, z and the output move as [BLOCK_D, TT] tiles (TT positions a thread, one wide access) and a static loop
over the TT columns picks one out per step; B_t and C_t are loaded per step as [N] rows, the same for every
lane. The exp work is done twice (passes 1 and 3). The per-step B/C loads (load, convert, address) keep it at
~11 (pass 1) and ~16 (pass 3) SASS instructions per update rather than the ~5 of the arithmetic alone; see
benchmarks/NOTES-scan.md.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from seqssm.kernels.selective_scan.tile_ops import softplus

LOG2E = tl.constexpr(1.4426950408889634)


class SeqConfig(NamedTuple):
    """Launch shape: channels per program (num_warps = block_d // 32 on a GPU), positions per loaded tile,
    and how many programs to aim for when choosing the number of segments."""

    block_d: int
    tt: int
    num_warps: int
    target_programs: int


SEQ_CONFIG = SeqConfig(block_d=32, tt=16, num_warps=1, target_programs=2048)
SEQ_INTERPRET_CONFIG = SeqConfig(block_d=2, tt=4, num_warps=1, target_programs=8)


@triton.jit
def _pick(X, offs_tt, j: tl.constexpr):
    """Column j of a [BLOCK_D, TT] tile held in one thread per row; -0.0 makes the other adds fold away."""
    return tl.sum(tl.where(offs_tt[None, :] == j, X, -0.0), axis=1)


# The unit stride of the state axis in A and in the [.., D, N] state buffers comes in at run time
# (do_not_specialize): a compile-time 1 makes Triton spread the [BLOCK_D, N] tile's N axis across lanes for
# wide accesses to those few rows, and then every step pays for moving values between lanes.
@triton.jit(do_not_specialize=["s_A_n", "s_n"])
def _segment_state_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, bias_ptr, hend_ptr, dsum_ptr,
    dim, length, n_state, b_cpg, seg_len, n_seg, s_n,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_B_l,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, B_VAR: tl.constexpr, REVERSE: tl.constexpr,
    BLOCK_D: tl.constexpr, TT: tl.constexpr, N_PAD: tl.constexpr, EVEN_N: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    d0 = tl.program_id(1) * BLOCK_D
    seg = tl.program_id(2)
    offs_d = d0 + tl.arange(0, BLOCK_D)
    mask_d = offs_d < dim
    offs_n = tl.arange(0, N_PAD)
    mask_n = offs_n < n_state
    offs_tt = tl.arange(0, TT)
    row = offs_d.to(tl.int64)[:, None]
    u_base = u_ptr + pid_b * s_u_b + row * s_u_d
    dt_base = dt_ptr + pid_b * s_dt_b + row * s_dt_d
    nd_mask = mask_d[:, None] & mask_n[None, :]
    A2 = tl.load(A_ptr + offs_d[:, None] * s_A_d + offs_n[None, :] * s_A_n, mask=nd_mask, other=0.0) * LOG2E
    if B_VAR:
        B_base = B_ptr + pid_b * s_B_b + (d0 // b_cpg) * s_B_g + tl.minimum(offs_n, n_state - 1) * s_B_n
    else:
        B_tile = tl.load(B_ptr + offs_d[:, None] * s_B_b + offs_n[None, :] * s_B_n, mask=nd_mask, other=0.0)
        B_tile = B_tile.to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)

    h = tl.zeros((BLOCK_D, N_PAD), dtype=tl.float32)
    dsum = tl.zeros((BLOCK_D,), dtype=tl.float32)
    t0 = seg * seg_len
    # Counting from 0 in steps of TT lets the compiler prove tile starts are multiples of TT (wide loads).
    for tr in range(0, seg_len, TT):
        tb = t0 + tr
        t = tb + offs_tt
        mask_t = t < length
        if REVERSE:
            pos = length - 1 - t
        else:
            pos = t
        mask = mask_d[:, None] & mask_t[None, :]
        u = tl.load(u_base + pos[None, :] * s_u_l, mask=mask, other=0.0).to(tl.float32)
        dt = tl.load(dt_base + pos[None, :] * s_dt_l, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt += bias[:, None]
        if SOFTPLUS:
            dt = softplus(dt)
        dt = tl.where(mask, dt, 0.0)
        dtu = dt * u
        dsum += tl.sum(dt, axis=1)
        for j in tl.static_range(TT):
            dt_j = _pick(dt, offs_tt, j)
            dtu_j = _pick(dtu, offs_tt, j)
            if B_VAR:
                # Past the end Δ = 0 leaves h as it is, so a clamped (always valid) position needs no mask.
                t_j = tl.minimum(tb + j, length - 1)
                if REVERSE:
                    pos_j = length - 1 - t_j
                else:
                    pos_j = t_j
                B_j = tl.load(B_base + pos_j * s_B_l).to(tl.float32)
                if not EVEN_N:
                    B_j = tl.where(mask_n, B_j, 0.0)
                b = B_j[None, :] * dtu_j[:, None]
            else:
                b = B_tile * dtu_j[:, None]
            h = tl.exp2(A2 * dt_j[:, None]) * h + b

    out_offs = ((pid_b * n_seg + seg) * dim + offs_d[:, None]) * n_state + offs_n[None, :] * s_n
    tl.store(hend_ptr + out_offs, h, mask=nd_mask)
    tl.store(dsum_ptr + (pid_b * n_seg + seg) * dim + offs_d, dsum, mask=mask_d)


@triton.jit
def _segment_start_kernel(
    A_ptr, h0_ptr, hend_ptr, dsum_ptr, dim, n_state, n_seg, s_A_d, s_A_n,
    HAS_H0: tl.constexpr, BLOCK: tl.constexpr,
):
    """Walk the segments in order, replacing each end state (from zero) in hend by the state entering the
    segment: start_s = exp(A ΣΔ_{s-1}) start_{s-1} + end_{s-1}; start_0 = h0."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < dim * n_state
    d = offs // n_state
    A2 = tl.load(A_ptr + d * s_A_d + (offs % n_state) * s_A_n, mask=mask, other=0.0) * LOG2E
    if HAS_H0:
        h = tl.load(h0_ptr + pid_b * dim * n_state + offs, mask=mask, other=0.0)
    else:
        h = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(0, n_seg - 1):
        base = (pid_b * n_seg + s) * dim
        end = tl.load(hend_ptr + base * n_state + offs, mask=mask, other=0.0)
        dsum = tl.load(dsum_ptr + base + d, mask=mask, other=0.0)
        tl.store(hend_ptr + base * n_state + offs, h, mask=mask)
        h = tl.exp2(A2 * dsum) * h + end
    tl.store(hend_ptr + ((pid_b * n_seg + n_seg - 1) * dim) * n_state + offs, h, mask=mask)


@triton.jit(do_not_specialize=["s_A_n", "s_n"])
def _selective_scan_seq_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, hend_ptr, dsum_ptr,
    out_ptr, hT_ptr, hc_ptr,
    dim, length, n_state, b_cpg, c_cpg, seg_len, n_seg, n_chunks, s_n,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_C_b, s_C_g, s_C_n, s_C_l,
    s_z_b, s_z_d, s_z_l,
    s_o_b, s_o_d, s_o_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
    SOFTPLUS: tl.constexpr, B_VAR: tl.constexpr, C_VAR: tl.constexpr, STORE_CHUNKS: tl.constexpr,
    REVERSE: tl.constexpr, CHUNK: tl.constexpr,
    BLOCK_D: tl.constexpr, TT: tl.constexpr, N_PAD: tl.constexpr, EVEN_N: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    d0 = tl.program_id(1) * BLOCK_D
    seg = tl.program_id(2)
    offs_d = d0 + tl.arange(0, BLOCK_D)
    mask_d = offs_d < dim
    offs_n = tl.arange(0, N_PAD)
    mask_n = offs_n < n_state
    offs_tt = tl.arange(0, TT)
    row = offs_d.to(tl.int64)[:, None]
    u_base = u_ptr + pid_b * s_u_b + row * s_u_d
    dt_base = dt_ptr + pid_b * s_dt_b + row * s_dt_d
    o_base = out_ptr + pid_b * s_o_b + row * s_o_d
    nd_mask = mask_d[:, None] & mask_n[None, :]
    A2 = tl.load(A_ptr + offs_d[:, None] * s_A_d + offs_n[None, :] * s_A_n, mask=nd_mask, other=0.0) * LOG2E
    if B_VAR:
        B_base = B_ptr + pid_b * s_B_b + (d0 // b_cpg) * s_B_g + tl.minimum(offs_n, n_state - 1) * s_B_n
    else:
        B_tile = tl.load(B_ptr + offs_d[:, None] * s_B_b + offs_n[None, :] * s_B_n, mask=nd_mask, other=0.0)
        B_tile = B_tile.to(tl.float32)
    if C_VAR:
        C_base = C_ptr + pid_b * s_C_b + (d0 // c_cpg) * s_C_g + tl.minimum(offs_n, n_state - 1) * s_C_n
    else:
        C_tile = tl.load(C_ptr + offs_d[:, None] * s_C_b + offs_n[None, :] * s_C_n, mask=nd_mask, other=0.0)
        C_tile = C_tile.to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    state_offs = (pid_b * dim + offs_d[:, None]) * n_state + offs_n[None, :] * s_n
    if HAS_H0:
        h = tl.load(h0_ptr + state_offs, mask=nd_mask, other=0.0).to(tl.float32)
    else:
        h = tl.zeros((BLOCK_D, N_PAD), dtype=tl.float32)
    if seg > 0:
        # The state entering this segment, left in hend by _segment_start_kernel.
        start_offs = ((pid_b * n_seg + seg) * dim + offs_d[:, None]) * n_state + offs_n[None, :] * s_n
        h = tl.load(hend_ptr + start_offs, mask=nd_mask, other=0.0)

    t0 = seg * seg_len
    # Counting from 0 in steps of TT lets the compiler prove tile starts are multiples of TT (wide loads).
    for tr in range(0, tl.minimum(seg_len, length - t0), TT):
        tb = t0 + tr
        if STORE_CHUNKS:
            if tb % CHUNK == 0:
                t_c = tb
                hc_offs = ((pid_b * n_chunks + t_c // CHUNK) * dim + offs_d[:, None]) * n_state
                hc_offs += offs_n[None, :] * s_n
                tl.store(hc_ptr + hc_offs, h, mask=nd_mask)
        t = tb + offs_tt
        mask_t = t < length
        if REVERSE:
            pos = length - 1 - t
        else:
            pos = t
        mask = mask_d[:, None] & mask_t[None, :]
        u = tl.load(u_base + pos[None, :] * s_u_l, mask=mask, other=0.0).to(tl.float32)
        dt = tl.load(dt_base + pos[None, :] * s_dt_l, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt += bias[:, None]
        if SOFTPLUS:
            dt = softplus(dt)
        dt = tl.where(mask, dt, 0.0)
        dtu = dt * u
        y = tl.zeros((BLOCK_D, TT), dtype=tl.float32)
        for j in tl.static_range(TT):
            dt_j = _pick(dt, offs_tt, j)
            dtu_j = _pick(dtu, offs_tt, j)
            # Past the end Δ = 0 leaves h as it is (and y is not stored), so a clamped position needs no mask;
            # padded states get B = 0 and A = 0, so they stay 0 and add nothing to C·h.
            t_j = tl.minimum(tb + j, length - 1)
            if REVERSE:
                pos_j = length - 1 - t_j
            else:
                pos_j = t_j
            if B_VAR:
                B_j = tl.load(B_base + pos_j * s_B_l).to(tl.float32)
                if not EVEN_N:
                    B_j = tl.where(mask_n, B_j, 0.0)
                b = B_j[None, :] * dtu_j[:, None]
            else:
                b = B_tile * dtu_j[:, None]
            h = tl.exp2(A2 * dt_j[:, None]) * h + b
            if C_VAR:
                C_j = tl.load(C_base + pos_j * s_C_l).to(tl.float32)
                y_j = tl.sum(h * C_j[None, :], axis=1)
            else:
                y_j = tl.sum(h * C_tile, axis=1)
            y = tl.where(offs_tt[None, :] == j, y_j[:, None], y)
        if HAS_D:
            y += u * Dv[:, None]
        if HAS_Z:
            z_ptrs = z_ptr + pid_b * s_z_b + row * s_z_d + pos[None, :] * s_z_l
            zz = tl.load(z_ptrs, mask=mask, other=0.0).to(tl.float32)
            y *= zz * tl.sigmoid(zz)
        tl.store(o_base + pos[None, :] * s_o_l, y.to(out_ptr.dtype.element_ty), mask=mask)

    if seg == n_seg - 1:
        tl.store(hT_ptr + state_offs, h, mask=nd_mask)


def _segments(batch: int, dim: int, length: int, block_d: int, chunk: int, cfg: SeqConfig) -> tuple[int, int]:
    """(segment length, number of segments): enough programs to fill the device, whole chunks each."""
    n_chunks = triton.cdiv(length, chunk)
    per_segment = batch * triton.cdiv(dim, block_d)
    n_seg = max(1, min(n_chunks, triton.cdiv(cfg.target_programs, per_segment)))
    seg_len = triton.cdiv(n_chunks, n_seg) * chunk
    return seg_len, triton.cdiv(length, seg_len)


def selective_scan_seq_fwd(u, delta, A, B, C, D, z, delta_bias, h0, out, final, chunks, softplus, reverse,
                           lay, chunk: int, cfg: SeqConfig) -> None:
    """Fill out [B, D, L], final [B, D, N] and, when given, chunks [B, L / chunk, D, N] (the state at
    every chunk start). ``lay`` is ``fused._Layout`` (B/C forms and strides). Inputs are checked by the
    public function."""
    batch, dim, length = u.shape
    n_state = A.shape[1]
    block_d = min(cfg.block_d, triton.next_power_of_2(dim))
    # A tile must not straddle two groups of B or C (one row of each per step); masks handle a ragged end.
    while any(g > 1 and (dim // g) % block_d for g in (lay.b_groups, lay.c_groups)):
        block_d //= 2
    tt = cfg.tt
    seg_len, n_seg = _segments(batch, dim, length, block_d, chunk, cfg)
    f32 = dict(device=u.device, dtype=torch.float32)
    hend = torch.empty(batch, n_seg, dim, n_state, **f32)
    dsum = torch.empty(batch, n_seg, dim, **f32)
    grid = (batch, triton.cdiv(dim, block_d))
    n_pad = triton.next_power_of_2(n_state)
    if n_seg > 1:
        _segment_state_kernel[grid + (n_seg - 1,)](
            u, delta, A, B, delta_bias, hend, dsum,
            dim, length, n_state, dim // lay.b_groups, seg_len, n_seg, 1,
            *u.stride(), *delta.stride(), *A.stride(), *lay.b_strides,
            HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus, B_VAR=lay.b_var, REVERSE=reverse,
            BLOCK_D=block_d, TT=tt, N_PAD=n_pad, EVEN_N=n_pad == n_state,
            num_warps=cfg.num_warps,
        )
        h0_ = h0 if h0 is not None else hend  # a stand-in pointer, never read when HAS_H0 is False
        _segment_start_kernel[(batch, triton.cdiv(dim * n_state, 256))](
            A, h0_, hend, dsum, dim, n_state, n_seg, *A.stride(),
            HAS_H0=h0 is not None, BLOCK=256,
        )
    zz = z if z is not None else u
    _selective_scan_seq_fwd_kernel[grid + (n_seg,)](
        u, delta, A, B, C, D, z, delta_bias, h0, hend, dsum, out, final, chunks,
        dim, length, n_state, dim // lay.b_groups, dim // lay.c_groups, seg_len, n_seg,
        triton.cdiv(length, chunk), 1,
        *u.stride(), *delta.stride(), *A.stride(), *lay.b_strides, *lay.c_strides,
        *zz.stride(), *out.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, HAS_H0=h0 is not None,
        SOFTPLUS=softplus, B_VAR=lay.b_var, C_VAR=lay.c_var, STORE_CHUNKS=chunks is not None,
        REVERSE=reverse, CHUNK=chunk, BLOCK_D=block_d, TT=tt, N_PAD=n_pad, EVEN_N=n_pad == n_state,
        num_warps=cfg.num_warps,
    )
