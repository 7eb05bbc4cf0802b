"""Residual add + RMSNorm forward in Triton: one pass over a [BLOCK_M, BLOCK_D] tile of whole rows.

A program loads BLOCK_M rows of x (and residual), sums them in fp32, stores the sum rounded to the residual
dtype, and normalises that rounded value: the backward recomputes the normalised row from the stored sum, so
forward and backward see the same numbers (and it matches the reference, which sums in the residual dtype).
BLOCK_D = next_power_of_2(D) holds a whole row, masked beyond D; the only other thing kept for the backward is
rstd per row (per half with ``rc_halves``). Row offsets are int64: rows · D passes 2^31 on large inputs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from seqssm.kernels.common import fresh
from seqssm.kernels.host import DirectLauncher, cdiv, next_power_of_2

# Widest row a program holds in registers (fp32): beyond it the backward spills badly.
MAX_DIM = 16384


@dataclass(frozen=True)
class NormConfig:
    """Launch shape: rows a program tile holds, warps a program, and (backward) programs per SM."""

    block_m: int
    num_warps: int
    programs_per_sm: int = 4


def launch_config(dim: int, device: torch.device) -> NormConfig:
    """Tiles of ~4096 fp32 elements on the GPU (16 a thread at 8 warps); small tiles in the interpreter so that
    tests with a few dozen rows still cover ragged tiles and several tiles a backward program."""
    block_d = next_power_of_2(dim)
    if device.type != "cuda":
        return NormConfig(block_m=4 if block_d <= 256 else 1, num_warps=1)
    block_m = min(16, max(1, 4096 // block_d))
    return NormConfig(block_m=block_m, num_warps=min(16, max(1, block_m * block_d // 512)))


@functools.cache
def sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


# n_rows only masks rows (the loads are vectorised along D): not specialised, so that B·L of every class shares
# one compile (see the backward).
@triton.jit(do_not_specialize=["n_rows"])
def _add_rms_norm_fwd_kernel(
    x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, rstd_ptr,
    n_rows, dim, half, eps,
    s_x_row, s_res_row,
    HAS_RESIDUAL: tl.constexpr, STORE_RESIDUAL: tl.constexpr, HALVES: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    mask_m = rows < n_rows
    mask_d = cols < dim
    mask = mask_m[:, None] & mask_d[None, :]
    s = tl.load(x_ptr + rows[:, None] * s_x_row + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        s += tl.load(res_ptr + rows[:, None] * s_res_row + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    out_offs = rows[:, None] * dim + cols[None, :]  # outputs are contiguous [rows, D]
    if STORE_RESIDUAL:
        stored = s.to(res_out_ptr.dtype.element_ty)
        tl.store(res_out_ptr + out_offs, stored, mask=mask)
        s = stored.to(tl.float32)
    sq = s * s  # zero beyond D (masked loads)
    if HALVES:
        # Two strands side by side: each half [0, H) and [H, D) has its own statistics, and the second half
        # reads the weight backwards (column j uses weight[D - 1 - j]).
        first = cols < half
        rstd0 = tl.rsqrt(tl.sum(tl.where(first[None, :], sq, 0.0), axis=1) / half + eps)
        rstd1 = tl.rsqrt(tl.sum(tl.where(first[None, :], 0.0, sq), axis=1) / half + eps)
        tl.store(rstd_ptr + rows * 2, rstd0, mask=mask_m)
        tl.store(rstd_ptr + rows * 2 + 1, rstd1, mask=mask_m)
        r = tl.where(first[None, :], rstd0[:, None], rstd1[:, None])
        w_idx = tl.where(first, cols, dim - 1 - cols)
    else:
        rstd = tl.rsqrt(tl.sum(sq, axis=1) / dim + eps)
        tl.store(rstd_ptr + rows, rstd, mask=mask_m)
        r = rstd[:, None]
        w_idx = cols
    w = tl.load(w_ptr + w_idx, mask=mask_d, other=0.0).to(tl.float32)
    tl.store(out_ptr + out_offs, (s * r * w[None, :]).to(out_ptr.dtype.element_ty), mask=mask)


_launch_fwd = DirectLauncher(_add_rms_norm_fwd_kernel)


def add_rms_norm_fwd(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
    residual_dtype: torch.dtype,
    out_dtype: torch.dtype,
    rc_halves: bool,
    config: NormConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward on checked 2-D inputs (last-dim stride 1; any row stride).

    Args:
        x: [M, D]; residual: [M, D] or None; weight: [D] ([D / 2] with ``rc_halves``), contiguous.
        residual_dtype: dtype of the summed residual; when residual is None and it is x's dtype, x itself is
            returned as the residual (nothing to write).

    Returns:
        normed [M, D] in out_dtype, residual_out [M, D] in residual_dtype, rstd [M] fp32 ([M, 2] with
        ``rc_halves``).
    """
    n_rows, dim = x.shape
    store = residual is not None or residual_dtype != x.dtype
    out = fresh(torch.empty(n_rows, dim, device=x.device, dtype=out_dtype))
    res_out = fresh(torch.empty(n_rows, dim, device=x.device, dtype=residual_dtype)) if store else x
    rstd = fresh(torch.empty((n_rows, 2) if rc_halves else (n_rows,), device=x.device, dtype=torch.float32))
    if n_rows == 0:
        return out, res_out, rstd
    cfg = config or launch_config(dim, x.device)
    _launch_fwd[(cdiv(n_rows, cfg.block_m),)](
        x, residual, weight, out, res_out, rstd,
        n_rows, dim, dim // 2, eps,
        x.stride(0), residual.stride(0) if residual is not None else 0,
        HAS_RESIDUAL=residual is not None, STORE_RESIDUAL=store, HALVES=rc_halves,
        BLOCK_M=cfg.block_m, BLOCK_D=next_power_of_2(dim), num_warps=cfg.num_warps,
    )
    return out, res_out, rstd
