"""Fused inner Mamba-1 block: one autograd Function over the Triton conv and scan, channel-major throughout.

The projections read and write their activations as [rows, B·L] matrices (x and z [E, B·L], x_proj's output
[R + 2N, B·L], Δ [E, B·L], the scan output [E, B·L]), which the conv and the scan take as [B, E, L] views with
unit stride along L. So every matmul is a plain 2D GEMM on untransposed storage and no activation is ever
copied into another layout, forward or backward (mamba_ssm's ``mamba_inner_fn`` does the same at B = 1 and
transposes otherwise). The backward recomputes the conv output and Δ instead of keeping them (2 × E per
position saved), writes dx and dz straight into the halves of d(in_proj output), and needs no cat or split.
"""

from __future__ import annotations

import torch

from seqssm.errors import InputError
from seqssm.kernels.causal_conv1d.triton import _causal_conv1d_bwd, _causal_conv1d_fwd
from seqssm.kernels.selective_scan.triton import _selective_scan_bwd, _selective_scan_fwd, scan_plan


def _rows3(X2: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """[C, B·L] storage as a [B, C, L] view (strides L, B·L, 1)."""
    return X2.view(X2.shape[0], batch, length).permute(1, 0, 2)


def _flat(X3: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_rows3`: a channel-major [B, C, L] view as its [C, B·L] storage."""
    return X3.permute(1, 0, 2).reshape(X3.shape[1], -1)


def _mm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.mm(a, b) if bias is None else torch.addmm(bias, a, b)


class _MambaInnerFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, w_in, b_in, w_conv, b_conv, w_x, w_dt, b_dt, A, D, w_out, b_out, conv_state,
                ssm_state, want_final, need_grad):
        batch, length, d_model = hidden.shape
        d_inner, dt_rank, d_state = w_conv.shape[0], w_dt.shape[1], A.shape[1]
        h2 = hidden.reshape(batch * length, d_model)
        xz = _mm(w_in, h2.t(), None if b_in is None else b_in[:, None])  # [2E, B·L]
        x, z = _rows3(xz[:d_inner], batch, length), _rows3(xz[d_inner:], batch, length)
        u, conv_final = _causal_conv1d_fwd(x, w_conv, b_conv, conv_state, want_final, True)  # layout of x
        x_dbl = torch.mm(w_x, _flat(u))  # [R + 2N, B·L]
        delta = _rows3(torch.mm(w_dt, x_dbl[:dt_rank]), batch, length)
        Bm = _rows3(x_dbl[dt_rank:dt_rank + d_state], batch, length)
        Cm = _rows3(x_dbl[dt_rank + d_state:], batch, length)
        plan = scan_plan(u, delta, A, Bm, Cm, D, z, b_dt, ssm_state, True, need_grad=need_grad)
        y, ssm_final, chunks = _selective_scan_fwd(u, delta, A, Bm, Cm, D, z, b_dt, ssm_state, None, plan)
        y2 = _flat(y)  # [E, B·L]: the scan writes in u's layout
        out = _mm(y2.t(), w_out.t(), b_out).view(batch, length, d_model)
        ctx.set_materialize_grads(False)
        if need_grad:
            ctx.save_for_backward(hidden, xz, x_dbl, y2, chunks, w_in, w_conv, b_conv, w_x, w_dt, b_dt, A, D,
                                  w_out, conv_state)
            ctx.plan = plan
            ctx.has = (b_in is not None, b_out is not None, ssm_state is not None)
        if not want_final:
            return out
        return out, conv_final, ssm_final

    @staticmethod
    def backward(ctx, dout, dconv_final=None, dssm_final=None):
        (hidden, xz, x_dbl, y2, chunks, w_in, w_conv, b_conv, w_x, w_dt, b_dt, A, D, w_out,
         conv_state) = ctx.saved_tensors
        has_b_in, has_b_out, has_h0 = ctx.has
        batch, length, d_model = hidden.shape
        d_inner, dt_rank, d_state = w_conv.shape[0], w_dt.shape[1], A.shape[1]
        if dout is None:
            dout = torch.zeros(hidden.shape, device=hidden.device, dtype=y2.dtype)
        dout2 = dout.reshape(batch * length, d_model)
        if dout2.stride(-1) != 1:
            dout2 = dout2.contiguous()
        x, z = _rows3(xz[:d_inner], batch, length), _rows3(xz[d_inner:], batch, length)
        # Recomputed rather than saved: two [E, B·L] activations less per layer for one conv and one GEMM.
        u, _ = _causal_conv1d_fwd(x, w_conv, b_conv, conv_state, False, True)
        u2 = _flat(u)
        delta = _rows3(torch.mm(w_dt, x_dbl[:dt_rank]), batch, length)
        Bm = _rows3(x_dbl[dt_rank:dt_rank + d_state], batch, length)
        Cm = _rows3(x_dbl[dt_rank + d_state:], batch, length)

        dw_out = torch.mm(dout2.t(), y2.t())  # [M, E]
        db_out = dout2.sum(0) if has_b_out else None
        dy = _rows3(torch.mm(w_out.t(), dout2.t()), batch, length)  # [E, B·L] storage
        dxz = torch.empty_like(xz)
        du, ddelta, dA, dB, dC, dD, _, dbias, dh0 = _selective_scan_bwd(
            u, delta, A, Bm, Cm, D, z, b_dt, None, chunks, dy, dssm_final, ctx.plan,
            dz_out=_rows3(dxz[d_inner:], batch, length))
        du2, ddelta2 = _flat(du), _flat(ddelta)
        dx_dbl = torch.empty_like(x_dbl)
        torch.mm(w_dt.t(), ddelta2, out=dx_dbl[:dt_rank])
        _rows3(dx_dbl[dt_rank:dt_rank + d_state], batch, length).copy_(dB)
        _rows3(dx_dbl[dt_rank + d_state:], batch, length).copy_(dC)
        dw_dt = torch.mm(ddelta2, x_dbl[:dt_rank].t())
        dw_x = torch.mm(dx_dbl, u2.t())
        du2.addmm_(w_x.t(), dx_dbl)  # d(conv output) through x_proj joins the scan's
        dconv_final = None if dconv_final is None else dconv_final.to(u.dtype)
        _, dw_conv, db_conv, ds0 = _causal_conv1d_bwd(x, w_conv, b_conv, conv_state, du, dconv_final, True,
                                                      dx_out=_rows3(dxz[:d_inner], batch, length))
        dw_in = torch.mm(dxz, hidden.reshape(batch * length, d_model))
        db_in = dxz.sum(1) if has_b_in else None
        dhidden = torch.mm(dxz.t(), w_in).view(batch, length, d_model)

        def cast(grad, like):
            return None if grad is None or like is None else grad.to(like.dtype)

        return (dhidden, dw_in, db_in, cast(dw_conv, w_conv), cast(db_conv, b_conv), dw_x, dw_dt,
                cast(dbias, b_dt), cast(dA, A), cast(dD, D), dw_out, db_out,
                cast(ds0, conv_state), dh0 if has_h0 else None, None, None)


def mamba_inner_fused(
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
):
    """The inner Mamba-1 block fused around the Triton kernels; same arguments and results as
    ``mamba_inner_ref`` (see there for the shapes: hidden [B, L, M] → out [B, L, M]).

    Under autocast the projections and activations run in the autocast dtype (the weights are cast once
    here, as autocast would); A, D, the Δ bias and the scan state stay fp32.
    """
    fn = "mamba_inner_fused"
    if hidden.dim() != 3:
        raise InputError(f"{fn}: hidden has shape {tuple(hidden.shape)}; expected [B, L, M]")
    batch, length, d_model = hidden.shape
    d_inner, dt_rank, d_state = conv_weight.shape[0], dt_proj_weight.shape[1], A.shape[1]
    expect = {"in_proj_weight": (in_proj_weight, (2 * d_inner, d_model)),
              "x_proj_weight": (x_proj_weight, (dt_rank + 2 * d_state, d_inner)),
              "dt_proj_weight": (dt_proj_weight, (d_inner, dt_rank)), "A": (A, (d_inner, d_state)),
              "D": (D, (d_inner,)), "dt_proj_bias": (dt_proj_bias, (d_inner,)),
              "out_proj_weight": (out_proj_weight, (d_model, d_inner)),
              "conv_state": (conv_state, (batch, d_inner, conv_weight.shape[1] - 1)),
              "ssm_state": (ssm_state, (batch, d_inner, d_state))}
    for name, (X, shape) in expect.items():
        if X is not None and tuple(X.shape) != shape:
            raise InputError(f"{fn}: {name} has shape {tuple(X.shape)}; expected {list(shape)}")
    if length == 0:
        raise InputError(f"{fn}: hidden has no positions (L = 0); pass at least one")
    kind = hidden.device.type
    dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else hidden.dtype

    def cast(W):
        return None if W is None else W.to(dtype)

    if conv_state is not None:
        conv_state = conv_state.to(dtype)
    # Decided here: inside the Function's forward grad mode is off, and needs_input_grad says True even
    # under no_grad, which would keep the scan's chunk states of every inference call.
    tensors = (hidden, in_proj_weight, in_proj_bias, conv_weight, conv_bias, x_proj_weight, dt_proj_weight,
               dt_proj_bias, A, D, out_proj_weight, out_proj_bias, conv_state, ssm_state)
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    with torch.autocast(kind, enabled=False):
        return _MambaInnerFn.apply(
            hidden.to(dtype), cast(in_proj_weight), cast(in_proj_bias), conv_weight, conv_bias,
            cast(x_proj_weight), cast(dt_proj_weight), dt_proj_bias.float(), A.float(), D.float(),
            cast(out_proj_weight), cast(out_proj_bias), conv_state, ssm_state, return_final_states, need_grad)
