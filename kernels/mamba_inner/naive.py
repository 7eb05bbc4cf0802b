"""Reference inner Mamba-1 block: the per-op kernels composed under plain autograd (obviously correct)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seqssm.kernels.causal_conv1d.naive import causal_conv1d_ref
from seqssm.kernels.selective_scan.naive import selective_scan_ref


def mamba_inner_ref(
    hidden: torch.Tensor,
    in_proj_weight: torch.Tensor,
    in_proj_bias: torch.Tensor | None,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
    x_proj_weight: torch.Tensor,
    dt_proj_weight: torch.Tensor,
    dt_proj_bias: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor,
    out_proj_weight: torch.Tensor,
    out_proj_bias: torch.Tensor | None,
    *,
    conv_state: torch.Tensor | None = None,
    ssm_state: torch.Tensor | None = None,
    return_final_states: bool = False,
    scan=selective_scan_ref,
    conv=causal_conv1d_ref,
):
    """out = out_proj(scan(SiLU(conv(x)), Δ, A, B, C, D, z)) with x, z = in_proj(hidden).

    Shapes: B batch, L length, M d_model, E d_inner, N d_state, R dt_rank, W d_conv.

    Args:
        hidden: [B, L, M]. in_proj_weight [2E, M], x_proj_weight [R + 2N, E], dt_proj_weight [E, R],
            out_proj_weight [M, E], biases [2E] / [M] or None; conv_weight [E, W], conv_bias [E] or None;
            dt_proj_bias [E] (goes in as the scan's delta_bias, softplus on); A [E, N] (negative), D [E].
        conv_state: [B, E, W - 1] the conv inputs before position 0; ssm_state: [B, E, N] fp32 the scan state
            before position 0 (zeros when None). Both get gradients.
        return_final_states: also return the two states after the last position.
        scan, conv: the selective scan and causal conv1d to compose (same signatures as the *_ref ones).

    Returns:
        out [B, L, M]; with ``return_final_states`` also conv_state [B, E, W - 1] and ssm_state [B, E, N] fp32.
    """
    dt_rank, d_state = dt_proj_weight.shape[1], A.shape[1]
    xz = F.linear(hidden, in_proj_weight, in_proj_bias).transpose(1, 2)  # [B, 2E, L]
    x, z = xz.chunk(2, dim=1)
    x = conv(x, conv_weight, conv_bias, initial_state=conv_state, return_final_state=return_final_states,
             activation="silu")
    if return_final_states:
        x, conv_final = x
    x_dbl = F.linear(x.transpose(1, 2), x_proj_weight)  # [B, L, R + 2N]
    dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
    dt = F.linear(dt, dt_proj_weight).transpose(1, 2)  # [B, E, L]
    y = scan(x, dt, A, B.transpose(1, 2), C.transpose(1, 2), D.float(), z=z, delta_bias=dt_proj_bias.float(),
             delta_softplus=True, initial_state=ssm_state, return_final_state=return_final_states)
    if return_final_states:
        y, ssm_final = y
    out = F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)
    return (out, conv_final, ssm_final) if return_final_states else out
