"""Selective-scan forward kernels in Triton: one thread per channel, the state recurrence in registers.

A thread owns one channel and all N of its states ([BLOCK_D, N] tile, channels across lanes) and walks
positions one at a time: exp2, ΔBu, one FMA for the state and one for C·h per update, no shuffles (a tile scan
over ``tl.associative_scan`` spent ~21 instructions an update on its shuffles and lost: benchmarks/NOTES-scan.md,
run 5). A channel alone has too little parallelism at B = 1, so the sequence is cut into S segments (whole
CHUNKs each) run side by side:

1. ``_segment_state_kernel``: for every segment but the last, the state at its end starting from zero, the sum
   of Δ over it (the segment's decay is exp(A ΣΔ), one exp per state) and, with ``seq_idx``, whether a sequence
   starts inside it (then nothing before the segment survives it).
2. ``_segment_start_kernel``: walks the S segments in order and turns those into each segment's start state.
3. ``_selective_scan_fwd_kernel``: each segment scans again from its start state, writing the output, the
   final state and, every CHUNK positions, the state that the backward (``triton_bwd.py``) restarts from.

u, Δ, z and the output move as [BLOCK_D, TT] tiles (TT positions a thread, one 16-byte access). Inside a tile
the loop runs states outer, positions inner: the states are independent in the recurrence (only C·h sums them),
so state n's B and C over the tile are one 16-byte row each, read as a [BLOCK_D, TT] tile that every lane reads
alike (no per-step loads), and picking position j of a tile is a register move. The exp work is done twice
(passes 1 and 3): ~8 + ~12 SASS instructions per state update on sm_90a (benchmarks/NOTES-scan.md, run 10).

Packed sequences (``seq_idx`` [B, L], a sequence a run of one value): where the value changes, exp(Δ_t A) is
taken as 0, so the state restarts from Δ_t B_t u_t; seq_idx is read through the same pointer tiles as B.

Why over 400 lines: the three kernels share the tile helpers above them, and passes 1 and 3 must do the same
arithmetic bit for bit, so they stay in one file where they can be read side by side.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from seqssm.kernels.common import LOG2E, softplus
from seqssm.kernels.host import DirectLauncher, cdiv, launch_options, next_power_of_2
from seqssm.kernels.selective_scan.ptx import BF16_PAIR_PTX, ptx_paths


class SeqConfig(NamedTuple):
    """Launch shape: channels per program (num_warps = block_d // 32 on a GPU), positions per loaded tile
    (at most 16 bytes of u's dtype), how many programs to aim for when choosing the number of segments, and
    a register cap for the output pass (None: the compiler's choice; fewer registers, more warps an SM)."""

    block_d: int
    tt: int
    num_warps: int
    target_programs: int
    maxnreg: int | None = None


# H200 sweep at L = 64 k (benchmarks/RESULTS.md): two warps a program and at most 128 registers (16 warps an SM).
SEQ_CONFIG = SeqConfig(block_d=64, tt=8, num_warps=2, target_programs=2048, maxnreg=128)
SEQ_INTERPRET_CONFIG = SeqConfig(block_d=2, tt=4, num_warps=1, target_programs=8)


@triton.jit
def bc_base(X_ptr, pid_b, d0, offs_d, cpg, s_b, s_g, VAR: tl.constexpr):
    """Where B or C starts for a tile of channels: its group's [N, L] rows when per position (``VAR``; BLOCK_D
    divides the channels per group ``cpg``, so one group serves the tile), else the tile's [BLOCK_D] rows of a
    constant [D, N] matrix."""
    if VAR:
        base = X_ptr + pid_b * s_b + (d0 // cpg) * s_g
    else:
        base = X_ptr + offs_d * s_b
    return base


@triton.jit
def starts(seq_base, pos, mask):
    """True where a packed sequence starts: seq_idx differs from the previous position's (never at position 0,
    where the initial state belongs to the row's first sequence). ``pos`` and ``mask`` are tiles of one shape."""
    cur = tl.load(seq_base + pos, mask=mask, other=0)
    prev = tl.load(seq_base + pos - 1, mask=mask & (pos > 0), other=0)
    return (cur != prev) & (pos > 0)


@triton.jit
def _or(a, b):
    return a | b


@triton.jit
def _pick(X, offs, j: tl.constexpr):
    """Column j of an fp32 [BLOCK_D, K] tile whose K axis is in-thread, as a register move: OR of the bits
    with zeros folds away exactly (a sum would not: Triton turns a -0.0 filler into +0.0, and x + 0.0 is not
    x for x = -0.0, so every pick cost an add)."""
    bits = tl.where(offs[None, :] == j, X.to(tl.int32, bitcast=True), 0)
    return tl.reduce(bits, 1, _or).to(tl.float32, bitcast=True)


@triton.jit
def _to_f32(x, BF16_PTX: tl.constexpr):
    """fp32 of a tile; bf16 pairs unpacked in one instruction each (``ptx.BF16_PAIR_PTX``) where the compiler
    would spend two on the high half."""
    if BF16_PTX and x.dtype == tl.bfloat16:
        bits = tl.inline_asm_elementwise(BF16_PAIR_PTX, "=r,=r,r", [x], dtype=tl.int32, is_pure=True, pack=2)
        y = bits.to(tl.float32, bitcast=True)
    else:
        y = x.to(tl.float32)
    return y


@triton.jit
def _tile(ptrs, mask, EVEN: tl.constexpr, BF16_PTX: tl.constexpr):
    """A [BLOCK_D, TT] tile as fp32; no mask (so no predicates or zero fills) when every tile is whole."""
    if EVEN:
        x = tl.load(ptrs)
    else:
        x = tl.load(ptrs, mask=mask, other=0.0)
    return _to_f32(x, BF16_PTX)


@triton.jit
def _state_rows(base, offs_n, s_n, nd_mask, VAR: tl.constexpr):
    """A constant B or C as its [BLOCK_D, N_PAD] fp32 tile (padded states 0), loaded once before the loop; 0.0
    (unused) when it varies per position."""
    if VAR:
        rows = 0.0
    else:
        rows = tl.load(base[:, None] + offs_n[None, :] * s_n, mask=nd_mask, other=0.0).to(tl.float32)
    return rows


@triton.jit
def _state_row(base, rows, n: tl.constexpr, n_state, s_n, pos_2d, s_l, mask, offs_n, VAR: tl.constexpr,
               EVEN_N: tl.constexpr, EVEN: tl.constexpr, BF16_PTX: tl.constexpr, OFF32: tl.constexpr):
    """State n's B or C over the tile's TT positions as fp32, [BLOCK_D, TT] when per position (the same in
    every row: the lanes read the same bytes, and the tile has u's layout, so column j is a register), else
    column n of the preloaded ``rows`` as [BLOCK_D, 1]. Padded states read as 0. ``OFF32``: address each row by
    one 32-bit offset from the group base instead of a row pointer; the compiler hoists the N row pointers out
    of the loop, 2 registers each (sm_90a: 168 -> 140 registers in the output pass; the state pass, with half
    the rows, is better without).
    """
    if VAR:
        n_c = n if EVEN_N else tl.minimum(n, n_state - 1)
        if OFF32:
            row = _tile(base + (n_c * s_n + pos_2d * s_l), mask, EVEN, BF16_PTX)
        else:
            row = _tile(base + n_c * s_n + pos_2d * s_l, mask, EVEN, BF16_PTX)
        if not EVEN_N:
            row = tl.where(n < n_state, row, 0.0)
    else:
        row = _pick(rows, offs_n, n)[:, None]
    return row


@triton.jit
def _scan_state(h, A2, dt, dtu, B_n, restart, offs_n, offs_tt, n: tl.constexpr, TT: tl.constexpr,
                KEEP: tl.constexpr, HAS_SEQ: tl.constexpr):
    """Advance state n of h ([BLOCK_D, N_PAD]) over the tile's TT positions, h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t
    (A2 = A·log2 e; the decay is 0 where ``restart``, a [BLOCK_D, TT] mask, when ``HAS_SEQ``). Returns the new h
    and, when ``KEEP``, state n at each position ([BLOCK_D, TT], for C·h)."""
    h_n = _pick(h, offs_n, n)
    a = tl.exp2(dt * _pick(A2, offs_n, n)[:, None])
    if HAS_SEQ:
        a = tl.where(restart, 0.0, a)
    b = dtu * B_n
    hs = tl.zeros_like(dt)
    for j in tl.static_range(TT):
        h_n = _pick(a, offs_tt, j) * h_n + _pick(b, offs_tt, j)
        if KEEP:
            hs = tl.where(offs_tt[None, :] == j, h_n[:, None], hs)
    return tl.where(offs_n[None, :] == n, h_n[:, None], h), hs


@triton.jit
def _tile_positions(tb, offs_tt, length, mask_d, BLOCK_D: tl.constexpr, TT: tl.constexpr):
    """The positions of the tile starting at position tb ([TT]), its [BLOCK_D, TT] mask and the positions
    broadcast to the tile's shape (the state rows' pointer tile)."""
    pos = tb + offs_tt
    mask = mask_d[:, None] & (pos < length)[None, :]
    return pos, mask, tl.broadcast_to(pos[None, :], (BLOCK_D, TT))


@triton.jit
def _tile_restarts(seq_base, pos_2d, mask, HAS_SEQ: tl.constexpr):
    """[BLOCK_D, TT] True where a packed sequence starts (``starts``); 0 (unused) without ``seq_idx``."""
    if HAS_SEQ:
        restart = starts(seq_base, pos_2d, mask)
    else:
        restart = 0
    return restart


@triton.jit
def _tile_inputs(u_base, dt_base, pos, s_u_l, s_dt_l, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                 EVEN: tl.constexpr, BF16_PTX: tl.constexpr):
    """(u, Δ) as [BLOCK_D, TT] fp32 tiles, Δ = softplus(Δ + bias) when asked, 0 where ``mask`` is False."""
    u = _tile(u_base + pos[None, :] * s_u_l, mask, EVEN, BF16_PTX)
    dt = _tile(dt_base + pos[None, :] * s_dt_l, mask, EVEN, BF16_PTX)
    if HAS_BIAS:
        dt += bias[:, None]
    if SOFTPLUS:
        dt = softplus(dt)
    if not EVEN:
        dt = tl.where(mask, dt, 0.0)
    return u, dt


# The unit stride of the state axis in A and in the [.., D, N] state buffers comes in at run time
# (do_not_specialize): a compile-time 1 makes Triton spread the [BLOCK_D, N] tile's N axis across lanes for
# wide accesses to those few rows, and then every step pays for moving values between lanes.
@triton.jit(do_not_specialize=["s_A_n", "s_n"])
def _segment_state_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, bias_ptr, seq_ptr, hend_ptr, dsum_ptr, cut_ptr,
    dim, length, n_state, b_cpg, seg_len, n_seg, s_n,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_q_b,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, B_VAR: tl.constexpr, HAS_SEQ: tl.constexpr,
    BLOCK_D: tl.constexpr, TT: tl.constexpr, N_PAD: tl.constexpr, EVEN_N: tl.constexpr, EVEN: tl.constexpr,
    BF16_PTX: tl.constexpr,
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
    B_base = bc_base(B_ptr, pid_b, d0, offs_d, b_cpg, s_B_b, s_B_g, B_VAR)
    B_rows = _state_rows(B_base, offs_n, s_B_n, nd_mask, B_VAR)
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_BIAS else 0.0

    seq_base = seq_ptr + pid_b * s_q_b
    h = tl.zeros((BLOCK_D, N_PAD), dtype=tl.float32)
    dsum = tl.zeros((BLOCK_D,), dtype=tl.float32)
    cut = tl.zeros((BLOCK_D,), dtype=tl.int32)
    t0 = seg * seg_len
    # Counting from 0 in steps of TT lets the compiler prove tile starts are multiples of TT (wide loads).
    for tr in range(0, seg_len, TT):
        pos, mask, pos_2d = _tile_positions(t0 + tr, offs_tt, length, mask_d, BLOCK_D, TT)
        u, dt = _tile_inputs(u_base, dt_base, pos, s_u_l, s_dt_l, mask, bias, HAS_BIAS, SOFTPLUS, EVEN, BF16_PTX)
        dtu = dt * u
        dsum += tl.sum(dt, axis=1)
        restart = _tile_restarts(seq_base, pos_2d, mask, HAS_SEQ)
        if HAS_SEQ:
            cut = tl.maximum(cut, tl.max(restart.to(tl.int32), axis=1))
        for n in tl.static_range(N_PAD):
            B_n = _state_row(B_base, B_rows, n, n_state, s_B_n, pos_2d, s_B_l, mask, offs_n, B_VAR, EVEN_N, EVEN,
                             BF16_PTX, False)
            h, _ = _scan_state(h, A2, dt, dtu, B_n, restart, offs_n, offs_tt, n, TT, False, HAS_SEQ)

    out_offs = ((pid_b * n_seg + seg) * dim + offs_d[:, None]) * n_state + offs_n[None, :] * s_n
    tl.store(hend_ptr + out_offs, h, mask=nd_mask)
    tl.store(dsum_ptr + (pid_b * n_seg + seg) * dim + offs_d, dsum, mask=mask_d)
    if HAS_SEQ:
        # A sequence starts inside the segment: nothing that entered it reaches its end.
        tl.store(cut_ptr + (pid_b * n_seg + seg) * dim + offs_d, cut, mask=mask_d)


@triton.jit
def _segment_start_kernel(
    A_ptr, h0_ptr, hend_ptr, dsum_ptr, cut_ptr, dim, n_state, n_seg, s_A_d, s_A_n,
    HAS_H0: tl.constexpr, HAS_SEQ: tl.constexpr, BLOCK: tl.constexpr,
):
    """Walk the segments in order, replacing each end state (from zero) in hend by the state entering the
    segment: start_s = exp(A ΣΔ_{s-1}) start_{s-1} + end_{s-1}, the first term dropped where a packed sequence
    starts inside segment s-1; start_0 = h0."""
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
        h = tl.exp2(A2 * dsum) * h
        if HAS_SEQ:
            h = tl.where(tl.load(cut_ptr + base + d, mask=mask, other=0) != 0, 0.0, h)
        h += end
    tl.store(hend_ptr + ((pid_b * n_seg + n_seg - 1) * dim) * n_state + offs, h, mask=mask)


@triton.jit(do_not_specialize=["s_A_n", "s_n"])
def _selective_scan_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, seq_ptr, hend_ptr,
    out_ptr, hT_ptr, hc_ptr,
    dim, length, n_state, b_cpg, c_cpg, seg_len, n_seg, n_chunks, s_n,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_C_b, s_C_g, s_C_n, s_C_l,
    s_z_b, s_z_d, s_z_l,
    s_o_b, s_o_d, s_o_l,
    s_q_b,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
    SOFTPLUS: tl.constexpr, B_VAR: tl.constexpr, C_VAR: tl.constexpr, STORE_CHUNKS: tl.constexpr,
    HAS_SEQ: tl.constexpr, CHUNK: tl.constexpr,
    BLOCK_D: tl.constexpr, TT: tl.constexpr, N_PAD: tl.constexpr, EVEN_N: tl.constexpr, EVEN: tl.constexpr,
    BF16_PTX: tl.constexpr,
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
    B_base = bc_base(B_ptr, pid_b, d0, offs_d, b_cpg, s_B_b, s_B_g, B_VAR)
    C_base = bc_base(C_ptr, pid_b, d0, offs_d, c_cpg, s_C_b, s_C_g, C_VAR)
    B_rows = _state_rows(B_base, offs_n, s_B_n, nd_mask, B_VAR)
    C_rows = _state_rows(C_base, offs_n, s_C_n, nd_mask, C_VAR)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_BIAS else 0.0
    state_offs = (pid_b * dim + offs_d[:, None]) * n_state + offs_n[None, :] * s_n
    if HAS_H0:
        h = tl.load(h0_ptr + state_offs, mask=nd_mask, other=0.0).to(tl.float32)
    else:
        h = tl.zeros((BLOCK_D, N_PAD), dtype=tl.float32)
    if seg > 0:
        # The state entering this segment, left in hend by _segment_start_kernel.
        start_offs = ((pid_b * n_seg + seg) * dim + offs_d[:, None]) * n_state + offs_n[None, :] * s_n
        h = tl.load(hend_ptr + start_offs, mask=nd_mask, other=0.0)

    seq_base = seq_ptr + pid_b * s_q_b
    t0 = seg * seg_len
    # Counting from 0 in steps of TT lets the compiler prove tile starts are multiples of TT (wide loads).
    for tr in range(0, tl.minimum(seg_len, length - t0), TT):
        tb = t0 + tr
        if STORE_CHUNKS:
            if tb % CHUNK == 0:
                hc_offs = ((pid_b * n_chunks + tb // CHUNK) * dim + offs_d[:, None]) * n_state
                hc_offs += offs_n[None, :] * s_n
                tl.store(hc_ptr + hc_offs, h, mask=nd_mask)
        pos, mask, pos_2d = _tile_positions(tb, offs_tt, length, mask_d, BLOCK_D, TT)
        u, dt = _tile_inputs(u_base, dt_base, pos, s_u_l, s_dt_l, mask, bias, HAS_BIAS, SOFTPLUS, EVEN, BF16_PTX)
        dtu = dt * u
        restart = _tile_restarts(seq_base, pos_2d, mask, HAS_SEQ)
        if HAS_D:
            y = u * Dv[:, None]
        else:
            y = tl.zeros((BLOCK_D, TT), dtype=tl.float32)
        for n in tl.static_range(N_PAD):
            B_n = _state_row(B_base, B_rows, n, n_state, s_B_n, pos_2d, s_B_l, mask, offs_n, B_VAR, EVEN_N, EVEN,
                             BF16_PTX, True)
            h, hs = _scan_state(h, A2, dt, dtu, B_n, restart, offs_n, offs_tt, n, TT, True, HAS_SEQ)
            y += hs * _state_row(C_base, C_rows, n, n_state, s_C_n, pos_2d, s_C_l, mask, offs_n, C_VAR, EVEN_N,
                                 EVEN, BF16_PTX, True)
        if HAS_Z:
            zz = _tile(z_ptr + pid_b * s_z_b + row * s_z_d + pos[None, :] * s_z_l, mask, EVEN, BF16_PTX)
            y *= zz * tl.sigmoid(zz)
        if EVEN:
            tl.store(o_base + pos[None, :] * s_o_l, y.to(out_ptr.dtype.element_ty))
        else:
            tl.store(o_base + pos[None, :] * s_o_l, y.to(out_ptr.dtype.element_ty), mask=mask)

    if seg == n_seg - 1:
        tl.store(hT_ptr + state_offs, h, mask=nd_mask)


# Launched through the compiled kernel after the first launch (kernels/host.py): host time counts at short L.
_launch_segment_state_kernel = DirectLauncher(_segment_state_kernel)
_launch_segment_start_kernel = DirectLauncher(_segment_start_kernel)
_launch_selective_scan_fwd_kernel = DirectLauncher(_selective_scan_fwd_kernel)


def _segments(batch: int, dim: int, length: int, block_d: int, chunk: int, cfg: SeqConfig) -> tuple[int, int]:
    """(segment length, number of segments): enough programs to fill the device, whole chunks each."""
    n_chunks = cdiv(length, chunk)
    per_segment = batch * cdiv(dim, block_d)
    n_seg = max(1, min(n_chunks, cdiv(cfg.target_programs, per_segment)))
    seg_len = cdiv(n_chunks, n_seg) * chunk
    return seg_len, cdiv(length, seg_len)


class SeqLaunches(NamedTuple):
    """The three launches of one call, less the tensors: grids, the integer arguments that follow the
    pointers, and the compile-time keywords. All of it follows from the inputs' shapes, strides and dtypes and
    the options, so ``triton.py`` computes it once per input signature."""

    n_seg: int
    state: tuple[tuple[int, ...], tuple, dict]
    start: tuple[tuple[int, ...], tuple, dict]
    fwd: tuple[tuple[int, ...], tuple, dict]


def fwd_launches(u, delta, A, B, C, z, seq_idx, has_d: bool, has_bias: bool, has_h0: bool, store_chunks: bool,
                 softplus: bool, lay, chunk: int, cfg: SeqConfig, out_strides: tuple[int, ...]) -> SeqLaunches:
    """The launches of :func:`selective_scan_fwd` for these inputs (only their shapes, strides and dtypes
    are read). ``lay`` is ``triton._Layout`` (B/C forms and strides); the output has ``out_strides``."""
    batch, dim, length = u.shape
    n_state = A.shape[1]
    block_d = min(cfg.block_d, next_power_of_2(dim))
    # A tile must not straddle two groups of B or C (one row of each per step); masks handle a ragged end.
    while any(g > 1 and (dim // g) % block_d for g in (lay.b_groups, lay.c_groups)):
        block_d //= 2
    # One 16-byte access a thread and row: wider tiles are split across lanes, and every pick then moves data.
    tt = min(cfg.tt, 16 // u.element_size())
    seg_len, n_seg = _segments(batch, dim, length, block_d, chunk, cfg)
    grid = (batch, cdiv(dim, block_d))
    n_pad = next_power_of_2(n_state)
    shape_kw = dict(BLOCK_D=block_d, TT=tt, N_PAD=n_pad, EVEN_N=n_pad == n_state,
                    EVEN=length % tt == 0 and dim % block_d == 0, BF16_PTX=ptx_paths())
    has_seq = seq_idx is not None
    s_q_b = seq_idx.stride(0) if has_seq else 0
    state = (grid + (n_seg - 1,),
             (dim, length, n_state, dim // lay.b_groups, seg_len, n_seg, 1,
              *u.stride(), *delta.stride(), *A.stride(), *lay.b_strides, s_q_b),
             dict(HAS_BIAS=has_bias, SOFTPLUS=softplus, B_VAR=lay.b_var, HAS_SEQ=has_seq, **shape_kw,
                  num_warps=cfg.num_warps))
    start = ((batch, cdiv(dim * n_state, 256)), (dim, n_state, n_seg, *A.stride()),
             dict(HAS_H0=has_h0, HAS_SEQ=has_seq, BLOCK=256))
    zz = z if z is not None else u
    fwd = (grid + (n_seg,),
           (dim, length, n_state, dim // lay.b_groups, dim // lay.c_groups, seg_len, n_seg, cdiv(length, chunk), 1,
            *u.stride(), *delta.stride(), *A.stride(), *lay.b_strides, *lay.c_strides, *zz.stride(),
            *out_strides, s_q_b),
           dict(HAS_D=has_d, HAS_Z=z is not None, HAS_BIAS=has_bias, HAS_H0=has_h0, SOFTPLUS=softplus,
                B_VAR=lay.b_var, C_VAR=lay.c_var, STORE_CHUNKS=store_chunks, HAS_SEQ=has_seq, CHUNK=chunk,
                **shape_kw, **launch_options(cfg)))
    return SeqLaunches(n_seg, state, start, fwd)


def selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, h0, seq_idx, out, final, chunks,
                       launches: SeqLaunches, key) -> None:
    """Fill out [B, D, L] (laid out as planned), final [B, D, N] and, when given, chunks [B, L / chunk, D, N] (the
    state at every chunk start). ``launches`` is :func:`fwd_launches` of these inputs and ``key`` stands for
    their signature in the launchers' caches. Inputs are checked by the public function."""
    batch, dim, n_state = final.shape
    f32 = dict(device=u.device, dtype=torch.float32)
    hend = torch.empty(batch, launches.n_seg, dim, n_state, **f32)
    # A stand-in pointer where an optional input is absent: never read (its HAS_* flag is False).
    seq = seq_idx if seq_idx is not None else hend
    if launches.n_seg > 1:
        dsum = torch.empty(batch, launches.n_seg, dim, **f32)
        cut = torch.empty(batch, launches.n_seg, dim, device=u.device, dtype=torch.int32) if seq_idx is not None \
            else dsum
        grid, ints, kw = launches.state
        _launch_segment_state_kernel.launch(grid, (u, delta, A, B, delta_bias, seq, hend, dsum, cut, *ints), kw,
                                            key)
        grid, ints, kw = launches.start
        _launch_segment_start_kernel.launch(grid, (A, h0 if h0 is not None else hend, hend, dsum, cut, *ints), kw,
                                            key)
    grid, ints, kw = launches.fwd
    _launch_selective_scan_fwd_kernel.launch(
        grid, (u, delta, A, B, C, D, z, delta_bias, h0, seq, hend, out, final, chunks, *ints), kw, key)
