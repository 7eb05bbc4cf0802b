"""Plain PyTorch references for the small-batch projections of a decode step (GEMV-shaped linears)."""

from __future__ import annotations

import torch


def gemv_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ weight^T (+ bias), accumulated in fp32 (float64 stays float64), returned in x's dtype.

    Args:
        x: [B, K]; weight: [N, K]; bias: [N] optional.

    Returns:
        y [B, N] in x's dtype.
    """
    compute = torch.promote_types(x.dtype, torch.float32)
    y = x.to(compute) @ weight.to(compute).T
    if bias is not None:
        y = y + bias.to(compute)
    return y.to(x.dtype)


def gemv_x_dt_ref(
    x: torch.Tensor, x_proj_weight: torch.Tensor, dt_proj_weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A Mamba step's x_proj then dt_proj (no bias: the state update adds it): x_dbl = x @ Wx^T, and
    dt = x_dbl[:, :R] @ Wdt^T from x_dbl as stored (rounded to x's dtype), as two F.linear calls would.

    Args:
        x: [B, E]; x_proj_weight: [R + 2N, E]; dt_proj_weight: [E2, R] (E2 = E in a Mamba block).

    Returns:
        x_dbl [B, R + 2N] and dt [B, E2], both in x's dtype.
    """
    x_dbl = gemv_ref(x, x_proj_weight)
    return x_dbl, gemv_ref(x_dbl[:, : dt_proj_weight.shape[1]], dt_proj_weight)


def add_norm_gemv_ref(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    residual_in_fp32: bool,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A Mamba block's residual add + RMSNorm (``add_rms_norm_ref``) then the mixer's in_proj (``gemv_ref``).

    Args:
        x: [B, K] (the previous layer's output); residual: [B, K] or None (the first layer); norm_weight: [K];
        residual_in_fp32: as ``add_rms_norm_ref``; weight: [N, K] in norm_weight's dtype; bias: [N] optional.

    Returns:
        y [B, N] in norm_weight's dtype (the normed input's), and the summed residual [B, K].
    """
    from seqssm.kernels.rms_norm.naive import add_rms_norm_ref

    normed, residual = add_rms_norm_ref(x, residual, norm_weight, eps, residual_in_fp32)
    return gemv_ref(normed, weight, bias), residual
