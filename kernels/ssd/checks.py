"""Argument checks shared by every SSD entry point: one clear line naming the argument and its shape."""

from __future__ import annotations

import torch

from seqssm.errors import InputError

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def check_inputs(fn, x, dt, A, B, C, D, initial_states, cu_seqlens, chunk_size):
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise InputError(f"{fn}: x must be a [T, L, H, P] tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    T, L, H, P = x.shape
    for name, X, shape in (("dt", dt, (T, L, H)), ("A", A, (H,))):
        if not isinstance(X, torch.Tensor) or tuple(X.shape) != shape:
            raise InputError(f"{fn}: {name} must have shape {list(shape)} for x {list(x.shape)}, got "
                             f"{tuple(X.shape) if isinstance(X, torch.Tensor) else X!r}")
    if not isinstance(B, torch.Tensor) or B.dim() != 4 or B.shape[:2] != (T, L) or H % B.shape[2]:
        raise InputError(f"{fn}: B must be [T, L, G, N] with H = {H} a multiple of G, got "
                         f"{tuple(B.shape) if isinstance(B, torch.Tensor) else B!r}")
    if not isinstance(C, torch.Tensor) or C.shape != B.shape:
        raise InputError(f"{fn}: C must have B's shape {tuple(B.shape)}")
    for name, X in (("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D),
                    ("initial_states", initial_states)):
        if X is None:
            continue
        if X.dtype not in _FLOATS:
            raise InputError(f"{fn}: {name} has dtype {X.dtype}; use float32, float16 or bfloat16")
        if X.device != x.device:
            raise InputError(f"{fn}: {name} is on {X.device} but x is on {x.device}; move all inputs to one "
                             "device")
    if D is not None and tuple(D.shape) != (H,):
        raise InputError(f"{fn}: D must have shape [{H}], got {tuple(D.shape)}")
    S = T
    if cu_seqlens is not None:
        if T != 1:
            raise InputError(f"{fn}: cu_seqlens packs sequences into one row, but x has {T} rows")
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype not in (torch.int32, torch.int64):
            raise InputError(f"{fn}: cu_seqlens must be a [S + 1] int32/int64 tensor of offsets")
        cu = cu_seqlens.tolist()
        if cu[0] != 0 or cu[-1] != L or any(b < a for a, b in zip(cu, cu[1:], strict=False)):
            raise InputError(f"{fn}: cu_seqlens must rise from 0 to L = {L}, got {cu[:4]}...{cu[-1:]}")
        S = len(cu) - 1
    if initial_states is not None and tuple(initial_states.shape) != (S, H, P, B.shape[3]):
        raise InputError(f"{fn}: initial_states must have shape {[S, H, P, B.shape[3]]}, got "
                         f"{tuple(initial_states.shape)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 16 \
            or chunk_size & (chunk_size - 1):
        raise InputError(f"{fn}: chunk_size must be a power of two >= 16, got {chunk_size!r}")
