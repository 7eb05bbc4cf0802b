"""A decode step's residual add + RMSNorm inside the in_proj GEMV (Triton, inference only): one launch for what
``add_rms_norm`` then ``gemv`` do in two.

At d_model <= a few thousand the norm's inputs are a few KB, so every GEMV program recomputes the statistics of
its rows itself (a pass over x and the residual, then the K tiles it owns normalised on the fly) instead of
waiting for a norm kernel; the first program of each row block writes the summed residual. See
``_gemv_kernel`` (kernels/gemv/triton.py), whose NORM path this is.
"""

from __future__ import annotations

import torch
import triton

from seqssm.errors import InputError
from seqssm.kernels.common import check_no_grad, check_tensor, fresh
from seqssm.kernels.gemv.triton import GemvConfig, NormArgs, gemv_config, gemv_rows
from seqssm.kernels.rms_norm.naive import summed_residual_dtype


def add_norm_gemv(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    residual_in_fp32: bool,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    config: GemvConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """residual <- x + residual; y = RMSNorm(residual) @ weight^T (+ bias), as ``add_norm_gemv_ref``: fp32
    statistics, the sum rounded to the residual's dtype before it is normalised, the normed input rounded to
    norm_weight's dtype before the product (as ``add_rms_norm_fused`` then ``gemv`` store them).

    Args:
        x: [B, K] float32, float16 or bfloat16 (the previous layer's output, or the embeddings).
        residual: [B, K] or None (the first layer).
        norm_weight: [K] the RMSNorm weight, in weight's dtype; eps: added to mean(x²).
        residual_in_fp32: the summed residual in fp32 (else in x's and residual's promoted dtype).
        weight: [N, K] in_proj's weight; bias: [N] optional, any float dtype.
        config: launch shape (``GemvConfig``); ``gemv_config``'s default when None.

    Returns:
        y [B, N] in weight's dtype; the summed residual [B, K] (x itself when residual is None and its dtype
        stays x's).
    """
    fn = "add_norm_gemv"
    if x.dim() != 2 or x.shape[1] == 0:
        raise InputError(f"{fn}: x has shape {tuple(x.shape)}; expected [B, K] with K >= 1")
    rows, k = x.shape
    if weight.dim() != 2 or weight.shape[1] != k:
        raise InputError(f"{fn}: weight has shape {tuple(weight.shape)}; expected [N, {k}] (K of x)")
    n = weight.shape[0]
    if n == 0:
        raise InputError(f"{fn}: weight has no rows (shape {tuple(weight.shape)}); expected [N, {k}], N >= 1")
    for name, X, shape in (("x", x, None), ("residual", residual, (rows, k)), ("norm_weight", norm_weight, (k,)),
                           ("weight", weight, None), ("bias", bias, (n,))):
        check_tensor(fn, name, X, shape, x.device)
        check_no_grad(fn, name, X, "add_rms_norm and F.linear")
    if norm_weight.dtype != weight.dtype:
        raise InputError(f"{fn}: norm_weight is {norm_weight.dtype} but weight is {weight.dtype}; pass both in "
                         "one dtype (the normed input is stored in the norm's and read by the projection)")
    if x.device.type == "cpu" and not triton.knobs.runtime.interpret:
        raise InputError(f"{fn}: inputs are on the CPU; move them to CUDA or use add_norm_gemv_ref")
    res_dtype = summed_residual_dtype(x, residual, residual_in_fp32)
    store = residual is not None or res_dtype != x.dtype
    res_out = fresh(torch.empty(rows, k, device=x.device, dtype=res_dtype)) if store else None
    if rows == 0:
        return torch.empty(0, n, device=x.device, dtype=weight.dtype), res_out if store else x
    cfg = config or gemv_config(rows, n, k, weight.element_size(), x.device)
    y = gemv_rows(x, weight, bias, cfg, NormArgs(residual, norm_weight, float(eps), res_out))
    return y, res_out if store else x
