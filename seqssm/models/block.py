"""Pre-norm residual block: residual += x; mixer(RMSNorm(residual)), as mamba_ssm's ``Block``."""

from __future__ import annotations

import torch
from torch import nn

from seqssm.models.bidirectional import BiMambaMixer
from seqssm.models.cache import LayerCache
from seqssm.models.mixer import MambaMixer
from seqssm.models.norm import RMSNorm, add_rms_norm


class Block(nn.Module):
    """Takes (hidden, residual) and returns the mixer output and the updated residual stream.

    Carrying the residual separately lets the next block (or the final norm) do the add and the norm in one
    place, with the sum kept in fp32 when ``residual_in_fp32``. ``rc_halves``: the norm of a
    reverse-complement-equivariant model, shared over the two strand halves (see :func:`rms_norm`).
    """

    def __init__(
        self,
        mixer: MambaMixer | BiMambaMixer,
        *,
        d_model: int,
        norm_eps: float = 1e-5,
        residual_in_fp32: bool = True,
        rc_halves: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.mixer = mixer
        self.norm = RMSNorm(d_model, eps=norm_eps, rc_halves=rc_halves, device=device, dtype=dtype)
        self.residual_in_fp32 = residual_in_fp32

    def forward(
        self, hidden: torch.Tensor, residual: torch.Tensor | None = None, **mixer_kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden, residual: [B, L, D] (residual None for the first block); mixer_kwargs go to the mixer."""
        normed, residual = self._add_norm(hidden, residual)
        return self.mixer(normed, **mixer_kwargs), residual

    def step(
        self, hidden: torch.Tensor, residual: torch.Tensor | None, cache: LayerCache
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One token: hidden, residual [B, D]."""
        normed, residual = self._add_norm(hidden, residual)
        return self.mixer.step(normed, cache), residual

    def _add_norm(self, hidden: torch.Tensor, residual: torch.Tensor | None):
        return add_rms_norm(hidden, residual, self.norm.weight, self.norm.eps, self.residual_in_fp32,
                            rc_halves=self.norm.rc_halves)
