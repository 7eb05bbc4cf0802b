"""S4D: a diagonal linear time-invariant SSM, trained as an FFT convolution, run as a recurrence to infer.

Per channel h of D and complex mode n of N / 2 (the conjugate half is implied, hence the 2 Re):

    h_t = Ā h_{t-1} + B̄ u_t,   y_t = 2 Re(C h_t) + D u_t,   Ā = exp(Δ A),  B̄ = (exp(Δ A) - 1) / A   (ZOH)

so y = u * K + D u with K_l = 2 Re(C B̄ Ā^l), computed in O(L log L) by FFT. A is initialised S4D-Lin
(A_n = -1/2 + iπn) or S4D-Inv (A_n = -1/2 + i N/π (N / (2n + 1) - 1)); B is folded into C. The mixer is the
SSM, GELU, then out_proj to 2D and a GLU (the S4D paper's block). State: ``LayerCache(conv_state`` empty,
``ssm_state`` [B, D, N / 2, 2] fp32 (the complex modes as real pairs)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seqssm.errors import InputError
from seqssm.models.bidirectional import reverse_padded
from seqssm.models.cache import LayerCache

INITS = ("lin", "inv")


class S4DMixer(nn.Module):
    """[B, L, D] → [B, L, D]; ``bidirectional`` adds a second kernel run on the reversed sequence."""

    def __init__(self, *, d_model: int, d_state: int = 64, init: str = "lin", dt_min: float = 0.001,
                 dt_max: float = 0.1, bidirectional: bool = False, impl: str = "auto", device=None, dtype=None):
        super().__init__()
        if init not in INITS:
            raise InputError(f"S4DMixer: init must be one of {INITS}, got {init!r}")
        if d_state % 2:
            raise InputError(f"S4DMixer: d_state must be even (conjugate pairs), got {d_state}")
        self.d_model, self.n_modes, self.bidirectional, self.impl = d_model, d_state // 2, bidirectional, impl
        n = torch.arange(self.n_modes, dtype=torch.float32, device=device)
        imag = math.pi * n if init == "lin" else d_state / math.pi * (d_state / (2 * n + 1) - 1)
        self.log_dt = nn.Parameter(torch.rand(d_model, device=device) * (math.log(dt_max) - math.log(dt_min))
                                   + math.log(dt_min))
        self.log_A_real = nn.Parameter(torch.full((d_model, self.n_modes), math.log(0.5), device=device))
        self.A_imag = nn.Parameter(imag.repeat(d_model, 1))
        # C ~ N(0, 1/2) per real and imaginary part, as the S4D reference code.
        n_dir = 2 if bidirectional else 1
        self.C = nn.Parameter(torch.randn(n_dir, d_model, self.n_modes, 2, device=device) * math.sqrt(0.5))
        self.D = nn.Parameter(torch.randn(d_model, device=device))
        for p in (self.log_dt, self.log_A_real, self.A_imag):
            p._no_weight_decay = True
        self.out_proj = nn.Linear(d_model, 2 * d_model, device=device, dtype=dtype)

    def _discrete(self):
        """(Ā, B̄, C): complex [D, N/2], [D, N/2] and [n_dir, D, N/2], in complex64 whatever the weights' dtype.

        fp32 because complex bf16/fp16 do not exist (a model cast to bf16 for decoding failed here on the GPU).
        """
        A = torch.complex(-torch.exp(self.log_A_real.float()), self.A_imag.float())
        dtA = A * torch.exp(self.log_dt.float())[:, None]
        return torch.exp(dtA), (torch.exp(dtA) - 1) / A, torch.view_as_complex(self.C.float().contiguous())

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> LayerCache:
        return LayerCache(conv_state=torch.zeros(batch_size, 0, device=device),
                          ssm_state=torch.zeros(batch_size, self.d_model, self.n_modes, 2, device=device))

    def _out(self, y: torch.Tensor, u: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
        """GELU(y + D u), out_proj, GLU; D: fp32 [D] (the step's cached copy), else self.D in fp32."""
        y = F.gelu(torch.addcmul(y, u, self.D.float() if D is None else D))
        return F.glu(self.out_proj(y.to(self.out_proj.weight.dtype)), dim=-1)

    def forward(self, hidden: torch.Tensor, state: LayerCache | None = None, *, return_state: bool = False,
                cache: LayerCache | None = None, rev_index: torch.Tensor | None = None):
        """Convolution mode over [B, L, D] from an optional state, as ``MambaMixer.forward``."""
        if cache is not None:
            out, final = self.forward(hidden, cache, return_state=True)
            cache.ssm_state.copy_(final.ssm_state)
            return out
        if self.bidirectional and (state is not None or return_state):
            raise InputError("S4DMixer: a bidirectional layer has no left-to-right state; run the full sequence")
        u = hidden.float()
        L = u.shape[1]
        Ad, Bd, C = self._discrete()
        powers = torch.exp(torch.log(Ad)[..., None] * torch.arange(L, device=u.device))  # [D, N/2, L]
        K = 2 * torch.einsum("cdn,dnl->cdl", C * Bd, powers).real  # [n_dir, D, L]
        n = 2 * L
        conv = lambda x, k: torch.fft.irfft(torch.fft.rfft(x.transpose(1, 2), n) * torch.fft.rfft(k, n),  # noqa: E731
                                            n)[..., :L].transpose(1, 2)
        y = conv(u, K[0])
        if self.bidirectional:
            y = y + reverse_padded(conv(reverse_padded(u, rev_index), K[1]), rev_index)
        h0 = None if state is None else torch.view_as_complex(state.ssm_state.contiguous())
        if h0 is not None:  # y_t += 2 Re(C Ā^{t+1} h0)
            y = y + 2 * torch.einsum("dn,dnl,bdn->bld", C[0], powers * Ad[..., None], h0).real
        out = self._out(y, u)
        if not return_state:
            return out
        # h_L = Ā^L h0 + sum_l Ā^{L-1-l} B̄ u_l (C is not part of the state).
        final = torch.einsum("bld,dnl->bdn", u.to(torch.complex64), powers.flip(-1)) * Bd
        if h0 is not None:
            final = final + h0 * Ad ** L
        return out, LayerCache(conv_state=hidden.new_zeros(hidden.shape[0], 0),
                               ssm_state=torch.view_as_real(final))

    def _step_constants(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Ā, B̄ complex [D, N/2], C as real pairs [D, N] = (2 Re C, -2 Im C) per mode, D fp32 [D]) for decoding,
        recomputed only when a parameter changed (data_ptr, ``_version``, dtype), as ``MambaMixer``'s: a step then
        launches no exp or complex algebra, at one token per row the GPU waits on launches, not arithmetic."""
        params = (self.log_dt, self.log_A_real, self.A_imag, self.C, self.D)
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in params)
        cached = getattr(self, "_constants", None)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                Ad, Bd, C = self._discrete()
                # y = 2 Re(C h) = sum over the pairs of (2 Re C) Re h + (-2 Im C) Im h.
                C_pairs = torch.stack([2 * C[0].real, -2 * C[0].imag], -1).flatten(-2)  # no host tensor
                cached = (key, (Ad, Bd, C_pairs, self.D.float()))
            self._constants = cached
        return cached[1]

    def step(self, hidden: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        """Recurrent mode, one token: [B, D] → [B, D], advancing ``cache`` in place."""
        if self.bidirectional:
            raise InputError("S4DMixer: a bidirectional layer cannot decode step by step")
        u = hidden.float()
        Ad, Bd, C_pairs, D = self._step_constants()
        state = cache.ssm_state
        if state.is_contiguous():  # h <- Ā h + B̄ u, in place through a complex view of the state
            h = torch.view_as_complex(state)
            h.mul_(Ad).addcmul_(Bd, u[..., None])
        else:
            h = torch.view_as_complex(state.contiguous()) * Ad + Bd * u[..., None]
            state.copy_(torch.view_as_real(h))
        y = (state.flatten(-2) * C_pairs).sum(-1)  # 2 Re(C h) [B, D]
        return self._out(y, u, D)
