"""Warp-wide linear-recurrence scans written in PTX, for ``tl.inline_asm_elementwise`` in the Triton kernels.

Layout contract: the operands are [1, BLOCK_T] tiles of one warp that Triton lays out as ``reps`` runs of
``vec`` consecutive positions a thread, lanes in order; register r·vec + k of lane l is position
r·32·vec + l·vec + k. The host predicts ``vec`` from the loads' alignment (:func:`row_width`,
:func:`warp_layout`); tests/test_ptx_scans.py runs these programs in a small PTX interpreter on the CPU.

That layout is Triton's internal choice, read from the sm_90a compiles of Triton 3.6 (benchmarks/compile_sm90.py)
and pinned by the CUDA tests there. On any other Triton version :func:`ptx_paths` says no, with one warning, and
the kernels take their plain Triton paths (``tl.associative_scan``, plain bf16 converts).
"""

from __future__ import annotations

import functools
import warnings

import triton
import triton.language as tl

# Triton versions (major.minor) whose tile layouts the inline PTX was verified against on a GPU.
VERIFIED_TRITON = ("3.6",)


@functools.cache
def ptx_paths() -> bool:
    """Whether the kernels may use their inline-PTX fast paths: not under TRITON_INTERPRET (which cannot run
    PTX), and only on a Triton version in ``VERIFIED_TRITON`` (warns once otherwise). Cached: a process has one
    Triton."""
    if triton.knobs.runtime.interpret:
        return False
    version = ".".join(triton.__version__.split(".")[:2])
    if version not in VERIFIED_TRITON:
        warnings.warn(f"seqssm: Triton {triton.__version__} is not one the scan's inline-PTX paths were verified on "
                      f"({', '.join(VERIFIED_TRITON)}); using the plain Triton paths (correct, slower backward)",
                      RuntimeWarning, stacklevel=2)
        return False
    return True

# Two bf16 in one register (pack=2: the first element in the low half) to two fp32: a bf16 is the top half of
# its fp32. ptxas spends a PRMT and a shift on the high half; an AND does it in one.
BF16_PAIR_PTX = tl.constexpr("shl.b32 $0, $2, 16;\nand.b32 $1, $2, 0xFFFF0000;")


def rev_scan_ptx(vec: int, reps: int) -> str:
    """PTX of the reverse scan g_t = x_t + a_{t+1} g_{t+1} over one warp's chunk, as inline assembly.

    Layout (what Triton gives a [1, BLOCK_T] tile of one warp): each thread holds ``reps`` runs of ``vec``
    consecutive positions; register r·vec + k of lane l is position r·32·vec + l·vec + k. Operands: g out
    ($0 ..), then x, then a = exp(Δ_t A) unshifted, then the chunk carry G (one copy a register each).
    Runs are scanned from the last: in-thread X_k = x_k + a_{k+1} X_{k+1}, P_k = a_{k+1} P_{k+1} (a_{k+1} of
    a run's last element comes from the next lane by shfl.down, or from lane 0 of the next run, or is 1 at the
    chunk's end, where G = a·g of the next chunk already carries it); a Hillis–Steele suffix scan of the lanes'
    (X_0, P_0) by shfl.down; then g_k = X_k + P_k·c with c the g entering from the right. So the shifted decay
    costs a shuffle, not an exp per element, and nothing is flipped: Triton lowers
    ``associative_scan(reverse=True)`` by flipping inputs and outputs across lanes with five butterfly
    shuffles a register (benchmarks/NOTES-scan.md, runs 6-8).
    """
    n = vec * reps

    def o(r, k):
        return f"${r * vec + k}"

    def x(r, k):
        return f"${n + r * vec + k}"

    def a(r, k):
        return f"${2 * n + r * vec + k}"

    lines = ["{", ".reg .pred q;", ".reg .f32 X, P, xo, po, c, cn, an, af;", f".reg .f32 p<{vec}>;",
             f"mov.f32 cn, ${3 * n};"]
    for r in range(reps - 1, -1, -1):
        if r == reps - 1:
            lines.append("mov.f32 af, 0f3F800000;")
        else:
            lines.append(f"shfl.sync.idx.b32 af, {a(r + 1, 0)}, 0, 31, -1;")
        lines += [f"shfl.sync.down.b32 an|q, {a(r, 0)}, 1, 31, -1;", "@!q mov.f32 an, af;",
                  f"mov.f32 {o(r, vec - 1)}, {x(r, vec - 1)};", f"mov.f32 p{vec - 1}, an;"]
        for k in range(vec - 2, -1, -1):
            lines += [f"fma.rn.f32 {o(r, k)}, {a(r, k + 1)}, {o(r, k + 1)}, {x(r, k)};",
                      f"mul.f32 p{k}, {a(r, k + 1)}, p{k + 1};"]
        lines += [f"mov.f32 X, {o(r, 0)};", "mov.f32 P, p0;"]
        for d in (1, 2, 4, 8, 16):
            lines += [f"shfl.sync.down.b32 xo|q, X, {d}, 31, -1;", f"shfl.sync.down.b32 po, P, {d}, 31, -1;",
                      "@q fma.rn.f32 X, P, xo, X;", "@q mul.f32 P, P, po;"]
        lines += ["shfl.sync.down.b32 xo|q, X, 1, 31, -1;", "shfl.sync.down.b32 po, P, 1, 31, -1;",
                  "@!q mov.f32 xo, 0f00000000;", "@!q mov.f32 po, 0f3F800000;", "fma.rn.f32 c, po, cn, xo;"]
        lines += [f"fma.rn.f32 {o(r, k)}, p{k}, c, {o(r, k)};" for k in range(vec)]
        if r:
            lines.append(f"shfl.sync.idx.b32 cn, {o(r, 0)}, 0, 31, -1;")
    return "\n".join(lines + ["}"])


def row_width(*tensors) -> int:
    """Bytes of one element when every [.., L] tensor among ``tensors`` (None skipped) has one element width,
    16-byte aligned rows and strides that are multiples of 16 elements, else 0: the ``elem_bytes`` for
    :func:`warp_layout`. Only then does Triton's divisibility hint let it load runs of 16 bytes a thread."""
    rows = [X for X in tensors if X is not None and X.dim() >= 3]
    widths = {X.element_size() for X in rows}
    aligned = all(X.data_ptr() % 16 == 0 and all(s % 16 == 0 for s in X.stride()[:-1]) for X in rows)
    return widths.pop() if len(widths) == 1 and aligned else 0


def warp_layout(block_d: int, block_t: int, num_warps: int, elem_bytes: int) -> tuple[int, int]:
    """(vec, reps) of the layout Triton gives a one-warp chunk's tiles, or (0, 0) where no PTX scan applies:
    not one channel and one warp a program, no PTX paths (:func:`ptx_paths`), or rows whose layout is not
    predicted. Runs of 16 bytes of ``elem_bytes`` elements a thread when the rows are aligned (``elem_bytes`` 0
    when they are not, or differ in width): read from the sm_90a compile, benchmarks/compile_sm90.py; pinned by
    the CUDA tests."""
    vec = min(16 // elem_bytes, block_t // 32) if elem_bytes in (2, 4) else 0
    if num_warps != 1 or block_d != 1 or vec < 1 or block_t % (32 * vec) or not ptx_paths():
        return 0, 0
    return vec, block_t // 32 // vec
