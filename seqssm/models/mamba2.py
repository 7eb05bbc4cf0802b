"""The Mamba-2 mixer (SSD layer), with the state-passing interface of ``MambaMixer``.

in_proj → [z | xBC | dt]; causal depthwise conv + SiLU on xBC; split into x [H, P], B, C [G, N]; the SSD
scan (``seqssm.kernels.ssd``) with a scalar decay per head; gated RMSNorm of y · SiLU(z); out_proj. Parameter
names follow mamba_ssm's ``Mamba2``.

Shapes: B batch, L length, D d_model, E d_inner = expand · D, H heads = E / P, P head dim, G groups,
N d_state, W d_conv, K = E + 2 G N conv channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seqssm.errors import InputError
from seqssm.kernels.ssd import ssd, ssd_step_ref
from seqssm.models.cache import LayerCache
from seqssm.models.mixer import IMPLS, select_kernels


class Mamba2Mixer(nn.Module):
    """One SSD layer; state: ``LayerCache(conv_state [B, K, W - 1], ssm_state [B, H, P, N] fp32)``."""

    def __init__(self, *, d_model: int, d_state: int = 64, d_conv: int = 4, expand: int = 2, headdim: int = 32,
                 ngroups: int = 1, chunk_size: int = 64, dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, conv_bias: bool = True, bias: bool = False, impl: str = "auto",
                 device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise InputError(f"Mamba2Mixer: d_inner = expand * d_model = {self.d_inner} must be a multiple of "
                             f"headdim = {headdim}")
        self.headdim, self.nheads, self.ngroups = headdim, self.d_inner // headdim, ngroups
        if self.nheads % ngroups:
            raise InputError(f"Mamba2Mixer: {self.nheads} heads must be a multiple of ngroups = {ngroups}")
        self.chunk_size = chunk_size
        # "ref" of the Mamba-1 mixer means the sequential loop; any other choice goes to ssd's own dispatch.
        self.impl = impl
        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_dim + self.nheads, bias=bias, **factory)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, bias=conv_bias,
                                padding=d_conv - 1, **factory)
        dt = torch.exp(torch.rand(self.nheads, device=device) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus(dt_bias) = dt
        A = torch.empty(self.nheads, device=device).uniform_(1, 16)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.nheads, device=device))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.norm_weight = nn.Parameter(torch.ones(self.d_inner, **factory))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> LayerCache:
        """Zero states: the state before the first token."""
        return LayerCache(
            conv_state=torch.zeros(batch_size, self.conv_dim, self.d_conv - 1, device=device, dtype=dtype),
            ssm_state=torch.zeros(batch_size, self.nheads, self.headdim, self.d_state, device=device,
                                  dtype=torch.float32))

    def _gate_out(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Gated RMSNorm (norm of y · SiLU(z), in fp32) then out_proj."""
        g = (y.float() * F.silu(z.float()))
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + 1e-5) * self.norm_weight.float()
        g = g.to(self.out_proj.weight.dtype)
        if g.dim() == 2:  # a decode step: the kernels' linear (a GEMV on CUDA for a few rows)
            return self._step_ops(g).linear(g, self.out_proj.weight, self.out_proj.bias)
        return self.out_proj(g)

    def _step_ops(self, hidden: torch.Tensor):
        return select_kernels(self.impl if self.impl in IMPLS else "auto", hidden.device)

    def _split(self, xBC: torch.Tensor):
        x, B, C = torch.split(xBC, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], -1)
        return (x.unflatten(-1, (self.nheads, self.headdim)), B.unflatten(-1, (self.ngroups, self.d_state)),
                C.unflatten(-1, (self.ngroups, self.d_state)))

    def forward(self, hidden: torch.Tensor, state: LayerCache | None = None, *, return_state: bool = False,
                cache: LayerCache | None = None):
        """[B, L, D] → [B, L, D] from optional states (zeros when None), as ``MambaMixer.forward``: with
        ``return_state`` also the ``LayerCache`` after the sequence; ``cache``: prefill, advanced in place."""
        if cache is not None:
            out, final = self.forward(hidden, cache, return_state=True)
            cache.conv_state.copy_(final.conv_state)
            cache.ssm_state.copy_(final.ssm_state)
            return out
        z, xBC, dt = torch.split(self.in_proj(hidden), [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        xBC = xBC.transpose(1, 2)  # [B, K, L]
        w = self.d_conv - 1
        if state is not None:
            padded = torch.cat([state.conv_state.to(xBC.dtype), xBC], dim=-1)
        else:
            padded = F.pad(xBC, (w, 0))
        conv = F.conv1d(padded, self.conv1d.weight, self.conv1d.bias, groups=self.conv_dim)
        x, B, C = self._split(F.silu(conv).transpose(1, 2))
        dt = F.softplus(dt.float() + self.dt_bias.float())
        A = -torch.exp(self.A_log.float())
        impl = self.impl if self.impl in ("ref", "chunked", "triton") else "auto"
        y, final = ssd(x, dt, A, B, C, self.D.float(), None if state is None else state.ssm_state,
                       chunk_size=self.chunk_size, return_final_states=True, impl=impl)
        out = self._gate_out(y.flatten(-2), z)
        if not return_state:
            return out
        conv_state = padded[..., padded.shape[-1] - w:] if w else padded[..., :0]
        return out, LayerCache(conv_state=conv_state, ssm_state=final)

    def _step_constants(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """fp32 (A [E, N], D [E], Δ bias [E]) for the Triton step: each head's scalar repeated over its P channels
        (A a stride-0 view over N), so that the Mamba-1 update kernel runs the SSD recurrence with one channel a
        row of the [B, E, N] state. Recomputed only when a parameter changed (data_ptr, ``_version``, dtype), as
        ``MambaMixer._step_constants``."""
        params = (self.A_log, self.D, self.dt_bias)
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in params)
        cached = getattr(self, "_constants", None)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                per_channel = lambda v: v.float()[:, None].expand(-1, self.headdim).reshape(-1)  # noqa: E731
                A = per_channel(-torch.exp(self.A_log.float()))
                cached = (key, (A[:, None].expand(-1, self.d_state), per_channel(self.D), per_channel(self.dt_bias)))
            self._constants = cached
        return cached[1]

    def _triton_step_ok(self, ops, cache: LayerCache) -> bool:
        """The Triton kernels take this step: the conv update's widths (2..4), a [B, H, P, N] state that views as
        [B, E, N] (updated in place through the view) and the RMSNorm kernel's row length."""
        if not ops.triton or not 2 <= self.d_conv <= 4:
            return False
        from seqssm.kernels.rms_norm.triton_fwd import MAX_DIM

        s = cache.ssm_state.stride()
        return self.d_inner <= MAX_DIM and s[1] == self.headdim * s[2]

    def step(self, hidden: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        """One token: [B, D] → [B, D], advancing ``cache`` in place.

        With the Triton kernels: in_proj, the conv update (SiLU) on the xBC channels, Δ repeated over each head's
        P channels (the one copy), the Mamba-1 state update on the state as [B, E, N] (heads as P channels each,
        B and C per group, z's gate inside: the norm's input y · SiLU(z)), the RMSNorm kernel, out_proj. Else the
        PyTorch reference step.
        """
        ops = self._step_ops(hidden)
        zxbcdt = ops.linear(hidden, self.in_proj.weight, self.in_proj.bias)
        z, xBC, dt = torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        if not self._triton_step_ok(ops, cache):
            return self._step_ref(z, xBC, dt, cache)
        batch = hidden.shape[0]
        xBC = ops.conv_update(xBC, cache.conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias,
                              activation="silu")
        x, B, C = self._split(xBC)
        dt = dt[:, :, None].expand(-1, -1, self.headdim).reshape(batch, self.d_inner)
        A, D, dt_bias = self._step_constants()
        state = cache.ssm_state.view(batch, self.d_inner, self.d_state)
        y = ops.state_update(state, x.flatten(-2), dt, A, B, C, D, z=z, dt_bias=dt_bias, dt_softplus=True)
        g, _ = ops.add_norm(y, None, self.norm_weight, 1e-5, False, out_dtype=self.out_proj.weight.dtype)
        return ops.linear(g, self.out_proj.weight, self.out_proj.bias)

    def _step_ref(self, z: torch.Tensor, xBC: torch.Tensor, dt: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        """The reference step after in_proj, in PyTorch (``ssd_step_ref``)."""
        window = torch.cat([cache.conv_state.to(xBC.dtype), xBC[..., None]], dim=-1)  # [B, K, W]
        conv = (window * self.conv1d.weight.squeeze(1)).sum(-1)
        if self.conv1d.bias is not None:
            conv = conv + self.conv1d.bias
        cache.conv_state.copy_(window[..., 1:])
        x, B, C = self._split(F.silu(conv))
        dt = F.softplus(dt.float() + self.dt_bias.float())
        y = ssd_step_ref(cache.ssm_state, x, dt, -torch.exp(self.A_log.float()), B, C, self.D.float())
        return self._gate_out(y.flatten(-2), z)
