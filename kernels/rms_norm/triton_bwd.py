"""Residual add + RMSNorm backward in Triton.

With s = x + residual (the stored residual_out), r = rsqrt(mean(s²) + eps), x̂ = s · r and y = x̂ · w:
    ds = r · (g − x̂ · mean(g · x̂)) + dresidual_out,   g = dy · w,
and dx = dresidual = ds (each in its input's dtype), dw = Σ_rows dy · x̂. With ``rc_halves`` the means run
over each half and the second half's weight is read backwards, so its dw lands on weight.flip(0).

x̂ is recomputed from the stored sum and rstd (nothing else is saved). Each program walks a contiguous range of
row tiles and keeps its dw partial in fp32 registers; the [programs, D] partials are summed on the host, so
the result does not depend on launch order.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from seqssm.kernels.common import fresh
from seqssm.kernels.host import DirectLauncher, cdiv, next_power_of_2
from seqssm.kernels.rms_norm.triton_fwd import NormConfig, launch_config, sm_count


# Row and tile counts are loop bounds and row masks only: specialising them (on % 16 and == 1) bought nothing but a
# compile per class of B·L, which batches of varying length paid every few steps (pipelines/classify.PAD_TOKENS).
@triton.jit(do_not_specialize=["n_rows", "n_tiles", "tiles_per_program"])
def _add_rms_norm_bwd_kernel(
    s_ptr, w_ptr, rstd_ptr, dy_ptr, dres_ptr, dx_ptr, dres_in_ptr, dw_ptr,
    n_rows, dim, half, n_tiles, tiles_per_program,
    s_s_row, s_dy_row, s_dres_row,
    HAS_DRES: tl.constexpr, STORE_DRES_IN: tl.constexpr, HALVES: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    mask_d = cols < dim
    first = cols < half
    w_idx = tl.where(first, cols, dim - 1 - cols) if HALVES else cols
    w = tl.load(w_ptr + w_idx, mask=mask_d, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    tile_end = tl.minimum((pid + 1) * tiles_per_program, n_tiles)
    for tile in range(pid * tiles_per_program, tile_end):
        # tile · BLOCK_M < n_rows fits int32; the offsets below are int64 through rows.
        rows = tl.arange(0, BLOCK_M).to(tl.int64) + tile * BLOCK_M
        mask_m = rows < n_rows
        mask = mask_m[:, None] & mask_d[None, :]
        s = tl.load(s_ptr + rows[:, None] * s_s_row + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + rows[:, None] * s_dy_row + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if HALVES:
            rstd0 = tl.load(rstd_ptr + rows * 2, mask=mask_m, other=0.0)
            rstd1 = tl.load(rstd_ptr + rows * 2 + 1, mask=mask_m, other=0.0)
            r = tl.where(first[None, :], rstd0[:, None], rstd1[:, None])
        else:
            r = tl.load(rstd_ptr + rows, mask=mask_m, other=0.0)[:, None]
        xhat = s * r  # zero outside the tile's rows and D
        dw += dy * xhat
        gx = dy * w[None, :] * xhat
        g = dy * w[None, :]
        if HALVES:
            c0 = tl.sum(tl.where(first[None, :], gx, 0.0), axis=1) / half
            c1 = tl.sum(tl.where(first[None, :], 0.0, gx), axis=1) / half
            c = tl.where(first[None, :], c0[:, None], c1[:, None])
        else:
            c = (tl.sum(gx, axis=1) / dim)[:, None]
        ds = r * (g - xhat * c)
        if HAS_DRES:
            ds += tl.load(dres_ptr + rows[:, None] * s_dres_row + cols[None, :], mask=mask,
                          other=0.0).to(tl.float32)
        offs = rows[:, None] * dim + cols[None, :]  # dx and dresidual are contiguous [rows, D]
        tl.store(dx_ptr + offs, ds.to(dx_ptr.dtype.element_ty), mask=mask)
        if STORE_DRES_IN:
            tl.store(dres_in_ptr + offs, ds.to(dres_in_ptr.dtype.element_ty), mask=mask)
    tl.store(dw_ptr + pid.to(tl.int64) * dim + cols, tl.sum(dw, axis=0), mask=mask_d)


_launch_bwd = DirectLauncher(_add_rms_norm_bwd_kernel)


def add_rms_norm_bwd(
    res_out: torch.Tensor,
    weight: torch.Tensor,
    rstd: torch.Tensor,
    dy: torch.Tensor,
    dres_out: torch.Tensor | None,
    x_dtype: torch.dtype,
    residual_dtype: torch.dtype | None,
    rc_halves: bool,
    config: NormConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Gradients of :func:`add_rms_norm_fwd` on 2-D tensors (last-dim stride 1; any row stride).

    Args:
        res_out: [M, D] the forward's summed residual; rstd: [M] ([M, 2] with ``rc_halves``) fp32.
        dy: [M, D] gradient of normed; dres_out: [M, D] gradient of residual_out, or None (unused).
        x_dtype, residual_dtype: dtypes of the forward's x and residual (None: there was no residual).

    Returns:
        dx [M, D] in x_dtype, dresidual [M, D] in residual_dtype (None without a residual; the same tensor
        as dx when the dtypes agree), dweight in weight's shape and dtype.
    """
    n_rows, dim = res_out.shape
    device = res_out.device
    dx = fresh(torch.empty(n_rows, dim, device=device, dtype=x_dtype))
    split = residual_dtype is not None and residual_dtype != x_dtype
    dres_in = fresh(torch.empty(n_rows, dim, device=device, dtype=residual_dtype)) if split else None
    if n_rows == 0:
        dw = torch.zeros_like(weight)
    else:
        cfg = config or launch_config(dim, device)
        n_tiles = cdiv(n_rows, cfg.block_m)
        programs = min(n_tiles, cfg.programs_per_sm * sm_count(device.index) if device.type == "cuda" else 3)
        per_program = cdiv(n_tiles, programs)
        programs = cdiv(n_tiles, per_program)  # no program without tiles
        dw_part = fresh(torch.empty(programs, dim, device=device, dtype=torch.float32))
        _launch_bwd[(programs,)](
            res_out, weight, rstd, dy, dres_out, dx, dres_in, dw_part,
            n_rows, dim, dim // 2, n_tiles, per_program,
            res_out.stride(0), dy.stride(0), dres_out.stride(0) if dres_out is not None else 0,
            HAS_DRES=dres_out is not None, STORE_DRES_IN=split, HALVES=rc_halves,
            BLOCK_M=cfg.block_m, BLOCK_D=next_power_of_2(dim), num_warps=cfg.num_warps,
        )
        dw = dw_part.sum(0)
        if rc_halves:
            half = dim // 2
            dw = dw[:half] + dw[half:].flip(0)
        dw = dw.to(weight.dtype)
    if residual_dtype is None:
        return dx, None, dw
    return dx, dres_in if split else dx, dw
