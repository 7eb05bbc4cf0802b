"""The warp scan in PTX (kernels/selective_scan/ptx.py), run by a small PTX interpreter over one warp's
registers, against the recurrence it implements.

The interpreter knows only the instructions the generator emits (mov, fma, mul, shfl.sync down/idx, predicates)
with PTX's semantics; the GPU run of the kernel is covered by tests/test_triton_scan.py on CUDA machines. This
checks the algorithm for every (positions a run, runs a thread) layout the host may ask for, on the CPU.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from seqssm.kernels.selective_scan.ptx import rev_scan_ptx

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
        elif op.startswith("shfl.sync.down") or op.startswith("shfl.sync.up"):
            dest = args[0].split("|") + [None]
            src = lane + int(args[2]) if "down" in op else lane - int(args[2])
            valid = 0 <= src < LANES
            updates[lane][dest[0]] = _value(lanes[src if valid else lane], args[1])
            if dest[1]:
                updates[lane][dest[1]] = valid
        elif op.startswith("shfl.sync.idx"):
            updates[lane][args[0]] = _value(lanes[int(args[2])], args[1])
        else:
            raise AssertionError(f"the interpreter does not know {op}")
    for regs, new in zip(lanes, updates, strict=True):
        regs.update(new)


def _position(i: int, lane: int, vec: int) -> int:
    return (i // vec) * LANES * vec + lane * vec + i % vec


def run_ptx(program: str, vec: int, reps: int, inputs: list[np.ndarray], carry: float, outputs: int) -> list:
    """The [T] outputs of a generated program; register r·vec + k of lane l is position r·32·vec + l·vec + k."""
    n = vec * reps
    lanes = [{} for _ in range(LANES)]
    for lane, regs in enumerate(lanes):
        for i in range(n):
            for j, x in enumerate(inputs):
                regs[f"${(outputs + j) * n + i}"] = x[_position(i, lane, vec)]
            regs[f"${(outputs + len(inputs)) * n + i}"] = np.float32(carry)
    for line in program.splitlines():
        line = line.strip().rstrip(";")
        if line not in ("{", "}") and not line.startswith(".reg"):
            _step(lanes, line)
    results = [np.empty(LANES * n, dtype=np.float32) for _ in range(outputs)]
    for lane, regs in enumerate(lanes):
        for i in range(n):
            for j in range(outputs):
                results[j][_position(i, lane, vec)] = regs[f"${j * n + i}"]
    return results


LAYOUTS = [(8, 1), (8, 2), (4, 2), (4, 4), (1, 8), (1, 16)]


@pytest.mark.parametrize(("vec", "reps"), LAYOUTS)
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
    (got,) = run_ptx(rev_scan_ptx(vec, reps), vec, reps, [x, a], carry, outputs=1)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_ptx_paths_only_on_verified_triton(monkeypatch):
    """The inline-PTX fast paths depend on Triton's internal tile layouts: on a version they were not verified
    on, ``ptx_paths`` says no with one warning and ``warp_layout`` predicts no layout (the plain paths run)."""
    import warnings

    import triton

    from seqssm.kernels.selective_scan import ptx

    monkeypatch.setattr(triton.knobs.runtime, "interpret", False)
    ptx.ptx_paths.cache_clear()
    try:
        monkeypatch.setattr(triton, "__version__", "3.7.0")
        with pytest.warns(RuntimeWarning, match="3.7.0"):
            assert not ptx.ptx_paths()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once: a second call neither warns nor changes its answer
            assert not ptx.ptx_paths()
            assert ptx.warp_layout(1, 256, 1, 2) == (0, 0)
        ptx.ptx_paths.cache_clear()
        monkeypatch.setattr(triton, "__version__", "3.6.1")
        assert ptx.ptx_paths()
        assert ptx.warp_layout(1, 256, 1, 2) == (8, 1)
        assert ptx.warp_layout(1, 256, 1, 4) == (4, 2)
        ptx.ptx_paths.cache_clear()
        monkeypatch.setattr(triton.knobs.runtime, "interpret", True)
        assert not ptx.ptx_paths()  # the interpreter cannot run PTX
    finally:
        ptx.ptx_paths.cache_clear()
