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

