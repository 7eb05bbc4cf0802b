"""Fused selective scan (Mamba-1 "S6") in Triton: the tile forward, the host side and the public function.

One program owns BLOCK_D channels of one sequence and walks its length in chunks of BLOCK_T positions,
keeping the [BLOCK_D, N] state on chip in fp32. Per chunk it loads [BLOCK_D, BLOCK_T] tiles of u, Δ, z
(contiguous along L) and, state by state, [BLOCK_T] rows of B and C; softplus(Δ + bias), exp(ΔA), ΔBu,
the scan (``tl.associative_scan`` over the chunk), C·h, +D·u and the SiLU(z) gate all happen in registers,
so the [B, D, L, N] tensor never exists. The forward stores the state at each chunk start ([B, NC, D, N]
fp32) when a gradient is needed; the backward (``fused_bwd.py``) walks the chunks in reverse, recomputes each
chunk's states from that boundary state and runs the reverse scan for dh. ``reverse=True`` scans from
position L-1 down to 0 by flipping the address arithmetic, never the data.

The default forward is the sequential one of ``fused_v2.py`` (a thread per channel; measured faster, see
benchmarks/NOTES-scan.md); ``fwd_impl="tile"`` picks the one here. Both store the same chunk-start states, so
the one backward serves both.

dB and dC of per-position B/C are sums over channels; each backward program adds its [BLOCK_T] partial with
fp32 atomics into a zeroed buffer. dA, dD and d(delta_bias) are summed over the chunks in registers and over
the batch on the host.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from seqssm.errors import InputError
from seqssm.kernels.host import DirectLauncher, cdiv, launch_options, next_power_of_2
from seqssm.kernels.selective_scan.fused_bwd import (
    _selective_scan_pair_bwd_kernel,
    pair_bwd_flags,
    pair_bwd_scratch,
)
from seqssm.kernels.selective_scan.fused_v2 import SEQ_CONFIG, SEQ_INTERPRET_CONFIG, SeqConfig, selective_scan_seq_fwd
from seqssm.kernels.selective_scan.ptx import row_width
from seqssm.kernels.selective_scan.tile_ops import bc_base, fwd_combine, load_dt, load_state_row

# Tests set POISON so that every fresh output buffer starts as NaN and an element no kernel wrote shows up.
POISON = False


def _fresh(X: torch.Tensor) -> torch.Tensor:
    return X.fill_(float("nan")) if POISON else X


LOG2E = tl.constexpr(1.4426950408889634)


class ScanConfig(NamedTuple):
    """Launch shape of one kernel: channels and positions per tile, warps per program, how many times the
    loop over states is unrolled, how many chunks the loop over L keeps in flight (software pipelining) and a
    register cap (None: the compiler's choice; fewer registers, more warps an SM)."""

    block_d: int
    block_t: int
    num_warps: int
    unroll_n: int = 1
    stages: int = 1
    maxnreg: int | None = None


# Chosen with benchmarks/bench_scan.py (forward on an H100, backward on an H200; NOTES-scan.md); the interpreter
# gets small tiles.
FWD_CONFIG = ScanConfig(block_d=4, block_t=256, num_warps=4, unroll_n=4)
# The backward's inline-PTX reverse scan wants one channel and one warp per chunk (fused_bwd.pair_bwd_flags).
BWD_CONFIG = ScanConfig(block_d=1, block_t=256, num_warps=1)
INTERPRET_CONFIG = ScanConfig(block_d=2, block_t=16, num_warps=1)
# Forward algorithms: "tile" (this file, tl.associative_scan over [BLOCK_D, BLOCK_T] tiles) or "sequential"
# (fused_v2.py, a thread per channel over segments). The backward (fused_bwd.py) serves both.
FWD_IMPLS = ("tile", "sequential")
DEFAULT_FWD_IMPL = "sequential"


@triton.jit
def _column(S, offs_n, n):
    """Column n of a [BLOCK_D, N_PAD] tile as a [BLOCK_D] vector."""
    return tl.sum(tl.where(offs_n[None, :] == n, S, 0.0), axis=1)


@triton.jit
def _selective_scan_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr,
    out_ptr, hT_ptr, hc_ptr,
    dim, length, n_state, b_cpg, c_cpg, n_chunks,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_C_b, s_C_g, s_C_n, s_C_l,
    s_z_b, s_z_d, s_z_l,
    s_o_b, s_o_d, s_o_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
    SOFTPLUS: tl.constexpr, B_VAR: tl.constexpr, C_VAR: tl.constexpr,
    STORE_FINAL: tl.constexpr, STORE_CHUNKS: tl.constexpr, REVERSE: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr, N_PAD: tl.constexpr,
    UNROLL_N: tl.constexpr, STAGES: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    d0 = tl.program_id(1) * BLOCK_D
    offs_d = d0 + tl.arange(0, BLOCK_D)
    mask_d = offs_d < dim
    offs_n = tl.arange(0, N_PAD)
    mask_n = offs_n < n_state
    offs_j = tl.arange(0, BLOCK_T)

    u_base = u_ptr + pid_b * s_u_b + offs_d.to(tl.int64)[:, None] * s_u_d
    dt_base = dt_ptr + pid_b * s_dt_b + offs_d.to(tl.int64)[:, None] * s_dt_d
    o_base = out_ptr + pid_b * s_o_b + offs_d.to(tl.int64)[:, None] * s_o_d
    B_base = bc_base(B_ptr, pid_b, d0, offs_d, b_cpg, s_B_b, s_B_g, B_VAR)
    C_base = bc_base(C_ptr, pid_b, d0, offs_d, c_cpg, s_C_b, s_C_g, C_VAR)
    state_offs = (pid_b * dim + offs_d[:, None]) * n_state + offs_n[None, :]
    state_mask = mask_d[:, None] & mask_n[None, :]

    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_BIAS else 0.0
    if HAS_H0:
        S = tl.load(h0_ptr + state_offs, mask=state_mask, other=0.0).to(tl.float32)
    else:
        S = tl.zeros((BLOCK_D, N_PAD), dtype=tl.float32)

    for c in tl.range(0, n_chunks, num_stages=STAGES):
        if STORE_CHUNKS:
            hc_offs = ((pid_b * n_chunks + c) * dim + offs_d[:, None]) * n_state + offs_n[None, :]
            tl.store(hc_ptr + hc_offs, S, mask=state_mask)
        t = c * BLOCK_T + offs_j
        mask_t = t < length
        # Offsets along L stay 32-bit (rows are unit-stride); the row bases carry the 64-bit part.
        if REVERSE:
            pos = length - 1 - t
        else:
            pos = t
        mask = mask_d[:, None] & mask_t[None, :]
        pos_2d = tl.broadcast_to(pos[None, :], (BLOCK_D, BLOCK_T))
        u = tl.load(u_base + pos[None, :] * s_u_l, mask=mask, other=0.0).to(tl.float32)
        # Δ = 0 past the end makes those positions the identity, so the last column is the final state.
        _, dt = load_dt(dt_base, pos, s_dt_l, mask, bias, HAS_BIAS, SOFTPLUS)
        dtu = dt * u
        y = tl.zeros((BLOCK_D, BLOCK_T), dtype=tl.float32)
        S_next = S
        for n in tl.range(0, n_state, loop_unroll_factor=UNROLL_N):
            A_n = tl.load(A_ptr + offs_d * s_A_d + n * s_A_n, mask=mask_d, other=0.0).to(tl.float32)
            a = tl.exp2(dt * (A_n * LOG2E)[:, None])
            b = dtu * load_state_row(B_base, n, s_B_n, pos_2d, s_B_l, mask, mask_d, B_VAR)
            a_c, b_c = tl.associative_scan((a, b), axis=1, combine_fn=fwd_combine)
            h = b_c + a_c * _column(S, offs_n, n)[:, None]
            y += h * load_state_row(C_base, n, s_C_n, pos_2d, s_C_l, mask, mask_d, C_VAR)
            h_last = tl.sum(tl.where(offs_j[None, :] == BLOCK_T - 1, h, 0.0), axis=1)
            S_next = tl.where(offs_n[None, :] == n, h_last[:, None], S_next)
        S = S_next
        if HAS_D:
            y += u * Dv[:, None]
        if HAS_Z:
            z_ptrs = z_ptr + pid_b * s_z_b + offs_d.to(tl.int64)[:, None] * s_z_d + pos[None, :] * s_z_l
            zz = tl.load(z_ptrs, mask=mask, other=0.0).to(tl.float32)
            y *= zz * tl.sigmoid(zz)
        tl.store(o_base + pos[None, :] * s_o_l, y.to(out_ptr.dtype.element_ty), mask=mask)

    if STORE_FINAL:
        tl.store(hT_ptr + state_offs, S, mask=state_mask)


# Launched through the compiled kernel after the first launch (kernels/host.py): host time counts at short L.
_launch_selective_scan_fwd_kernel = DirectLauncher(_selective_scan_fwd_kernel)
_launch_selective_scan_pair_bwd_kernel = DirectLauncher(_selective_scan_pair_bwd_kernel)


def _default_configs(device: torch.device) -> tuple[ScanConfig, ScanConfig, SeqConfig]:
    if device.type == "cuda":
        return FWD_CONFIG, BWD_CONFIG, SEQ_CONFIG
    return INTERPRET_CONFIG, INTERPRET_CONFIG, SEQ_INTERPRET_CONFIG


class _Layout(NamedTuple):
    """How B and C are laid out, and the channel tile that keeps one group per tile."""

    b_var: bool
    c_var: bool
    b_groups: int
    c_groups: int
    b_strides: tuple[int, int, int, int]
    c_strides: tuple[int, int, int, int]
    block_d: int


def _bc_strides(X: torch.Tensor) -> tuple[bool, int, tuple[int, int, int, int]]:
    """(time-varying?, groups, strides as (b, g, n, l)); a [D, N] matrix uses (d, 0, n, 0)."""
    if X.dim() == 2:
        return False, 1, (X.stride(0), 0, X.stride(1), 0)
    if X.dim() == 3:
        return True, 1, (X.stride(0), 0, X.stride(1), X.stride(2))
    return True, X.shape[1], tuple(X.stride())


def _layout(B: torch.Tensor, C: torch.Tensor, dim: int, cfg: ScanConfig) -> _Layout:
    b_var, b_groups, sB = _bc_strides(B)
    c_var, c_groups, sC = _bc_strides(C)
    per_group = math.gcd(dim // b_groups, dim // c_groups)
    bd = min(cfg.block_d, next_power_of_2(dim))
    while per_group % bd:
        bd //= 2
    return _Layout(b_var, c_var, b_groups, c_groups, sB, sC, bd)


def _rows_contiguous(X: torch.Tensor | None) -> torch.Tensor | None:
    """Unit stride along L, so that tiles load in wide coalesced accesses."""
    if X is None or X.stride(-1) == 1:
        return X
    return X.contiguous()


def _selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, softplus, reverse,
                        store_chunks, cfg, impl, seq_cfg):
    batch, dim, length = u.shape
    n_state = A.shape[1]
    lay = _layout(B, C, dim, cfg)
    n_chunks = cdiv(length, cfg.block_t)
    f32 = dict(device=u.device, dtype=torch.float32)
    out = _fresh(torch.empty_like(u, memory_format=torch.contiguous_format))
    final = _fresh(torch.empty(batch, dim, n_state, **f32))
    chunks = _fresh(torch.empty(batch, n_chunks, dim, n_state, **f32)) if store_chunks else None
    h0 = None if initial_state is None else initial_state.float().contiguous()
    if impl == "sequential":
        selective_scan_seq_fwd(u, delta, A, B, C, D, z, delta_bias, h0, out, final, chunks, softplus, reverse,
                               lay, cfg.block_t, seq_cfg)
        return out, final, chunks
    zz = z if z is not None else u
    _launch_selective_scan_fwd_kernel[(batch, cdiv(dim, lay.block_d))](
        u, delta, A, B, C, D, z, delta_bias, h0, out, final, chunks,
        dim, length, n_state, dim // lay.b_groups, dim // lay.c_groups, n_chunks,
        *u.stride(), *delta.stride(), *A.stride(), *lay.b_strides, *lay.c_strides,
        *zz.stride(), *out.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, HAS_H0=h0 is not None,
        SOFTPLUS=softplus, B_VAR=lay.b_var, C_VAR=lay.c_var, STORE_FINAL=True, STORE_CHUNKS=store_chunks,
        REVERSE=reverse, BLOCK_D=lay.block_d, BLOCK_T=cfg.block_t, N_PAD=next_power_of_2(n_state),
        UNROLL_N=cfg.unroll_n, STAGES=cfg.stages, **launch_options(cfg),
    )
    return out, final, chunks


def _selective_scan_bwd(u, delta, A, B, C, D, z, delta_bias, chunks, dout, dfinal, softplus, reverse,
                        fwd_block_t, cfg):
    batch, dim, length = u.shape
    n_state = A.shape[1]
    lay = _layout(B, C, dim, cfg)
    # A backward chunk must start where a forward chunk started, at a saved state.
    stride = max(cfg.block_t // fwd_block_t, 1)
    block_t = stride * fwd_block_t
    dout = dout.contiguous()
    du = _fresh(torch.empty_like(dout))
    ddelta = _fresh(torch.empty_like(dout, dtype=delta.dtype))
    dz = _fresh(torch.empty_like(dout, dtype=z.dtype)) if z is not None else None
    f32 = dict(device=u.device, dtype=torch.float32)
    dA = _fresh(torch.empty(batch, dim, n_state, **f32))
    # Per-position dB, dC gather atomic adds from every channel tile, so they start at zero (one fill for both
    # when they have one shape: every launch costs host time, which short sequences wait for).
    if lay.b_var and lay.c_var and lay.b_groups == lay.c_groups:
        dB, dC = torch.zeros(2, batch, lay.b_groups, n_state, length, **f32).unbind(0)
    else:
        dB = torch.zeros(batch, lay.b_groups, n_state, length, **f32) if lay.b_var else _fresh(torch.empty_like(dA))
        dC = torch.zeros(batch, lay.c_groups, n_state, length, **f32) if lay.c_var else _fresh(torch.empty_like(dA))
    dD = _fresh(torch.empty(batch, dim, **f32)) if D is not None else None
    dbias = _fresh(torch.empty(batch, dim, **f32)) if delta_bias is not None else None
    dh0 = _fresh(torch.empty(batch, dim, n_state, **f32))
    dhT = dfinal.float().contiguous() if dfinal is not None else None
    zz = z if z is not None else u
    flags = pair_bwd_flags(lay.block_d, block_t, cfg.num_warps, row_width(u, delta, dout, z, B, C), reverse)
    _launch_selective_scan_pair_bwd_kernel[(batch, cdiv(dim, lay.block_d))](
        u, delta, A, B, C, D, z, delta_bias, chunks, dout, dhT,
        du, ddelta, dz, dA, dB, dC, dD, dbias, dh0, pair_bwd_scratch(batch, dim, n_state, u.device),
        dim, length, n_state, dim // lay.b_groups, dim // lay.c_groups, cdiv(length, block_t),
        stride, chunks.shape[1],
        *u.stride(), *delta.stride(), *A.stride(), *lay.b_strides, *lay.c_strides,
        *zz.stride(), *dout.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, HAS_DHT=dhT is not None,
        SOFTPLUS=softplus, B_VAR=lay.b_var, C_VAR=lay.c_var, REVERSE=reverse,
        BLOCK_D=lay.block_d, BLOCK_T=block_t, N_PAD=next_power_of_2(n_state),
        UNROLL_N=cfg.unroll_n, STAGES=cfg.stages, **launch_options(cfg), **flags,
    )
    if B.dim() == 3:
        dB = dB.squeeze(1)
    elif B.dim() == 2:
        dB = _batch_sum(dB)
    if C.dim() == 3:
        dC = dC.squeeze(1)
    elif C.dim() == 2:
        dC = _batch_sum(dC)
    return du, ddelta, _batch_sum(dA), dB, dC, _batch_sum(dD), dz, _batch_sum(dbias), dh0


def _batch_sum(X: torch.Tensor | None) -> torch.Tensor | None:
    """Sum over the leading batch axis; a view when there is one sequence (no kernel launch)."""
    if X is None:
        return None
    return X[0] if X.shape[0] == 1 else X.sum(0)


class _SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, softplus, reverse, need_grad,
                fwd_cfg, bwd_cfg, impl, seq_cfg):
        out, final, chunks = _selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, softplus,
                                                 reverse, need_grad, fwd_cfg, impl, seq_cfg)
        # An unused final state then gets None, not a zero-filled gradient (one launch fewer).
        ctx.set_materialize_grads(False)
        if need_grad:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, chunks)
            ctx.softplus, ctx.reverse, ctx.bwd_cfg = softplus, reverse, bwd_cfg
            ctx.fwd_block_t = fwd_cfg.block_t
            ctx.has_h0 = initial_state is not None
        return out, final

    @staticmethod
    def backward(ctx, dout, dfinal):
        u, delta, A, B, C, D, z, delta_bias, chunks = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(u)
        du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = _selective_scan_bwd(
            u, delta, A, B, C, D, z, delta_bias, chunks, dout, dfinal, ctx.softplus, ctx.reverse,
            ctx.fwd_block_t, ctx.bwd_cfg,
        )

        def cast(grad, like):
            return None if like is None else grad.to(like.dtype)

        return (du, ddelta, cast(dA, A), cast(dB, B), cast(dC, C), cast(dD, D), dz, cast(dbias, delta_bias),
                dh0 if ctx.has_h0 else None, None, None, None, None, None, None, None)


def _check(name: str, X: torch.Tensor | None, shape: tuple[int, ...], device: torch.device, fn: str) -> None:
    if X is None:
        return
    if tuple(X.shape) != shape:
        raise InputError(f"{fn}: {name} has shape {tuple(X.shape)}; expected {list(shape)}")
    if X.device != device:
        raise InputError(f"{fn}: {name} is on {X.device} but u is on {device}; move all inputs to one device")
    if X.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise InputError(f"{fn}: {name} has dtype {X.dtype}; use float32, float16 or bfloat16")


def _check_bc(name: str, X: torch.Tensor, batch: int, dim: int, n_state: int, length: int, fn: str) -> None:
    forms = {2: (dim, n_state), 3: (batch, n_state, length)}
    if X.dim() == 4:
        groups = X.shape[1]
        if groups == 0 or dim % groups:
            raise InputError(f"{fn}: {name} has {groups} groups, which does not divide D = {dim}; "
                             f"use a group count that divides D")
        forms[4] = (batch, groups, n_state, length)
    if X.dim() not in forms:
        raise InputError(f"{fn}: {name} has shape {tuple(X.shape)}; expected [D, N], [B, N, L] "
                         "or [B, G, N, L]")
    _check(name, X, forms[X.dim()], X.device, fn)


def selective_scan_fused(
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
    reverse: bool = False,
    *,
    fwd_impl: str | None = None,
    fwd_config: ScanConfig | None = None,
    bwd_config: ScanConfig | None = None,
    seq_config: SeqConfig | None = None,
):
    """Selective scan, one Triton kernel each way; same arguments and results as ``selective_scan_ref``.

    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t;  y_t = C_t h_t + D u_t;  out = y · SiLU(z).

    Args:
        u, delta: [B, D, L]; z: [B, D, L] optional gate.
        A: [D, N] (real). B, C: [D, N], [B, N, L] or grouped [B, G, N, L].
        D, delta_bias: [D] optional. delta_softplus: Δ <- softplus(Δ + delta_bias).
        initial_state: [B, D, N] state before the first scanned position (zeros when None); it gets a
            gradient.
        return_final_state: also return the fp32 [B, D, N] state after the last scanned position.
        reverse: scan from position L-1 down to 0 (the backward half of a bidirectional layer), equal to
            flipping every L axis, scanning, and flipping ``out`` back, without making flipped copies.
        fwd_impl: forward algorithm, "tile" or "sequential" (see ``FWD_IMPLS``); ``DEFAULT_FWD_IMPL`` when
            None. Both give the same results and use the same backward.
        fwd_config, bwd_config, seq_config: launch shapes (benchmarks only); defaults suit the device.

    Returns:
        out [B, D, L] in u's dtype, and final_state [B, D, N] fp32 when asked.
    """
    fn = "selective_scan_fused"
    if u.dim() != 3:
        raise InputError(f"{fn}: u has shape {tuple(u.shape)}; expected [B, D, L]")
    batch, dim, length = u.shape
    _check("u", u, (batch, dim, length), u.device, fn)
    if A.dim() != 2 or A.shape[0] != dim:
        raise InputError(f"{fn}: A has shape {tuple(A.shape)}; expected [D, N] with D = {dim}")
    n_state = A.shape[1]
    _check("A", A, (dim, n_state), u.device, fn)
    _check("delta", delta, (batch, dim, length), u.device, fn)
    _check("z", z, (batch, dim, length), u.device, fn)
    _check("D", D, (dim,), u.device, fn)
    _check("delta_bias", delta_bias, (dim,), u.device, fn)
    _check("initial_state", initial_state, (batch, dim, n_state), u.device, fn)
    _check_bc("B", B, batch, dim, n_state, length, fn)
    _check_bc("C", C, batch, dim, n_state, length, fn)
    if u.device.type == "cpu" and not triton.knobs.runtime.interpret:
        raise InputError(f"{fn}: inputs are on the CPU; move them to CUDA, or use selective_scan_chunked "
                         "(set TRITON_INTERPRET=1 before importing triton only to test the kernel)")
    if length == 0 or n_state == 0:
        raise InputError(f"{fn}: empty input (L = {length}, N = {n_state}); pass at least one position "
                         "and one state")
    fwd_impl = fwd_impl or DEFAULT_FWD_IMPL
    if fwd_impl not in FWD_IMPLS:
        raise InputError(f"{fn}: fwd_impl is {fwd_impl!r}; use one of {', '.join(FWD_IMPLS)}")
    fwd_default, bwd_default, seq_default = _default_configs(u.device)
    fwd_config, bwd_config = fwd_config or fwd_default, bwd_config or bwd_default
    seq_config = seq_config or seq_default
    if fwd_impl == "sequential" and fwd_config.block_t % seq_config.tt:
        raise InputError(f"{fn}: seq_config.tt = {seq_config.tt} does not divide fwd_config.block_t = "
                         f"{fwd_config.block_t} (saved states sit at chunk starts); pick a tt that divides it")
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    u, delta, z, B, C = (_rows_contiguous(X) for X in (u, delta, z, B, C))
    out, final = _SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus,
                                        reverse, need_grad, fwd_config, bwd_config, fwd_impl, seq_config)
    return (out, final) if return_final_state else out
