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

At short L the GPU waits for the host, so the host side works out a call's launches once per input signature
(``_Plan``: checks, layouts, grids, integer arguments, constexprs) and reuses them; the signature must cover
everything a launch derives from its inputs (docs/design.md).
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from seqssm.errors import InputError
from seqssm.kernels.host import DirectLauncher, cdiv, launch_options, next_power_of_2, rows_layout
from seqssm.kernels.selective_scan.fused_bwd import _selective_scan_pair_bwd_kernel, pair_bwd_flags
from seqssm.kernels.selective_scan.fused_v2 import (
    SEQ_CONFIG,
    SEQ_INTERPRET_CONFIG,
    SeqConfig,
    SeqLaunches,
    selective_scan_seq_fwd,
    seq_fwd_launches,
)
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


def _like(X: torch.Tensor, strides: tuple[int, ...], dtype=None) -> torch.Tensor:
    return _fresh(torch.empty_strided(X.shape, strides, device=X.device, dtype=dtype or X.dtype))


class _Plan(NamedTuple):
    """What the launches of one call derive from its inputs' shapes, strides, dtypes, devices and alignment
    and from its options: worked out, and the inputs checked, once per signature, because at short L the GPU
    waits for the host (benchmarks/NOTES-scan.md, run 15)."""

    key: int  # stands for the signature in the launchers' caches (kernels/host.DirectLauncher)
    copy: bool  # some [.., L] input has a non-unit stride along L: the kernels get contiguous copies
    need_grad: bool
    softplus: bool
    reverse: bool
    fwd_cfg: ScanConfig
    bwd_cfg: ScanConfig
    lay: _Layout
    bwd_lay: _Layout
    seq: SeqLaunches | None  # None: the tile forward
    rows: int  # ptx.row_width of u, Δ, z, B, C; with dout's, it picks the backward's reverse scan
    out_strides: tuple[int, ...]  # the output's layout: u's (dense_layout)
    # The backward's launches (_BwdLaunch), by what the incoming gradients add to the signature.
    bwd: dict


_PLANS: dict[tuple, _Plan] = {}
# Never reused, so that a key in a launcher's cache always means one signature.
_PLAN_KEYS = itertools.count()


def _signature(tensors) -> tuple:
    """Per tensor (None stays None): what the checks read and what the kernels are specialized on."""
    return tuple(None if X is None else (X.shape, X.stride(), X.dtype, X.device, X.data_ptr() % 16 == 0,
                                         X.requires_grad) for X in tensors)


def _new_plan(u, delta, A, B, C, D, z, delta_bias, initial_state, softplus, reverse, impl, fwd_cfg, bwd_cfg,
              seq_cfg, need_grad: bool | None = None) -> _Plan:
    """Check the inputs (InputError on the first problem) and work out their launches."""
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
    impl = impl or DEFAULT_FWD_IMPL
    if impl not in FWD_IMPLS:
        raise InputError(f"{fn}: fwd_impl is {impl!r}; use one of {', '.join(FWD_IMPLS)}")
    fwd_default, bwd_default, seq_default = _default_configs(u.device)
    fwd_cfg, bwd_cfg, seq_cfg = fwd_cfg or fwd_default, bwd_cfg or bwd_default, seq_cfg or seq_default
    if impl == "sequential" and fwd_cfg.block_t % seq_cfg.tt:
        raise InputError(f"{fn}: seq_config.tt = {seq_cfg.tt} does not divide fwd_config.block_t = "
                         f"{fwd_cfg.block_t} (saved states sit at chunk starts); pick a tt that divides it")
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    if need_grad is None:  # a caller's own autograd Function says so itself (its forward runs without grad)
        need_grad = torch.is_grad_enabled() and any(X is not None and X.requires_grad for X in tensors)
    copy = any(X is not None and X.stride(-1) != 1 for X in (u, delta, z, B, C))
    u, delta, z, B, C = (_rows_contiguous(X) for X in (u, delta, z, B, C))
    lay = _layout(B, C, dim, fwd_cfg)
    seq = None
    if impl == "sequential":
        seq = seq_fwd_launches(u, delta, A, B, C, z, D is not None, delta_bias is not None,
                               initial_state is not None, need_grad, softplus, reverse, lay, fwd_cfg.block_t,
                               seq_cfg, rows_layout(u))
    return _Plan(next(_PLAN_KEYS), copy, need_grad, softplus, reverse, fwd_cfg, bwd_cfg, lay,
                 _layout(B, C, dim, bwd_cfg), seq, row_width(u, delta, z, B, C), rows_layout(u), {})


def _selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, plan: _Plan):
    batch, dim, length = u.shape
    n_state = A.shape[1]
    cfg, lay = plan.fwd_cfg, plan.lay
    n_chunks = cdiv(length, cfg.block_t)
    f32 = dict(device=u.device, dtype=torch.float32)
    out = _like(u, plan.out_strides)
    final = _fresh(torch.empty(batch, dim, n_state, **f32))
    chunks = _fresh(torch.empty(batch, n_chunks, dim, n_state, **f32)) if plan.need_grad else None
    h0 = None if initial_state is None else initial_state.float().contiguous()
    if plan.seq is not None:
        selective_scan_seq_fwd(u, delta, A, B, C, D, z, delta_bias, h0, out, final, chunks, plan.seq, plan.key)
        return out, final, chunks
    zz = z if z is not None else u
    _launch_selective_scan_fwd_kernel[(batch, cdiv(dim, lay.block_d))](
        u, delta, A, B, C, D, z, delta_bias, h0, out, final, chunks,
        dim, length, n_state, dim // lay.b_groups, dim // lay.c_groups, n_chunks,
        *u.stride(), *delta.stride(), *A.stride(), *lay.b_strides, *lay.c_strides,
        *zz.stride(), *out.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, HAS_H0=h0 is not None,
        SOFTPLUS=plan.softplus, B_VAR=lay.b_var, C_VAR=lay.c_var, STORE_FINAL=True,
        STORE_CHUNKS=plan.need_grad, REVERSE=plan.reverse, BLOCK_D=lay.block_d, BLOCK_T=cfg.block_t,
        N_PAD=next_power_of_2(n_state), UNROLL_N=cfg.unroll_n, STAGES=cfg.stages, **launch_options(cfg),
    )
    return out, final, chunks


def _pad32(n: int) -> int:
    """n rounded up to whole 128-byte lines of fp32, so that every piece of a workspace is aligned."""
    return -(-n // 32) * 32


class _BwdLaunch(NamedTuple):
    """The backward's launch for one plan and one kind of incoming gradient, less the tensors."""

    grid: tuple[int, int]
    ints: tuple[int, ...]
    kw: dict
    # Workspace pieces in fp32 elements, padded: the per-position dB/dC rows (zeroed), and the rest.
    row_sizes: list[int]
    small_sizes: list[int]


def _bwd_launch(plan: _Plan, u, delta, A, D, z, delta_bias, chunks, has_dht: bool, width: int,
                strides: tuple[int, ...]) -> _BwdLaunch:
    batch, dim, length = u.shape
    n_state = A.shape[1]
    cfg, lay = plan.bwd_cfg, plan.bwd_lay
    # A backward chunk must start where a forward chunk started, at a saved state.
    stride = max(cfg.block_t // plan.fwd_cfg.block_t, 1)
    block_t = stride * plan.fwd_cfg.block_t
    zz = z if z is not None else u
    ints = (dim, length, n_state, dim // lay.b_groups, dim // lay.c_groups, cdiv(length, block_t), stride,
            chunks.shape[1], *u.stride(), *delta.stride(), *A.stride(), *lay.b_strides, *lay.c_strides,
            *zz.stride(), *strides)  # the last three: dout's, du's, dΔ's and dz's layout
    kw = dict(HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, HAS_DHT=has_dht,
              SOFTPLUS=plan.softplus, B_VAR=lay.b_var, C_VAR=lay.c_var, REVERSE=plan.reverse,
              BLOCK_D=lay.block_d, BLOCK_T=block_t, N_PAD=next_power_of_2(n_state), UNROLL_N=cfg.unroll_n,
              STAGES=cfg.stages, **launch_options(cfg),
              **pair_bwd_flags(lay.block_d, block_t, cfg.num_warps, width, plan.reverse))
    bdn, bd = batch * dim * n_state, batch * dim
    var = [batch * g * n_state * length for g, v in ((lay.b_groups, lay.b_var), (lay.c_groups, lay.c_var)) if v]
    # Pieces: dB, dC when not per position, dA, dD, d(delta_bias), dh0, the two carry slots.
    small = [bdn] * (2 - len(var)) + [bdn, bd, bd, bdn, 2 * bdn]
    return _BwdLaunch((batch, cdiv(dim, lay.block_d)), ints, kw, [_pad32(n) for n in var],
                      [_pad32(n) for n in small])


def _selective_scan_bwd(u, delta, A, B, C, D, z, delta_bias, chunks, dout, dfinal, plan: _Plan, dz_out=None):
    """The gradients; ``dz_out`` (optional) is a buffer laid out like dout that receives dz (a fused block
    hands over its half of d(in_proj output), so that dz is never copied there)."""
    batch, dim, length = u.shape
    n_state = A.shape[1]
    # Autograd may hand over a strided or expanded gradient; dout, du, dΔ and dz share one [B, D, L] layout,
    # dout's own when it is dense with unit stride along L (a fused block's channel-major rows), else contiguous.
    strides = rows_layout(dout)
    if tuple(dout.stride()) != strides:
        dout = dout.contiguous()
    dhT = dfinal.float().contiguous() if dfinal is not None else None
    width = plan.rows if row_width(dout) == plan.rows else 0
    key = (plan.key, dout.dtype, width, dout.data_ptr() % 16 == 0, None if dhT is None else dhT.data_ptr() % 16,
           strides)
    launch = plan.bwd.get(key)
    if launch is None:
        launch = plan.bwd[key] = _bwd_launch(plan, u, delta, A, D, z, delta_bias, chunks, dhT is not None, width,
                                             strides)
    du = _like(dout, strides)
    ddelta = _like(dout, strides, delta.dtype)
    dz = None
    if z is not None:
        if dz_out is not None:
            assert tuple(dz_out.stride()) == strides and dz_out.dtype == z.dtype, "dz_out must be laid out as dout"
            dz = _fresh(dz_out)
        else:
            dz = _like(dout, strides, z.dtype)
    # Two workspaces instead of seven buffers (each allocation costs host time, which short sequences wait
    # for): the per-position dB, dC rows, which gather atomic adds from every channel tile and so start at
    # zero, and the small rest. Apart, so that a small gradient kept by the caller keeps no large rows alive.
    f32 = dict(device=u.device, dtype=torch.float32)
    rows = list(torch.zeros(sum(launch.row_sizes), **f32).split(launch.row_sizes)) if launch.row_sizes else []
    pieces = [_fresh(X) for X in torch.empty(sum(launch.small_sizes), **f32).split(launch.small_sizes)]
    lay = plan.bwd_lay
    dB = rows.pop(0) if lay.b_var else pieces.pop(0)
    dC = rows.pop(0) if lay.c_var else pieces.pop(0)
    dA, dD, dbias, dh0, carry = pieces
    _launch_selective_scan_pair_bwd_kernel.launch(
        launch.grid,
        (u, delta, A, B, C, D, z, delta_bias, chunks, dout, dhT, du, ddelta, dz, dA, dB, dC,
         dD if D is not None else None, dbias if delta_bias is not None else None, dh0, carry, *launch.ints),
        launch.kw, key)
    bdn, bd = batch * dim * n_state, batch * dim
    dA, dh0 = _batch_sum(dA[:bdn].view(batch, dim, n_state)), dh0[:bdn].view(batch, dim, n_state)
    dD = _batch_sum(dD[:bd].view(batch, dim)) if D is not None else None
    dbias = _batch_sum(dbias[:bd].view(batch, dim)) if delta_bias is not None else None
    dB = _bc_grad(dB, B, lay.b_groups, batch, dim, n_state, length)
    dC = _bc_grad(dC, C, lay.c_groups, batch, dim, n_state, length)
    return du, ddelta, dA, dB, dC, dD, dz, dbias, dh0


def _bc_grad(dX: torch.Tensor, X: torch.Tensor, groups: int, batch: int, dim: int, n_state: int,
             length: int) -> torch.Tensor:
    """The gradient of B or C in X's form from its workspace piece: per position [B, N, L] or [B, G, N, L],
    or [D, N] summed over the batch."""
    if X.dim() == 2:
        return _batch_sum(dX[:batch * dim * n_state].view(batch, dim, n_state))
    dX = dX[:batch * groups * n_state * length].view(batch, groups, n_state, length)
    return dX.squeeze(1) if X.dim() == 3 else dX


def _batch_sum(X: torch.Tensor) -> torch.Tensor:
    """Sum over the leading batch axis; a view when there is one sequence (no kernel launch)."""
    return X[0] if X.shape[0] == 1 else X.sum(0)


def scan_plan(u, delta, A, B, C, D, z, delta_bias, initial_state, softplus: bool, reverse: bool = False, *,
              need_grad: bool | None = None, fwd_impl=None, fwd_config=None, bwd_config=None,
              seq_config=None) -> _Plan:
    """The checked launch plan of one signature, cached. ``need_grad`` overrides what grad mode and the
    inputs' ``requires_grad`` say (for a caller's autograd Function, whose forward runs without grad)."""
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    sig = (_signature(tensors), softplus, reverse, torch.is_grad_enabled(), need_grad, fwd_impl, fwd_config,
           bwd_config, seq_config)
    plan = _PLANS.get(sig)
    if plan is None:
        plan = _new_plan(*tensors, softplus, reverse, fwd_impl, fwd_config, bwd_config, seq_config, need_grad)
        if len(_PLANS) >= 256:
            _PLANS.clear()
        _PLANS[sig] = plan
    return plan


class _SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, plan):
        out, final, chunks = _selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, plan)
        # An unused final state then gets None, not a zero-filled gradient (one launch fewer).
        ctx.set_materialize_grads(False)
        if plan.need_grad:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, chunks)
            ctx.plan = plan
            ctx.has_h0 = initial_state is not None
        return out, final

    @staticmethod
    def backward(ctx, dout, dfinal):
        u, delta, A, B, C, D, z, delta_bias, chunks = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(u)
        du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = _selective_scan_bwd(
            u, delta, A, B, C, D, z, delta_bias, chunks, dout, dfinal, ctx.plan)

        def cast(grad, like):
            return None if like is None else grad.to(like.dtype)

        return (du, ddelta, cast(dA, A), cast(dB, B), cast(dC, C), cast(dD, D), dz, cast(dbias, delta_bias),
                dh0 if ctx.has_h0 else None, None)


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
    plan = scan_plan(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, reverse,
                     fwd_impl=fwd_impl, fwd_config=fwd_config, bwd_config=bwd_config, seq_config=seq_config)
    if plan.copy:
        u, delta, z, B, C = (_rows_contiguous(X) for X in (u, delta, z, B, C))
    out, final = _SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, plan)
    return (out, final) if return_final_state else out
