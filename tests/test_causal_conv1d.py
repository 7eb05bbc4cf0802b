"""causal_conv1d_ref / causal_conv1d_update_ref against a direct loop formula, state chaining and gradcheck."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqssm.kernels.causal_conv1d import causal_conv1d_ref, causal_conv1d_update_ref


def _direct(x, weight, bias, initial_state, activation):
    """out[b, d, t] = bias[d] + sum_k weight[d, k] * x[b, d, t - W + 1 + k], in float64, one element at a time."""
    batch, dim, length = x.shape
    width = weight.shape[1]
    out = torch.zeros(batch, dim, length, dtype=torch.float64)
    for b in range(batch):
        for d in range(dim):
            for t in range(length):
                acc = 0.0 if bias is None else float(bias[d])
                for k in range(width):
                    src = t - width + 1 + k
                    if src >= 0:
                        acc += float(weight[d, k]) * float(x[b, d, src])
                    elif initial_state is not None:
                        acc += float(weight[d, k]) * float(initial_state[b, d, width - 1 + src])
                out[b, d, t] = acc
    return F.silu(out) if activation == "silu" else out


@pytest.mark.parametrize("width", [1, 2, 4])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_ref_matches_direct_formula(width, with_bias, with_state, activation):
    batch, dim, length = 2, 3, 7
    x = torch.randn(batch, dim, length)
    weight = torch.randn(dim, width)
    bias = torch.randn(dim) if with_bias else None
    state = torch.randn(batch, dim, width - 1) if with_state else None
    out = causal_conv1d_ref(x, weight, bias, initial_state=state, activation=activation)
    expected = _direct(x, weight, bias, state, activation)
    assert out.dtype == x.dtype
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("length", [1, 2, 9])
def test_final_state_is_last_inputs(length):
    batch, dim, width = 2, 3, 4
    x = torch.randn(batch, dim, length)
    state = torch.randn(batch, dim, width - 1)
    _, final = causal_conv1d_ref(x, torch.randn(dim, width), initial_state=state, return_final_state=True)
    expected = torch.cat([state, x], dim=-1)[:, :, -(width - 1):]
    torch.testing.assert_close(final, expected, rtol=0, atol=0)


@pytest.mark.parametrize("split", [1, 2, 5, 10])
def test_split_with_state_equals_one_pass(split):
    batch, dim, length, width = 2, 3, 11, 4
    x = torch.randn(batch, dim, length)
    weight, bias = torch.randn(dim, width), torch.randn(dim)
    state0 = torch.randn(batch, dim, width - 1)
    full, full_state = causal_conv1d_ref(
        x, weight, bias, initial_state=state0, return_final_state=True, activation="silu"
    )
    first, mid = causal_conv1d_ref(
        x[:, :, :split], weight, bias, initial_state=state0, return_final_state=True, activation="silu"
    )
    second, last = causal_conv1d_ref(
        x[:, :, split:], weight, bias, initial_state=mid, return_final_state=True, activation="silu"
    )
    torch.testing.assert_close(torch.cat([first, second], dim=-1), full, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(last, full_state, rtol=0, atol=0)


@pytest.mark.parametrize("activation", [None, "silu"])
def test_update_loop_equals_full_conv(activation):
    batch, dim, length, width = 2, 3, 9, 4
    x = torch.randn(batch, dim, length)
    weight, bias = torch.randn(dim, width), torch.randn(dim)
    state0 = torch.randn(batch, dim, width - 1)
    full, full_state = causal_conv1d_ref(
        x, weight, bias, initial_state=state0, return_final_state=True, activation=activation
    )
    conv_state = state0.clone()
    steps = [causal_conv1d_update_ref(x[:, :, t], conv_state, weight, bias, activation) for t in range(length)]
    torch.testing.assert_close(torch.stack(steps, dim=-1), full, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(conv_state, full_state, rtol=0, atol=0)


@pytest.mark.parametrize("activation", [None, "silu"])
def test_gradcheck_float64(activation):
    batch, dim, length, width = 1, 2, 5, 3
    args = [
        torch.randn(batch, dim, length, dtype=torch.float64, requires_grad=True),
        torch.randn(dim, width, dtype=torch.float64, requires_grad=True),
        torch.randn(dim, dtype=torch.float64, requires_grad=True),
        torch.randn(batch, dim, width - 1, dtype=torch.float64, requires_grad=True),
    ]

    def fn(x, weight, bias, state):
        return causal_conv1d_ref(x, weight, bias, initial_state=state, return_final_state=True, activation=activation)

    assert torch.autograd.gradcheck(fn, args)


def test_initial_state_gradient_counts_each_use():
    # sum over outputs: state entry j (of W - 1) feeds outputs t = 0 .. j, each with weight[j - t]
    dim, width = 2, 4
    weight = torch.randn(dim, width)
    state = torch.zeros(1, dim, width - 1, requires_grad=True)
    causal_conv1d_ref(torch.randn(1, dim, 6), weight, initial_state=state).sum().backward()
    expected = torch.stack([weight[:, : j + 1].sum(-1) for j in range(width - 1)], dim=-1)
    torch.testing.assert_close(state.grad[0], expected)


def test_bf16_input_keeps_dtype():
    x = torch.randn(2, 3, 8)
    weight = torch.randn(3, 4)
    out = causal_conv1d_ref(x.bfloat16(), weight, activation="silu")
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), causal_conv1d_ref(x.bfloat16().float(), weight, activation="silu"),
                               rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("fn", ["full", "update"])
def test_unknown_activation_raises(fn):
    x, weight = torch.randn(1, 2, 3), torch.randn(2, 4)
    with pytest.raises(ValueError, match="activation"):
        if fn == "full":
            causal_conv1d_ref(x, weight, activation="gelu")
        else:
            causal_conv1d_update_ref(x[:, :, 0], torch.zeros(1, 2, 3), weight, activation="gelu")


def _runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """[start, end) of each run of one value in a 1-D seq_idx row."""
    cuts = [0] + [t for t in range(1, len(row)) if row[t] != row[t - 1]] + [len(row)]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def _per_sequence(x, weight, bias, state, activation, seq_idx):
    """Each sequence convolved alone from a zero state (a row's first from ``state``), one call per run."""
    outs, finals = [], []
    for b in range(x.shape[0]):
        pieces = []
        for start, end in _runs(seq_idx[b]):
            s0 = state[b:b + 1] if state is not None and start == 0 else None
            out, final = causal_conv1d_ref(x[b:b + 1, :, start:end], weight, bias, initial_state=s0,
                                           return_final_state=True, activation=activation)
            pieces.append(out)
        outs.append(torch.cat(pieces, dim=-1))
        finals.append(final)
    return torch.cat(outs), torch.cat(finals)


SEQ_IDX = torch.tensor([[0, 0, 0, 0, 1, 2, 2, 3, 3, 3, 3],  # one-position sequence, short sequences
                        [5, 5, 7, 5, 5, 5, 5, 5, -1, -1, -1]])  # a value repeated after a change, padding


@pytest.mark.parametrize("width", [1, 2, 4])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_seq_idx_equals_each_sequence_alone(width, with_state, activation):
    batch, dim, length = 2, 3, SEQ_IDX.shape[1]
    x = torch.randn(batch, dim, length)
    weight, bias = torch.randn(dim, width), torch.randn(dim)
    state = torch.randn(batch, dim, width - 1) if with_state else None
    out, final = causal_conv1d_ref(x, weight, bias, initial_state=state, return_final_state=True,
                                   activation=activation, seq_idx=SEQ_IDX)
    exp_out, exp_final = _per_sequence(x, weight, bias, state, activation, SEQ_IDX)
    torch.testing.assert_close(out, exp_out, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(final, exp_final, rtol=0, atol=0)


def test_seq_idx_short_last_sequence_final_state_has_zeros():
    """The last sequence shorter than W - 1: the final state holds zeros before it, not the previous inputs."""
    x = torch.randn(1, 2, 5)
    _, final = causal_conv1d_ref(x, torch.randn(2, 4), initial_state=torch.randn(1, 2, 3),
                                 return_final_state=True, seq_idx=torch.tensor([[0, 0, 0, 0, 1]]))
    torch.testing.assert_close(final, torch.cat([torch.zeros(1, 2, 2), x[:, :, 4:]], dim=-1), rtol=0, atol=0)


def test_seq_idx_one_value_changes_nothing():
    x, weight, bias, state = torch.randn(2, 3, 9), torch.randn(3, 4), torch.randn(3), torch.randn(2, 3, 3)
    plain = causal_conv1d_ref(x, weight, bias, initial_state=state, return_final_state=True, activation="silu")
    packed = causal_conv1d_ref(x, weight, bias, initial_state=state, return_final_state=True, activation="silu",
                               seq_idx=torch.tensor([[3] * 9, [-1] * 9]))
    for got, ref in zip(packed, plain, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


def test_seq_idx_gradcheck_float64():
    args = [torch.randn(1, 2, 6, dtype=torch.float64, requires_grad=True),
            torch.randn(2, 3, dtype=torch.float64, requires_grad=True),
            torch.randn(2, dtype=torch.float64, requires_grad=True),
            torch.randn(1, 2, 2, dtype=torch.float64, requires_grad=True)]
    seq_idx = torch.tensor([[0, 0, 1, 2, 2, 2]])

    def fn(x, weight, bias, state):
        return causal_conv1d_ref(x, weight, bias, initial_state=state, return_final_state=True, activation="silu",
                                 seq_idx=seq_idx)

    assert torch.autograd.gradcheck(fn, args)
