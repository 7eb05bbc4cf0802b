"""The Mamba-1 mixer (selective SSM layer) with an explicit choice of kernel path.

Parameter names and initialisation follow mamba_ssm's ``Mamba`` module, so its state dicts map one to one.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from seqssm.config import IMPLS
from seqssm.errors import InputError
from seqssm.models.cache import LayerCache

# Decode projections of at most this many rows take the Triton GEMV kernels (seqssm.kernels.gemv) where the
# Triton kernels are chosen (CUDA): there they are weight-bandwidth-bound, and cuBLAS's GEMMs ran them ~10x
# below bandwidth (benchmarks/RESULTS.md, "Decode profile"). More rows, the CPU, and autograd take F.linear.
# Measured on the H200 (2026-12-04, benchmarks/bench_gemv.py, 768 x 24 bf16 model, Decoder CUDA graph of 32 steps):
# 566 us a step at B = 1 against F.linear's 667, 646 against 676 at B = 4; single projections at B = 1, e.g.
# in_proj 4.14 us (F.linear 4.74), out_proj 4.53 (6.24). Beyond 4 rows it is not measured (at 64, F.linear either
# way). SEQSSM_GEMV_MAX_ROWS=0 turns them off.
GEMV_MAX_ROWS = int(os.environ.get("SEQSSM_GEMV_MAX_ROWS", "4"))
# Where the GEMV kernels run, a Mamba-1 step also fuses the block's residual add + RMSNorm into in_proj
# (seqssm.kernels.gemv.add_norm_gemv) and x_proj's sum, dt_proj and the state update into one kernel
# (seqssm.kernels.selective_scan.selective_state_update_x_dt): 5 launches a layer instead of 7. Off until
# benchmarks/bench_gemv.py has timed it on a GPU (tested under the interpreter only); SEQSSM_FUSE_DECODE=1 turns
# it on.
FUSE_DECODE = os.environ.get("SEQSSM_FUSE_DECODE", "0") == "1"


class Kernels(NamedTuple):
    """The ops one block needs: the whole inner mixer for a sequence (``mamba_inner_*``: in_proj, conv, scan,
    out_proj), in-place updates for a token, the residual add + RMSNorm before the mixer, and a token's
    projections: ``linear(x, weight, bias)`` as F.linear and ``x_dt_proj(x, x_proj_weight, dt_proj_weight)``
    -> (x_dbl, dt). The fused decode pieces (None where there are none, see ``FUSE_DECODE``): ``norm_linear``
    as ``add_norm_gemv`` (the block's add + norm, then in_proj) and ``x_dt_update`` as
    ``selective_state_update_x_dt`` (x_proj, dt_proj, then the state update). ``triton``: these are the Triton
    kernels (the Mamba-2 step maps its heads onto them only then)."""

    inner: Callable
    state_update: Callable
    conv_update: Callable
    add_norm: Callable
    linear: Callable
    x_dt_proj: Callable
    norm_linear: Callable | None = None
    x_dt_update: Callable | None = None
    triton: bool = False


class PreNorm(NamedTuple):
    """A block's residual add + RMSNorm, handed to :meth:`MambaMixer.step` with the block's un-normalised input
    so that the step fuses it into in_proj: the residual [B, D] (None in the first block), the ``RMSNorm``
    module and the block's ``residual_in_fp32``."""

    residual: torch.Tensor | None
    norm: nn.Module
    residual_in_fp32: bool


def _x_dt_linear(x: torch.Tensor, x_proj_weight: torch.Tensor, dt_proj_weight: torch.Tensor):
    """x_proj then dt_proj of a step as two F.linear calls: (x_dbl [B, R + 2N], dt [B, E])."""
    x_dbl = F.linear(x, x_proj_weight)
    return x_dbl, F.linear(x_dbl[:, : dt_proj_weight.shape[1]], dt_proj_weight)


def _gemv_ok(x: torch.Tensor, *params: torch.Tensor | None, dtype: torch.dtype | None = None) -> bool:
    """Whether the GEMV kernels take this projection: a [B, K] input of at most GEMV_MAX_ROWS rows, one dtype
    (x's unless given) with the weights, no autocast (F.linear would cast), and no autograd (the kernels have
    no backward)."""
    if x.dim() != 2 or x.shape[0] > GEMV_MAX_ROWS or torch.is_autocast_enabled(x.device.type):
        return False
    grad, dtype = torch.is_grad_enabled(), dtype or x.dtype
    return all(p is None or (p.dtype == dtype or p.dim() == 1) and not (grad and p.requires_grad)
               for p in (x, *params))


def _linear_small_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    from seqssm.kernels.gemv import gemv

    return gemv(x, weight, bias) if _gemv_ok(x, weight, bias) else F.linear(x, weight, bias)


def _x_dt_small_rows(x: torch.Tensor, x_proj_weight: torch.Tensor, dt_proj_weight: torch.Tensor):
    from seqssm.kernels.gemv import gemv_x_dt
    from seqssm.kernels.gemv.triton import MAX_RANK

    if _gemv_ok(x, x_proj_weight, dt_proj_weight) and dt_proj_weight.shape[1] <= MAX_RANK:
        return gemv_x_dt(x, x_proj_weight, dt_proj_weight)
    return _x_dt_linear(x, x_proj_weight, dt_proj_weight)


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


@functools.cache
def _ref_kernels(scan: str = "ref") -> Kernels:
    from seqssm.kernels.causal_conv1d import causal_conv1d_ref, causal_conv1d_update_ref
    from seqssm.kernels.mamba_inner import mamba_inner_ref
    from seqssm.kernels.selective_scan import selective_scan_ref, selective_state_update_ref
    from seqssm.models.norm import add_rms_norm

    if scan == "chunked":
        # Imported here, not at module top, so the model imports while a faster path is missing.
        from seqssm.kernels.selective_scan import selective_scan_chunked as scan_fn
    else:
        scan_fn = selective_scan_ref
    return Kernels(inner=functools.partial(mamba_inner_ref, scan=scan_fn, conv=causal_conv1d_ref),
                   state_update=selective_state_update_ref, conv_update=causal_conv1d_update_ref,
                   add_norm=add_rms_norm, linear=F.linear, x_dt_proj=_x_dt_linear)


def _chunked_kernels() -> Kernels:
    return _ref_kernels("chunked")


@functools.cache
def _triton_kernels() -> Kernels:
    from seqssm.kernels.causal_conv1d import causal_conv1d_update_fn
    from seqssm.kernels.gemv import add_norm_gemv
    from seqssm.kernels.mamba_inner import mamba_inner_fused
    from seqssm.kernels.rms_norm import add_rms_norm_fused
    from seqssm.kernels.selective_scan import selective_state_update_fused, selective_state_update_x_dt

    return Kernels(inner=mamba_inner_fused, state_update=selective_state_update_fused,
                   conv_update=causal_conv1d_update_fn, add_norm=add_rms_norm_fused, linear=_linear_small_rows,
                   x_dt_proj=_x_dt_small_rows, norm_linear=add_norm_gemv, x_dt_update=selective_state_update_x_dt,
                   triton=True)


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
        # TRITON_INTERPRET=1 (tests) runs the same kernels on CPU tensors.
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
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

    def forward(
        self,
        hidden: torch.Tensor,
        state: LayerCache | None = None,
        *,
        return_state: bool = False,
        cache: LayerCache | None = None,
    ):
        """Parallel pass over a sequence, from optional states: the one forward that training, chunked
        training, streaming and prefill share (decoding is :meth:`step`, which tests hold equal to it).

        Args:
            hidden: [B, L, D].
            state: the conv state [B, E, W - 1] and fp32 SSM state [B, E, N] before position 0 (zeros when
                None). Differentiable: gradients flow into both.
            return_state: also return the states after the last position, as a new ``LayerCache``.
            cache: prefill: start from its states and leave the final states in it, in place.

        Returns:
            out [B, L, D]; with ``return_state`` also the ``LayerCache`` after the sequence.
        """
        if cache is not None:
            out, final = self.forward(hidden, cache, return_state=True)
            cache.conv_state.copy_(final.conv_state)
            cache.ssm_state.copy_(final.ssm_state)
            return out
        ops = select_kernels(self.impl, hidden.device)
        out = ops.inner(
            hidden, self.in_proj.weight, self.in_proj.bias, self._conv_weight(), self.conv1d.bias,
            self.x_proj.weight, self.dt_proj.weight, self.dt_proj.bias, -torch.exp(self.A_log.float()),
            self.D, self.out_proj.weight, self.out_proj.bias,
            conv_state=None if state is None else state.conv_state,
            ssm_state=None if state is None else state.ssm_state, return_final_states=return_state)
        if not return_state:
            return out
        out, conv_state, ssm_state = out
        return out, LayerCache(conv_state=conv_state, ssm_state=ssm_state)

    def _step_constants(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """fp32 (A, D, Δ bias) for decoding, recomputed only when a parameter changed (``_version``), so a
        step launches no exp or casts: at one token per row the GPU waits on launches, not arithmetic."""
        params = (self.A_log, self.D, self.dt_proj.bias)
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in params)
        cached = getattr(self, "_constants", None)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, (-torch.exp(self.A_log.float()), self.D.float(), self.dt_proj.bias.float()))
            self._constants = cached
        return cached[1]

    def fuses_prenorm(self, hidden: torch.Tensor, norm: nn.Module) -> bool:
        """Whether :meth:`step` takes a block's add + ``norm`` into in_proj (``prenorm``) for this input:
        ``FUSE_DECODE``, Triton kernels, one norm over the whole row (no ``rc_halves``) in in_proj's dtype, and
        where the unfused step's in_proj would take the GEMV kernel."""
        if not FUSE_DECODE:
            return False
        weight = self.in_proj.weight
        return (select_kernels(self.impl, hidden.device).norm_linear is not None and not norm.rc_halves
                and norm.weight.dtype == weight.dtype
                and _gemv_ok(hidden, weight, self.in_proj.bias, norm.weight, dtype=weight.dtype))

    def _fuses_x_dt(self, ops: Kernels, x: torch.Tensor) -> bool:
        if not FUSE_DECODE or ops.x_dt_update is None:
            return False
        from seqssm.kernels.gemv.triton import MAX_RANK

        return self.dt_rank <= MAX_RANK and _gemv_ok(x, self.x_proj.weight, self.dt_proj.weight)

    def step(self, hidden: torch.Tensor, cache: LayerCache, prenorm: PreNorm | None = None):
        """One token: [B, D] -> [B, D], advancing ``cache`` in place.

        With ``prenorm`` (only where :meth:`fuses_prenorm`), hidden is the block's input before its residual add
        and RMSNorm, which run inside in_proj's kernel; returns (out, the summed residual) as the block's add_norm
        then the plain step would.
        """
        ops = select_kernels(self.impl, hidden.device)
        w_in, b_in = self.in_proj.weight, self.in_proj.bias
        if prenorm is None:
            xz = ops.linear(hidden, w_in, b_in)
        else:
            norm = prenorm.norm
            xz, residual = ops.norm_linear(hidden, prenorm.residual, norm.weight, norm.eps, prenorm.residual_in_fp32,
                                           w_in, b_in)
        x, z = xz.chunk(2, dim=-1)  # [B, E] each; the update kernels read strided rows
        x = ops.conv_update(x, cache.conv_state, self._conv_weight(), self.conv1d.bias, activation="silu")
        A, D, dt_bias = self._step_constants()
        if self._fuses_x_dt(ops, x):  # x_proj, dt_proj and the update in two launches
            y = ops.x_dt_update(cache.ssm_state, x, self.x_proj.weight, self.dt_proj.weight, A, D, z=z,
                                dt_bias=dt_bias, dt_softplus=True)
        else:
            x_dbl, dt = ops.x_dt_proj(x, self.x_proj.weight, self.dt_proj.weight)  # the update adds dt's bias
            _, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
            y = ops.state_update(cache.ssm_state, x, dt, A, B, C, D, z=z, dt_bias=dt_bias, dt_softplus=True)
        out = ops.linear(y, self.out_proj.weight, self.out_proj.bias)
        return out if prenorm is None else (out, residual)
