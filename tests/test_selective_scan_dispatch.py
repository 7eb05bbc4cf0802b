"""``seqssm.kernels.selective_scan.selective_scan``: every impl against the fp32 loop reference, and its errors.

impl="triton" runs on CUDA, or on the CPU under TRITON_INTERPRET=1 in a child pytest (tests/triton_harness.py);
the other tests run in this process.
"""

from __future__ import annotations

import os

import pytest
import torch
from triton_harness import DEVICE, ON_CUDA, interpreted, rel_error

from seqssm.errors import InputError
from seqssm.kernels.selective_scan import dispatch, selective_scan, selective_scan_ref

BATCH, DIM, NSTATE, LENGTH = 2, 4, 3, 13  # tiny: the Triton interpreter runs every program in Python
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"


def _inputs(form: str) -> dict[str, torch.Tensor]:
    """Every argument given, in the Mamba ranges (A < 0, parameters fp32); B and C in ``form``."""
    shapes = {"const": (DIM, NSTATE), "var": (BATCH, NSTATE, LENGTH), "grouped": (BATCH, 2, NSTATE, LENGTH)}
    return {
        "u": torch.randn(BATCH, DIM, LENGTH, device=DEVICE),
        "delta": 0.5 * torch.randn(BATCH, DIM, LENGTH, device=DEVICE) - 1.0,
        "A": -(0.5 + 4 * torch.rand(DIM, NSTATE, device=DEVICE)),
        "B": torch.randn(*shapes[form], device=DEVICE),
        "C": torch.randn(*shapes[form], device=DEVICE),
        "D": torch.randn(DIM, device=DEVICE),
        "z": torch.randn(BATCH, DIM, LENGTH, device=DEVICE),
        "delta_bias": 0.5 * torch.randn(DIM, device=DEVICE),
        "initial_state": torch.randn(BATCH, DIM, NSTATE, device=DEVICE),
    }


def _check(impl: str, form: str) -> None:
    """Positional call in mamba_ssm's order against the reference called by keyword: a swapped argument shows."""
    x = _inputs(form)
    out, last = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True,
                               x["initial_state"], True, impl=impl)
    ref_out, ref_last = selective_scan_ref(**x, delta_softplus=True, return_final_state=True)
    assert rel_error(out, ref_out) < 1e-4 and rel_error(last, ref_last) < 1e-4
    plain = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], impl=impl)  # no options: out only
    assert isinstance(plain, torch.Tensor) and rel_error(plain, selective_scan_ref(*list(x.values())[:5])) < 1e-4


@pytest.mark.parametrize("form", ["var", "grouped", "const"])
@pytest.mark.parametrize("impl", ["ref", "chunked", "auto"])
def test_pytorch_impls_match_reference(impl, form):
    _check(impl, form)


@interpreted
def test_triton_matches_reference():
    _check("triton", "var")  # one B/C form: the kernel's forms are tests/test_triton_scan.py's business


def test_auto_picks_by_device(monkeypatch):
    calls = []
    for name in ("selective_scan_chunked", "selective_scan_ref"):
        real = getattr(dispatch, name)
        monkeypatch.setattr(dispatch, name, lambda *a, _n=name, _f=real: calls.append(_n) or _f(*a))
    x = _inputs("var")
    selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"])
    assert calls == ([] if ON_CUDA else ["selective_scan_chunked"])  # Triton on CUDA, else chunked


@pytest.mark.skipif(ON_CUDA or INTERPRETING, reason="needs a CPU-only process with Triton compiled, not interpreted")
def test_triton_on_cpu_is_an_input_error():
    x = _inputs("var")
    with pytest.raises(InputError, match="impl='triton' needs CUDA tensors, got u on cpu"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], impl="triton")


def test_triton_missing_is_an_input_error(monkeypatch):
    def missing():
        raise ImportError("No module named 'triton'")

    monkeypatch.setattr(dispatch, "_fused", missing)
    x = _inputs("var")
    with pytest.raises(InputError, match="Triton cannot be imported .*use impl='chunked'"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], impl="triton")


@pytest.mark.parametrize("impl", ["cuda", "fused", "", None, 1])
def test_unknown_impl_is_an_input_error(impl):
    x = _inputs("var")
    with pytest.raises(InputError, match="impl must be one of auto, triton, chunked, ref"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], impl=impl)
