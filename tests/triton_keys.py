"""Which Triton specializations a CUDA run would compile, found on the CPU without running a kernel.

Triton compiles a kernel once per *specialization key*: the constexpr arguments and launch options, each
tensor's dtype and 16-byte alignment, and each integer's width, whether it is 1 and whether it divides by 16
(unless the kernel lists it in ``do_not_specialize``). A cold compile of a scan kernel takes seconds on the H200
host, so a key set that keeps growing with the batches' lengths is a slow run.

:func:`record_specializations` (under ``TRITON_INTERPRET=1``) makes the launch plans take their CUDA choices
(tiles, configs, the PTX flags) and replaces every ``DirectLauncher`` launch by a record of its key, computed by
Triton's own ``native_specialize_impl``. The kernels do not run, so outputs hold garbage: only shapes, strides,
dtypes and alignment flow on, which is all a key depends on. Kernels launched without ``DirectLauncher`` (SSD,
the decode update) are not seen.
"""

from __future__ import annotations

import collections
import inspect

import torch

CUDA = torch.device("cuda")


class Recorder:
    """``keys``: kernel name -> set of specialization keys seen; ``new``: names of the keys first seen since the
    last :meth:`take_new`."""

    def __init__(self):
        self.keys: dict[str, set] = collections.defaultdict(set)
        self.new: list[str] = []

    def total(self) -> int:
        return sum(map(len, self.keys.values()))

    def take_new(self) -> collections.Counter:
        new, self.new = collections.Counter(self.new), []
        return new


def _specializer(fn):
    """arg -> Triton's (type, specialization) for each non-constexpr parameter of ``fn`` (an InterpretedFunction),
    honouring its ``do_not_specialize`` and ``do_not_specialize_on_alignment``."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    params = inspect.signature(fn.fn).parameters
    plain = [name for name, p in params.items() if "constexpr" not in str(p.annotation)]
    dns = set(fn.kwargs.get("do_not_specialize") or ())
    dnsa = set(fn.kwargs.get("do_not_specialize_on_alignment") or ())

    def key(args: tuple) -> tuple:
        assert len(args) == len(plain), f"{fn.fn.__name__}: {len(args)} positional arguments for {len(plain)}"
        return tuple(native_specialize_impl(BaseBackend, a, False, name not in dns, name not in dnsa)
                     for name, a in zip(plain, args, strict=True))

    return key


def record_specializations(monkeypatch) -> Recorder:
    """Patch (through pytest's ``monkeypatch``) the CUDA launch choices in and the launches out; see the module
    docstring. Needs TRITON_INTERPRET=1 (the kernels' impl="triton" paths then take CPU tensors)."""
    from seqssm.kernels import host
    from seqssm.kernels.causal_conv1d import triton as conv
    from seqssm.kernels.rms_norm import triton_bwd as norm_bwd
    from seqssm.kernels.rms_norm import triton_fwd as norm_fwd
    from seqssm.kernels.selective_scan import ptx, triton_fwd
    from seqssm.kernels.selective_scan import triton as scan

    tiles, configs, norm_config = conv._tiles, scan._default_configs, norm_fwd.launch_config
    monkeypatch.setattr(conv, "_tiles", lambda device, length: tiles(CUDA, length))
    monkeypatch.setattr(scan, "_default_configs", lambda device: configs(CUDA))
    for module in (norm_fwd, norm_bwd):
        monkeypatch.setattr(module, "launch_config", lambda dim, device: norm_config(dim, CUDA))
    for module in (triton_fwd, ptx):  # warp_layout reads ptx.ptx_paths
        monkeypatch.setattr(module, "ptx_paths", lambda: True)
    rec, keyers = Recorder(), {}

    def launch(self, grid, args, kwargs, key=None):
        name = self.fn.fn.__name__
        keyer = keyers.get(name) or keyers.setdefault(name, _specializer(self.fn))
        k = (keyer(tuple(args)), tuple(sorted(kwargs.items())))
        if k not in rec.keys[name]:
            rec.keys[name].add(k)
            rec.new.append(name)

    monkeypatch.setattr(host.DirectLauncher, "launch", launch)
    return rec
