"""kernels/host.py: the direct launcher gives what ``kernel[grid](...)`` gives, across every specialization
Triton makes (tensor alignment, integers equal to 1 or divisible by 16), and its key separates them."""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl
from triton_harness import DEVICE, interpreted

from seqssm.kernels.host import DirectLauncher, _key


@triton.jit
def _axpy_kernel(x_ptr, y_ptr, out_ptr, alpha, n, stride, BLOCK: tl.constexpr, HAS_Y: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    out = alpha * tl.load(x_ptr + offs * stride, mask=mask)
    if HAS_Y:
        out += tl.load(y_ptr + offs * stride, mask=mask)
    tl.store(out_ptr + offs, out, mask=mask)


def test_key_separates_what_triton_specializes():
    buf = torch.zeros(64)
    assert _key((buf,)) != _key((buf[1:],)), "16-byte alignment is specialized"
    assert _key((buf,)) != _key((buf.double(),))
    assert _key((buf[4:],)) == _key((buf,)), "another aligned tensor of the same dtype reuses the kernel"
    assert len({_key((n,)) for n in (1, 16, 17, 2**31 + 16)}) == 4
    assert _key((None,)) != _key((buf,))
    assert len({_key((True,)), _key((1,)), _key((1.0,))}) == 3, "equal values of different types"


@interpreted
@pytest.mark.parametrize("caller_key", [False, True], ids=["derived-key", "caller-key"])
def test_direct_launcher_equals_jit_launch(caller_key):
    """Repeated launches (the cached path on a GPU) with aligned and unaligned pointers, n = 1, strides of 1
    and 2, and the optional input absent: each equals the PyTorch result, into an output pre-filled with NaN.
    With a caller's key, the key is what a caller knows its arguments came from (alignment, n, stride)."""
    launcher = DirectLauncher(_axpy_kernel)
    x_all = torch.randn(2100, device=DEVICE)
    y_all = torch.randn(2100, device=DEVICE)
    cases = [(0, 1000, 1, True), (0, 1000, 1, True), (1, 999, 1, True), (1, 1, 1, True), (0, 1000, 2, False),
             (3, 517, 2, True), (0, 1000, 1, True), (1, 999, 1, True)]
    for offset, n, stride, has_y in cases:
        x, y = x_all[offset:], y_all[offset:]
        out = torch.full((n,), float("nan"), device=DEVICE)
        args = (x, y if has_y else None, out, 0.5, n, stride)
        kwargs = dict(BLOCK=128, HAS_Y=has_y, num_warps=4)
        key = (offset % 4 == 0, n == 1, n % 16 == 0, stride, has_y) if caller_key else None
        launcher.launch((triton.cdiv(n, 128),), args, kwargs, key)
        expected = 0.5 * x[:n * stride:stride] + (y[:n * stride:stride] if has_y else 0)
        torch.testing.assert_close(out, expected, msg=f"offset {offset}, n {n}, stride {stride}, y {has_y}")
