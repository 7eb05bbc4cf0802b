"""S4D and Mamba-2 mixers: convolution/chunked mode equals the recurrence, and state passing is exact."""

from __future__ import annotations

import pytest
import torch

from seqssm.errors import InputError
from seqssm.models.mamba2 import Mamba2Mixer
from seqssm.models.s4d import S4DMixer


def _mixers():
    torch.manual_seed(0)
    return [S4DMixer(d_model=6, d_state=8, init="lin"), S4DMixer(d_model=6, d_state=8, init="inv"),
            Mamba2Mixer(d_model=8, d_state=4, headdim=4, chunk_size=4, impl="chunked")]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_modes_equal(index):
    """FFT convolution (or chunked SSD) over 11 steps == two chunks with the state passed == token steps."""
    m = _mixers()[index]
    x = torch.randn(2, 11, m.d_model)
    full = m(x)
    a, st = m(x[:, :5], return_state=True)
    b, st2 = m(x[:, 5:], st, return_state=True)
    torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=1e-4, atol=1e-5)
    cache = m.allocate_state(2)
    steps = torch.stack([m.step(x[:, t], cache) for t in range(11)], 1)
    torch.testing.assert_close(steps, full, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cache.ssm_state, st2.ssm_state, rtol=1e-4, atol=1e-5)


def test_s4d_state_gradient_and_bidirectional():
    m = S4DMixer(d_model=4, d_state=4)
    x = torch.randn(1, 7, 4)
    state = m.allocate_state(1)
    state.ssm_state.requires_grad_()
    out, _ = m(x, state, return_state=True)
    out.sum().backward()
    assert state.ssm_state.grad is not None and state.ssm_state.grad.abs().sum() > 0
    bi = S4DMixer(d_model=4, d_state=4, bidirectional=True)
    y = bi(x)
    assert not torch.allclose(y[:, 0], bi(x[:, :1])[:, 0])  # position 0 sees the future
    with pytest.raises(InputError, match="bidirectional"):
        bi.step(x[:, 0], bi.allocate_state(1))


def test_s4d_runs_with_bf16_weights_and_under_autocast():
    """A model cast to bf16 (as decoding does) and bf16 autocast (as training does) both run, close to fp32.

    Complex bf16 does not exist: the discretisation must run in fp32 whatever the weights' dtype.
    """
    torch.manual_seed(0)
    m = S4DMixer(d_model=6, d_state=8)
    x = torch.randn(2, 9, 6)
    ref = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = m(x)
    half = S4DMixer(d_model=6, d_state=8)
    half.load_state_dict(m.state_dict())
    half = half.to(torch.bfloat16)
    out = half(x.bfloat16())
    cache = half.allocate_state(2)
    step = half.step(x[:, 0].bfloat16(), cache)
    for y in (auto, out):
        torch.testing.assert_close(y.float(), ref, rtol=0.05, atol=0.05)
    torch.testing.assert_close(step.float(), ref[:, 0], rtol=0.05, atol=0.05)
