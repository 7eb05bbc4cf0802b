"""Pre-norm residual block: residual += x; mixer(RMSNorm(residual)), as mamba_ssm's ``Block``."""

from __future__ import annotations

import torch
from torch import nn

from seqssm.models.bidirectional import BiMambaMixer
from seqssm.models.cache import LayerCache
from seqssm.models.mixer import MambaMixer, PreNorm, select_kernels
from seqssm.models.norm import RMSNorm


class Block(nn.Module):
    """Takes (hidden, residual) and returns the mixer output and the updated residual stream.

    Carrying the residual separately lets the next block (or the final norm) do the add and the norm in one
    place, with the sum kept in fp32 when ``residual_in_fp32``. ``rc_halves``: the norm of a
    reverse-complement-equivariant model, shared over the two strand halves (see :func:`rms_norm`). The add
    and norm run as one Triton kernel where the mixer's kernels are Triton (``Kernels.add_norm``).
    """

    def __init__(
        self,
        mixer: MambaMixer | BiMambaMixer,
        *,
        d_model: int,
        norm_eps: float = 1e-5,
        residual_in_fp32: bool = True,
        rc_halves: bool = False,
        moe: nn.Module | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.mixer = mixer
        self.norm = RMSNorm(d_model, eps=norm_eps, rc_halves=rc_halves, device=device, dtype=dtype)
        self.residual_in_fp32 = residual_in_fp32
        self.impl = mixer.fwd.impl if isinstance(mixer, BiMambaMixer) else mixer.impl
        self.kind = getattr(mixer, "kind", "M")  # "A" for attention: the backbone passes it its key mask
        # MoE-Mamba / Jamba: an MLP sub-layer after the mixer, with its own pre-norm and residual add.
        self.moe = moe
        if moe is not None:
            self.norm2 = RMSNorm(d_model, eps=norm_eps, device=device, dtype=dtype)

    def forward(
        self, hidden: torch.Tensor, residual: torch.Tensor | None = None, **mixer_kwargs
    ) -> tuple[torch.Tensor, ...]:
        """hidden, residual: [B, L, D] (residual None for the first block); mixer_kwargs go to the mixer
        (``state`` / ``return_state`` for a causal mixer: then the mixer's new state comes third)."""
        normed, residual = self.add_norm(hidden, residual)
        out = self.mixer(normed, **mixer_kwargs)
        with_state = isinstance(out, tuple)
        if with_state:
            out, state = out
        if self.moe is not None:
            out, residual = self._moe(out, residual, self.moe)
        return (out, residual, state) if with_state else (out, residual)

    def step(
        self, hidden: torch.Tensor, residual: torch.Tensor | None, cache: LayerCache
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One token: hidden, residual [B, D]. A Mamba-1 mixer may take the add + norm into its in_proj kernel
        (``MambaMixer.fuses_prenorm``, ``mixer.FUSE_DECODE``)."""
        if isinstance(self.mixer, MambaMixer) and self.mixer.fuses_prenorm(hidden, self.norm):
            out, residual = self.mixer.step(hidden, cache, PreNorm(residual, self.norm, self.residual_in_fp32))
        else:
            normed, residual = self.add_norm(hidden, residual)
            out = self.mixer.step(normed, cache)
        if self.moe is not None:
            out, residual = self._moe(out, residual, self.moe.step)
        return out, residual

    def _moe(self, hidden: torch.Tensor, residual: torch.Tensor, fn):
        normed, residual = add_norm(hidden, residual, self.norm2, self.residual_in_fp32, self.impl,
                                    matmul_dtype=True)
        return fn(normed), residual

    def add_norm(self, hidden: torch.Tensor, residual: torch.Tensor | None):
        """(norm(residual + hidden), residual + hidden): the block's input side, as :func:`add_norm`."""
        return add_norm(hidden, residual, self.norm, self.residual_in_fp32, self.impl, matmul_dtype=True)


def add_norm(hidden: torch.Tensor, residual: torch.Tensor | None, norm: RMSNorm, residual_in_fp32: bool,
             impl: str, *, matmul_dtype: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """residual += hidden; (norm(residual), residual) through the kernels of ``impl`` on hidden's device.

    ``matmul_dtype``: under autocast, return normed in the autocast dtype (what the next projection reads)
    rather than the weight's; the fused kernel then writes it once instead of a cast following.
    """
    kind = hidden.device.type
    out_dtype = torch.get_autocast_dtype(kind) if matmul_dtype and torch.is_autocast_enabled(kind) else None
    return select_kernels(impl, hidden.device).add_norm(hidden, residual, norm.weight, norm.eps, residual_in_fp32,
                                                        rc_halves=norm.rc_halves, out_dtype=out_dtype)
