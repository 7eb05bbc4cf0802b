"""Host-side helpers for launching the Triton kernels.

On short sequences the GPU waits for the host, so the launch path is kept lean:

- ``triton.cdiv`` and ``triton.next_power_of_2`` are ``ConstexprFunction`` objects: called from Python they
  cost ~5 µs each, and a scan step calls them a dozen times; the plain versions here serve the launch code
  (inside ``@triton.jit`` code the Triton ones stay).
- ``JITFunction.run`` binds and specializes every argument, reads knobs, builds its cache key as a string
  and launch metadata for hooks nobody set, before the compiled kernel's C launcher runs. On the H200 machine
  that made a launch of the backward's 60 arguments 66 µs against 46 µs through :class:`DirectLauncher`, which
  calls the compiled launcher itself once a specialization has been compiled (benchmarks/NOTES-scan.md,
  run 14). Deriving the launcher's own key from the arguments still costs 10-18 µs a scan launch there (Python
  runs at ~0.3 µs an operation on that host), so callers that know what their arguments came from pass a key
  instead (run 15). The C launcher (12-18 µs: a driver query per pointer argument) is what is left.
"""

from __future__ import annotations

import torch
import triton
from triton.runtime import driver


def cdiv(a: int, b: int) -> int:
    """Ceiling of a / b for positive b."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 << max(n - 1, 0).bit_length()


def rows_layout(X: torch.Tensor) -> tuple[int, ...]:
    """Strides for a new [B, D, L] buffer laid out like X: X's own when X is dense (no gaps, no overlap)
    with unit stride along L, such as the channel-major [D, B, L] storage of a fused block, whose outputs
    then keep that layout and are never transposed; else contiguous."""
    expected = 1
    dense = X.stride(-1) == 1
    for d in sorted(range(X.dim()), key=X.stride):
        if X.shape[d] != 1:
            dense = dense and X.stride(d) == expected
            expected *= X.shape[d]
    return tuple(X.stride()) if dense else (X.shape[1] * X.shape[2], X.shape[2], 1)


def launch_options(cfg) -> dict:
    """Launch keywords of a launch-shape config with ``num_warps`` and ``maxnreg`` fields: maxnreg only when
    set (a register cap: fewer registers a thread, more warps an SM)."""
    return {"num_warps": cfg.num_warps, **({"maxnreg": cfg.maxnreg} if cfg.maxnreg else {})}


def _key(args: tuple) -> tuple:
    """A cache key at least as fine as Triton's specialization of these launch arguments: a tensor's dtype and
    16-byte alignment, every other value as it is (Triton looks only at an integer's being 1, its divisibility
    by 16 and its width, so a new length takes the compiling path once more; comparing values is the cheap way,
    ~5 µs for 60 arguments). The types ride along because True == 1 == 1.0 while Triton types them apart."""
    values = tuple([(a.dtype, a.data_ptr() % 16 == 0) if isinstance(a, torch.Tensor) else a for a in args])
    return values, tuple(map(type, args))


def _hooked(hook) -> bool:
    """Whether a launch hook is set (a HookChain with calls, or a plain callable)."""
    return hook is not None and bool(getattr(hook, "calls", True))


class DirectLauncher:
    """``launcher[grid](*args, **constexprs_and_options)`` as ``kernel[grid](...)``, with less host time.

    The first launch of each specialization goes through ``JITFunction.run`` (which compiles), and the
    compiled kernel is kept under a key at least as fine as Triton's own specialization. Later launches call
    the compiled kernel's C launcher directly. The interpreter, and launch hooks that a profiler has set,
    always take the JITFunction path. Positional arguments must be the kernel's non-constexpr parameters in
    order; keywords the rest.

    ``launcher[grid](...)`` derives the key from the arguments (``_key``: ~0.3 µs an argument on the H200
    machine's host, 10-18 µs for the scan's launches). A caller that knows what its arguments were computed
    from passes that instead, to :meth:`launch`.
    """

    # Benchmarks switch this off to measure what the direct path saves.
    enabled = True

    def __init__(self, fn: triton.runtime.JITFunction, max_entries: int = 256):
        self.fn = fn
        # Under TRITON_INTERPRET=1, @triton.jit made an InterpretedFunction: there is no compiled kernel.
        self.compiles = isinstance(fn, triton.runtime.JITFunction)
        self.max_entries = max_entries
        self._cache: dict = {}

    def __getitem__(self, grid: tuple[int, ...]):
        return lambda *args, **kwargs: self.launch(grid, args, kwargs)

    def launch(self, grid: tuple[int, ...], args: tuple, kwargs: dict, key=None) -> None:
        """Launch on ``grid``. ``key``: None, or a hashable that determines Triton's specialization of ``args``
        and ``kwargs`` (every value but the tensors' addresses, and the tensors' dtypes and 16-byte
        alignment), such as the shapes, strides, dtypes and alignment the arguments were computed from."""
        knobs = triton.knobs.runtime
        if (not (self.compiles and self.enabled) or _hooked(knobs.launch_enter_hook)
                or _hooked(knobs.launch_exit_hook)):
            self.fn[grid](*args, **kwargs)
            return
        device = torch.cuda.current_device()
        key = (device, _key(args), tuple(kwargs.items())) if key is None else (device, key)
        hit = self._cache.get(key)
        if hit is None:
            kernel = self.fn[grid](*args, **kwargs)
            if hasattr(kernel, "result"):
                kernel = kernel.result()
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            consts = tuple(kwargs[name] for name in self.fn.arg_names[len(args):])
            self._cache[key] = (kernel, consts)
            return
        kernel, consts = hit
        grid = (*grid, 1, 1)
        kernel.run(grid[0], grid[1], grid[2], driver.active.get_current_stream(device), kernel.function,
                   kernel.packed_metadata, None, None, None, *args, *consts)
