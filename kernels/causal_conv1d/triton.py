"""Depthwise causal conv1d (widths 2-4) in Triton: forward, backward and the one-step decode update.

A program owns a [BLOCK_D, BLOCK_T] tile of one sequence. The W taps are W shifted loads of the same rows
(served from L1/L2); positions before 0 read the initial conv state instead of x. The backward recomputes
the pre-activation at the W positions each input feeds (for the SiLU derivative) rather than storing it;
dweight and dbias are per-tile partials summed on the host, so the result does not depend on launch order.
With seq_idx (packed sequences) every tap is masked to the inputs of its output's own sequence (``_same_seq``).
Over 400 lines because the forward, backward and update kernels share the tap helpers above them; splitting
into triton_fwd.py / triton_bwd.py is the next step when it grows.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from seqssm.errors import InputError
from seqssm.kernels.common import check_seq_idx, check_tensor, fresh
from seqssm.kernels.host import DirectLauncher, cdiv, next_power_of_2, rows_layout


@triton.jit
def _same_seq(run_base, p, t, length):
    """True where input position p (<= t; p < 0 is the initial state, part of a row's first sequence) lies in
    the sequence of output position t. ``run`` counts the sequence starts up to each position (``_run_arg``):
    it only grows along a row, so equal counts mean no start in between. Positions past the row are clamped
    (their outputs are never stored, their gradients are zero)."""
    last = length - 1
    run_p = tl.load(run_base + tl.minimum(tl.maximum(p, 0), last))
    run_t = tl.load(run_base + tl.minimum(tl.maximum(t, 0), last))
    return run_p == run_t


@triton.jit
def _load_shifted(x_base, s0_base, run_base, s_x_l, s_s_w, t, shift, length, mask_d, W: tl.constexpr,
                  HAS_S0: tl.constexpr, HAS_SEQ: tl.constexpr):
    """xx at positions t + shift (xx = [initial_state, x], zeros before 0 without a state) in fp32; with
    seq_idx, zeros where t + shift is outside the sequence of t."""
    p = t + shift
    in_x = (p >= 0) & (p < length)
    if HAS_SEQ:
        in_x = in_x & _same_seq(run_base, p, t, length)
    v = tl.load(x_base + p.to(tl.int64)[None, :] * s_x_l, mask=mask_d[:, None] & in_x[None, :], other=0.0)
    v = v.to(tl.float32)
    if HAS_S0:
        in_s = (p < 0) & (p >= -(W - 1))
        if HAS_SEQ:
            in_s = in_s & _same_seq(run_base, p, t, length)
        v += tl.load(s0_base + (p + W - 1)[None, :] * s_s_w, mask=mask_d[:, None] & in_s[None, :],
                     other=0.0).to(tl.float32)
    return v


@triton.jit
def _conv_at(x_base, s0_base, run_base, s_x_l, s_s_w, w_ptr, s_w_d, s_w_k, offs_d, mask_d, t, length, bias,
             W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_S0: tl.constexpr, HAS_SEQ: tl.constexpr):
    """Pre-activation sum_k w_k xx_{t - W + 1 + k} (+ bias) at positions t."""
    acc = tl.zeros((offs_d.shape[0], t.shape[0]), dtype=tl.float32)
    for k in tl.static_range(W):
        wk = tl.load(w_ptr + offs_d * s_w_d + k * s_w_k, mask=mask_d, other=0.0).to(tl.float32)
        acc += wk[:, None] * _load_shifted(x_base, s0_base, run_base, s_x_l, s_s_w, t, k - (W - 1), length,
                                           mask_d, W, HAS_S0, HAS_SEQ)
    if HAS_BIAS:
        acc += bias[:, None]
    return acc


@triton.jit
def _causal_conv1d_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, s0_ptr, run_ptr, out_ptr, sT_ptr,
    dim, length,
    s_x_b, s_x_d, s_x_l,
    s_w_d, s_w_k,
    s_s_b, s_s_d, s_s_w,
    s_q_b,
    s_o_b, s_o_d, s_o_l,
    W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_S0: tl.constexpr, HAS_SEQ: tl.constexpr,
    STORE_FINAL: tl.constexpr, SILU: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < dim
    t = tl.program_id(2) * BLOCK_T + tl.arange(0, BLOCK_T)
    row = offs_d.to(tl.int64)[:, None]
    x_base = x_ptr + pid_b * s_x_b + row * s_x_d
    s0_base = s0_ptr + pid_b * s_s_b + row * s_s_d
    run_base = run_ptr + pid_b * s_q_b
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_BIAS else None
    pre = _conv_at(x_base, s0_base, run_base, s_x_l, s_s_w, w_ptr, s_w_d, s_w_k, offs_d, mask_d, t, length,
                   bias, W, HAS_BIAS, HAS_S0, HAS_SEQ)
    if SILU:
        pre = pre * tl.sigmoid(pre)
    mask = mask_d[:, None] & (t < length)[None, :]
    tl.store(out_ptr + pid_b * s_o_b + row * s_o_d + t.to(tl.int64)[None, :] * s_o_l,
             pre.to(out_ptr.dtype.element_ty), mask=mask)
    if STORE_FINAL:
        if tl.program_id(2) == 0:
            # The last W - 1 entries of [initial_state, x]; sT is a contiguous [B, D, W - 1] tensor.
            j = tl.arange(0, 4)
            p = length - (W - 1) + j
            in_x = (p >= 0) & (j < W - 1)
            if HAS_SEQ:  # the last sequence's inputs only: zeros before it when it is shorter than W - 1
                in_x = in_x & _same_seq(run_base, p, tl.zeros_like(p) + (length - 1), length)
            v = tl.load(x_base + p.to(tl.int64)[None, :] * s_x_l, mask=mask_d[:, None] & in_x[None, :],
                        other=0.0)
            if HAS_S0:
                in_s = (p < 0) & (j < W - 1)
                if HAS_SEQ:
                    in_s = in_s & _same_seq(run_base, p, tl.zeros_like(p) + (length - 1), length)
                v += tl.load(s0_base + (p + W - 1)[None, :] * s_s_w, mask=mask_d[:, None] & in_s[None, :],
                             other=0.0).to(v.dtype)
            tl.store(sT_ptr + (pid_b * dim + row) * (W - 1) + j[None, :], v.to(sT_ptr.dtype.element_ty),
                     mask=mask_d[:, None] & (j < W - 1)[None, :])


@triton.jit
def _causal_conv1d_bwd_kernel(
    x_ptr, w_ptr, bias_ptr, s0_ptr, run_ptr, dout_ptr, dsT_ptr,
    dx_ptr, dw_ptr, dbias_ptr, ds0_ptr,
    dim, length, n_tiles,
    s_x_b, s_x_d, s_x_l,
    s_w_d, s_w_k,
    s_s_b, s_s_d, s_s_w,
    s_q_b,
    s_g_b, s_g_d, s_g_l,
    W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_S0: tl.constexpr, HAS_SEQ: tl.constexpr,
    HAS_DST: tl.constexpr, SILU: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < dim
    pid_t = tl.program_id(2)
    t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    row = offs_d.to(tl.int64)[:, None]
    x_base = x_ptr + pid_b * s_x_b + row * s_x_d
    s0_base = s0_ptr + pid_b * s_s_b + row * s_s_d
    run_base = run_ptr + pid_b * s_q_b
    # dout, dx share one contiguous [B, D, L] layout (made so on the host).
    g_base = pid_b * s_g_b + row * s_g_d
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_BIAS else None

    # dxx_t = sum_k w_k dpre_{t + W - 1 - k}: the gradient of every input this tile's positions feed.
    # Computed for t in the tile (dx) and, in the first tile, for the W - 1 state entries before 0.
    dx = tl.zeros((BLOCK_D, BLOCK_T), dtype=tl.float32)
    dw_part = tl.zeros((BLOCK_D, 4), dtype=tl.float32)
    db_part = tl.zeros((BLOCK_D,), dtype=tl.float32)
    kk = tl.arange(0, 4)
    for s in tl.static_range(W):
        q = t + s  # output position fed by x_t through tap W - 1 - s
        dpre = tl.load(dout_ptr + g_base + q.to(tl.int64)[None, :] * s_g_l,
                       mask=mask_d[:, None] & (q < length)[None, :], other=0.0).to(tl.float32)
        if SILU:
            pre = _conv_at(x_base, s0_base, run_base, s_x_l, s_s_w, w_ptr, s_w_d, s_w_k, offs_d, mask_d, q,
                           length, bias, W, HAS_BIAS, HAS_S0, HAS_SEQ)
            sg = tl.sigmoid(pre)
            dpre = dpre * sg * (1.0 + pre * (1.0 - sg))
        wk = tl.load(w_ptr + offs_d * s_w_d + (W - 1 - s) * s_w_k, mask=mask_d, other=0.0).to(tl.float32)
        if HAS_SEQ:  # x_t feeds q only within its own sequence
            dx += wk[:, None] * tl.where(_same_seq(run_base, t, q, length)[None, :], dpre, 0.0)
        else:
            dx += wk[:, None] * dpre
        if s == 0:
            # Each output position is owned by exactly one tile: its weight and bias gradients.
            if HAS_BIAS:
                db_part += tl.sum(dpre, axis=1)
            for k in tl.static_range(W):
                xs = _load_shifted(x_base, s0_base, run_base, s_x_l, s_s_w, t, k - (W - 1), length, mask_d, W,
                                   HAS_S0, HAS_SEQ)
                dw_part += tl.where(kk[None, :] == k, tl.sum(dpre * xs, axis=1)[:, None], 0.0)
    if HAS_DST:
        # The final state is the last W - 1 entries of [initial_state, x].
        j = t - (length - (W - 1))
        in_t = (j >= 0) & (t < length)
        if HAS_SEQ:  # it holds the last sequence's inputs only
            in_t = in_t & _same_seq(run_base, t, tl.zeros_like(t) + (length - 1), length)
        dsT = tl.load(dsT_ptr + (pid_b * dim + row) * (W - 1) + j[None, :],
                      mask=mask_d[:, None] & in_t[None, :], other=0.0)
        dx += dsT.to(tl.float32)
    mask = mask_d[:, None] & (t < length)[None, :]
    tl.store(dx_ptr + g_base + t.to(tl.int64)[None, :] * s_g_l, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    part = (pid_b * n_tiles + pid_t) * dim + offs_d
    tl.store(dw_ptr + part[:, None] * 4 + kk[None, :], dw_part, mask=mask_d[:, None] & (kk < W)[None, :])
    if HAS_BIAS:
        tl.store(dbias_ptr + part, db_part, mask=mask_d)

    if HAS_S0:
        if pid_t == 0:
            # State entry i sits at position i - (W - 1) and feeds outputs i - k >= 0 through tap k.
            # (Names differ from the loop above: a branch taken at run time may not retype a variable.)
            i = tl.arange(0, 4)
            ds0 = tl.zeros((BLOCK_D, 4), dtype=tl.float32)
            for k in tl.static_range(W):
                q0 = i - k
                ok = (q0 >= 0) & (q0 < length) & (i < W - 1)
                if HAS_SEQ:  # the state feeds only the row's first sequence
                    ok = ok & _same_seq(run_base, i - (W - 1), q0, length)
                dpre0 = tl.load(dout_ptr + g_base + q0[None, :] * s_g_l, mask=mask_d[:, None] & ok[None, :],
                                other=0.0).to(tl.float32)
                if SILU:
                    pre0 = _conv_at(x_base, s0_base, run_base, s_x_l, s_s_w, w_ptr, s_w_d, s_w_k, offs_d, mask_d,
                                    q0, length, bias, W, HAS_BIAS, HAS_S0, HAS_SEQ)
                    sg0 = tl.sigmoid(pre0)
                    dpre0 = dpre0 * sg0 * (1.0 + pre0 * (1.0 - sg0))
                w0 = tl.load(w_ptr + offs_d * s_w_d + k * s_w_k, mask=mask_d, other=0.0).to(tl.float32)
                ds0 += w0[:, None] * tl.where(ok[None, :], dpre0, 0.0)
            if HAS_DST:
                # With L < W - 1 part of the initial state survives into the final state.
                j0 = i - length
                keep = (j0 >= 0) & (i < W - 1)
                if HAS_SEQ:
                    keep = keep & _same_seq(run_base, i - (W - 1), tl.zeros_like(i) + (length - 1), length)
                ds0 += tl.load(dsT_ptr + (pid_b * dim + row) * (W - 1) + j0[None, :],
                               mask=mask_d[:, None] & keep[None, :], other=0.0).to(tl.float32)
            tl.store(ds0_ptr + (pid_b * dim + row) * (W - 1) + i[None, :], ds0,
                     mask=mask_d[:, None] & (i < W - 1)[None, :])


@triton.jit
def conv_update_rows(x_ptr, state_ptr, w_ptr, bias_ptr, out_ptr, pid_b, offs_d, mask_d, s_x_b, s_x_d, s_s_b, s_s_d,
                     s_s_w, s_w_d, s_w_k, s_o_b, s_o_d, W: tl.constexpr, HAS_BIAS: tl.constexpr,
                     SILU: tl.constexpr):
    """One decode step of the conv for row ``pid_b``, channels ``offs_d``: stores and returns the output (in
    out's dtype) and shifts the state in place."""
    k = tl.arange(0, 4)
    s_ptrs = state_ptr + pid_b * s_s_b + offs_d[:, None] * s_s_d
    # window_k = state_{k} for k < W - 1, then x: the state shifted left by one with x appended.
    win = tl.load(s_ptrs + k[None, :] * s_s_w, mask=mask_d[:, None] & (k < W - 1)[None, :], other=0.0)
    x = tl.load(x_ptr + pid_b * s_x_b + offs_d * s_x_d, mask=mask_d, other=0.0).to(win.dtype)
    win = tl.where(k[None, :] == W - 1, x[:, None], win)
    w = tl.load(w_ptr + offs_d[:, None] * s_w_d + k[None, :] * s_w_k, mask=mask_d[:, None] & (k < W)[None, :],
                other=0.0).to(tl.float32)
    out = tl.sum(win.to(tl.float32) * w, axis=1)
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if SILU:
        out = out * tl.sigmoid(out)
    out = out.to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + pid_b * s_o_b + offs_d * s_o_d, out, mask=mask_d)
    # New state entry k is window entry k + 1; shift the row with a one-hot sum (no register indexing).
    nxt = tl.sum(tl.where(k[None, :, None] + 1 == k[None, None, :], win[:, None, :], 0.0), axis=2)
    tl.store(s_ptrs + k[None, :] * s_s_w, nxt, mask=mask_d[:, None] & (k < W - 1)[None, :])
    return out


@triton.jit
def _causal_conv1d_update_fwd_kernel(
    x_ptr, state_ptr, w_ptr, bias_ptr, out_ptr,
    dim,
    s_x_b, s_x_d,
    s_s_b, s_s_d, s_s_w,
    s_w_d, s_w_k,
    s_o_b, s_o_d,
    W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    conv_update_rows(x_ptr, state_ptr, w_ptr, bias_ptr, out_ptr, pid_b, offs_d, offs_d < dim, s_x_b, s_x_d, s_s_b,
                     s_s_d, s_s_w, s_w_d, s_w_k, s_o_b, s_o_d, W, HAS_BIAS, SILU)


# Launched through the compiled kernel after the first launch (kernels/host.py): host time counts at short L.
_launch_causal_conv1d_fwd_kernel = DirectLauncher(_causal_conv1d_fwd_kernel)
_launch_causal_conv1d_bwd_kernel = DirectLauncher(_causal_conv1d_bwd_kernel)
_launch_causal_conv1d_update_fwd_kernel = DirectLauncher(_causal_conv1d_update_fwd_kernel)


def _tiles(device: torch.device, length: int) -> tuple[int, int, int]:
    """(BLOCK_D, BLOCK_T, num_warps): small tiles for the interpreter."""
    if device.type != "cuda":
        return 4, 16, 1
    # 8 positions a thread: the backward's recomputed taps stay in registers (no spills at W = 4).
    return 4, min(256, next_power_of_2(length)), 4


def _run_arg(seq_idx, device):
    """[B, L] int32 run counts of seq_idx (the sequence starts up to each position) as the kernels read them, or
    a stand-in they never read (HAS_SEQ=False). One compare per tap then tells whether two positions share a
    sequence."""
    if seq_idx is None:
        return torch.zeros(1, 1, dtype=torch.int32, device=device)
    run = torch.zeros(seq_idx.shape, dtype=torch.int32, device=device)
    run[:, 1:] = (seq_idx[:, 1:] != seq_idx[:, :-1]).cumsum(-1, dtype=torch.int32)
    return run


def _causal_conv1d_fwd(x, weight, bias, initial_state, return_final_state, silu, seq_idx=None):
    batch, dim, length = x.shape
    width = weight.shape[1]
    out = fresh(torch.empty_strided(x.shape, rows_layout(x), device=x.device, dtype=x.dtype))
    final = None
    if return_final_state:
        final = fresh(torch.empty(batch, dim, width - 1, device=x.device, dtype=x.dtype))
    s0 = initial_state if initial_state is not None else x.new_empty(0, 0, 0)
    seq = _run_arg(seq_idx, x.device)
    bd, bt, warps = _tiles(x.device, length)
    grid = (batch, cdiv(dim, bd), cdiv(length, bt))
    _launch_causal_conv1d_fwd_kernel[grid](
        x, weight, bias, s0, seq, out, final, dim, length,
        *x.stride(), *weight.stride(), *s0.stride(), seq.stride(0), *out.stride(),
        W=width, HAS_BIAS=bias is not None, HAS_S0=initial_state is not None, HAS_SEQ=seq_idx is not None,
        STORE_FINAL=return_final_state, SILU=silu, BLOCK_D=bd, BLOCK_T=bt, num_warps=warps,
    )
    return out, final


def _causal_conv1d_bwd(x, weight, bias, initial_state, dout, dfinal, silu, dx_out=None, seq_idx=None):
    """The gradients; ``dx_out`` (optional) is a buffer laid out like dout that receives dx (a fused block
    hands over its half of d(in_proj output), so that dx is never copied there); ``seq_idx`` as checked by
    ``check_seq_idx``."""
    batch, dim, length = x.shape
    width = weight.shape[1]
    if tuple(dout.stride()) != rows_layout(dout):  # dout and dx share one layout in the kernel
        dout = dout.contiguous()
    if dx_out is not None:
        assert dx_out.stride() == dout.stride() and dx_out.dtype == dout.dtype, "dx_out must be laid out as dout"
        dx = fresh(dx_out)
    else:
        dx = fresh(torch.empty_like(dout))
    bd, bt, warps = _tiles(x.device, length)
    n_tiles = cdiv(length, bt)
    f32 = dict(device=x.device, dtype=torch.float32)
    dw = fresh(torch.empty(batch, n_tiles, dim, 4, **f32))
    dbias = fresh(torch.empty(batch, n_tiles, dim, **f32)) if bias is not None else None
    ds0 = fresh(torch.empty(batch, dim, width - 1, **f32)) if initial_state is not None else None
    s0 = initial_state if initial_state is not None else x.new_empty(0, 0, 0)
    dsT = dfinal.contiguous() if dfinal is not None else None
    seq = _run_arg(seq_idx, x.device)
    _launch_causal_conv1d_bwd_kernel[(batch, cdiv(dim, bd), n_tiles)](
        x, weight, bias, s0, seq, dout, dsT, dx, dw, dbias, ds0,
        dim, length, n_tiles,
        *x.stride(), *weight.stride(), *s0.stride(), seq.stride(0), *dout.stride(),
        W=width, HAS_BIAS=bias is not None, HAS_S0=initial_state is not None, HAS_SEQ=seq_idx is not None,
        HAS_DST=dsT is not None, SILU=silu, BLOCK_D=bd, BLOCK_T=bt, num_warps=warps,
    )
    dw = dw.sum((0, 1))[:, :width]
    dbias = dbias.sum((0, 1)) if dbias is not None else None
    return dx, dw, dbias, ds0


class _CausalConv1dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, initial_state, return_final_state, silu, seq_idx):
        out, final = _causal_conv1d_fwd(x, weight, bias, initial_state, return_final_state, silu, seq_idx)
        ctx.save_for_backward(x, weight, bias, initial_state, seq_idx)
        ctx.silu = silu
        return out, final

    @staticmethod
    def backward(ctx, dout, dfinal):
        x, weight, bias, initial_state, seq_idx = ctx.saved_tensors
        dx, dw, dbias, ds0 = _causal_conv1d_bwd(x, weight, bias, initial_state, dout, dfinal, ctx.silu,
                                                seq_idx=seq_idx)
        return (dx, dw.to(weight.dtype), None if bias is None else dbias.to(bias.dtype),
                None if initial_state is None else ds0.to(initial_state.dtype), None, None, None)


def _check_common(fn: str, x: torch.Tensor, weight: torch.Tensor, bias, activation) -> None:
    if weight.dim() != 2 or not 2 <= weight.shape[1] <= 4:
        raise InputError(f"{fn}: weight has shape {tuple(weight.shape)}; expected [D, W] with W in 2..4")
    if activation not in (None, "silu"):
        raise InputError(f"{fn}: activation must be None or 'silu', got {activation!r}")
    if x.device.type == "cpu" and not triton.knobs.runtime.interpret:
        raise InputError(f"{fn}: inputs are on the CPU; move them to CUDA or use the *_ref functions")
    check_tensor(fn, "weight", weight, (weight.shape[0], weight.shape[1]), x.device)
    check_tensor(fn, "bias", bias, (weight.shape[0],), x.device)


def causal_conv1d_fn(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    activation: str | None = None,
    *,
    seq_idx: torch.Tensor | None = None,
):
    """Depthwise causal conv, out_t = sum_k weight[:, k] x_{t - W + 1 + k} (+ bias), as ``causal_conv1d_ref``.

    Args:
        x: [B, D, L] input.
        weight: [D, W] one filter per channel, width W in 2..4.
        bias: [D] optional.
        initial_state: [B, D, W - 1] the W - 1 inputs before position 0 (zeros when None); it gets a gradient.
        return_final_state: also return the last W - 1 inputs (the conv state for the next chunk).
        activation: None or "silu".
        seq_idx: [B, L] integer, packed sequences (a sequence is a run of one value in a row; -1 for padding
            is a run like any other), optional: the window of position t holds only the inputs of t's own
            sequence, so the initial state reaches only a row's first sequence and the final state is that of
            its last (zeros where that sequence is shorter than W - 1), as in ``causal_conv1d_ref``.

    Returns:
        out [B, D, L] in x's dtype, and final_state [B, D, W - 1] in x's dtype when asked.
    """
    fn = "causal_conv1d_fn"
    if x.dim() != 3:
        raise InputError(f"{fn}: x has shape {tuple(x.shape)}; expected [B, D, L]")
    _check_common(fn, x, weight, bias, activation)
    batch, dim, length = x.shape
    check_tensor(fn, "x", x, (batch, weight.shape[0], length), x.device)
    check_tensor(fn, "initial_state", initial_state, (batch, dim, weight.shape[1] - 1), x.device)
    if length == 0:
        raise InputError(f"{fn}: x has no positions (L = 0); pass at least one")
    seq_idx = check_seq_idx(fn, seq_idx, batch, length, x.device)
    if initial_state is not None:
        initial_state = initial_state.to(x.dtype)
    silu = activation == "silu"
    out, final = _CausalConv1dFn.apply(x, weight, bias, initial_state, return_final_state, silu, seq_idx)
    return (out, final) if return_final_state else out


def causal_conv1d_update_fn(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """One decode step of the causal conv1d; shifts ``conv_state`` in place, as ``causal_conv1d_update_ref``.

    Args:
        x: [B, D] input at this position.
        conv_state: [B, D, W - 1] the previous W - 1 inputs, overwritten with the new ones.
        weight: [D, W] with W in 2..4; bias: [D] optional; activation: None or "silu".

    Returns:
        out [B, D] in x's dtype.
    """
    fn = "causal_conv1d_update_fn"
    if x.dim() != 2:
        raise InputError(f"{fn}: x has shape {tuple(x.shape)}; expected [B, D]")
    _check_common(fn, x, weight, bias, activation)
    batch, dim = x.shape
    width = weight.shape[1]
    check_tensor(fn, "x", x, (batch, weight.shape[0]), x.device)
    check_tensor(fn, "conv_state", conv_state, (batch, dim, width - 1), x.device)
    out = fresh(torch.empty_like(x))
    block_d = 4 if x.device.type != "cuda" else 128
    _launch_causal_conv1d_update_fwd_kernel[(batch, cdiv(dim, block_d))](
        x, conv_state, weight, bias, out, dim,
        *x.stride(), *conv_state.stride(), *weight.stride(), *out.stride(),
        W=width, HAS_BIAS=bias is not None, SILU=activation == "silu", BLOCK_D=block_d, num_warps=4,
    )
    return out
