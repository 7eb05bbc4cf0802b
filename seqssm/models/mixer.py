"""The Mamba-1 mixer (selective SSM layer) with an explicit choice of kernel path.

Parameter names and initialisation follow mamba_ssm's ``Mamba`` module, so its state dicts map one to one.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from seqssm.errors import InputError
from seqssm.models.cache import LayerCache

IMPLS = ("auto", "triton", "chunked", "ref")


class Kernels(NamedTuple):
    """The four ops one mixer needs: parallel scan and conv for a sequence, in-place updates for a token."""

    scan: Callable
    conv: Callable
    state_update: Callable
    conv_update: Callable


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _ref_kernels() -> Kernels:
    from seqssm.kernels.causal_conv1d import causal_conv1d_ref, causal_conv1d_update_ref
    from seqssm.kernels.selective_scan import selective_scan_ref, selective_state_update_ref

    return Kernels(scan=selective_scan_ref, conv=causal_conv1d_ref,
                   state_update=selective_state_update_ref, conv_update=causal_conv1d_update_ref)


def _chunked_kernels() -> Kernels:
    # Imported here, not at module top, so the model imports while a faster path is missing.
    from seqssm.kernels.selective_scan import selective_scan_chunked

    return _ref_kernels()._replace(scan=selective_scan_chunked)


def _triton_kernels() -> Kernels:
    from seqssm.kernels.causal_conv1d import causal_conv1d_fn, causal_conv1d_update_fn
    from seqssm.kernels.selective_scan import selective_scan_fused, selective_state_update_fused

    return Kernels(scan=selective_scan_fused, conv=causal_conv1d_fn,
                   state_update=selective_state_update_fused, conv_update=causal_conv1d_update_fn)


def select_kernels(impl: str, device: torch.device) -> Kernels:
    """The kernels for ``impl`` on ``device``.

    "ref" and "chunked" are taken as asked (``InputError`` when chunked is not importable); "triton" needs a
    CUDA tensor. "auto" takes Triton on CUDA, else chunked, else ref, warning once when it falls back.
    """
    if impl == "ref":
        return _ref_kernels()
    if impl == "chunked":
        try:
            return _chunked_kernels()
        except ImportError as err:
            raise InputError(f"impl='chunked' asked for, but it cannot be imported ({err}); "
                             "use impl='ref'") from err
    if impl == "triton":
        if device.type != "cuda":
            raise InputError(f"impl='triton' needs CUDA tensors, got device {device}; "
                             "use impl='auto' or 'chunked'")
        try:
            return _triton_kernels()
        except ImportError as err:
            raise InputError(f"impl='triton' asked for, but it cannot be imported ({err}); "
                             "use impl='auto'") from err
    if impl != "auto":
        raise InputError(f"impl must be one of {IMPLS}, got {impl!r}")
    if device.type == "cuda":
        try:
            return _triton_kernels()
        except ImportError as err:
            _warn_once(f"seqssm: Triton Mamba kernels unavailable ({err}); impl='auto' falls back to the "
                       "chunked PyTorch scan on CUDA")
    try:
        return _chunked_kernels()
    except ImportError as err:
        _warn_once(f"seqssm: chunked selective scan unavailable ({err}); impl='auto' falls back to the "
                   "slow reference loop")
    return _ref_kernels()


class MambaMixer(nn.Module):
    """One selective SSM layer: in_proj → causal conv + SiLU → (Δ, B, C) → scan with D skip and z gate →
    out_proj.

    Shapes: B batch, L length, D d_model, E d_inner, N d_state, R dt_rank, W d_conv.
    """

    def __init__(
        self,
        *,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_scale: float = 1.0,
        conv_bias: bool = True,
        bias: bool = False,
        impl: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        if impl not in IMPLS:
            raise InputError(f"impl must be one of {IMPLS}, got {impl!r}")
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank is None else dt_rank
        self.impl = impl

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, bias=conv_bias,
                                padding=d_conv - 1, **factory)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

        # A and D stay fp32 at creation, as in mamba_ssm: they are tiny and feed exp() / the fp32 state.
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner, dtype=torch.float32, device=device))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self._init_dt(dt_min, dt_max, dt_init_floor, dt_scale)

    @torch.no_grad()
    def _init_dt(self, dt_min: float, dt_max: float, dt_init_floor: float, dt_scale: float) -> None:
        # Variance-preserving dt_proj weight; the bias makes softplus(bias) log-uniform in [dt_min, dt_max].
        std = self.dt_rank**-0.5 * dt_scale
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        u = torch.rand(self.d_inner, device=self.dt_proj.bias.device)
        dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_init_floor)
        inv_softplus_dt = dt + torch.log(-torch.expm1(-dt))
        self.dt_proj.bias.copy_(inv_softplus_dt)
        # Tells the model-level init not to zero this bias like the other Linear biases.
        self.dt_proj.bias._no_reinit = True

    def _conv_weight(self) -> torch.Tensor:
        return self.conv1d.weight.squeeze(1)  # [E, 1, W] -> [E, W]

    def forward(self, hidden: torch.Tensor, *, cache: LayerCache | None = None) -> torch.Tensor:
        """Parallel pass over a whole sequence.

        Args:
            hidden: [B, L, D].
            cache: when given, the pass starts from its states and leaves the final states in it (prefill).

        Returns:
            [B, L, D].
        """
        kernels = select_kernels(self.impl, hidden.device)
        xz = self.in_proj(hidden).transpose(1, 2)  # [B, 2E, L]
        x, z = xz.chunk(2, dim=1)
        conv_out = kernels.conv(x, self._conv_weight(), self.conv1d.bias,
                                initial_state=None if cache is None else cache.conv_state,
                                return_final_state=cache is not None, activation="silu")
        if cache is not None:
            x, conv_state = conv_out
            cache.conv_state.copy_(conv_state)
        else:
            x = conv_out
        x_dbl = self.x_proj(x.transpose(1, 2))  # [B, L, R + 2N]
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # [B, E, L]; bias goes in as delta_bias
        A = -torch.exp(self.A_log.float())
        y = kernels.scan(x, dt, A, B.transpose(1, 2), C.transpose(1, 2), self.D.float(), z=z,
                         delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
                         initial_state=None if cache is None else cache.ssm_state,
                         return_final_state=cache is not None)
        if cache is not None:
            y, ssm_state = y
            cache.ssm_state.copy_(ssm_state)
        return self.out_proj(y.transpose(1, 2))

    def step(self, hidden: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        """One token: [B, D] -> [B, D], advancing ``cache`` in place."""
        kernels = select_kernels(self.impl, hidden.device)
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # [B, E] each
        x = kernels.conv_update(x, cache.conv_state, self._conv_weight(), self.conv1d.bias, activation="silu")
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)  # [B, E]
        A = -torch.exp(self.A_log.float())
        y = kernels.state_update(cache.ssm_state, x, dt, A, B, C, self.D.float(), z=z,
                                 dt_bias=self.dt_proj.bias.float(), dt_softplus=True)
        return self.out_proj(y)
