"""Host-side integer helpers for launching the Triton kernels.

``triton.cdiv`` and ``triton.next_power_of_2`` are ``ConstexprFunction`` objects: called from Python they
cost ~5 µs each, and a scan step calls them a dozen times. On short sequences the GPU waits for the host, so
the launch code uses these plain versions (inside ``@triton.jit`` code the Triton ones stay).
"""

from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    """Ceiling of a / b for positive b."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 << max(n - 1, 0).bit_length()
