"""Small-batch projections y = x @ W^T (GEMV-shaped linears of a decode step) in Triton, inference only.

At one to eight rows a projection reads every weight once and does almost no arithmetic: it is bound by the
weight's bytes. cuBLAS's GEMM kernels ran the decode step's four projections about 10x below HBM bandwidth
(benchmarks/RESULTS.md, "Decode profile"), so these kernels are plain streaming dot products:

- A program owns ``block_n`` weight rows and ``block_b`` rows of x, and walks its share of K in tiles of
  ``block_k`` (a warp reads a 512-byte run of one weight row in 16-byte loads), accumulating elementwise in
  fp32 and reducing once at the end. The K loop is unrolled (at most ``MAX_K_ITERS`` tiles), so the loads of
  every tile are in flight together.
- Shapes with few output rows (x_proj: N = 80, K = 1536) would leave most SMs idle, so K is split across
  programs (``splits``), which write fp32 partials [S, B, N]; a second small kernel sums them in a fixed order
  (deterministic, no atomics, nothing to zero beforehand).
- The Mamba step's x_proj -> dt_proj pair is fused in that second kernel: each of its programs sums the dt
  columns of the partials itself, rounds them as the stored x_dbl is rounded, and multiplies by its rows of
  dt_proj's weight, so the pair costs two launches instead of three.
- The GEMV kernel's NORM path takes a Mamba block's residual add + RMSNorm into in_proj (``add_norm_gemv``,
  triton_norm.py), and ``x_proj_partials`` feeds the fused decode update (selective_scan/triton_update.py).

Over 400 lines: the one GEMV kernel, its launch plans and its summing kernels, which those paths share.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from seqssm.errors import InputError
from seqssm.kernels.common import check_no_grad, check_tensor, fresh
from seqssm.kernels.host import DirectLauncher, cdiv, next_power_of_2

MAX_BLOCK_B = 8  # rows of x one program serves; more rows take more row blocks (the weight is read again)
MAX_K_ITERS = 16  # unrolled K tiles per program; longer K is split across programs
ACC_BUDGET = 4096  # fp32 accumulator elements of a program (32 a thread at 4 warps)
MAX_RANK = 256  # dt_rank the fused x_proj -> dt_proj kernel holds in one tile
FILL = 4  # programs an SM the default launch shape aims at (a guess until the sweep of bench_gemv says)
SPLIT_BYTES = 64 * 1024  # weight bytes a program streams before splitting K across programs pays (a guess)


@dataclass(frozen=True)
class GemvConfig:
    """Launch shape of :func:`gemv`: ``block_b`` x rows, ``block_n`` weight rows and ``block_k`` K elements
    per program and tile; ``splits`` programs along K (> 1: fp32 partials and a summing kernel)."""

    block_b: int
    block_n: int
    block_k: int
    splits: int = 1
    num_warps: int = 4


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


@functools.lru_cache(maxsize=256)
def gemv_config(rows: int, n: int, k: int, elem_size: int, device: torch.device,
                summed: bool = False) -> GemvConfig:
    """The default launch shape: tiles as large as the accumulator budget allows, shrunk until there are
    ``FILL`` programs an SM (all resident at once, so the weight's bytes spread evenly over the SMs: with one
    or two programs an SM, the SMs that got two stream twice the bytes); small tiles on the CPU (the
    interpreter).

    K is split only where it pays: when the partials are summed by a kernel that runs anyway (``summed``: the
    fused x_proj -> dt_proj), or when each of too few programs would stream more than ``SPLIT_BYTES`` of
    weight (several memory round trips in a row). A small weight such as x_proj's (246 KB) is one round trip
    per program whatever the split, so there a second launch would only add its own latency.
    """
    block_b = min(MAX_BLOCK_B, next_power_of_2(rows))
    if device.type != "cuda":  # the interpreter: few programs (each one is slow), still split when K allows
        return GemvConfig(block_b, 32, 32, 1 if k <= 32 else 2, 1)
    vec = max(1, 16 // elem_size)  # elements of one 16-byte load
    block_k = max(16, min(next_power_of_2(k), 32 * vec))
    block_n = max(1, min(next_power_of_2(n), ACC_BUDGET // (block_b * block_k)))
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    row_blocks = cdiv(rows, block_b)
    while block_n > 1 and cdiv(n, block_n) * row_blocks < FILL * sms:
        block_n //= 2
    programs = cdiv(n, block_n) * row_blocks
    splits = 1
    if programs < sms and (summed or n * k * elem_size > SPLIT_BYTES * programs):
        splits = min(cdiv(sms, programs), cdiv(k, block_k))
    # Enough threads for one 16-byte load each of the weight tile, and for at most 32 accumulators each.
    num_warps = max(1, min(4, max(block_n * block_k // (32 * vec), block_b * block_n * block_k // 1024)))
    return GemvConfig(block_b, block_n, block_k, splits, num_warps)


@triton.jit
def _summed_input(x_rows, res_rows, res_out_ptr, offs_k, mask, s_x_k, s_r_k, HAS_RESIDUAL: tl.constexpr,
                  STORE_RESIDUAL: tl.constexpr):
    """x (+ residual) at columns ``offs_k`` in fp32, rounded to res_out's dtype when the sum is stored (the
    value add_rms_norm normalises); [BLOCK_B, BLOCK_K], zero where masked."""
    s = tl.load(x_rows + offs_k[None, :] * s_x_k, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        s += tl.load(res_rows + offs_k[None, :] * s_r_k, mask=mask, other=0.0).to(tl.float32)
    if STORE_RESIDUAL:
        s = s.to(res_out_ptr.dtype.element_ty).to(tl.float32)
    return s


@triton.jit
def _gemv_kernel(
    x_ptr, w_ptr, bias_ptr, out_ptr, res_ptr, nw_ptr, res_out_ptr,
    rows, n, k, eps,
    s_x_b, s_x_k, s_w_n, s_w_k, s_o_s, s_o_b, s_o_n, s_r_b, s_r_k,
    HAS_BIAS: tl.constexpr, PARTIAL: tl.constexpr, EVEN_K: tl.constexpr, K_ITERS: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    NORM: tl.constexpr, HAS_RESIDUAL: tl.constexpr, STORE_RESIDUAL: tl.constexpr,
):
    """out[b, n] (or partial out[s, b, n], fp32) = sum over split s's K range of x[b, k] w[n, k].

    With NORM, x is the block's residual add + RMSNorm of x (and residual [B, K], row stride s_r_b) with weight
    nw [K], as add_rms_norm computes it: every program takes its rows' statistics over the whole of K (a
    decode step's K, d_model, is small), rounds the normed input to the weight's dtype as the stored one would
    be, and the first program of each row block also writes the summed residual res_out [B, K] (contiguous).
    """
    pid_n, pid_s, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_b, mask_n = offs_b < rows, offs_n < n
    x_rows = x_ptr + offs_b.to(tl.int64)[:, None] * s_x_b
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * s_w_n
    res_rows = res_ptr + offs_b.to(tl.int64)[:, None] * s_r_b
    rstd = tl.zeros((BLOCK_B,), dtype=tl.float32)
    if NORM:
        writes = (pid_n == 0) & (pid_s == 0)
        sq = tl.zeros((BLOCK_B, BLOCK_K), dtype=tl.float32)
        for k0 in range(0, k, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask = mask_b[:, None] & (offs_k < k)[None, :]
            s = _summed_input(x_rows, res_rows, res_out_ptr, offs_k, mask, s_x_k, s_r_k, HAS_RESIDUAL,
                              STORE_RESIDUAL)
            if STORE_RESIDUAL:
                tl.store(res_out_ptr + offs_b.to(tl.int64)[:, None] * k + offs_k[None, :],
                         s.to(res_out_ptr.dtype.element_ty), mask=mask & writes)
            sq += s * s
        rstd = tl.rsqrt(tl.sum(sq, axis=1) / k + eps)
    k_lo = pid_s * (K_ITERS * BLOCK_K)
    acc = tl.zeros((BLOCK_B, BLOCK_N, BLOCK_K), dtype=tl.float32)
    for i in tl.static_range(K_ITERS):
        offs_k = k_lo + i * BLOCK_K + tl.arange(0, BLOCK_K)
        mask_k = offs_k < k
        if EVEN_K:  # no K mask: the loads along K stay 16-byte vectors
            w = tl.load(w_rows + offs_k[None, :] * s_w_k, mask=mask_n[:, None], other=0.0)
            mask_x = mask_b[:, None]
        else:
            w = tl.load(w_rows + offs_k[None, :] * s_w_k, mask=mask_n[:, None] & mask_k[None, :], other=0.0)
            mask_x = mask_b[:, None] & mask_k[None, :]
        if NORM:  # x's tile normalised, in the weight's dtype as the stored normed input
            xv = _summed_input(x_rows, res_rows, res_out_ptr, offs_k, mask_x, s_x_k, s_r_k, HAS_RESIDUAL,
                               STORE_RESIDUAL)
            nw = tl.load(nw_ptr + offs_k, mask=mask_k, other=0.0).to(tl.float32)
            xv = (xv * rstd[:, None] * nw[None, :]).to(w_ptr.dtype.element_ty)
        else:
            xv = tl.load(x_rows + offs_k[None, :] * s_x_k, mask=mask_x, other=0.0)
        acc += xv.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :]
    y = tl.sum(acc, axis=2)  # [BLOCK_B, BLOCK_N]
    mask = mask_b[:, None] & mask_n[None, :]
    out_ptrs = out_ptr + offs_b.to(tl.int64)[:, None] * s_o_b + offs_n[None, :] * s_o_n
    if PARTIAL:
        tl.store(out_ptrs + pid_s * s_o_s, y, mask=mask)
    else:
        if HAS_BIAS:
            y += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptrs, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _split_sum(part_ptr, offs_b, offs_n, mask, splits, s_p_s, s_p_b, BLOCK_B: tl.constexpr,
               BLOCK_N: tl.constexpr):
    """sum_s part[s, b, n] for a [BLOCK_B, BLOCK_N] tile, splits in order (the same sum wherever taken)."""
    ptrs = part_ptr + offs_b.to(tl.int64)[:, None] * s_p_b + offs_n[None, :]
    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    for s in range(splits):
        acc += tl.load(ptrs + s * s_p_s, mask=mask, other=0.0)
    return acc


@triton.jit
def _split_sum_kernel(
    part_ptr, bias_ptr, out_ptr, rows, n, splits, s_p_s, s_p_b, s_o_b, s_o_n,
    HAS_BIAS: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_n = offs_n < n
    mask = (offs_b < rows)[:, None] & mask_n[None, :]
    y = _split_sum(part_ptr, offs_b, offs_n, mask, splits, s_p_s, s_p_b, BLOCK_B, BLOCK_N)
    if HAS_BIAS:
        y += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + offs_b.to(tl.int64)[:, None] * s_o_b + offs_n[None, :] * s_o_n,
             y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _split_sum_dt_kernel(
    part_ptr, xdbl_ptr, w_ptr, dt_ptr,
    rows, n1, rank, n2, splits,
    s_p_s, s_p_b, s_xd_b, s_xd_n, s_w_n, s_w_r, s_dt_b, s_dt_n,
    BLOCK_B: tl.constexpr, BLOCK_N1: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N2: tl.constexpr,
):
    """x_dbl = sum of the x_proj partials (written by the first program of a row block); dt[b, n] =
    sum_r x_dbl[b, r] w[n, r] over dt_proj rows n of this program, from x_dbl rounded as stored."""
    pid_n = tl.program_id(0)
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_b = offs_b < rows
    if pid_n == 0:
        for n0 in range(0, n1, BLOCK_N1):
            offs = n0 + tl.arange(0, BLOCK_N1)
            mask = mask_b[:, None] & (offs < n1)[None, :]
            y = _split_sum(part_ptr, offs_b, offs, mask, splits, s_p_s, s_p_b, BLOCK_B, BLOCK_N1)
            tl.store(xdbl_ptr + offs_b.to(tl.int64)[:, None] * s_xd_b + offs[None, :] * s_xd_n,
                     y.to(xdbl_ptr.dtype.element_ty), mask=mask)
    offs_r = tl.arange(0, BLOCK_R)
    mask_r = offs_r < rank
    xr = _split_sum(part_ptr, offs_b, offs_r, mask_b[:, None] & mask_r[None, :], splits, s_p_s, s_p_b,
                    BLOCK_B, BLOCK_R)
    xr = xr.to(xdbl_ptr.dtype.element_ty).to(tl.float32)
    offs_n = pid_n * BLOCK_N2 + tl.arange(0, BLOCK_N2)
    mask_n = offs_n < n2
    w = tl.load(w_ptr + offs_n.to(tl.int64)[:, None] * s_w_n + offs_r[None, :] * s_w_r,
                mask=mask_n[:, None] & mask_r[None, :], other=0.0).to(tl.float32)
    dt = tl.sum(xr[:, None, :] * w[None, :, :], axis=2)  # [BLOCK_B, BLOCK_N2]
    tl.store(dt_ptr + offs_b.to(tl.int64)[:, None] * s_dt_b + offs_n[None, :] * s_dt_n,
             dt.to(dt_ptr.dtype.element_ty), mask=mask_b[:, None] & mask_n[None, :])


# Launched through the compiled kernel after the first launch (kernels/host.py): eager decoding waits on the host.
_launch_gemv_kernel = DirectLauncher(_gemv_kernel)
_launch_split_sum_kernel = DirectLauncher(_split_sum_kernel)
_launch_split_sum_dt_kernel = DirectLauncher(_split_sum_dt_kernel)


class NormArgs(NamedTuple):
    """The residual add + RMSNorm a GEMV kernel applies to its input first (see ``_gemv_kernel``): residual
    [B, K] or None, weight [K], eps, and res_out [B, K] (contiguous) for the summed residual, or None when it is
    not written (no residual and its dtype is x's)."""

    residual: torch.Tensor | None
    weight: torch.Tensor
    eps: float
    res_out: torch.Tensor | None


def _gemv_launch(x, weight, bias, cfg: GemvConfig, partial: bool, norm: NormArgs | None = None) -> torch.Tensor:
    """Launch the GEMV kernel: out [B, N] in x's dtype (weight's with ``norm``), or (``partial``) fp32
    partials [S, B, N]."""
    rows, k = x.shape
    n = weight.shape[0]
    k_iters = cdiv(cdiv(k, max(1, cfg.splits)), cfg.block_k)
    k_iters = min(k_iters, MAX_K_ITERS)
    splits = cdiv(k, k_iters * cfg.block_k)  # the splits that have work (each K_ITERS tiles long)
    if partial or splits > 1:
        out = fresh(torch.empty(splits, rows, n, device=x.device, dtype=torch.float32))
    else:
        out = fresh(torch.empty(rows, n, device=x.device, dtype=weight.dtype))
    s_o = out.stride() if out.dim() == 3 else (0, *out.stride())
    res = None if norm is None else norm.residual
    res_out = x if norm is None or norm.res_out is None else norm.res_out
    _launch_gemv_kernel[(cdiv(n, cfg.block_n), splits, cdiv(rows, cfg.block_b))](
        x, weight, bias, out, x if res is None else res, x if norm is None else norm.weight, res_out,
        rows, n, k, 0.0 if norm is None else norm.eps, *x.stride(), *weight.stride(), *s_o,
        *((0, 0) if res is None else res.stride()),
        HAS_BIAS=bias is not None, PARTIAL=out.dim() == 3, EVEN_K=k % (k_iters * cfg.block_k) == 0,
        K_ITERS=k_iters, BLOCK_B=cfg.block_b, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
        NORM=norm is not None, HAS_RESIDUAL=res is not None,
        STORE_RESIDUAL=norm is not None and norm.res_out is not None, num_warps=cfg.num_warps,
    )
    return out


def _reduce_tiles(x: torch.Tensor, n: int, block_b: int) -> tuple[int, int]:
    """(BLOCK_N, num_warps) of the summing kernels."""
    if x.device.type != "cuda":
        return 8, 1
    return min(256, max(16, next_power_of_2(n))), 2 if block_b * n > 512 else 1


def _check(fn: str, x, weight, name: str, inputs) -> None:
    if x.dim() != 2:
        raise InputError(f"{fn}: x has shape {tuple(x.shape)}; expected [B, K]")
    if weight.dim() != 2 or weight.shape[1] != x.shape[1]:
        raise InputError(f"{fn}: {name} has shape {tuple(weight.shape)}; expected [N, {x.shape[1]}] (K of x)")
    if x.shape[1] == 0:
        raise InputError(f"{fn}: K = 0 (x has shape {tuple(x.shape)}); pass at least one input feature")
    for label, X in inputs:
        check_tensor(fn, label, X, None, x.device)
        check_no_grad(fn, label, X, "F.linear")
    if weight.dtype != x.dtype:
        raise InputError(f"{fn}: {name} is {weight.dtype} but x is {x.dtype}; pass both in one dtype "
                         "(as F.linear needs)")
    if x.device.type == "cpu" and not triton.knobs.runtime.interpret:
        raise InputError(f"{fn}: inputs are on the CPU; move them to CUDA or use the *_ref functions")


def gemv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, config: GemvConfig | None = None
) -> torch.Tensor:
    """y = x @ weight^T (+ bias) for a few rows of x, as ``F.linear``: fp32 accumulation, output in x's dtype.

    Fastest at B <= 8 (one pass over the weight); more rows are served 8 at a time, each block reading the
    weight again, so large B belongs to F.linear. Inference only: inputs that require grad are refused.

    Args:
        x: [B, K] float32, float16 or bfloat16 (any strides).
        weight: [N, K] in x's dtype (an nn.Linear weight; any strides, unit stride along K is fastest).
        bias: [N] optional, any float dtype (added in fp32).
        config: launch shape (``GemvConfig``); ``gemv_config``'s default for the shape when None.

    Returns:
        y [B, N] in x's dtype.
    """
    fn = "gemv"
    _check(fn, x, weight, "weight", (("x", x), ("weight", weight), ("bias", bias)))
    rows, k = x.shape
    n = weight.shape[0]
    if bias is not None and tuple(bias.shape) != (n,):
        raise InputError(f"{fn}: bias has shape {tuple(bias.shape)}; expected [{n}]")
    if rows == 0 or n == 0:
        return torch.empty(rows, n, device=x.device, dtype=x.dtype)
    return gemv_rows(x, weight, bias, config or gemv_config(rows, n, k, weight.element_size(), x.device))


def gemv_rows(x, weight, bias, cfg: GemvConfig, norm: NormArgs | None = None) -> torch.Tensor:
    """y [B, N] in weight's dtype on checked inputs: one launch, or two where K is split (the partials summed
    in a fixed order)."""
    out = _gemv_launch(x, weight, bias, cfg, partial=False, norm=norm)
    if out.dim() == 2:
        return out
    rows, n = out.shape[1:]
    part, y = out, fresh(torch.empty(rows, n, device=x.device, dtype=weight.dtype))
    block_n, warps = _reduce_tiles(x, n, cfg.block_b)
    block_b = min(MAX_BLOCK_B, next_power_of_2(rows))
    _launch_split_sum_kernel[(cdiv(n, block_n), cdiv(rows, block_b))](
        part, bias, y, rows, n, part.shape[0], part.stride(0), part.stride(1), *y.stride(),
        HAS_BIAS=bias is not None, BLOCK_B=block_b, BLOCK_N=block_n, num_warps=warps,
    )
    return y


def gemv_x_dt(
    x: torch.Tensor, x_proj_weight: torch.Tensor, dt_proj_weight: torch.Tensor, *,
    config: GemvConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A Mamba step's x_proj and dt_proj in two launches, as ``gemv_x_dt_ref``: x_dbl = x @ Wx^T, then
    dt = x_dbl[:, :R] @ Wdt^T from x_dbl rounded to x's dtype (no dt bias: the state update adds it).

    Args:
        x: [B, E] float32, float16 or bfloat16.
        x_proj_weight: [R + 2N, E] in x's dtype.
        dt_proj_weight: [E2, R] in x's dtype, R <= 256 (E2 = E in a Mamba block).
        config: launch shape of the x_proj pass (its partials are always summed by the second kernel).

    Returns:
        x_dbl [B, R + 2N] and dt [B, E2], both in x's dtype.
    """
    fn = "gemv_x_dt"
    _check(fn, x, x_proj_weight, "x_proj_weight",
           (("x", x), ("x_proj_weight", x_proj_weight), ("dt_proj_weight", dt_proj_weight)))
    rows, k = x.shape
    n1 = x_proj_weight.shape[0]
    if dt_proj_weight.dim() != 2 or not 0 < dt_proj_weight.shape[1] <= min(n1, MAX_RANK):
        raise InputError(f"{fn}: dt_proj_weight has shape {tuple(dt_proj_weight.shape)}; expected [E2, R] with "
                         f"1 <= R <= {min(n1, MAX_RANK)} (x_proj's output width, and the kernel's limit)")
    if dt_proj_weight.dtype != x.dtype:
        raise InputError(f"{fn}: dt_proj_weight is {dt_proj_weight.dtype} but x is {x.dtype}; pass both in one "
                         "dtype")
    n2, rank = dt_proj_weight.shape
    x_dbl = fresh(torch.empty(rows, n1, device=x.device, dtype=x.dtype))
    dt = fresh(torch.empty(rows, n2, device=x.device, dtype=x.dtype))
    if rows == 0:
        return x_dbl, dt
    sum_dt(x_proj_partials(x, x_proj_weight, config), dt_proj_weight, x_dbl, dt)
    return x_dbl, dt


def x_proj_partials(x: torch.Tensor, x_proj_weight: torch.Tensor, config: GemvConfig | None = None) -> torch.Tensor:
    """x_proj's split-K fp32 partials [S, B, R + 2N] of x @ x_proj_weight^T on checked inputs (one launch): what
    ``sum_dt`` and the fused decode update sum up, in a fixed order."""
    rows, k = x.shape
    cfg = config or gemv_config(rows, x_proj_weight.shape[0], k, x_proj_weight.element_size(), x.device,
                                summed=True)
    return _gemv_launch(x, x_proj_weight, None, cfg, partial=True)


def sum_dt(part: torch.Tensor, dt_proj_weight: torch.Tensor, x_dbl: torch.Tensor, dt: torch.Tensor) -> None:
    """x_dbl [B, R + 2N] = the sum of x_proj's fp32 partials part [S, B, R + 2N]; dt [B, E2] = x_dbl[:, :R] (as
    stored) @ dt_proj_weight^T: one launch."""
    splits, rows, n1 = part.shape
    n2, rank = dt_proj_weight.shape
    block_b = min(MAX_BLOCK_B, next_power_of_2(rows))
    block_r = max(16, next_power_of_2(rank))
    if part.device.type == "cuda":
        block_n2 = max(1, min(next_power_of_2(n2), 2 * ACC_BUDGET // (block_b * block_r)))
        sms = _sm_count(part.device.index if part.device.index is not None else torch.cuda.current_device())
        while block_n2 > 1 and cdiv(n2, block_n2) * cdiv(rows, block_b) < sms:
            block_n2 //= 2
        block_n1, warps = min(128, max(16, next_power_of_2(n1))), 4
    else:
        block_n2, block_n1, warps = 16, 16, 1
    _launch_split_sum_dt_kernel[(cdiv(n2, block_n2), cdiv(rows, block_b))](
        part, x_dbl, dt_proj_weight, dt, rows, n1, rank, n2, splits, part.stride(0), part.stride(1),
        *x_dbl.stride(), *dt_proj_weight.stride(), *dt.stride(),
        BLOCK_B=block_b, BLOCK_N1=block_n1, BLOCK_R=block_r, BLOCK_N2=block_n2, num_warps=warps,
    )
