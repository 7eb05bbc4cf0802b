"""Triton helpers that the scan kernels share: softplus, the scan's combine, and the chunk loads of the tile
forward (``fused.py``) and the backward (``fused_bwd.py``). They are inlined where they are called, so they
change neither the code nor the tile layouts the loads give (which the backward's PTX scan relies on)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def softplus(x):
    # Same threshold as torch.nn.functional.softplus.
    return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(x)), x)


@triton.jit
def fwd_combine(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2
    return a1 * a2, a2 * b1 + b2


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
def load_state_row(base, n, s_n, pos_2d, s_l, mask, mask_d, VAR: tl.constexpr):
    """State n's row of B or C as fp32: [BLOCK_D, BLOCK_T] when per position, [BLOCK_D, 1] when constant.

    Per-position rows are read through a [BLOCK_D, BLOCK_T] pointer tile (each warp its own copy, from L1)
    so that they arrive in the tile's layout without a shared-memory shuffle."""
    if VAR:
        row = tl.load(base + n * s_n + pos_2d * s_l, mask=mask, other=0.0).to(tl.float32)
    else:
        row = tl.load(base + n * s_n, mask=mask_d, other=0.0).to(tl.float32)[:, None]
    return row


@triton.jit
def load_dt(dt_base, pos, s_l, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """(Δ + bias, Δ) as [BLOCK_D, BLOCK_T] fp32 tiles, Δ = softplus(Δ + bias) when ``SOFTPLUS``. Δ is 0 where
    ``mask`` is False, which makes those positions the scan's identity (exp(0·A) = 1, no input)."""
    raw = tl.load(dt_base + pos[None, :] * s_l, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw += bias[:, None]
    if SOFTPLUS:
        dt = softplus(raw)
    else:
        dt = raw
    return raw, tl.where(mask, dt, 0.0)
