"""One decoding step of the selective scan in Triton, updating the [B, D, N] state in place.

A program owns a [BLOCK_D, N] tile of one sequence's state: it reads the state once, applies
h <- exp(Δ A) h + Δ B x, writes it back and returns y = C·h + D x, gated by SiLU(z). No backward: this is
the inference path.

``selective_state_update_x_dt`` is a Mamba-1 step's x_proj, dt_proj and update in two launches (the split-K
x_proj partials, then one kernel): each update program sums the partials it needs (dt's R columns, B, C) in the
order ``sum_dt`` does, rounds them as the stored x_dbl is rounded, and takes Δ for its channels from its rows of
dt_proj's weight, so at batch 1 the step saves the launch (and the round trip) of the summing kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from seqssm.errors import InputError
from seqssm.kernels.common import LOG2E, check_no_grad, check_tensor, fresh, softplus
from seqssm.kernels.gemv.triton import MAX_RANK, GemvConfig, _split_sum, x_proj_partials
from seqssm.kernels.host import DirectLauncher, cdiv, next_power_of_2


@triton.jit
def update_tile(
    state_ptr, A_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, pid_b, offs_d, offs_n, mask_d, mask, x, dt, B, C,
    s_h_b, s_h_d, s_h_n, s_A_d, s_A_n, s_z_b, s_z_d, s_y_b, s_y_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
):
    """The update of one [BLOCK_D, N] state tile of row ``pid_b`` from fp32 x, dt [BLOCK_D] (before the bias
    and softplus) and B, C ([BLOCK_D, N] or [1, N]): h <- exp(Δ A) h + Δ B x in place, then stores
    y = (C·h + D x) · SiLU(z). Shared by the plain update and the one fused with x_proj's sum and dt_proj."""
    h_ptrs = state_ptr + pid_b * s_h_b + offs_d[:, None] * s_h_d + offs_n[None, :] * s_h_n
    h = tl.load(h_ptrs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if SOFTPLUS:
        dt = softplus(dt)
    A = tl.load(A_ptr + offs_d[:, None] * s_A_d + offs_n[None, :] * s_A_n, mask=mask, other=0.0)
    h = tl.exp2(dt[:, None] * A.to(tl.float32) * LOG2E) * h + (dt * x)[:, None] * B
    tl.store(h_ptrs, h.to(state_ptr.dtype.element_ty), mask=mask)
    y = tl.sum(h * C, axis=1)
    if HAS_D:
        y += x * tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + pid_b * s_z_b + offs_d * s_z_d, mask=mask_d, other=0.0).to(tl.float32)
        y *= z * tl.sigmoid(z)
    tl.store(y_ptr + pid_b * s_y_b + offs_d * s_y_d, y.to(y_ptr.dtype.element_ty), mask=mask_d)


@triton.jit
def _selective_state_update_fwd_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr,
    dim, n_state, b_cpg, c_cpg,
    s_h_b, s_h_d, s_h_n,
    s_x_b, s_x_d,
    s_dt_b, s_dt_d,
    s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n,
    s_C_b, s_C_g, s_C_n,
    s_z_b, s_z_d,
    s_y_b, s_y_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, N_PAD: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, N_PAD)
    mask_d = offs_d < dim
    mask = mask_d[:, None] & (offs_n[None, :] < n_state)

    x = tl.load(x_ptr + pid_b * s_x_b + offs_d * s_x_d, mask=mask_d, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + pid_b * s_dt_b + offs_d * s_dt_d, mask=mask_d, other=0.0).to(tl.float32)
    B_ptrs = B_ptr + pid_b * s_B_b + (offs_d // b_cpg)[:, None] * s_B_g + offs_n[None, :] * s_B_n
    B = tl.load(B_ptrs, mask=mask, other=0.0).to(tl.float32)
    C_ptrs = C_ptr + pid_b * s_C_b + (offs_d // c_cpg)[:, None] * s_C_g + offs_n[None, :] * s_C_n
    C = tl.load(C_ptrs, mask=mask, other=0.0).to(tl.float32)
    update_tile(state_ptr, A_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, pid_b, offs_d, offs_n, mask_d, mask, x, dt, B, C,
                s_h_b, s_h_d, s_h_n, s_A_d, s_A_n, s_z_b, s_z_d, s_y_b, s_y_d, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS)


@triton.jit
def _x_dt_state_update_kernel(
    state_ptr, x_ptr, part_ptr, w_ptr, A_ptr, D_ptr, z_ptr, bias_ptr, y_ptr,
    dim, n_state, rank, splits,
    s_h_b, s_h_d, s_h_n, s_x_b, s_x_d, s_p_s, s_p_b, s_w_d, s_w_r, s_A_d, s_A_n, s_z_b, s_z_d, s_y_b, s_y_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, N_PAD: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """x_dbl = sum of x_proj's partials part [S, B, R + 2N] (unit stride along the last dim), rounded to x's
    dtype; dt = x_dbl[:R] @ w^T for this program's channels, rounded likewise; then the update of ``update_tile``
    with B = x_dbl[R : R + N], C = x_dbl[R + N :]."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, N_PAD)
    offs_r = tl.arange(0, BLOCK_R)
    mask_d, mask_n, mask_r = offs_d < dim, offs_n < n_state, offs_r < rank
    mask = mask_d[:, None] & mask_n[None, :]
    row = pid_b + tl.arange(0, 1)  # the partials' row, as a one-row block
    stored = x_ptr.dtype.element_ty  # the dtype of x_dbl and dt on the unfused path
    xr = _split_sum(part_ptr, row, offs_r, mask_r[None, :], splits, s_p_s, s_p_b, 1, BLOCK_R)
    xr = xr.to(stored).to(tl.float32)  # [1, BLOCK_R]
    B = _split_sum(part_ptr, row, rank + offs_n, mask_n[None, :], splits, s_p_s, s_p_b, 1, N_PAD)
    C = _split_sum(part_ptr, row, rank + n_state + offs_n, mask_n[None, :], splits, s_p_s, s_p_b, 1, N_PAD)
    B, C = B.to(stored).to(tl.float32), C.to(stored).to(tl.float32)  # [1, N_PAD]
    w = tl.load(w_ptr + offs_d.to(tl.int64)[:, None] * s_w_d + offs_r[None, :] * s_w_r,
                mask=mask_d[:, None] & mask_r[None, :], other=0.0).to(tl.float32)
    dt = tl.sum(w * xr, axis=1).to(stored).to(tl.float32)  # [BLOCK_D]
    x = tl.load(x_ptr + pid_b * s_x_b + offs_d * s_x_d, mask=mask_d, other=0.0).to(tl.float32)
    update_tile(state_ptr, A_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, pid_b, offs_d, offs_n, mask_d, mask, x, dt, B, C,
                s_h_b, s_h_d, s_h_n, s_A_d, s_A_n, s_z_b, s_z_d, s_y_b, s_y_d, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS)


# Launched through the compiled kernel after the first launch (kernels/host.py): host time counts at short L.
_launch_selective_state_update_fwd_kernel = DirectLauncher(_selective_state_update_fwd_kernel)
_launch_x_dt_state_update_kernel = DirectLauncher(_x_dt_state_update_kernel)


def _bc_view(X: torch.Tensor) -> tuple[int, tuple[int, int, int]]:
    """(groups, strides as (b, g, n)) of a [B, N] or [B, G, N] tensor."""
    if X.dim() == 2:
        return 1, (X.stride(0), 0, X.stride(1))
    return X.shape[1], tuple(X.stride())


def _selective_state_update_fwd(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, block_d=None):
    batch, dim = x.shape
    n_state = A.shape[1]
    n_pad = next_power_of_2(n_state)
    block_d = block_d or max(1, min(next_power_of_2(dim), 2048 // n_pad))
    b_groups, sB = _bc_view(B)
    c_groups, sC = _bc_view(C)
    y = fresh(torch.empty_like(x))
    zz = z if z is not None else x
    _launch_selective_state_update_fwd_kernel[(batch, cdiv(dim, block_d))](
        state, x, dt, A, B, C, D, z, dt_bias, y,
        dim, n_state, dim // b_groups, dim // c_groups,
        *state.stride(), *x.stride(), *dt.stride(), *A.stride(), *sB, *sC, *zz.stride(), *y.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None, SOFTPLUS=dt_softplus,
        BLOCK_D=block_d, N_PAD=n_pad, num_warps=4,
    )
    return y


def selective_state_update_fused(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
) -> torch.Tensor:
    """One decoding step of the selective scan; updates ``state`` in place, as ``selective_state_update_ref``.

    Args:
        state: [B, D, N] SSM state (fp32 normally), overwritten with the new state.
        x: [B, D] input at this position. dt: [B, D] step size Δ (before ``dt_bias`` and softplus).
        A: [D, N]. B, C: [B, N] or grouped [B, G, N].
        D: [D] optional; z: [B, D] optional gate; dt_bias: [D] optional.

    Returns:
        y [B, D] in x's dtype.
    """
    fn = "selective_state_update_fused"
    if x.dim() != 2:
        raise InputError(f"{fn}: x has shape {tuple(x.shape)}; expected [B, D]")
    batch, dim = x.shape
    if A.dim() != 2 or A.shape[0] != dim:
        raise InputError(f"{fn}: A has shape {tuple(A.shape)}; expected [D, N] with D = {dim}")
    n_state = A.shape[1]
    for name, X, shape in (("x", x, (batch, dim)), ("state", state, (batch, dim, n_state)),
                           ("dt", dt, (batch, dim)), ("A", A, (dim, n_state)), ("D", D, (dim,)),
                           ("z", z, (batch, dim)), ("dt_bias", dt_bias, (dim,))):
        check_tensor(fn, name, X, shape, x.device)
    for name, X in (("B", B), ("C", C)):
        groups = X.shape[1] if X.dim() == 3 else 1
        if X.dim() not in (2, 3) or groups == 0 or dim % groups:
            raise InputError(f"{fn}: {name} has shape {tuple(X.shape)}; expected [B, N] or [B, G, N] with G "
                             f"dividing D = {dim}")
        check_tensor(fn, name, X, (batch, n_state) if X.dim() == 2 else (batch, groups, n_state), x.device)
    if x.device.type == "cpu" and not triton.knobs.runtime.interpret:
        raise InputError(f"{fn}: inputs are on the CPU; move them to CUDA or use selective_state_update_ref")
    return _selective_state_update_fwd(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)


def selective_state_update_x_dt(
    state: torch.Tensor,
    x: torch.Tensor,
    x_proj_weight: torch.Tensor,
    dt_proj_weight: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    *,
    config: GemvConfig | None = None,
    block_d: int | None = None,
) -> torch.Tensor:
    """A Mamba-1 decode step's x_proj, dt_proj and state update (with D skip and z gate) in two launches, as
    ``selective_state_update_x_dt_ref``; updates ``state`` in place. Inference only.

    x_dbl = x @ x_proj_weight^T is split as [dt_low (R), B (N), C (N)]; Δ = dt_low @ dt_proj_weight^T (before
    ``dt_bias`` and softplus), both rounded to x's dtype as the unfused path stores them, so the two agree.

    Args:
        state: [B, E, N] SSM state (fp32 normally), overwritten with the new state.
        x: [B, E] the conv's output at this position (any strides).
        x_proj_weight: [R + 2N, E] in x's dtype; dt_proj_weight: [E, R] in x's dtype, R <= 256.
        A: [E, N]; D: [E] optional; z: [B, E] optional gate; dt_bias: [E] optional.
        config: launch shape of the x_proj partials (``GemvConfig``); block_d: channels an update program owns.

    Returns:
        y [B, E] in x's dtype.
    """
    fn = "selective_state_update_x_dt"
    if x.dim() != 2 or x.shape[1] == 0:
        raise InputError(f"{fn}: x has shape {tuple(x.shape)}; expected [B, E] with E >= 1")
    batch, dim = x.shape
    if A.dim() != 2 or A.shape[0] != dim:
        raise InputError(f"{fn}: A has shape {tuple(A.shape)}; expected [E, N] with E = {dim}")
    n_state = A.shape[1]
    if dt_proj_weight.dim() != 2 or dt_proj_weight.shape[0] != dim or not 0 < dt_proj_weight.shape[1] <= MAX_RANK:
        raise InputError(f"{fn}: dt_proj_weight has shape {tuple(dt_proj_weight.shape)}; expected [{dim}, R] with "
                         f"1 <= R <= {MAX_RANK}")
    rank = dt_proj_weight.shape[1]
    for name, X, shape in (("x", x, None), ("state", state, (batch, dim, n_state)),
                           ("x_proj_weight", x_proj_weight, (rank + 2 * n_state, dim)),
                           ("dt_proj_weight", dt_proj_weight, None), ("A", A, None), ("D", D, (dim,)),
                           ("z", z, (batch, dim)), ("dt_bias", dt_bias, (dim,))):
        check_tensor(fn, name, X, shape, x.device)
        check_no_grad(fn, name, X)
    for name, X in (("x_proj_weight", x_proj_weight), ("dt_proj_weight", dt_proj_weight)):
        if X.dtype != x.dtype:
            raise InputError(f"{fn}: {name} is {X.dtype} but x is {x.dtype}; pass both in one dtype")
    if x.device.type == "cpu" and not triton.knobs.runtime.interpret:
        raise InputError(f"{fn}: inputs are on the CPU; move them to CUDA or use selective_state_update_x_dt_ref")
    y = fresh(torch.empty_like(x))
    if batch == 0:
        return y
    part = x_proj_partials(x, x_proj_weight, config)
    if part.stride(-1) != 1:
        part = part.contiguous()
    n_pad = next_power_of_2(n_state)
    block_r = next_power_of_2(rank)
    # A guess until bench_gemv times it: tiles of ~4096 fp32 elements (the dt_proj rows or the state), 24
    # programs a row at E = 1536.
    block_d = block_d or max(1, min(next_power_of_2(dim), 4096 // max(n_pad, block_r)))
    zz = z if z is not None else x
    _launch_x_dt_state_update_kernel[(batch, cdiv(dim, block_d))](
        state, x, part, dt_proj_weight, A, D, z, dt_bias, y,
        dim, n_state, rank, part.shape[0],
        *state.stride(), *x.stride(), part.stride(0), part.stride(1), *dt_proj_weight.stride(), *A.stride(),
        *zz.stride(), *y.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None, SOFTPLUS=dt_softplus,
        BLOCK_D=block_d, N_PAD=n_pad, BLOCK_R=block_r, num_warps=4,
    )
    return y
