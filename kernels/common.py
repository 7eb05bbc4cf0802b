"""Small pieces every op folder shares: a constant and softplus for the kernels, the NaN-poisoning switch of
the tests, and the one tensor check of the public functions."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from seqssm.errors import InputError

# exp(x) = exp2(x · log2 e): the kernels fold the factor into A once and call exp2 (one MUFU op).
LOG2E = tl.constexpr(1.4426950408889634)

# Tests set POISON so that every fresh output buffer starts as NaN and an element no kernel wrote shows up.
POISON = False

FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def fresh(X: torch.Tensor) -> torch.Tensor:
    """X itself, filled with NaN when the tests poison fresh buffers (``POISON``)."""
    return X.fill_(float("nan")) if POISON else X


@triton.jit
def softplus(x):
    # Same threshold as torch.nn.functional.softplus.
    return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(x)), x)


def check_tensor(fn: str, name: str, X: torch.Tensor | None, shape: tuple[int, ...] | None, device: torch.device,
                 first: str = "x") -> None:
    """InputError unless X (None passes) has ``shape`` (None: any), lives on ``device`` (that of input ``first``)
    and is fp32, fp16 or bf16."""
    if X is None:
        return
    if shape is not None and tuple(X.shape) != shape:
        raise InputError(f"{fn}: {name} has shape {tuple(X.shape)}; expected {list(shape)}")
    if X.device != device:
        raise InputError(f"{fn}: {name} is on {X.device} but {first} is on {device}; move all inputs to one "
                         "device")
    if X.dtype not in FLOATS:
        raise InputError(f"{fn}: {name} has dtype {X.dtype}; use float32, float16 or bfloat16")


def check_no_grad(fn: str, name: str, X: torch.Tensor | None, instead: str = "") -> None:
    """InputError if X needs a gradient now: the inference-only kernels (decode steps, GEMV) have no backward;
    ``instead`` names what to call for autograd."""
    if X is not None and torch.is_grad_enabled() and X.requires_grad:
        raise InputError(f"{fn}: {name} requires grad, but the kernel is inference only (no backward); call it "
                         f"under torch.no_grad(){' or use ' + instead if instead else ''}")


def check_seq_idx(fn: str, seq_idx: torch.Tensor | None, batch: int, length: int,
                  device: torch.device) -> torch.Tensor | None:
    """seq_idx [B, L] as the kernels read it (int32, unit stride along L), or InputError. A sequence is a run of
    one value in a row (-1 for padding is a run like any other); states reset where the value changes."""
    if seq_idx is None:
        return None
    if not isinstance(seq_idx, torch.Tensor) or tuple(seq_idx.shape) != (batch, length) \
            or seq_idx.dtype.is_floating_point or seq_idx.dtype == torch.bool:
        got = tuple(seq_idx.shape) if isinstance(seq_idx, torch.Tensor) else type(seq_idx).__name__
        raise InputError(f"{fn}: seq_idx must be an integer [B, L] = {[batch, length]} tensor, got {got}")
    if seq_idx.device != device:
        raise InputError(f"{fn}: seq_idx is on {seq_idx.device} but the inputs are on {device}; move it too")
    seq_idx = seq_idx.to(torch.int32)
    return seq_idx if seq_idx.stride(-1) == 1 else seq_idx.contiguous()
