"""One decoding step of the selective scan in Triton, updating the [B, D, N] state in place.

A program owns a [BLOCK_D, N] tile of one sequence's state: it reads the state once, applies
h <- exp(Δ A) h + Δ B x, writes it back and returns y = C·h + D x, gated by SiLU(z). No backward: this is
the inference path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from seqssm.errors import InputError
from seqssm.kernels.common import LOG2E, check_tensor, fresh, softplus
from seqssm.kernels.host import DirectLauncher, cdiv, next_power_of_2


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

    h_ptrs = state_ptr + pid_b * s_h_b + offs_d[:, None] * s_h_d + offs_n[None, :] * s_h_n
    h = tl.load(h_ptrs, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + pid_b * s_x_b + offs_d * s_x_d, mask=mask_d, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + pid_b * s_dt_b + offs_d * s_dt_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if SOFTPLUS:
        dt = softplus(dt)
    A = tl.load(A_ptr + offs_d[:, None] * s_A_d + offs_n[None, :] * s_A_n, mask=mask, other=0.0)
    B_ptrs = B_ptr + pid_b * s_B_b + (offs_d // b_cpg)[:, None] * s_B_g + offs_n[None, :] * s_B_n
    B = tl.load(B_ptrs, mask=mask, other=0.0).to(tl.float32)
    C_ptrs = C_ptr + pid_b * s_C_b + (offs_d // c_cpg)[:, None] * s_C_g + offs_n[None, :] * s_C_n
    C = tl.load(C_ptrs, mask=mask, other=0.0).to(tl.float32)

    h = tl.exp2(dt[:, None] * A.to(tl.float32) * LOG2E) * h + (dt * x)[:, None] * B
    tl.store(h_ptrs, h.to(state_ptr.dtype.element_ty), mask=mask)
    y = tl.sum(h * C, axis=1)
    if HAS_D:
        y += x * tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + pid_b * s_z_b + offs_d * s_z_d, mask=mask_d, other=0.0).to(tl.float32)
        y *= z * tl.sigmoid(z)
    tl.store(y_ptr + pid_b * s_y_b + offs_d * s_y_d, y.to(y_ptr.dtype.element_ty), mask=mask_d)


# Launched through the compiled kernel after the first launch (kernels/host.py): host time counts at short L.
_launch_selective_state_update_fwd_kernel = DirectLauncher(_selective_state_update_fwd_kernel)


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
