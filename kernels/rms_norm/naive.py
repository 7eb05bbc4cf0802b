"""Residual add + RMSNorm in plain PyTorch: the reference the Triton kernels are tested against.

Also the model's own unfused path (``seqssm.models.norm`` re-exports it). Statistics in at least fp32:
float64 inputs stay float64, which gives the tests an exact-enough baseline for the fp32 kernels.
"""

from __future__ import annotations

import torch


def summed_residual_dtype(x: torch.Tensor, residual: torch.Tensor | None, residual_in_fp32: bool) -> torch.dtype:
    """The summed residual's dtype: x's and residual's promoted, at least fp32 with ``residual_in_fp32``. One
    rule for the reference and every kernel that writes the residual (rms_norm, gemv's add_norm_gemv)."""
    dtype = x.dtype if residual is None else torch.promote_types(x.dtype, residual.dtype)
    return torch.promote_types(dtype, torch.float32) if residual_in_fp32 else dtype


def add_rms_norm_ref(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float = 1e-5,
    residual_in_fp32: bool = True,
    *,
    rc_halves: bool = False,
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """residual ← x + residual; return (rms_norm(residual) · weight, residual).

    Args:
        x: [..., D]; residual: [..., D] or None; weight: [D] ([D / 2] with ``rc_halves``: each half of the
            last dim normalised on its own, the first scaled by weight, the second by weight.flip(0)).
        residual_in_fp32: keep the summed residual in (at least) fp32.
        out_dtype: dtype of the normed output (default: weight's).

    Returns:
        normed [..., D] in ``out_dtype``, residual [..., D].
    """
    dtype = summed_residual_dtype(x, residual, residual_in_fp32)
    # Summed in the residual's dtype: with residual_in_fp32 two bf16 inputs add exactly, as the kernel does.
    residual = x.to(dtype) if residual is None else x.to(dtype) + residual.to(dtype)
    acc = torch.promote_types(residual.dtype, torch.float32)
    s = residual.to(acc)
    w = weight.to(acc)
    if rc_halves:
        s = s.unflatten(-1, (2, -1))  # [..., 2, H]
        w = torch.stack([w, w.flip(0)])
    out = s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + eps) * w
    if rc_halves:
        out = out.flatten(-2)
    return out.to(weight.dtype if out_dtype is None else out_dtype), residual
