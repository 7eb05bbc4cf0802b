"""Selective scan (Mamba-1 "S6") in Triton: the host side, the autograd Function and the public function.

The forward (``triton_fwd.py``: a thread per channel, the sequence cut into segments) keeps the [BLOCK_D, N]
state in fp32 registers, so the [B, D, L, N] tensor never exists; when a gradient is needed it stores the state
at each chunk start ([B, L / CHUNK, D, N] fp32, CHUNK the backward's BLOCK_T). The backward (``triton_bwd.py``)
walks the chunks in reverse, recomputes each chunk's states from that boundary state and runs the reverse scan
for dh. dB and dC of per-position B/C are sums over channels; each backward program adds its [BLOCK_T] partial
with fp32 atomics into a zeroed buffer. dA, dD and d(delta_bias) are summed over the chunks in registers and over
the batch on the host. Packed sequences (``seq_idx``) reset the state in both kernels.

The backward can also cut L into segments of whole chunks (``ScanConfig.segments``, ``triton_bwd.py``): more
programs at small D·B, at the cost of a carry pass. The default is one segment; ``SEQSSM_SCAN_BWD_SEGMENTS=N``
in the environment (read once, at the first default launch shape) sets N for the default configs, for timing it
(benchmarks/bench_scan.py --bwd-segments).

At short L the GPU waits for the host, so the host side works out a call's launches once per input signature
(``_Plan``: checks, layouts, grids, integer arguments, constexprs) and reuses them; the signature must cover
everything a launch derives from its inputs (docs/design.md).

Why over 400 lines: the house layout of a kernel file (host functions, the autograd Function, then the public
function) keeps the forward's and backward's launch plans beside the Function that shares them.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from typing import NamedTuple

import torch
import triton

from seqssm.errors import InputError
from seqssm.kernels.common import check_seq_idx, check_tensor, fresh
from seqssm.kernels.host import DirectLauncher, cdiv, launch_options, next_power_of_2, rows_layout
from seqssm.kernels.selective_scan.ptx import row_width
from seqssm.kernels.selective_scan.triton_bwd import (
    _selective_scan_bwd_carry_kernel,
    _selective_scan_pair_bwd_kernel,
    pair_bwd_flags,
)
from seqssm.kernels.selective_scan.triton_fwd import (
    SEQ_CONFIG,
    SEQ_INTERPRET_CONFIG,
    SeqConfig,
    SeqLaunches,
    fwd_launches,
    selective_scan_fwd,
)


class ScanConfig(NamedTuple):
    """Launch shape of the backward: channels and positions per tile (BLOCK_T is also the forward's CHUNK, the
    spacing of the saved states), warps per program, how many times the loop over states is unrolled, how many
    chunks the loop over L keeps in flight (software pipelining), a register cap (None: the compiler's
    choice; fewer registers, more warps an SM), how many segments of whole chunks L is cut into (at most one
    a chunk; each segment's programs start from a carry that an extra carry kernel works out) and into how many
    parts that kernel cuts each segment (more programs for it; at most one a chunk)."""

    block_d: int
    block_t: int
    num_warps: int
    unroll_n: int = 1
    stages: int = 1
    maxnreg: int | None = None
    segments: int = 1
    carry_parts: int = 4


# Chosen with benchmarks/bench_scan.py on an H200 (NOTES-scan.md): the inline-PTX reverse scan wants one channel
# and one warp per chunk (triton_bwd.pair_bwd_flags). The interpreter gets small tiles.
BWD_CONFIG = ScanConfig(block_d=1, block_t=256, num_warps=1)
INTERPRET_CONFIG = ScanConfig(block_d=2, block_t=16, num_warps=1)

# Launched through the compiled kernel after the first launch (kernels/host.py): host time counts at short L.
_launch_selective_scan_pair_bwd_kernel = DirectLauncher(_selective_scan_pair_bwd_kernel)
_launch_selective_scan_bwd_carry_kernel = DirectLauncher(_selective_scan_bwd_carry_kernel)

SEGMENTS_ENV = "SEQSSM_SCAN_BWD_SEGMENTS"


@functools.cache
def env_segments() -> int:
    """The backward's segment count from ``SEQSSM_SCAN_BWD_SEGMENTS`` (1 when unset), read once."""
    raw = os.environ.get(SEGMENTS_ENV, "").strip()
    if not raw:
        return 1
    if not raw.isdigit() or int(raw) < 1:
        raise InputError(f"{SEGMENTS_ENV}={raw!r}: expected a positive integer (segments of the scan backward)")
    return int(raw)


def _default_configs(device: torch.device) -> tuple[ScanConfig, SeqConfig]:
    segments = env_segments()
    if device.type == "cuda":
        return BWD_CONFIG._replace(segments=segments), SEQ_CONFIG
    return INTERPRET_CONFIG._replace(segments=segments), SEQ_INTERPRET_CONFIG


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
    return fresh(torch.empty_strided(X.shape, strides, device=X.device, dtype=dtype or X.dtype))


class _Plan(NamedTuple):
    """What the launches of one call derive from its inputs' shapes, strides, dtypes, devices and alignment
    and from its options: worked out, and the inputs checked, once per signature, because at short L the GPU
    waits for the host (benchmarks/NOTES-scan.md, run 15)."""

    key: int  # stands for the signature in the launchers' caches (seqssm.kernels.host.DirectLauncher)
    copy: bool  # some [.., L] input has a non-unit stride along L: the kernels get contiguous copies
    need_grad: bool
    softplus: bool
    bwd_cfg: ScanConfig
    lay: _Layout
    fwd: SeqLaunches
    rows: int  # ptx.row_width of u, Δ, z, B, C; with dout's, it picks the backward's reverse scan
    out_strides: tuple[int, ...]  # the output's layout: u's (rows_layout)
    # The backward's launches (_BwdLaunch), by what the incoming gradients add to the signature.
    bwd: dict


_PLANS: dict[tuple, _Plan] = {}
# Never reused, so that a key in a launcher's cache always means one signature.
_PLAN_KEYS = itertools.count()


def _signature(tensors) -> tuple:
    """Per tensor (None stays None): what the checks read and what the kernels are specialized on."""
    return tuple(None if X is None else (X.shape, X.stride(), X.dtype, X.device, X.data_ptr() % 16 == 0,
                                         X.requires_grad) for X in tensors)


def _check_bc(fn: str, name: str, X: torch.Tensor, batch: int, dim: int, n_state: int, length: int) -> None:
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
    check_tensor(fn, name, X, forms[X.dim()], X.device, "u")


def _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, bwd_cfg, seq_cfg) -> None:
    """InputError on the first problem with the inputs of one call."""
    fn = "selective_scan_fused"
    if u.dim() != 3:
        raise InputError(f"{fn}: u has shape {tuple(u.shape)}; expected [B, D, L]")
    batch, dim, length = u.shape
    check_tensor(fn, "u", u, (batch, dim, length), u.device, "u")
    if A.dim() != 2 or A.shape[0] != dim:
        raise InputError(f"{fn}: A has shape {tuple(A.shape)}; expected [D, N] with D = {dim}")
    n_state = A.shape[1]
    for name, X, shape in (("A", A, (dim, n_state)), ("delta", delta, (batch, dim, length)),
                           ("z", z, (batch, dim, length)), ("D", D, (dim,)), ("delta_bias", delta_bias, (dim,)),
                           ("initial_state", initial_state, (batch, dim, n_state))):
        check_tensor(fn, name, X, shape, u.device, "u")
    _check_bc(fn, "B", B, batch, dim, n_state, length)
    _check_bc(fn, "C", C, batch, dim, n_state, length)
    check_seq_idx(fn, seq_idx, batch, length, u.device)
    if u.device.type == "cpu" and not triton.knobs.runtime.interpret:
        raise InputError(f"{fn}: inputs are on the CPU; move them to CUDA, or use selective_scan_chunked "
                         "(set TRITON_INTERPRET=1 before importing triton only to test the kernel)")
    if length == 0 or n_state == 0:
        raise InputError(f"{fn}: empty input (L = {length}, N = {n_state}); pass at least one position "
                         "and one state")
    if bwd_cfg.block_t % seq_cfg.tt:
        raise InputError(f"{fn}: seq_config.tt = {seq_cfg.tt} does not divide bwd_config.block_t = "
                         f"{bwd_cfg.block_t} (saved states sit at chunk starts); pick a tt that divides it")


def _new_plan(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, softplus, bwd_cfg, seq_cfg,
              need_grad: bool | None = None) -> _Plan:
    """Check the inputs (InputError on the first problem) and work out their launches."""
    bwd_default, seq_default = _default_configs(u.device)
    bwd_cfg, seq_cfg = bwd_cfg or bwd_default, seq_cfg or seq_default
    _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, bwd_cfg, seq_cfg)
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    if need_grad is None:  # a caller's own autograd Function says so itself (its forward runs without grad)
        need_grad = torch.is_grad_enabled() and any(X is not None and X.requires_grad for X in tensors)
    copy = any(X is not None and X.stride(-1) != 1 for X in (u, delta, z, B, C))
    u, delta, z, B, C = (_rows_contiguous(X) for X in (u, delta, z, B, C))
    seq_idx = check_seq_idx("selective_scan_fused", seq_idx, u.shape[0], u.shape[2], u.device)
    lay = _layout(B, C, u.shape[1], bwd_cfg)
    fwd = fwd_launches(u, delta, A, B, C, z, seq_idx, D is not None, delta_bias is not None,
                       initial_state is not None, need_grad, softplus, lay, bwd_cfg.block_t, seq_cfg,
                       rows_layout(u))
    return _Plan(next(_PLAN_KEYS), copy, need_grad, softplus, bwd_cfg, lay, fwd, row_width(u, delta, z, B, C),
                 rows_layout(u), {})


def _selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, plan: _Plan):
    """(out [B, D, L], final state [B, D, N] fp32, chunk-start states or None). ``seq_idx``: int32 with unit
    stride along L (``common.check_seq_idx``), or None."""
    batch, dim, length = u.shape
    n_state = A.shape[1]
    f32 = dict(device=u.device, dtype=torch.float32)
    out = _like(u, plan.out_strides)
    final = fresh(torch.empty(batch, dim, n_state, **f32))
    n_chunks = cdiv(length, plan.bwd_cfg.block_t)
    chunks = fresh(torch.empty(batch, n_chunks, dim, n_state, **f32)) if plan.need_grad else None
    h0 = None if initial_state is None else initial_state.float().contiguous()
    selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, h0, seq_idx, out, final, chunks, plan.fwd, plan.key)
    return out, final, chunks


def _pad32(n: int) -> int:
    """n rounded up to whole 128-byte lines of fp32, so that every piece of a workspace is aligned."""
    return -(-n // 32) * 32


class _BwdLaunch(NamedTuple):
    """The backward's launch for one plan and one kind of incoming gradient, less the tensors."""

    grid: tuple[int, int, int]  # (batch, channel tiles, segments)
    ints: tuple[int, ...]
    kw: dict
    # Workspace pieces in fp32 elements, padded: the per-position dB/dC rows (zeroed), and the rest.
    row_sizes: list[int]
    small_sizes: list[int]
    segments: int  # S: L is cut into S runs of whole chunks (at most seg_chunks each, the last maybe fewer)
    # The carry kernel's launch when S > 1 (grid, integers, constexprs), else None.
    carry: tuple | None


def _bwd_launch(plan: _Plan, u, delta, A, D, z, delta_bias, seq_idx, has_dht: bool, width: int,
                strides: tuple[int, ...]) -> _BwdLaunch:
    batch, dim, length = u.shape
    n_state = A.shape[1]
    cfg, lay = plan.bwd_cfg, plan.lay
    zz = z if z is not None else u
    n_chunks = cdiv(length, cfg.block_t)
    seg_chunks = cdiv(n_chunks, max(1, min(cfg.segments, n_chunks)))
    segs = cdiv(n_chunks, seg_chunks)
    part_chunks = cdiv(seg_chunks, max(1, min(cfg.carry_parts, seg_chunks)))
    parts = cdiv(seg_chunks, part_chunks)
    tiles = cdiv(dim, lay.block_d)
    ints = (dim, length, n_state, dim // lay.b_groups, dim // lay.c_groups, n_chunks, segs, seg_chunks, parts,
            *u.stride(), *delta.stride(), *A.stride(), *lay.b_strides, *lay.c_strides, *zz.stride(),
            *strides,  # dout's, du's, dΔ's and dz's layout
            0 if seq_idx is None else seq_idx.stride(0))
    kw = dict(HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, HAS_DHT=has_dht,
              SOFTPLUS=plan.softplus, B_VAR=lay.b_var, C_VAR=lay.c_var, HAS_SEQ=seq_idx is not None,
              HAS_SEGS=segs > 1, BLOCK_D=lay.block_d, BLOCK_T=cfg.block_t, N_PAD=next_power_of_2(n_state),
              UNROLL_N=cfg.unroll_n, STAGES=cfg.stages, **launch_options(cfg),
              **pair_bwd_flags(lay.block_d, cfg.block_t, cfg.num_warps, width))
    carry = None
    if segs > 1:
        carry_ints = (dim, length, n_state, dim // lay.c_groups, n_chunks, seg_chunks, parts, part_chunks,
                      *delta.stride(),
                      *A.stride(), *lay.c_strides, *zz.stride(), *strides,
                      0 if seq_idx is None else seq_idx.stride(0))
        carry_kw = {k: kw[k] for k in ("HAS_Z", "HAS_BIAS", "SOFTPLUS", "C_VAR", "HAS_SEQ", "BLOCK_D", "BLOCK_T",
                                       "N_PAD")}
        carry = ((batch, tiles, (segs - 1) * parts), carry_ints, {**carry_kw, **launch_options(cfg)})
    bdn, bd = batch * dim * n_state, batch * dim
    var = [batch * g * n_state * length for g, v in ((lay.b_groups, lay.b_var), (lay.c_groups, lay.c_var)) if v]
    # Pieces: dB, dC when not per position, dA, dD, d(delta_bias) (these per segment), dh0, each segment's two
    # carry slots, and the carry pass's W and P a part (triton_bwd.py) when there are several segments.
    small = [segs * bdn] * (2 - len(var)) + [segs * bdn, segs * bd, segs * bd, bdn, 2 * segs * bdn]
    small += [(segs - 1) * parts * bdn] * 2 if segs > 1 else []
    return _BwdLaunch((batch, tiles, segs), ints, kw, [_pad32(n) for n in var], [_pad32(n) for n in small], segs,
                      carry)


def _selective_scan_bwd(u, delta, A, B, C, D, z, delta_bias, seq_idx, chunks, dout, dfinal, plan: _Plan,
                        dz_out=None):
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
        launch = plan.bwd[key] = _bwd_launch(plan, u, delta, A, D, z, delta_bias, seq_idx, dhT is not None,
                                             width, strides)
    du = _like(dout, strides)
    ddelta = _like(dout, strides, delta.dtype)
    dz = None
    if z is not None:
        if dz_out is not None:
            assert tuple(dz_out.stride()) == strides and dz_out.dtype == z.dtype, "dz_out must be laid out as dout"
            dz = fresh(dz_out)
        else:
            dz = _like(dout, strides, z.dtype)
    # Two workspaces instead of seven buffers (each allocation costs host time, which short sequences wait
    # for): the per-position dB, dC rows, which gather atomic adds from every channel tile and so start at
    # zero, and the small rest. Apart, so that a small gradient kept by the caller keeps no large rows alive.
    f32 = dict(device=u.device, dtype=torch.float32)
    rows = list(torch.zeros(sum(launch.row_sizes), **f32).split(launch.row_sizes)) if launch.row_sizes else []
    pieces = [fresh(X) for X in torch.empty(sum(launch.small_sizes), **f32).split(launch.small_sizes)]
    lay = plan.lay
    dB = rows.pop(0) if lay.b_var else pieces.pop(0)
    dC = rows.pop(0) if lay.c_var else pieces.pop(0)
    dA, dD, dbias, dh0, carry = pieces[:5]
    seg_w, seg_p = pieces[5:] if launch.carry else (None, None)
    seq = seq_idx if seq_idx is not None else chunks
    if launch.carry:
        grid, ints, kw = launch.carry
        _launch_selective_scan_bwd_carry_kernel.launch(
            grid, (delta, A, C, z, delta_bias, seq, dout, seg_w, seg_p, *ints), kw, key)
    _launch_selective_scan_pair_bwd_kernel.launch(
        launch.grid,
        (u, delta, A, B, C, D, z, delta_bias, seq, chunks, dout, dhT, du, ddelta, dz, dA, dB, dC,
         dD if D is not None else None, dbias if delta_bias is not None else None, dh0, carry, seg_w, seg_p,
         *launch.ints),
        launch.kw, key)
    # Partials per (segment, sequence) are summed as the batch is.
    partials = launch.segments * batch
    dA = _batch_sum(dA[:partials * dim * n_state].view(partials, dim, n_state))
    dh0 = dh0[:batch * dim * n_state].view(batch, dim, n_state)
    dD = _batch_sum(dD[:partials * dim].view(partials, dim)) if D is not None else None
    dbias = _batch_sum(dbias[:partials * dim].view(partials, dim)) if delta_bias is not None else None
    dB = _bc_grad(dB, B, lay.b_groups, batch, dim, n_state, length, partials)
    dC = _bc_grad(dC, C, lay.c_groups, batch, dim, n_state, length, partials)
    return du, ddelta, dA, dB, dC, dD, dz, dbias, dh0


def _bc_grad(dX: torch.Tensor, X: torch.Tensor, groups: int, batch: int, dim: int, n_state: int,
             length: int, partials: int) -> torch.Tensor:
    """The gradient of B or C in X's form from its workspace piece: per position [B, N, L] or [B, G, N, L],
    or [D, N] summed over its ``partials`` (one a segment and sequence)."""
    if X.dim() == 2:
        return _batch_sum(dX[:partials * dim * n_state].view(partials, dim, n_state))
    dX = dX[:batch * groups * n_state * length].view(batch, groups, n_state, length)
    return dX.squeeze(1) if X.dim() == 3 else dX


def _batch_sum(X: torch.Tensor) -> torch.Tensor:
    """Sum over the leading batch axis; a view when there is one sequence (no kernel launch)."""
    return X[0] if X.shape[0] == 1 else X.sum(0)


def scan_plan(u, delta, A, B, C, D, z, delta_bias, initial_state, softplus: bool, seq_idx=None, *,
              need_grad: bool | None = None, bwd_config=None, seq_config=None) -> _Plan:
    """The checked launch plan of one signature, cached. ``need_grad`` overrides what grad mode and the
    inputs' ``requires_grad`` say (for a caller's autograd Function, whose forward runs without grad)."""
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx)
    sig = (_signature(tensors), softplus, torch.is_grad_enabled(), need_grad, bwd_config, seq_config)
    plan = _PLANS.get(sig)
    if plan is None:
        plan = _new_plan(*tensors, softplus, bwd_config, seq_config, need_grad)
        if len(_PLANS) >= 256:
            _PLANS.clear()
        _PLANS[sig] = plan
    return plan


class _SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, plan):
        out, final, chunks = _selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx,
                                                 plan)
        # An unused final state then gets None, not a zero-filled gradient (one launch fewer).
        ctx.set_materialize_grads(False)
        if plan.need_grad:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, seq_idx, chunks)
            ctx.plan = plan
            ctx.has_h0 = initial_state is not None
        return out, final

    @staticmethod
    def backward(ctx, dout, dfinal):
        u, delta, A, B, C, D, z, delta_bias, seq_idx, chunks = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(u)
        du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = _selective_scan_bwd(
            u, delta, A, B, C, D, z, delta_bias, seq_idx, chunks, dout, dfinal, ctx.plan)

        def cast(grad, like):
            return None if like is None else grad.to(like.dtype)

        return (du, ddelta, cast(dA, A), cast(dB, B), cast(dC, C), cast(dD, D), dz, cast(dbias, delta_bias),
                dh0 if ctx.has_h0 else None, None, None)


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
    *,
    seq_idx: torch.Tensor | None = None,
    bwd_config: ScanConfig | None = None,
    seq_config: SeqConfig | None = None,
):
    """Selective scan, Triton kernels each way; same arguments and results as ``selective_scan_ref``.

    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t;  y_t = C_t h_t + D u_t;  out = y · SiLU(z).

    Args:
        u, delta: [B, D, L]; z: [B, D, L] optional gate.
        A: [D, N] (real). B, C: [D, N], [B, N, L] or grouped [B, G, N, L].
        D, delta_bias: [D] optional. delta_softplus: Δ <- softplus(Δ + delta_bias).
        initial_state: [B, D, N] state before position 0 (zeros when None); it gets a gradient.
        return_final_state: also return the fp32 [B, D, N] state after the last position.
        seq_idx: [B, L] integer, packed sequences (a sequence is a run of one value in a row): the state
            restarts from zero where the value changes, so the initial state reaches only a row's first
            sequence and the final state is that of its last.
        bwd_config, seq_config: launch shapes of the backward and the forward (benchmarks only); defaults suit
            the device.

    Returns:
        out [B, D, L] in u's dtype, and final_state [B, D, N] fp32 when asked.
    """
    plan = scan_plan(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, seq_idx,
                     bwd_config=bwd_config, seq_config=seq_config)
    if plan.copy:
        u, delta, z, B, C = (_rows_contiguous(X) for X in (u, delta, z, B, C))
    if seq_idx is not None:
        seq_idx = check_seq_idx("selective_scan_fused", seq_idx, u.shape[0], u.shape[2], u.device)
    out, final = _SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, plan)
    return (out, final) if return_final_state else out
