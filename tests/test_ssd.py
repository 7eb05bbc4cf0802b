"""Mamba-2 SSD scan (kernels/ssd): the chunked reference and the Triton kernels against the sequential loop.

Outputs, final states and every gradient (x, dt, A, B, C, D, initial states) are compared on random inputs
with odd lengths, grouped B/C, several chunks, packed variable-length sequences (one of length 0) and every
fresh Triton buffer pre-filled with NaN (POISON). Without CUDA the Triton tests rerun under
TRITON_INTERPRET=1 in a child pytest (tests/triton_harness.py).
"""

from __future__ import annotations

import pytest
import torch
from triton_harness import DEVICE, ON_CUDA, PROXY, interpreted, rel_error

from seqssm.errors import InputError
from seqssm.kernels.ssd import ssd, ssd_chunked_ref, ssd_sequential, ssd_step_ref

if not PROXY:
    from seqssm.kernels.ssd import ssd_triton, triton_fwd


def _inputs(T, L, H, P, G, N, *, init=True, S=None, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    x = r(T, L, H, P)
    dt = torch.rand(T, L, H, generator=g) * 0.5 + 0.05
    A = -(torch.rand(H, generator=g) + 0.2)
    B, C, D = r(T, L, G, N), r(T, L, G, N), r(H)
    states = r(S or T, H, P, N) if init else None
    out = [x.to(dtype), dt, A, B.to(dtype), C.to(dtype), D, states]
    return [None if t is None else t.to(DEVICE).requires_grad_() for t in out]


def _run(fn, inputs, cu=None, seed=1, **kw):
    y, final = fn(*inputs, cu, **kw)
    g = torch.Generator().manual_seed(seed)
    dy = torch.randn(y.shape, generator=g).to(y)
    dfinal = torch.randn(final.shape, generator=g).to(final)
    leaves = [t for t in inputs if t is not None]
    grads = torch.autograd.grad([y, final], leaves, grad_outputs=[dy, dfinal])
    return [y, final, *grads]


def _compare(got, ref, tol=1e-4):
    names = ["y", "final", "dx", "ddt", "dA", "dB", "dC", "dD", "dinit"]
    for name, a, b in zip(names, got, ref, strict=False):
        assert a.shape == b.shape, f"{name}: {a.shape} vs {b.shape}"
        assert torch.isfinite(a).all(), f"{name} has NaN (an element no kernel wrote) or inf"
        assert rel_error(a, b) < tol, f"{name}: relative error {rel_error(a, b):.2e}"


def _triton(*args, chunk_size=16):
    return ssd_triton(*args, chunk_size=chunk_size, return_final_states=True)


@pytest.mark.parametrize("length,init", [(1, True), (37, True), (37, False)])
def test_chunked_ref_equals_sequential(length, init):
    inputs = _inputs(2, length, 4, 3, 2, 5, init=init)
    _compare(_run(ssd_chunked_ref, inputs, chunk_size=8), _run(ssd_sequential, inputs), tol=1e-5)


def test_chunked_ref_varlen_equals_separate_runs():
    cu = torch.tensor([0, 7, 7, 30, 41])
    inputs = _inputs(1, 41, 2, 3, 1, 4, S=4)
    packed = ssd_chunked_ref(*inputs, cu, chunk_size=8)
    x, dt, A, B, C, D, init = inputs
    for i in range(4):
        s = slice(int(cu[i]), int(cu[i + 1]))
        y, f = ssd_sequential(x[:, s], dt[:, s], A, B[:, s], C[:, s], D, init[i : i + 1])
        torch.testing.assert_close(packed[0][:, s], y, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(packed[1][i : i + 1], f, rtol=1e-5, atol=1e-5)


def test_step_continues_sequence():
    """Decoding one token from a sequence's final state gives the next position of the full scan."""
    x, dt, A, B, C, D, init = (t.detach() for t in _inputs(2, 9, 4, 3, 2, 5))
    y_full, _ = ssd_sequential(x, dt, A, B, C, D, init)
    _, state = ssd_sequential(x[:, :8], dt[:, :8], A, B[:, :8], C[:, :8], D, init)
    y = ssd_step_ref(state, x[:, 8], dt[:, 8], A, B[:, 8], C[:, 8], D)
    torch.testing.assert_close(y, y_full[:, 8], rtol=1e-5, atol=1e-5)


def test_dispatch_and_bad_input():
    inputs = [t.detach() for t in _inputs(1, 5, 2, 3, 1, 4)]
    y = ssd(*inputs, impl="chunked", chunk_size=4)
    assert y.shape == (1, 5, 2, 3)
    with pytest.raises(InputError, match="impl"):
        ssd(*inputs, impl="fast")
    with pytest.raises(InputError, match="A must have shape"):
        ssd(inputs[0], inputs[1], inputs[2][:1], *inputs[3:], impl="chunked")


@interpreted
@pytest.mark.parametrize("length,init", [(1, False), (37, True)])
def test_triton_equals_reference(monkeypatch, length, init):
    monkeypatch.setattr(triton_fwd, "POISON", True)
    inputs = _inputs(2, length, 4, 5, 2, 6, init=init)
    ref = _run(ssd_sequential, inputs)
    got = _run(_triton, inputs)
    _compare(got, ref)


@interpreted
def test_triton_varlen_and_head_dim_blocks(monkeypatch):
    """Packed sequences (one empty) and P = 70 > one head-dim block of 64: partial sums over blocks."""
    monkeypatch.setattr(triton_fwd, "POISON", True)
    cu = torch.tensor([0, 5, 5, 21, 40], device=DEVICE)
    inputs = _inputs(1, 40, 2, 70 if ON_CUDA else 20, 1, 3, S=4)
    _compare(_run(_triton, inputs, cu), _run(ssd_sequential, inputs, cu))


@interpreted
def test_triton_low_precision(monkeypatch):
    monkeypatch.setattr(triton_fwd, "POISON", True)
    inputs = _inputs(1, 19, 2, 4, 1, 4, dtype=torch.bfloat16)
    y, final = _triton(*inputs)
    y_ref, f_ref = ssd_sequential(*inputs)
    assert y.dtype == torch.bfloat16 and final.dtype == torch.float32
    assert rel_error(y, y_ref) < 2e-2 and rel_error(final, f_ref) < 1e-4


@pytest.mark.gpu
@pytest.mark.skipif(not ON_CUDA, reason="needs a CUDA device (past 2^31 elements)")
def test_triton_64bit_offsets():
    """x of more than 2^31 elements: the last sequence's outputs and state match its run alone."""
    H, P, N = 8, 64, 16
    L = 2**31 // (H * P) + 4096
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1, L, H, P, device="cuda", dtype=torch.bfloat16, generator=g)
    dt = torch.full((1, L, H), 0.1, device="cuda")
    A = -torch.ones(H, device="cuda")
    B = torch.randn(1, L, 1, N, device="cuda", dtype=torch.bfloat16, generator=g)
    C = torch.randn(1, L, 1, N, device="cuda", dtype=torch.bfloat16, generator=g)
    tail = 1000
    cu = torch.tensor([0, L - tail, L], device="cuda")
    y, final = ssd_triton(x, dt, A, B, C, cu_seqlens=cu, return_final_states=True)
    s = slice(L - tail, L)
    y_ref, f_ref = ssd_chunked_ref(x[:, s], dt[:, s], A, B[:, s], C[:, s])
    assert rel_error(y[:, s], y_ref) < 2e-2
    assert rel_error(final[1:], f_ref) < 1e-3
