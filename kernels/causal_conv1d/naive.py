"""Plain PyTorch references for the depthwise causal conv1d of a Mamba block."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_conv1d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    activation: str | None = None,
    *,
    seq_idx: torch.Tensor | None = None,
):
    """Depthwise causal convolution: out_t = sum_k weight[:, k] * x_{t - W + 1 + k} (+ bias).

    Args:
        x: [B, D, L] input.
        weight: [D, W] one filter per channel, W the width.
        bias: [D] optional.
        initial_state: [B, D, W - 1] the W - 1 inputs before position 0 (zeros when None).
        return_final_state: also return the last W - 1 inputs (the conv state for the next chunk).
        activation: None or "silu".
        seq_idx: [B, L] integer, packed sequences (a sequence is a run of one value in a row, as in
            ``selective_scan_ref``), optional: the window of position t holds only the inputs of t's own
            sequence (zeros before it starts), so the initial state reaches only a row's first sequence and the
            final state is that of its last (zeros where that sequence is shorter than W - 1).

    Returns:
        out [B, D, L] in x's dtype, and final_state [B, D, W - 1] in x's dtype when asked.
    """
    if activation not in (None, "silu"):
        raise ValueError(f"activation must be None or 'silu', got {activation!r}")
    if seq_idx is not None:
        return _causal_conv1d_packed_ref(x, weight, bias, initial_state, return_final_state, activation, seq_idx)
    dtype_in = x.dtype
    # fp32 at least; float64 stays float64 so that gradcheck can test this reference
    compute = torch.promote_types(x.dtype, torch.float32)
    dim, width = weight.shape
    if initial_state is None:
        initial_state = x.new_zeros(x.shape[0], dim, width - 1)
    xx = torch.cat([initial_state.to(x.dtype), x], dim=-1)  # [B, D, W - 1 + L]
    out = F.conv1d(
        xx.to(compute), weight.to(compute).unsqueeze(1), None if bias is None else bias.to(compute), groups=dim
    )
    if activation == "silu":
        out = F.silu(out)
    out = out.to(dtype_in)
    if return_final_state:
        return out, xx[:, :, xx.shape[-1] - (width - 1):].clone()
    return out


def _causal_conv1d_packed_ref(x, weight, bias, initial_state, return_final_state, activation, seq_idx):
    """causal_conv1d_ref with seq_idx: every tap masked explicitly to the inputs of its output's sequence."""
    dtype_in = x.dtype
    compute = torch.promote_types(x.dtype, torch.float32)
    batch, dim, length = x.shape
    width = weight.shape[1]
    if initial_state is None:
        initial_state = x.new_zeros(batch, dim, width - 1)
    xx = torch.cat([initial_state.to(x.dtype), x], dim=-1)  # [B, D, W - 1 + L]
    # run[b, t]: how many sequences start in row b at or before t (0 for the first); the W - 1 state entries
    # belong to the first sequence. A tap counts iff its input's run is its output's run.
    run = torch.zeros(batch, length, dtype=torch.long, device=x.device)
    run[:, 1:] = (seq_idx[:, 1:] != seq_idx[:, :-1]).long().cumsum(-1)
    run_xx = torch.cat([run.new_zeros(batch, width - 1), run], dim=-1)  # [B, W - 1 + L]
    same = run_xx.unfold(-1, width, 1) == run[:, :, None]  # [B, L, W]: tap k of position t reads xx[t + k]
    windows = xx.to(compute).unfold(-1, width, 1)  # [B, D, L, W]
    windows = torch.where(same[:, None], windows, 0.0)
    out = (windows * weight.to(compute)[None, :, None, :]).sum(-1)
    if bias is not None:
        out = out + bias.to(compute)[None, :, None]
    if activation == "silu":
        out = F.silu(out)
    out = out.to(dtype_in)
    if return_final_state:
        tail = xx[:, :, xx.shape[-1] - (width - 1):]
        keep = run_xx[:, run_xx.shape[-1] - (width - 1):] == run[:, -1:]  # [B, W - 1]: the last sequence's
        return out, torch.where(keep[:, None], tail, 0.0)
    return out


def causal_conv1d_update_ref(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """One decoding step of the causal conv1d; shifts ``conv_state`` in place.

    Args:
        x: [B, D] input at this position.
        conv_state: [B, D, W - 1] the previous W - 1 inputs, overwritten with the new ones.
        weight: [D, W]; bias: [D] optional; activation: None or "silu".

    Returns:
        out [B, D] in x's dtype.
    """
    if activation not in (None, "silu"):
        raise ValueError(f"activation must be None or 'silu', got {activation!r}")
    compute = torch.promote_types(x.dtype, torch.float32)
    window = torch.cat([conv_state, x.unsqueeze(-1).to(conv_state.dtype)], dim=-1)  # [B, D, W]
    out = (window.to(compute) * weight.to(compute)).sum(-1)
    if bias is not None:
        out = out + bias.to(compute)
    if activation == "silu":
        out = F.silu(out)
    conv_state.copy_(window[:, :, 1:])
    return out.to(x.dtype)
