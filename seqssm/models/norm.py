"""RMSNorm and the pre-norm residual add of a Mamba block (mamba_ssm's fused add-norm, unfused)."""

from __future__ import annotations

import torch
from torch import nn

from seqssm.kernels.rms_norm.naive import add_rms_norm_ref


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5, *, rc_halves: bool = False) -> torch.Tensor:
    """x / sqrt(mean(x²) + eps) · weight over the last dim, computed in fp32.

    With ``rc_halves`` (reverse-complement parameter sharing, Caduceus-PS) x holds two strands in halves
    [..., 2H]: each half is normalised on its own, the first scaled by ``weight`` [H], the second by
    ``weight`` with its channels reversed, which is the same norm applied to the channel-flipped strand.

    Args:
        x: [..., D]; weight: [D] (or [D / 2] with ``rc_halves``).

    Returns:
        [..., D] in weight's dtype (the dtype the next matmul runs in).
    """
    return add_rms_norm_ref(x, None, weight, eps, residual_in_fp32=False, rc_halves=rc_halves)[0]


# residual ← x + residual; (rms_norm(residual), residual), the residual summed in fp32 when residual_in_fp32
# so that many low-precision layer outputs do not lose the small updates of deep layers (mamba_ssm's
# ``residual_in_fp32``). One reference for the model and the fused kernel's tests: kernels/rms_norm/naive.py.
add_rms_norm = add_rms_norm_ref


class RMSNorm(nn.Module):
    """Thin module over :func:`rms_norm`; the weight starts at one ([dim / 2] with ``rc_halves``)."""

    def __init__(self, dim: int, *, eps: float = 1e-5, rc_halves: bool = False, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.rc_halves = rc_halves
        self.weight = nn.Parameter(torch.ones(dim // 2 if rc_halves else dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps, rc_halves=self.rc_halves)

    def extra_repr(self) -> str:
        halves = ", rc_halves=True" if self.rc_halves else ""
        return f"{self.weight.shape[0]}, eps={self.eps}{halves}"
