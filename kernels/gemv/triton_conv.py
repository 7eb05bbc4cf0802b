"""A Mamba decode step's conv update fused with x_proj (Triton), then x_proj's sum and dt_proj in one more launch.

x_proj needs every channel of the conv's output, and the conv update owns channel blocks: so each conv program
multiplies its block of channels by the matching columns of x_proj's weight and writes the fp32 partial sums
[E / BLOCK_D, B, R + 2N] (split-K by channel block, deterministic), which ``sum_dt`` adds up in a fixed order and
carries on into dt_proj. The conv, x_proj and dt_proj of a step cost two launches instead of three (or four).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from seqssm.errors import InputError
from seqssm.kernels.causal_conv1d.triton import conv_update_rows
from seqssm.kernels.common import check_tensor, fresh
from seqssm.kernels.gemv.triton import MAX_RANK, _check, sum_dt
from seqssm.kernels.host import DirectLauncher, cdiv, next_power_of_2


@triton.jit
def _conv_x_proj_kernel(
    x_ptr, state_ptr, cw_ptr, cb_ptr, out_ptr, w_ptr, part_ptr,
    dim, n1,
    s_x_b, s_x_d, s_s_b, s_s_d, s_s_w, s_cw_d, s_cw_k, s_o_b, s_o_d, s_w_n, s_w_d, s_p_s, s_p_b,
    W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, N_ITERS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < dim
    # The conv update, the one the plain decode step runs (stores the output, shifts the state in place).
    out = conv_update_rows(x_ptr, state_ptr, cw_ptr, cb_ptr, out_ptr, pid_b, offs_d, mask_d, s_x_b, s_x_d, s_s_b,
                           s_s_d, s_s_w, s_cw_d, s_cw_k, s_o_b, s_o_d, W, HAS_BIAS, SILU)
    # x_proj's partial over this block of channels, from the output as stored (what x_proj reads).
    xr = tl.where(mask_d, out.to(tl.float32), 0.0)
    for i in tl.static_range(N_ITERS):
        offs_n = i * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < n1
        w = tl.load(w_ptr + offs_n[:, None] * s_w_n + offs_d[None, :] * s_w_d,
                    mask=mask_n[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
        tl.store(part_ptr + pid_d * s_p_s + pid_b * s_p_b + offs_n, tl.sum(w * xr[None, :], axis=1), mask=mask_n)


_launch_conv_x_proj_kernel = DirectLauncher(_conv_x_proj_kernel)


def conv_x_dt(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
    x_proj_weight: torch.Tensor,
    dt_proj_weight: torch.Tensor,
    activation: str | None = "silu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A Mamba step's conv update, x_proj and dt_proj in two launches, as ``causal_conv1d_update_ref`` then
    ``gemv_x_dt_ref`` on its output; shifts ``conv_state`` in place. Inference only.

    Args:
        x: [B, E] the conv's input at this position (any strides: e.g. half of in_proj's output).
        conv_state: [B, E, W - 1] the previous W - 1 inputs, overwritten with the new ones.
        conv_weight: [E, W] with W in 2..4; conv_bias: [E] optional; activation: None or "silu".
        x_proj_weight: [R + 2N, E] in x's dtype; dt_proj_weight: [E2, R] in x's dtype, R <= 256.

    Returns:
        x_conv [B, E] (the conv's output), x_dbl [B, R + 2N] and dt [B, E2] (no dt bias), all in x's dtype.
    """
    fn = "conv_x_dt"
    _check(fn, x, x_proj_weight, "x_proj_weight",
           (("x", x), ("conv_state", conv_state), ("conv_weight", conv_weight), ("conv_bias", conv_bias),
            ("x_proj_weight", x_proj_weight), ("dt_proj_weight", dt_proj_weight)))
    rows, dim = x.shape
    if conv_weight.dim() != 2 or conv_weight.shape[0] != dim or not 2 <= conv_weight.shape[1] <= 4:
        raise InputError(f"{fn}: conv_weight has shape {tuple(conv_weight.shape)}; expected [{dim}, W], W in 2..4")
    width = conv_weight.shape[1]
    check_tensor(fn, "conv_state", conv_state, (rows, dim, width - 1), x.device)
    check_tensor(fn, "conv_bias", conv_bias, (dim,), x.device)
    if activation not in (None, "silu"):
        raise InputError(f"{fn}: activation must be None or 'silu', got {activation!r}")
    n1 = x_proj_weight.shape[0]
    if dt_proj_weight.dim() != 2 or not 0 < dt_proj_weight.shape[1] <= min(n1, MAX_RANK) \
            or dt_proj_weight.dtype != x.dtype:
        raise InputError(f"{fn}: dt_proj_weight is {dt_proj_weight.dtype} {tuple(dt_proj_weight.shape)}; expected "
                         f"{x.dtype} [E2, R] with 1 <= R <= {min(n1, MAX_RANK)}")
    x_conv = fresh(torch.empty(rows, dim, device=x.device, dtype=x.dtype))
    x_dbl = fresh(torch.empty(rows, n1, device=x.device, dtype=x.dtype))
    dt = fresh(torch.empty(rows, dt_proj_weight.shape[0], device=x.device, dtype=x.dtype))
    if rows == 0:
        return x_conv, x_dbl, dt
    if x.device.type == "cuda":  # 24 channel blocks of the 768 model's E = 1536; x_proj's 80 rows in 3 tiles
        block_d, block_n, warps = 64, 32, 4
    else:
        block_d, block_n, warps = 16, 16, 1
    block_n = min(block_n, max(16, next_power_of_2(n1)))
    splits = cdiv(dim, block_d)
    part = fresh(torch.empty(splits, rows, n1, device=x.device, dtype=torch.float32))
    _launch_conv_x_proj_kernel[(splits, rows)](
        x, conv_state, conv_weight, conv_bias, x_conv, x_proj_weight, part, dim, n1,
        *x.stride(), *conv_state.stride(), *conv_weight.stride(), *x_conv.stride(), *x_proj_weight.stride(),
        part.stride(0), part.stride(1),
        W=width, HAS_BIAS=conv_bias is not None, SILU=activation == "silu", N_ITERS=cdiv(n1, block_n),
        BLOCK_D=block_d, BLOCK_N=block_n, num_warps=warps,
    )
    sum_dt(part, dt_proj_weight, x_dbl, dt)
    return x_conv, x_dbl, dt
