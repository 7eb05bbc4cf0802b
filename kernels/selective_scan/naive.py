"""Plain PyTorch references for the Mamba-1 selective scan: an fp32 loop over positions.

These are the ground truth every faster path is tested against. They follow mamba_ssm's
``selective_scan_ref`` argument layout and semantics (real-valued A only), plus an ``initial_state``
that carries gradients, so that a sequence split in two gives the same result as one pass, and ``seq_idx``
for packed sequences (mamba_ssm's Mamba-2 kernels take the same).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sequence_starts(seq_idx: torch.Tensor) -> torch.Tensor:
    """[B, L] bool: True where a packed sequence starts after position 0 (seq_idx differs from the position
    before). The state restarts from zero there; position 0 keeps the initial state."""
    starts = torch.zeros(seq_idx.shape, dtype=torch.bool, device=seq_idx.device)
    starts[:, 1:] = seq_idx[:, 1:] != seq_idx[:, :-1]
    return starts


def _expand_groups(X: torch.Tensor, dim: int) -> torch.Tensor:
    """[B, G, N, L] -> [B, D, N, L] by repeating each group D // G times."""
    return X.repeat_interleave(dim // X.shape[1], dim=1)


def selective_scan_ref(
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
):
    """Selective scan, one position at a time in fp32.

    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t;  y_t = C_t h_t + D u_t;  out = y · SiLU(z).

    Args:
        u: [B, D, L] input.
        delta: [B, D, L] step sizes Δ (before ``delta_bias`` and softplus).
        A: [D, N] state matrix (diagonal per channel, real, normally negative).
        B: [D, N] (time-invariant), [B, N, L] (per position) or [B, G, N, L] (grouped channels).
        C: same forms as B.
        D: [D] skip connection, optional.
        z: [B, D, L] gate, optional.
        delta_bias: [D] added to Δ before softplus, optional.
        delta_softplus: apply softplus to Δ (+ bias).
        initial_state: [B, D, N] state before position 0, optional (zeros when None).
        return_final_state: also return the state after the last position.
        seq_idx: [B, L] integer, packed sequences (a sequence is a run of one value in a row), optional: the
            state restarts from zero where the value changes, so the initial state reaches only a row's first
            sequence and the final state is that of its last.

    Returns:
        out [B, D, L] in u's dtype, and final_state [B, D, N] in fp32 when asked.
    """
    dtype_in = u.dtype
    u = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, length = u.shape
    A = A.float()
    B = B.float()
    C = C.float()
    if B.dim() == 4:
        B = _expand_groups(B, dim)
    if C.dim() == 4:
        C = _expand_groups(C, dim)

    if initial_state is None:
        h = u.new_zeros(batch, dim, A.shape[1])
    else:
        h = initial_state.float()
    deltaA = torch.exp(delta.unsqueeze(-1) * A[:, None, :])  # [B, D, L, N]
    if seq_idx is not None:
        # exp(Δ_t A) = 0 where a sequence starts: h_t = Δ_t B_t u_t, nothing before it survives.
        deltaA = torch.where(sequence_starts(seq_idx)[:, None, :, None], 0.0, deltaA)
    if B.dim() == 2:
        deltaB_u = (delta * u).unsqueeze(-1) * B[:, None, :]
    elif B.dim() == 3:
        deltaB_u = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)
    else:
        deltaB_u = (delta * u).unsqueeze(-1) * B.permute(0, 1, 3, 2)

    # unbind, not [:, :, t] indexing: each indexing step's backward would allocate a whole [B, D, L, N]
    # zero tensor, making the backward O(L^2)
    deltaA_t, deltaB_u_t = deltaA.unbind(2), deltaB_u.unbind(2)
    C_t = C.unbind(-1) if C.dim() > 2 else None
    ys = []
    for t in range(length):
        h = deltaA_t[t] * h + deltaB_u_t[t]
        if C.dim() == 2:
            y = (h * C).sum(-1)
        elif C.dim() == 3:
            y = (h * C_t[t][:, None, :]).sum(-1)
        else:
            y = (h * C_t[t]).sum(-1)
        ys.append(y)
    y = torch.stack(ys, dim=2) if ys else u.new_zeros(batch, dim, 0)
    out = y if D is None else y + u * D.float()[:, None]
    if z is not None:
        out = out * F.silu(z.float())
    out = out.to(dtype_in)
    return (out, h) if return_final_state else out


def selective_state_update_ref(
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
    """One decoding step of the selective scan; updates ``state`` in place.

    Args:
        state: [B, D, N] fp32 SSM state, overwritten with the new state.
        x: [B, D] input at this position.
        dt: [B, D] step size Δ (before ``dt_bias`` and softplus).
        A: [D, N].
        B, C: [B, N] or grouped [B, G, N].
        D: [D] optional; z: [B, D] optional gate; dt_bias: [D] optional.

    Returns:
        y [B, D] in x's dtype.
    """
    dtype_in = x.dtype
    xf = x.float()
    dt = dt.float()
    if dt_bias is not None:
        dt = dt + dt_bias.float()
    if dt_softplus:
        dt = F.softplus(dt)
    dim = x.shape[1]
    Bf, Cf = B.float(), C.float()
    if Bf.dim() == 3:
        Bf = Bf.repeat_interleave(dim // Bf.shape[1], dim=1)
    else:
        Bf = Bf[:, None, :]
    if Cf.dim() == 3:
        Cf = Cf.repeat_interleave(dim // Cf.shape[1], dim=1)
    else:
        Cf = Cf[:, None, :]
    dA = torch.exp(dt.unsqueeze(-1) * A.float())
    new_state = dA * state.float() + (dt * xf).unsqueeze(-1) * Bf
    state.copy_(new_state)
    y = (new_state * Cf).sum(-1)
    if D is not None:
        y = y + xf * D.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype_in)


def selective_state_update_x_dt_ref(
    state: torch.Tensor,
    x: torch.Tensor,
    x_proj_weight: torch.Tensor,
    dt_proj_weight: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
) -> torch.Tensor:
    """A Mamba-1 decode step's x_proj and dt_proj (``gemv_x_dt_ref``: x_dbl and Δ stored in x's dtype), then
    :func:`selective_state_update_ref` with B, C from x_dbl = [dt_low (R), B (N), C (N)]; updates ``state`` in
    place.

    Args:
        state: [B, E, N]; x: [B, E]; x_proj_weight: [R + 2N, E]; dt_proj_weight: [E, R]; A: [E, N];
        D: [E] optional; z: [B, E] optional; dt_bias: [E] optional.

    Returns:
        y [B, E] in x's dtype.
    """
    from seqssm.kernels.gemv.naive import gemv_x_dt_ref

    x_dbl, dt = gemv_x_dt_ref(x, x_proj_weight, dt_proj_weight)
    n_state = A.shape[1]
    _, B, C = torch.split(x_dbl, [dt_proj_weight.shape[1], n_state, n_state], dim=-1)
    return selective_state_update_ref(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
