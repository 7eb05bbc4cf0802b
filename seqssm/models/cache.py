"""Recurrent-inference state of a causal Mamba model: constant memory per generated token."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch


@dataclass
class LayerCache:
    """One mixer's state between tokens.

    conv_state: [B, D_inner, W - 1] the last W - 1 conv inputs, in the model's dtype.
    ssm_state: [B, D_inner, N] the selective-scan state, always fp32 (it accumulates over the whole sequence).
    """

    conv_state: torch.Tensor
    ssm_state: torch.Tensor


@dataclass
class InferenceCache:
    """Per-layer states plus how many positions they have consumed (``seqlen_offset``). A layer's state is
    a ``LayerCache`` for an SSM, or another dataclass of [B, ...] tensors (``KVCache`` for attention)."""

    layers: list
    seqlen_offset: int = 0
    batch_size: int = field(init=False)

    def __post_init__(self) -> None:
        self.batch_size = _tensors(self.layers[0])[0].shape[0] if self.layers else 0

    @classmethod
    def allocate(
        cls,
        *,
        n_layer: int,
        batch_size: int,
        d_inner: int,
        d_state: int,
        d_conv: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> InferenceCache:
        """Zero states, i.e. the state before the first token."""
        layers = [
            LayerCache(
                conv_state=torch.zeros(batch_size, d_inner, d_conv - 1, device=device, dtype=dtype),
                ssm_state=torch.zeros(batch_size, d_inner, d_state, device=device, dtype=torch.float32),
            )
            for _ in range(n_layer)
        ]
        return cls(layers=layers)

    def reset(self) -> None:
        """Back to the state before the first token, keeping the buffers."""
        for layer in self.layers:
            for tensor in _tensors(layer):
                tensor.zero_()
        self.seqlen_offset = 0


def _tensors(layer) -> list[torch.Tensor]:
    """The tensor fields of one layer's state dataclass."""
    values = (getattr(layer, f.name) for f in dataclasses.fields(layer))
    return [v for v in values if isinstance(v, torch.Tensor)]
