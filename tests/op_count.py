"""Count what one decode step launches on the CPU, standing in for GPU time at batch 1 (a CUDA-graph step costs
about a few microseconds a kernel): the aten ops that compute (views and aliases are free) plus the Triton
kernel launches (``DirectLauncher``, run with the count paused so the interpreter's own tensor work is not
counted)."""

from __future__ import annotations

from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from seqssm.kernels.host import DirectLauncher

# Allocations and dtype queries launch nothing.
FREE = {"aten::empty.memory_format", "aten::empty_like", "aten::empty_strided", "aten::promote_types",
        "aten::detach", "aten::alias", "aten::_unsafe_view"}


class OpCount(TorchDispatchMode):
    """``with OpCount() as count:``; then ``count.ops`` (aten op or Triton kernel name -> calls) and
    ``count.total``."""

    def __init__(self):
        super().__init__()
        self.ops: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name()
        if not func.is_view and name not in FREE:
            self.ops[name] = self.ops.get(name, 0) + 1
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        launch = DirectLauncher.launch
        count = self

        def counted(launcher, *args, **kwargs):
            name = "triton:" + launcher.fn.__name__
            count.ops[name] = count.ops.get(name, 0) + 1
            with _disable_current_modes():
                return launch(launcher, *args, **kwargs)

        self._patch = mock.patch.object(DirectLauncher, "launch", counted)
        self._patch.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._patch.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.ops.values())


def step_ops(mixer: torch.nn.Module, hidden: torch.Tensor, cache) -> OpCount:
    """The ops of one ``mixer.step(hidden, cache)`` under no_grad, after a warm-up step (caches filled)."""
    with torch.no_grad():
        mixer.step(hidden, cache)
        with OpCount() as count:
            mixer.step(hidden, cache)
    return count
