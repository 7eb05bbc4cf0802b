"""selective_scan_chunked against selective_scan_ref (outputs, final states, every gradient), and the
reference itself against a float64 closed form, state chaining and the one-step update."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from seqssm.errors import InputError
from seqssm.kernels.selective_scan import selective_scan_chunked, selective_scan_ref, selective_state_update_ref
from seqssm.kernels.selective_scan.chunked import SelectiveScanChunkedFn

BATCH, DIM, NSTATE, GROUPS = 2, 4, 3, 2
OPTIONS = ("D", "z", "delta_bias", "softplus", "initial_state")


def _bc(form: str, length: int, dtype=torch.float32) -> torch.Tensor:
    shape = {"shared": (DIM, NSTATE), "seq": (BATCH, NSTATE, length), "group": (BATCH, GROUPS, NSTATE, length)}
    return torch.randn(shape[form], dtype=dtype)


def _inputs(length, B_form="seq", C_form=None, options=OPTIONS, dtype=torch.float32):
    """Leaf tensors (all requiring grad) and the flag delta_softplus, for one call of either scan."""
    softplus = "softplus" in options
    # Δ > 0 without softplus, as the model would give it
    delta = torch.randn(BATCH, DIM, length) * 0.5 if softplus else torch.rand(BATCH, DIM, length) * 0.5 + 0.05
    t = {
        "u": torch.randn(BATCH, DIM, length),
        "delta": delta,
        "A": -torch.exp(torch.rand(DIM, NSTATE)),
        "B": _bc(B_form, length),
        "C": _bc(C_form or B_form, length),
        "D": torch.randn(DIM) if "D" in options else None,
        "z": torch.randn(BATCH, DIM, length) if "z" in options else None,
        "delta_bias": torch.randn(DIM) * 0.3 if "delta_bias" in options else None,
        "initial_state": torch.randn(BATCH, DIM, NSTATE) if "initial_state" in options else None,
    }
    for name, X in t.items():
        if X is not None:
            t[name] = X.to(dtype if name not in ("A", "initial_state") else torch.float32).requires_grad_()
    return t, softplus


def _run(fn, tensors, softplus, **kw):
    """Output, final state and the gradient of every input under a fixed random upstream gradient."""
    out, last = fn(**tensors, delta_softplus=softplus, return_final_state=True, **kw)
    gen = torch.Generator().manual_seed(1)
    loss = (out.float() * torch.randn(out.shape, generator=gen)).sum()
    loss = loss + (last * torch.randn(last.shape, generator=gen)).sum()
    leaves = {k: v for k, v in tensors.items() if v is not None}
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return out, last, dict(zip(leaves, grads, strict=True))


def _assert_same(tensors, softplus, chunk_size, rtol=1e-4, atol=1e-4):
    out_r, last_r, grads_r = _run(selective_scan_ref, tensors, softplus)
    out_c, last_c, grads_c = _run(selective_scan_chunked, tensors, softplus, chunk_size=chunk_size)
    assert out_c.dtype == out_r.dtype == tensors["u"].dtype
    assert last_c.dtype == torch.float32
    torch.testing.assert_close(out_c, out_r, rtol=rtol, atol=atol)
    torch.testing.assert_close(last_c, last_r, rtol=rtol, atol=atol)
    assert grads_c.keys() == grads_r.keys()
    for name in grads_r:
        assert grads_c[name].shape == tensors[name].shape, name
        torch.testing.assert_close(
            grads_c[name], grads_r[name], rtol=rtol, atol=atol, msg=lambda m, n=name: f"grad of {n}: {m}"
        )


@pytest.mark.parametrize("length", [1, 7, 63, 64, 65, 130])
@pytest.mark.parametrize("chunk_size", [5, 16, 64])
def test_chunked_matches_ref_lengths_and_chunks(length, chunk_size):
    tensors, softplus = _inputs(length, "group")
    _assert_same(tensors, softplus, chunk_size)


@pytest.mark.parametrize("B_form", ["shared", "seq", "group"])
@pytest.mark.parametrize("C_form", ["shared", "seq", "group"])
def test_chunked_matches_ref_bc_forms(B_form, C_form):
    tensors, softplus = _inputs(37, B_form, C_form)
    _assert_same(tensors, softplus, chunk_size=16)


@pytest.mark.parametrize("options", [(), *((o,) for o in OPTIONS)], ids=lambda o: "+".join(o) or "none")
@pytest.mark.parametrize("form", ["shared", "seq", "group"])
def test_chunked_matches_ref_each_option(options, form):
    tensors, softplus = _inputs(29, form, options=options)
    _assert_same(tensors, softplus, chunk_size=8)


def test_chunked_matches_ref_bf16():
    tensors, softplus = _inputs(45, "group", dtype=torch.bfloat16)
    out_r, last_r, grads_r = _run(selective_scan_ref, tensors, softplus)
    out_c, last_c, grads_c = _run(selective_scan_chunked, tensors, softplus, chunk_size=16)
    assert out_c.dtype == torch.bfloat16 and last_c.dtype == torch.float32
    # same bf16 inputs, fp32 inside: only the final rounding to bf16 may differ
    torch.testing.assert_close(out_c.float(), out_r.float(), rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(last_c, last_r, rtol=1e-4, atol=1e-4)
    for name in grads_r:
        assert grads_c[name].dtype == tensors[name].dtype, name
        torch.testing.assert_close(grads_c[name].float(), grads_r[name].float(), rtol=2e-2, atol=2e-2)


def test_chunked_length_zero_passes_state_through():
    tensors, softplus = _inputs(0, "seq")
    out, last = selective_scan_chunked(**tensors, delta_softplus=softplus, return_final_state=True)
    assert out.shape == (BATCH, DIM, 0)
    torch.testing.assert_close(last, tensors["initial_state"].detach())


@pytest.mark.parametrize("fn", [selective_scan_ref, selective_scan_chunked], ids=["ref", "chunked"])
@pytest.mark.parametrize("split", [1, 20, 40])
def test_split_with_final_state_equals_one_pass(fn, split):
    tensors, softplus = _inputs(41, "group")
    t = {k: (v.detach() if v is not None else None) for k, v in tensors.items()}
    kw = {k: t[k] for k in ("A", "D", "delta_bias")} | {"delta_softplus": softplus, "return_final_state": True}

    def part(sl, state):
        return fn(t["u"][..., sl], t["delta"][..., sl], B=t["B"][..., sl], C=t["C"][..., sl], z=t["z"][..., sl],
                  initial_state=state, **kw)

    full, full_last = part(slice(None), t["initial_state"])
    first, mid = part(slice(None, split), t["initial_state"])
    second, last = part(slice(split, None), mid)
    torch.testing.assert_close(torch.cat([first, second], dim=-1), full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, full_last, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", ["seq", "group"])
def test_state_update_loop_equals_scan(form):
    tensors, softplus = _inputs(23, form)
    t = {k: (v.detach() if v is not None else None) for k, v in tensors.items()}
    out, last = selective_scan_ref(**t, delta_softplus=softplus, return_final_state=True)
    state = t["initial_state"].clone()
    steps = [
        selective_state_update_ref(state, t["u"][..., i], t["delta"][..., i], t["A"], t["B"][..., i], t["C"][..., i],
                                   D=t["D"], z=t["z"][..., i], dt_bias=t["delta_bias"], dt_softplus=softplus)
        for i in range(t["u"].shape[-1])
    ]
    torch.testing.assert_close(torch.stack(steps, dim=-1), out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, last, rtol=1e-5, atol=1e-5)


def _closed_form(u, delta, A, B, C, D, z, h0):
    """float64, from the unrolled recurrence: h_t = e^{A Σ_{r≤t} Δ_r} h0 + Σ_{s≤t} e^{A Σ_{s<r≤t} Δ_r} Δ_s u_s B_s.

    B, C per position [batch, N, L]; Δ already final (no bias, no softplus).
    """
    batch, dim, length = u.shape
    nstate = A.shape[1]
    out = torch.zeros(batch, dim, length, dtype=torch.float64)
    last = torch.zeros(batch, dim, nstate, dtype=torch.float64)
    for b in range(batch):
        for d in range(dim):
            for t in range(length):
                y = 0.0
                for n in range(nstate):
                    a = float(A[d, n])
                    h = math.exp(a * sum(float(delta[b, d, r]) for r in range(t + 1))) * float(h0[b, d, n])
                    for s in range(t + 1):
                        decay = math.exp(a * sum(float(delta[b, d, r]) for r in range(s + 1, t + 1)))
                        h += decay * float(delta[b, d, s]) * float(u[b, d, s]) * float(B[b, n, s])
                    y += float(C[b, n, t]) * h
                    if t == length - 1:
                        last[b, d, n] = h
                y += float(D[d]) * float(u[b, d, t])
                gate = float(z[b, d, t])
                out[b, d, t] = y * gate / (1.0 + math.exp(-gate))
    return out, last


@pytest.mark.parametrize("fn", [selective_scan_ref, selective_scan_chunked], ids=["ref", "chunked"])
def test_matches_float64_closed_form(fn):
    batch, dim, nstate, length = 1, 2, 2, 6
    u, z = torch.randn(batch, dim, length), torch.randn(batch, dim, length)
    delta = torch.rand(batch, dim, length) + 0.1
    A = -torch.exp(torch.rand(dim, nstate))
    B, C = torch.randn(batch, nstate, length), torch.randn(batch, nstate, length)
    D, h0 = torch.randn(dim), torch.randn(batch, dim, nstate)
    out, last = fn(u, delta, A, B, C, D=D, z=z, initial_state=h0, return_final_state=True)
    exp_out, exp_last = _closed_form(u, delta, A, B, C, D, z, h0)
    torch.testing.assert_close(out.double(), exp_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last.double(), exp_last, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", ["shared", "seq", "group"])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_backward_gradcheck_float64(form, with_state):
    # the hand-written backward of the core recurrence, against finite differences
    length = 11
    f64 = {"dtype": torch.float64, "requires_grad": True}
    u = torch.randn(BATCH, DIM, length, **f64)
    delta = (torch.rand(BATCH, DIM, length, dtype=torch.float64) * 0.5 + 0.05).requires_grad_()
    A = (-torch.exp(torch.rand(DIM, NSTATE, dtype=torch.float64))).requires_grad_()
    B, C = _bc(form, length, torch.float64).requires_grad_(), _bc(form, length, torch.float64).requires_grad_()
    h0 = torch.randn(BATCH, DIM, NSTATE, **f64) if with_state else None
    args = (u, delta, A, B, C, h0)
    assert torch.autograd.gradcheck(lambda *a: SelectiveScanChunkedFn.apply(*a, 4), args, rtol=1e-5, atol=1e-7)


class _LargestStorage(TorchDispatchMode):
    """Records the largest storage (bytes) of any tensor that an op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for t in tree_flatten(result)[0]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return result


@pytest.mark.parametrize("form", ["shared", "seq", "group"])
def test_chunked_never_allocates_all_states(form):
    batch, dim, nstate, length, chunk = 1, 16, 8, 256, 16
    all_states = batch * dim * length * nstate * 4  # bytes of one fp32 [B, D, L, N]
    u = torch.randn(batch, dim, length, requires_grad=True)
    delta = torch.rand(batch, dim, length, requires_grad=True)
    A = (-torch.rand(dim, nstate)).requires_grad_()
    shape = {"shared": (dim, nstate), "seq": (batch, nstate, length), "group": (batch, 2, nstate, length)}[form]
    B, C = torch.randn(shape, requires_grad=True), torch.randn(shape, requires_grad=True)
    h0 = torch.randn(batch, dim, nstate, requires_grad=True)
    sizes = {}
    for name, fn, kw in (("chunked", selective_scan_chunked, {"chunk_size": chunk}), ("ref", selective_scan_ref, {})):
        with _LargestStorage() as mode:
            out, last = fn(u, delta, A, B, C, initial_state=h0, return_final_state=True, **kw)
            (out.sum() + last.sum()).backward()
        sizes[name] = mode.largest
    assert sizes["ref"] >= all_states  # the probe sees the reference's [B, D, L, N] tensors
    assert sizes["chunked"] <= all_states // 4


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"u": torch.randn(2, 4)}, "u has shape"),
        ({"A": torch.randn(5, 3)}, "A has shape"),
        ({"delta": torch.randn(2, 4, 8)}, "delta has shape"),
        ({"B": torch.randn(2, 3, 8)}, "B has shape"),
        ({"C": torch.randn(2, 3, 3, 9)}, "C has shape"),
        ({"D": torch.randn(3)}, "D has shape"),
        ({"initial_state": torch.randn(2, 4, 2)}, "initial_state has shape"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_chunked_rejects_bad_inputs(change, match):
    kw = {"u": torch.randn(2, 4, 9), "delta": torch.rand(2, 4, 9), "A": -torch.rand(4, 3),
          "B": torch.randn(2, 3, 9), "C": torch.randn(2, 3, 9)}
    with pytest.raises(InputError, match=match):
        selective_scan_chunked(**(kw | change))
