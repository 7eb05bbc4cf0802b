"""RMSNorm and the pre-norm residual add of a Mamba block (mamba_ssm's fused add-norm, unfused)."""

from __future__ import annotations

import torch
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """x / sqrt(mean(x²) + eps) · weight over the last dim, computed in fp32.

    Args:
        x: [..., D]; weight: [D].

    Returns:
        [..., D] in weight's dtype (the dtype the next matmul runs in).
    """
    xf = x.float()
    out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    return out.to(weight.dtype)


def add_rms_norm(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float = 1e-5,
    residual_in_fp32: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """residual ← x + residual; return (rms_norm(residual), residual).

    The residual stream is summed in fp32 when ``residual_in_fp32`` so that many low-precision layer
    outputs do not lose the small updates of deep layers (mamba_ssm's ``residual_in_fp32``).

    Args:
        x: [..., D] the previous mixer's output (or the embeddings); residual: [..., D] or None (first block).
        weight: [D].

    Returns:
        normed [..., D] in weight's dtype, residual [..., D] (fp32 when ``residual_in_fp32``).
    """
    residual = x if residual is None else x + residual
    if residual_in_fp32:
        residual = residual.float()
    return rms_norm(residual, weight, eps), residual


class RMSNorm(nn.Module):
    """Thin module over :func:`rms_norm`; the weight starts at one."""

    def __init__(self, dim: int, *, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
