"""Fused residual add + RMSNorm (kernels/rms_norm) against its PyTorch reference and a float64 baseline.

On a CUDA machine the kernels run compiled; without CUDA they run under Triton's interpreter at small sizes:
this module reruns itself in a child pytest with TRITON_INTERPRET=1 (tests/triton_harness.py) and each test
here reports its twin's outcome. Every fresh kernel output starts as NaN (POISON), so an element no program
wrote fails the comparison.
"""

from __future__ import annotations

import math

import pytest
import torch
from triton_harness import DEVICE, ON_CUDA, PROXY, interpreted

ROWS = (1, 37, 4099) if ON_CUDA else (1, 37)
DIM, DIM_RC = 37, 130  # odd D; with rc_halves an odd half (H = 65)
LOW = (torch.bfloat16, torch.float16)

if not PROXY:
    from seqssm.errors import InputError
    from seqssm.kernels import common
    from seqssm.kernels.rms_norm import add_rms_norm_fused, add_rms_norm_ref


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    if not PROXY:
        monkeypatch.setattr(common, "POISON", True)


def _tol(*dtypes: torch.dtype, rows: int = 1) -> dict:
    """Tolerances of the least precise dtype a value passed through. Low-precision values may differ by a
    rounding step (fp32 sums in another order, and the interpreter truncates to bf16 where PyTorch rounds);
    sums over rows (dweight) grow that step by about sqrt(rows)."""
    grow = math.sqrt(rows)
    if torch.bfloat16 in dtypes:
        return dict(rtol=2e-2, atol=2e-2 * grow)
    if torch.float16 in dtypes:
        return dict(rtol=3e-3, atol=3e-3 * grow)
    return dict(rtol=1e-5, atol=1e-5 * grow)


def _inputs(shape, dtype, has_residual, rc_halves, weight_dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    dim = shape[-1]
    x = torch.randn(shape, generator=g).to(DEVICE, dtype)
    residual = (3 * torch.randn(shape, generator=g)).to(DEVICE, dtype) if has_residual else None
    weight = (1 + 0.5 * torch.randn(dim // 2 if rc_halves else dim, generator=g)).to(DEVICE, weight_dtype)
    return x, residual, weight


def _forward_backward(fn, x, residual, weight, seed=1, **kw):
    """fn's outputs and the gradients of <normed, dy> + <residual_out, dres> for x, residual, weight."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, residual, weight) if t is not None]
    x_, w_ = leaves[0], leaves[-1]
    r_ = leaves[1] if residual is not None else None
    normed, res = fn(x_, r_, w_, **kw)
    g = torch.Generator().manual_seed(seed)
    dy = torch.randn(normed.shape, generator=g).to(DEVICE, normed.dtype)
    dres = torch.randn(res.shape, generator=g).to(DEVICE, res.dtype)
    grads = torch.autograd.grad([normed, res], leaves, grad_outputs=[dy, dres])
    names = ["dx"] + (["dresidual"] if residual is not None else []) + ["dweight"]
    return {"normed": normed, "residual": res, **dict(zip(names, grads, strict=True))}


def _compare(got: dict, ref: dict, rows: int, expected_dtypes: dict | None = None) -> None:
    res_dtype = ref["residual"].dtype
    for name, r in ref.items():
        t = got[name]
        assert t.shape == r.shape and t.dtype == r.dtype, f"{name}: {t.shape} {t.dtype}, ref {r.shape} {r.dtype}"
        assert torch.isfinite(t).all(), f"{name} has entries no kernel wrote (NaN) or overflowed"
        tol = _tol(t.dtype, res_dtype, rows=rows if name == "dweight" else 1)
        torch.testing.assert_close(t, r, **tol, msg=lambda m, name=name: f"{name}: {m}")
    for name, dtype in (expected_dtypes or {}).items():
        assert got[name].dtype == dtype, name


@interpreted
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("rc_halves", [False, True])
@pytest.mark.parametrize("residual_in_fp32", [True, False])
@pytest.mark.parametrize("has_residual", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_matches_reference(dtype, has_residual, residual_in_fp32, rc_halves, rows):
    dim = DIM_RC if rc_halves else DIM
    inputs = _inputs((rows, dim), dtype, has_residual, rc_halves)
    kw = dict(eps=1e-5, residual_in_fp32=residual_in_fp32, rc_halves=rc_halves)
    got = _forward_backward(add_rms_norm_fused, *inputs, **kw)
    ref = _forward_backward(add_rms_norm_ref, *inputs, **kw)
    res_dtype = torch.float32 if residual_in_fp32 else dtype
    _compare(got, ref, rows, {"normed": torch.float32, "residual": res_dtype, "dx": dtype})
    # normed is the norm of the residual as returned (rounded to its dtype), to fp32 precision; the backward
    # recomputes from that stored sum, so forward and backward agree.
    of_stored = add_rms_norm_ref(got["residual"].detach(), None, inputs[2], **kw)[0]
    torch.testing.assert_close(got["normed"], of_stored, **_tol(torch.float32))


@interpreted
@pytest.mark.parametrize("rc_halves", [False, True])
@pytest.mark.parametrize("residual_in_fp32", [True, False])
@pytest.mark.parametrize("has_residual", [True, False])
def test_fp32_matches_float64(has_residual, residual_in_fp32, rc_halves):
    """Gradcheck-like: the fp32 kernels against the reference evaluated in float64 on the same values."""
    rows = ROWS[-1]
    dim = DIM_RC if rc_halves else DIM
    inputs = _inputs((rows, dim), torch.float32, has_residual, rc_halves)
    kw = dict(eps=1e-5, residual_in_fp32=residual_in_fp32, rc_halves=rc_halves)
    got = _forward_backward(add_rms_norm_fused, *inputs, **kw)
    wide = [t.double() if t is not None else None for t in inputs]
    ref = _forward_backward(add_rms_norm_ref, *wide, **kw)
    for name, r in ref.items():
        atol = 2e-5 * math.sqrt(rows) if name == "dweight" else 2e-5
        torch.testing.assert_close(got[name].double(), r, rtol=2e-5, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


@interpreted
@pytest.mark.parametrize(
    ("x_dtype", "res_dtype", "w_dtype", "out_dtype"),
    [
        (torch.float16, torch.float16, torch.float32, None),
        (torch.bfloat16, torch.float32, torch.float32, torch.bfloat16),  # a deep block under autocast
        (torch.bfloat16, torch.bfloat16, torch.bfloat16, None),  # a bf16 model: normed and dweight in bf16
        (torch.float32, torch.bfloat16, torch.float32, torch.float16),  # promoted residual dtype
    ],
)
@pytest.mark.parametrize("residual_in_fp32", [True, False])
def test_mixed_dtypes(x_dtype, res_dtype, w_dtype, out_dtype, residual_in_fp32):
    rows = ROWS[-1]
    x, _, weight = _inputs((rows, DIM), x_dtype, False, False, weight_dtype=w_dtype)
    residual = torch.randn(rows, DIM, generator=torch.Generator().manual_seed(5)).to(DEVICE, res_dtype)
    kw = dict(residual_in_fp32=residual_in_fp32, out_dtype=out_dtype)
    got = _forward_backward(add_rms_norm_fused, x, residual, weight, **kw)
    ref = _forward_backward(add_rms_norm_ref, x, residual, weight, **kw)
    promoted = torch.float32 if residual_in_fp32 else torch.promote_types(x_dtype, res_dtype)
    _compare(got, ref, rows, {"normed": out_dtype or w_dtype, "residual": promoted, "dx": x_dtype,
                              "dresidual": res_dtype, "dweight": w_dtype})


@interpreted
@pytest.mark.parametrize("rc_halves", [False, True])
def test_wide_rows(rc_halves):
    """D = 8192 (a row of 8192 in one block), and D = 16384 / 2 halves of 8191 (odd) for rc_halves."""
    dim = 16382 if rc_halves else 8192
    inputs = _inputs((3, dim), torch.float32, True, rc_halves)
    kw = dict(rc_halves=rc_halves)
    _compare(_forward_backward(add_rms_norm_fused, *inputs, **kw), _forward_backward(add_rms_norm_ref, *inputs, **kw),
             3)


@interpreted
def test_leading_dims_and_strided_inputs():
    """[B, L, D] inputs whose rows need a copy (transposed), a last dim of stride 2, a strided weight and
    non-contiguous incoming gradients."""
    b, length = 3, 5
    g = torch.Generator().manual_seed(3)
    x = torch.randn(length, b, DIM, generator=g).to(DEVICE).transpose(0, 1)
    residual = torch.randn(b, length, 2 * DIM, generator=g).to(DEVICE)[..., ::2]
    weight = torch.randn(2 * DIM, generator=g).to(DEVICE)[1::2]
    dy = torch.randn(b, 2 * DIM, length, generator=g).to(DEVICE)[:, ::2].transpose(1, 2)
    dres = torch.randn(length, b, DIM, generator=g).to(DEVICE).transpose(0, 1)
    outs = {}
    for name, fn in (("fused", add_rms_norm_fused), ("ref", add_rms_norm_ref)):
        leaves = [t.detach().clone().requires_grad_() for t in (x, residual, weight)]
        normed, res = fn(*leaves)
        grads = torch.autograd.grad([normed, res], leaves, grad_outputs=[dy, dres])
        outs[name] = dict(zip(["normed", "residual", "dx", "dresidual", "dweight"], (normed, res, *grads),
                              strict=True))
    _compare(outs["fused"], outs["ref"], b * length)


def _padded(rows: int, dim: int, seed: int) -> torch.Tensor:
    """[rows, dim + 5]: its columns 2 .. dim + 2 are a view with row stride dim + 5 (read without a copy)."""
    return torch.randn(rows, dim + 5, generator=torch.Generator().manual_seed(seed)).to(DEVICE)


@interpreted
@pytest.mark.parametrize("rc_halves", [False, True])
@pytest.mark.parametrize("has_residual", [False, True])
def test_row_strided_views(has_residual, rc_halves):
    """x, residual and both incoming gradients as views with row stride > D, read in place through their
    strides. Without a residual to add in x's own dtype the residual returned is x itself (as the reference
    returns it) and the backward reads the saved rows through x's stride."""
    rows, dim = ROWS[-1], DIM_RC if rc_halves else DIM
    weight = _inputs((1, dim), torch.float32, False, rc_halves)[2]
    cols = slice(2, dim + 2)
    dy, dres = _padded(rows, dim, 6)[:, cols], _padded(rows, dim, 7)[:, cols]
    kw = dict(residual_in_fp32=False, rc_halves=rc_halves)
    outs = {}
    for name, fn in (("fused", add_rms_norm_fused), ("ref", add_rms_norm_ref)):
        leaves = [_padded(rows, dim, 4).requires_grad_(), weight.clone().requires_grad_()]
        x, residual = leaves[0][:, cols], None
        if has_residual:
            leaves.append(_padded(rows, dim, 5).requires_grad_())
            residual = leaves[-1][:, cols]
        normed, res = fn(x, residual, leaves[1], **kw)
        if name == "fused" and not has_residual:
            assert res.data_ptr() == x.data_ptr() and res.stride() == x.stride()
        grads = torch.autograd.grad([normed, res], leaves, grad_outputs=[dy, dres])
        names = ["normed", "residual", "dx", "dweight", "dresidual"][:len(grads) + 2]
        outs[name] = dict(zip(names, (normed, res, *grads), strict=True))
    _compare(outs["fused"], outs["ref"], rows)


@interpreted
@pytest.mark.parametrize("used", ["normed", "residual"])
def test_one_output_used(used):
    """The last block's residual is not read on (its gradient arrives as None), nor, in a probe, the normed."""
    inputs = _inputs((ROWS[-1], DIM_RC), torch.bfloat16, True, True)
    grads = {}
    for name, fn in (("fused", add_rms_norm_fused), ("ref", add_rms_norm_ref)):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        normed, res = fn(*leaves, rc_halves=True)
        out = normed if used == "normed" else res
        dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(DEVICE, out.dtype)
        grads[name] = torch.autograd.grad(out, leaves, grad_outputs=dout, allow_unused=True)
    for got, ref, name in zip(grads["fused"], grads["ref"], ["dx", "dresidual", "dweight"], strict=True):
        if ref is None:  # the reference's weight gets no gradient when only the residual is used
            assert name == "dweight" and torch.equal(got, torch.zeros_like(got))
            continue
        torch.testing.assert_close(got, ref, **_tol(torch.bfloat16, rows=ROWS[-1]))


@interpreted
@pytest.mark.parametrize("shape", [(0, DIM), (2, 0, DIM_RC)])
def test_no_rows(shape):
    rc = shape[-1] == DIM_RC
    inputs = _inputs(shape, torch.bfloat16, True, rc)
    got = _forward_backward(add_rms_norm_fused, *inputs, rc_halves=rc)
    assert got["normed"].shape == shape and got["residual"].shape == shape and got["dx"].shape == shape
    assert torch.equal(got["dweight"], torch.zeros_like(inputs[2]))


@interpreted
def test_rejects_bad_arguments():
    x = torch.randn(4, 6, device=DEVICE)
    w = torch.ones(6, device=DEVICE)
    with pytest.raises(InputError, match="residual has shape"):
        add_rms_norm_fused(x, torch.randn(4, 5, device=DEVICE), w)
    with pytest.raises(InputError, match="weight has shape"):
        add_rms_norm_fused(x, None, w, rc_halves=True)
    with pytest.raises(InputError, match="even last dim"):
        add_rms_norm_fused(torch.randn(4, 7, device=DEVICE), None, torch.ones(3, device=DEVICE), rc_halves=True)
    with pytest.raises(InputError, match="dtype"):
        add_rms_norm_fused(x.double(), None, w)
    with pytest.raises(InputError, match="out_dtype"):
        add_rms_norm_fused(x, None, w, out_dtype=torch.int32)
    with pytest.raises(InputError, match="1 <= D"):
        add_rms_norm_fused(torch.randn(4, 0, device=DEVICE), None, torch.ones(0, device=DEVICE))


@pytest.mark.skipif(not ON_CUDA, reason="needs a CUDA device (rows · D > 2^31 elements)")
def test_offsets_past_int32():
    """rows · D > 2^31: the last rows are addressed past int32 (x, normed and the gradients ~4 GB each)."""
    dim = 1024
    rows = 2**31 // dim + 5
    x = torch.randn(rows, dim, device="cuda", dtype=torch.bfloat16).requires_grad_()
    weight = torch.randn(dim, device="cuda", dtype=torch.bfloat16).requires_grad_()
    normed, res = add_rms_norm_fused(x, None, weight, residual_in_fp32=False)
    dy = torch.ones_like(normed)
    dx, _ = torch.autograd.grad(normed, [x, weight], grad_outputs=dy)
    tail = slice(rows - 8, rows)
    xt, wt = x[tail].detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    ref, _ = add_rms_norm_ref(xt, None, wt, residual_in_fp32=False)
    (ref_dx,) = torch.autograd.grad(ref, [xt], grad_outputs=dy[tail])
    torch.testing.assert_close(normed[tail], ref, **_tol(torch.bfloat16))
    torch.testing.assert_close(dx[tail], ref_dx, **_tol(torch.bfloat16))
    assert res.data_ptr() == x.data_ptr()
