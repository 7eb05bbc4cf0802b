"""The pair backward's inline-PTX reverse scan (kernels/selective_scan/fused_bwd.py), run by a small PTX
interpreter over one warp's registers, against the recurrence it implements.

The interpreter knows only the instructions the generator emits (mov, fma, mul, shfl.sync down/idx, predicates)
with PTX's semantics; the GPU run of the kernel is covered by tests/test_triton_scan.py on CUDA machines. This
checks the algorithm for every (positions a run, runs a thread) layout the host may ask for, on the CPU.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from seqssm.kernels.selective_scan.fused_bwd import _rev_scan_ptx

LANES = 32


def _value(regs: dict, token: str) -> float:
    if token.startswith("0f"):
        return struct.unpack(">f", bytes.fromhex(token[2:]))[0]
    return regs[token]


def _step(lanes: list[dict], line: str) -> None:
    guard = None
    if line.startswith("@"):
        guard, line = line.split(" ", 1)
    op, rest = line.split(" ", 1)
    args = [a.strip() for a in rest.split(",")]
    updates = [{} for _ in lanes]
    for lane, regs in enumerate(lanes):
        if guard is not None and regs[guard.lstrip("@!")] == guard.startswith("@!"):
            continue
        if op == "mov.f32":
            updates[lane][args[0]] = _value(regs, args[1])
        elif op == "fma.rn.f32":
            updates[lane][args[0]] = np.float32(_value(regs, args[1]) * _value(regs, args[2]) + _value(regs, args[3]))
        elif op == "mul.f32":
            updates[lane][args[0]] = np.float32(_value(regs, args[1]) * _value(regs, args[2]))
        elif op.startswith("shfl.sync.down"):
            dest, src = args[0].split("|") + [None], lane + int(args[2])
            valid = src < LANES
            updates[lane][dest[0]] = _value(lanes[src if valid else lane], args[1])
            if dest[1]:
                updates[lane][dest[1]] = valid
        elif op.startswith("shfl.sync.idx"):
            updates[lane][args[0]] = _value(lanes[int(args[2])], args[1])
        else:
            raise AssertionError(f"the interpreter does not know {op}")
    for regs, new in zip(lanes, updates, strict=True):
        regs.update(new)


def run_ptx(vec: int, reps: int, x: np.ndarray, a: np.ndarray, carry: float) -> np.ndarray:
    """g [T] from the generated PTX; register r·vec + k of lane l holds position r·32·vec + l·vec + k."""
    n = vec * reps
    lanes = [{} for _ in range(LANES)]
    for lane, regs in enumerate(lanes):
        for i in range(n):
            pos = (i // vec) * LANES * vec + lane * vec + i % vec
            regs[f"${n + i}"], regs[f"${2 * n + i}"], regs[f"${3 * n + i}"] = x[pos], a[pos], np.float32(carry)
    for line in _rev_scan_ptx(vec, reps).splitlines():
        line = line.strip().rstrip(";")
        if line not in ("{", "}") and not line.startswith(".reg"):
            _step(lanes, line)
    g = np.empty(LANES * n, dtype=np.float32)
    for lane, regs in enumerate(lanes):
        for i in range(n):
            g[(i // vec) * LANES * vec + lane * vec + i % vec] = regs[f"${i}"]
    return g


@pytest.mark.parametrize(("vec", "reps"), [(8, 1), (8, 2), (4, 2), (4, 4), (1, 8), (1, 16)])
def test_ptx_reverse_scan_matches_recurrence(vec, reps):
    """g_t = x_t + a_{t+1} g_{t+1}, with g at the chunk's last position = x + G (G carries a·g of the next chunk)."""
    rng = np.random.default_rng(vec * 100 + reps)
    length = LANES * vec * reps
    x = rng.standard_normal(length).astype(np.float32)
    a = rng.uniform(0.3, 1.0, length).astype(np.float32)
    carry = 0.7
    ref = np.empty(length)
    ref[-1] = x[-1] + carry
    for t in range(length - 2, -1, -1):
        ref[t] = x[t] + a[t + 1] * ref[t + 1]
    got = run_ptx(vec, reps, x, a, carry)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
