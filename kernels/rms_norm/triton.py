"""Fused residual add + RMSNorm (Triton): the autograd Function and the checked public entry point."""

from __future__ import annotations

import torch
import triton

from seqssm.errors import InputError
from seqssm.kernels.rms_norm.naive import summed_residual_dtype
from seqssm.kernels.rms_norm.triton_bwd import add_rms_norm_bwd
from seqssm.kernels.rms_norm.triton_fwd import MAX_DIM, add_rms_norm_fwd

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _rows(X: torch.Tensor | None) -> torch.Tensor | None:
    """[..., D] as [M, D] with unit stride along D (a view when the layout allows, else a copy)."""
    if X is None:
        return None
    X = X.reshape(-1, X.shape[-1])
    return X if X.stride(-1) == 1 else X.contiguous()


class _AddRMSNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, weight, eps, residual_dtype, out_dtype, rc_halves):
        shape = x.shape
        x2, res2 = _rows(x), _rows(residual)
        weight = weight.contiguous()
        out, res_out, rstd = add_rms_norm_fwd(x2, res2, weight, eps, residual_dtype, out_dtype, rc_halves)
        # Only the sum and rstd are kept: the backward recomputes the normalised rows from them.
        ctx.save_for_backward(res_out, weight, rstd)
        ctx.x_dtype = x.dtype
        ctx.residual_dtype = None if residual is None else residual.dtype
        ctx.rc_halves = rc_halves
        ctx.set_materialize_grads(False)
        return out.view(shape), res_out.view(shape)

    @staticmethod
    def backward(ctx, dout, dres_out):
        res_out, weight, rstd = ctx.saved_tensors
        if dout is None and dres_out is None:
            return None, None, None, None, None, None, None
        shape = dout.shape if dout is not None else dres_out.shape
        # An unused normed output (only the residual stream read on) still needs the kernel for dweight = 0
        # and the pass-through of dres_out; zeros are the rare case, not worth a kernel variant.
        dy = _rows(dout) if dout is not None else torch.zeros_like(res_out)
        dx, dres, dw = add_rms_norm_bwd(res_out, weight, rstd, dy, _rows(dres_out), ctx.x_dtype,
                                        ctx.residual_dtype, ctx.rc_halves)
        return dx.view(shape), None if dres is None else dres.view(shape), dw, None, None, None, None


def add_rms_norm_fused(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float = 1e-5,
    residual_in_fp32: bool = True,
    *,
    rc_halves: bool = False,
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """residual ← x + residual; return (rms_norm(residual) · weight, residual), as ``add_rms_norm_ref``.

    One kernel reads x and residual once and writes normed and the summed residual; statistics are fp32. The
    backward adds the incoming gradient of the returned residual (read by the next block) to the norm's.

    Args:
        x: [..., D] float32, float16 or bfloat16 (the previous mixer's output, or the embeddings), D <= 16384.
        residual: [..., D] or None (the first block).
        weight: [D]; with ``rc_halves`` [D / 2]: the two halves of D (the two strands of an RC-equivariant
            model) are normalised each on its own, the first scaled by weight, the second by weight.flip(0).
        eps: added to mean(x²) inside the square root.
        residual_in_fp32: keep the summed residual in fp32 (else in x's and residual's promoted dtype).
        out_dtype: dtype of normed (default weight's); under autocast pass the matmul dtype (bf16), so that the
            next Linear reads it without a cast.

    Returns:
        normed [..., D] in ``out_dtype``; residual [..., D] (x itself when residual is None and the dtype
        stays x's).
    """
    fn = "add_rms_norm_fused"
    if x.dim() == 0:
        raise InputError(f"{fn}: x is a scalar; expected [..., D]")
    dim = x.shape[-1]
    for name, X in (("x", x), ("residual", residual), ("weight", weight)):
        if X is None:
            continue
        if X.dtype not in _FLOATS:
            raise InputError(f"{fn}: {name} has dtype {X.dtype}; use float32, float16 or bfloat16")
        if X.device != x.device:
            raise InputError(f"{fn}: {name} is on {X.device} but x is on {x.device}; move all inputs to one device")
    if residual is not None and residual.shape != x.shape:
        raise InputError(f"{fn}: residual has shape {tuple(residual.shape)}; expected x's {tuple(x.shape)}")
    if rc_halves and dim % 2:
        raise InputError(f"{fn}: rc_halves needs an even last dim, got D = {dim}")
    expected = dim // 2 if rc_halves else dim
    if weight.shape != (expected,):
        halves = " (D / 2 with rc_halves)" if rc_halves else ""
        raise InputError(f"{fn}: weight has shape {tuple(weight.shape)}; expected [{expected}]{halves}")
    if not 0 < dim <= MAX_DIM:
        raise InputError(f"{fn}: last dim D = {dim}; the kernel holds a row in registers, 1 <= D <= {MAX_DIM} "
                         "(use add_rms_norm_ref beyond)")
    if out_dtype is not None and out_dtype not in _FLOATS:
        raise InputError(f"{fn}: out_dtype is {out_dtype}; use float32, float16 or bfloat16")
    if x.device.type == "cpu" and not triton.knobs.runtime.interpret:
        raise InputError(f"{fn}: inputs are on the CPU; move them to CUDA or use add_rms_norm_ref")
    return _AddRMSNormFn.apply(x, residual, weight, float(eps), summed_residual_dtype(x, residual, residual_in_fp32),
                               weight.dtype if out_dtype is None else out_dtype, rc_halves)
