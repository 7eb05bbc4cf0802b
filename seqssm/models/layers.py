"""One backbone layer from the config's pattern: its mixer ("M": the config's SSM, "A": attention), an
optional MoE MLP after it, and the layer's decode state."""

from __future__ import annotations

import torch
from torch import nn

from seqssm.config import MambaConfig
from seqssm.models.attention import AttentionMixer
from seqssm.models.bidirectional import BiMambaMixer, reverse_padded
from seqssm.models.cache import LayerCache
from seqssm.models.mamba2 import Mamba2Mixer
from seqssm.models.mixer import MambaMixer
from seqssm.models.moe import MoEMLP
from seqssm.models.rcps import RCPSBiMambaMixer


class BiMixer(nn.Module):
    """out = fwd(x) + reverse(rev(reverse(x))) for any causal mixer (no weight tying): Mamba-2 bidirectional."""

    def __init__(self, fwd: nn.Module, rev: nn.Module):
        super().__init__()
        self.fwd, self.rev = fwd, rev
        self.impl = fwd.impl

    def forward(self, hidden: torch.Tensor, *, rev_index: torch.Tensor | None = None) -> torch.Tensor:
        return self.fwd(hidden) + reverse_padded(self.rev(reverse_padded(hidden, rev_index)), rev_index)


def build_mixer(config: MambaConfig, kind: str, *, impl: str, device=None, dtype=None) -> nn.Module:
    """The mixer of a layer of ``kind`` ("M" or "A")."""
    factory = {"device": device, "dtype": dtype}
    if kind == "A":
        return AttentionMixer(d_model=config.d_model, n_heads=config.n_heads, causal=not config.bidirectional,
                              max_len=config.attn_max_len, impl=impl, **factory)
    if config.mixer == "s4d":
        from seqssm.models.s4d import S4DMixer

        return S4DMixer(d_model=config.d_model, d_state=config.d_state, dt_min=config.dt_min,
                        dt_max=config.dt_max, bidirectional=config.bidirectional, impl=impl, **factory)
    if config.mixer == "mamba2":
        def make():
            return Mamba2Mixer(d_model=config.d_model, d_state=config.d_state, d_conv=config.d_conv,
                               expand=config.expand, headdim=config.headdim, dt_min=config.dt_min,
                               dt_max=config.dt_max, dt_init_floor=config.dt_init_floor,
                               conv_bias=config.conv_bias, bias=config.bias, impl=impl, **factory)
        return BiMixer(make(), make()) if config.bidirectional else make()
    mixer_kwargs = dict(
        d_model=config.d_mixer, d_state=config.d_state, d_conv=config.d_conv, expand=config.expand,
        dt_rank=config.resolved_dt_rank, dt_min=config.dt_min, dt_max=config.dt_max,
        dt_init_floor=config.dt_init_floor, dt_scale=config.dt_scale, conv_bias=config.conv_bias,
        bias=config.bias, impl=impl, **factory,
    )
    if config.bidirectional:
        cls = RCPSBiMambaMixer if config.rc_equivariant else BiMambaMixer
        return cls(weight_tie=config.bidirectional_weight_tie, **mixer_kwargs)
    return MambaMixer(**mixer_kwargs)


def build_moe(config: MambaConfig, i: int, *, device=None, dtype=None) -> MoEMLP | None:
    """Layer i's MoE MLP, or None when it has none."""
    if not config.moe_layer(i):
        return None
    return MoEMLP(d_model=config.d_model, d_ff=config.d_ff or 4 * config.d_model, n_experts=config.n_experts,
                  top_k=config.top_k, capacity_factor=config.capacity_factor, device=device, dtype=dtype)


def allocate_layer_state(config: MambaConfig, mixer: nn.Module, batch_size: int, *, device, dtype,
                         max_len: int | None = None):
    """Zero decode state of one causal layer (a ``KVCache`` of ``max_len`` positions for attention)."""
    if isinstance(mixer, AttentionMixer):
        return mixer.allocate_state(batch_size, device=device, dtype=dtype, max_len=max_len)
    if isinstance(mixer, MambaMixer):
        return LayerCache(
            conv_state=torch.zeros(batch_size, config.d_inner, config.d_conv - 1, device=device, dtype=dtype),
            ssm_state=torch.zeros(batch_size, config.d_inner, config.d_state, device=device, dtype=torch.float32))
    return mixer.allocate_state(batch_size, device=device, dtype=dtype)
