"""Triton causal conv1d and its decode step against kernels/causal_conv1d/naive.py.

On a CUDA machine the kernels run compiled at large sizes. Without CUDA they run under Triton's interpreter
at small sizes: TRITON_INTERPRET=1 must be set before triton is first imported, which another test file of
the same session may already have done, so this module reruns itself in a child pytest with the variable set
and each test here reports its child twin's outcome.
"""

from __future__ import annotations

import pytest
import torch
from triton_harness import DEVICE, ON_CUDA, PROXY, interpreted, packed_seq_idx, rel_error, rounded

BATCH, DIM = (2, 96) if ON_CUDA else (2, 6)
LENGTHS = (1, 2, 3, 4099) if ON_CUDA else (1, 2, 3, 37)

if not PROXY:
    from seqssm.errors import InputError
    from seqssm.kernels import common
    from seqssm.kernels.causal_conv1d.naive import causal_conv1d_ref, causal_conv1d_update_ref
    from seqssm.kernels.causal_conv1d.triton import causal_conv1d_fn, causal_conv1d_update_fn


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    """Fresh kernel outputs start as NaN, so that any element a kernel fails to write fails the comparison."""
    if not PROXY:
        monkeypatch.setattr(common, "POISON", True)


def _seq_idx(length: int) -> torch.Tensor:
    """[BATCH, L] int32 packed-sequence ids. Row 0: cuts at 1, on both sides of the tile edge at 16 (the
    interpreter's BLOCK_T; on CUDA the tile is longer), a one-position sequence (16) and a last sequence of one
    position. Row 1: a value repeated after a change (a run is a sequence, not a value), padding (-1) last."""
    return packed_seq_idx(BATCH, length, (1, 15, 16, 17, 256, 257, length - 1))


def _compare(width, length, activation, with_bias, with_state, dtype=torch.float32, seq_idx=None):
    x = torch.randn(BATCH, DIM, length, device=DEVICE, dtype=dtype)
    inputs = {"x": x, "weight": torch.randn(DIM, width, device=DEVICE)}
    if with_bias:
        inputs["bias"] = torch.randn(DIM, device=DEVICE)
    if with_state:
        inputs["initial_state"] = torch.randn(BATCH, DIM, width - 1, device=DEVICE, dtype=dtype)
    inputs = {k: v.requires_grad_() for k, v in inputs.items()}
    leaves = {k: v.detach().float().requires_grad_() for k, v in inputs.items()}
    out, last = causal_conv1d_fn(**inputs, return_final_state=True, activation=activation, seq_idx=seq_idx)
    ref_out, ref_last = causal_conv1d_ref(**leaves, return_final_state=True, activation=activation,
                                          seq_idx=seq_idx)
    dout = torch.randn_like(ref_out).to(dtype).float()
    dlast = torch.randn_like(ref_last).to(dtype).float()
    names = list(inputs)
    grads = torch.autograd.grad((out.float() * dout).sum() + (last.float() * dlast).sum(), list(inputs.values()))
    ref_grads = torch.autograd.grad((ref_out * dout).sum() + (ref_last * dlast).sum(), list(leaves.values()))
    pairs = [("out", out, ref_out, dtype), ("final_state", last, ref_last, dtype)]
    pairs += [(f"d{k}", g, r, inputs[k].dtype) for k, g, r in zip(names, grads, ref_grads, strict=True)]
    for name, got, ref, expected_dtype in pairs:
        assert got.shape == ref.shape and got.dtype == expected_dtype, name
        assert torch.isfinite(got).all(), f"{name} has non-finite entries"
        err = rel_error(got, ref)
        if dtype == torch.float32:
            assert err < 1e-5, f"{name}: relative error {err:.2e}"
        else:
            rounding = rel_error(rounded(ref, got.dtype), ref)
            assert err <= 1.5 * rounding + 1e-6, f"{name}: relative error {err:.2e}, rounding {rounding:.2e}"


@interpreted
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("width", [2, 3, 4])
def test_conv_all_inputs_matches_reference(width, length):
    _compare(width, length, "silu", with_bias=True, with_state=True)


@interpreted
@pytest.mark.parametrize("width", [2, 4])
def test_conv_without_optional_inputs(width):
    _compare(width, LENGTHS[-1], None, with_bias=False, with_state=False)


@interpreted
def test_conv_bf16_within_rounding():
    _compare(4, LENGTHS[-1], "silu", with_bias=True, with_state=True, dtype=torch.bfloat16)


@interpreted
@pytest.mark.parametrize("width", [2, 4])
def test_conv_seq_idx_matches_reference(width):
    """Packed sequences: output, final state and every gradient (initial state included) as the reference's."""
    _compare(width, LENGTHS[-1], "silu", with_bias=True, with_state=True, seq_idx=_seq_idx(LENGTHS[-1]))


@interpreted
@pytest.mark.parametrize("length", [2, 3])
def test_conv_seq_idx_shorter_than_window(length):
    """L < W - 1 with a cut at 1: the initial state reaches only the first position, the final state drops it."""
    _compare(4, length, None, with_bias=False, with_state=True, seq_idx=_seq_idx(length))


@interpreted
def test_conv_seq_idx_one_sequence_changes_nothing():
    """seq_idx with one value per row gives exactly the result without it (no reset anywhere)."""
    x = torch.randn(BATCH, DIM, LENGTHS[-1], device=DEVICE)
    w, b, s0 = torch.randn(DIM, 4, device=DEVICE), torch.randn(DIM, device=DEVICE), torch.randn(BATCH, DIM, 3,
                                                                                                  device=DEVICE)
    seq = torch.full((BATCH, LENGTHS[-1]), 7, dtype=torch.int64, device=DEVICE)
    seq[1] = -1
    plain = causal_conv1d_fn(x, w, b, s0, return_final_state=True, activation="silu")
    packed = causal_conv1d_fn(x, w, b, s0, return_final_state=True, activation="silu", seq_idx=seq)
    for got, ref in zip(packed, plain, strict=True):
        assert torch.equal(got, ref)


@interpreted
def test_conv_seq_idx_rejects_bad_shapes():
    x, w = torch.randn(BATCH, DIM, 5, device=DEVICE), torch.randn(DIM, 4, device=DEVICE)
    for bad in (torch.zeros(BATCH, 4, dtype=torch.int32), torch.zeros(5, dtype=torch.int32),
                torch.zeros(BATCH, 5), [[0] * 5] * BATCH):
        if isinstance(bad, torch.Tensor):
            bad = bad.to(DEVICE)
        with pytest.raises(InputError, match="seq_idx"):
            causal_conv1d_fn(x, w, seq_idx=bad)


@interpreted
def test_conv_strided_input():
    """x as a [B, L, D] tensor transposed to [B, D, L], the layout an in_proj output has."""
    x = torch.randn(BATCH, LENGTHS[-1], DIM, device=DEVICE).transpose(1, 2)
    w, b = torch.randn(DIM, 4, device=DEVICE), torch.randn(DIM, device=DEVICE)
    assert rel_error(causal_conv1d_fn(x, w, b, activation="silu"), causal_conv1d_ref(x, w, b, activation="silu")) < 1e-6


@interpreted
def test_conv_rejects_bad_arguments():
    x = torch.randn(BATCH, DIM, 5, device=DEVICE)
    with pytest.raises(InputError, match="W in 2..4"):
        causal_conv1d_fn(x, torch.randn(DIM, 5, device=DEVICE))
    with pytest.raises(InputError, match="activation"):
        causal_conv1d_fn(x, torch.randn(DIM, 4, device=DEVICE), activation="relu")
    with pytest.raises(InputError, match="initial_state"):
        causal_conv1d_fn(x, torch.randn(DIM, 4, device=DEVICE), initial_state=torch.randn(BATCH, DIM, 2))


@interpreted
@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_conv_update_matches_reference(width, activation):
    x = torch.randn(BATCH, DIM, device=DEVICE)
    state = torch.randn(BATCH, DIM, width - 1, device=DEVICE)
    w, b = torch.randn(DIM, width, device=DEVICE), torch.randn(DIM, device=DEVICE)
    ref_state = state.clone()
    out = causal_conv1d_update_fn(x, state, w, b, activation)
    ref = causal_conv1d_update_ref(x, ref_state, w, b, activation)
    assert torch.equal(state, ref_state)
    assert rel_error(out, ref) < 1e-6


@interpreted
def test_conv_update_steps_continue_the_sequence():
    """Prefill with the final state, then decode steps: the same outputs as one convolution over it all."""
    length, extra = LENGTHS[-1], 3
    x = torch.randn(BATCH, DIM, length + extra, device=DEVICE)
    w, b = torch.randn(DIM, 4, device=DEVICE), torch.randn(DIM, device=DEVICE)
    whole = causal_conv1d_fn(x, w, b, activation="silu")
    _, state = causal_conv1d_fn(x[..., :length], w, b, return_final_state=True, activation="silu")
    steps = [causal_conv1d_update_fn(x[..., t], state, w, b, "silu") for t in range(length, length + extra)]
    assert rel_error(torch.stack(steps, -1), whole[..., length:]) < 1e-6
