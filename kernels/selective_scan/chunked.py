"""Chunked selective scan in plain PyTorch: the fast path on the CPU.

A sequential loop over chunks of T positions; inside a chunk, a = exp(ΔA) and b = Δ B u are formed for the
whole [T, B, D, N] block at once, then the recurrence h_t = a_t h_{t-1} + b_t runs as T fused multiply-adds
over contiguous [B, D, N] slices, in place (one pass over the block; a parallel Hillis–Steele scan needs
~3 log2 T passes and was 3–6x slower on the CPU, benchmarks/NOTES-demo.md). Every product is of
exp(ΔA) ≤ 1, so nothing overflows. The forward keeps only the state at each chunk boundary; the
hand-written backward walks the chunks in reverse, recomputes a chunk's states from its boundary state and
runs the reverse recurrence dh_t = C_t dy_t + a_{t+1} dh_{t+1}. So the [B, D, L, N] tensor of all states
exists one chunk at a time, and memory is O(B·D·L + B·D·N·L/T).

Inside, tensors are time-major ([L, B, D], B/C as [L, B, N] or [L, B, G, N]) so that a chunk and each of
its positions are contiguous blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seqssm.errors import InputError


def _outer(x: torch.Tensor, M: torch.Tensor, s: int, e: int) -> torch.Tensor:
    """x [T, B, D] times M at positions s..e -> [T, B, D, N]; M is [D, N], [L, B, N] or [L, B, G, N]."""
    if M.dim() == 2:
        return x.unsqueeze(-1) * M
    Mc = M[s:e]
    if M.dim() == 3:
        return x.unsqueeze(-1) * Mc.unsqueeze(2)
    T, batch, groups, N = Mc.shape
    return (x.view(T, batch, groups, -1, 1) * Mc.unsqueeze(3)).view(T, batch, -1, N)


def _dot(h: torch.Tensor, M: torch.Tensor, s: int, e: int) -> torch.Tensor:
    """sum_n h [T, B, D, N] * M (forms as in _outer) -> [T, B, D]."""
    if M.dim() == 2:
        return (h * M).sum(-1)
    Mc = M[s:e]
    if M.dim() == 3:
        return torch.bmm(h.flatten(0, 1), Mc.flatten(0, 1).unsqueeze(-1)).view(h.shape[:3])
    T, batch, groups, N = Mc.shape
    hg = h.view(T * batch * groups, -1, N)
    return torch.bmm(hg, Mc.reshape(-1, N, 1)).view(h.shape[:3])


def _grad_M(h: torch.Tensor, x: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Gradient of sum(h * (x ⊗ M)) with respect to M for one chunk: h [T, B, D, N], x [T, B, D].

    Returns [D, N] (to accumulate over chunks), [T, B, N] or [T, B, G, N] (to write at the chunk's rows).
    """
    if M.dim() == 2:
        return (h * x.unsqueeze(-1)).sum((0, 1))
    T, batch, dim, N = h.shape
    if M.dim() == 3:
        return torch.bmm(x.view(T * batch, 1, dim), h.view(T * batch, dim, N)).view(T, batch, N)
    groups = M.shape[2]
    xg = x.reshape(T * batch * groups, 1, -1)
    return torch.bmm(xg, h.reshape(T * batch * groups, -1, N)).view(T, batch, groups, N)


def _recur(a: torch.Tensor, b: torch.Tensor, reverse: bool = False, shift: int = 0) -> torch.Tensor:
    """Linear recurrence over dim 0, in place in b: b_t <- a_{t+shift} b_{t-1} + b_t, or with reverse
    b_t <- a_{t+shift} b_{t+1} + b_t. a is not changed; a and b are [T, ...] with contiguous [...] slices.

    A plain loop of T fused multiply-adds over [B, D, N] slices: one pass over the chunk, where a parallel
    (Hillis–Steele) scan needs ~3 log2 T passes; on the CPU the loop was 3–6x faster for every shape tried
    (B·D·N from 4 k to 65 k, benchmarks/NOTES-demo.md), as each slice has enough work to hide the call.
    """
    av, bv = a.unbind(0), b.unbind(0)
    T = b.shape[0]
    if reverse:
        for t in range(T - 2, -1, -1):
            bv[t].addcmul_(av[t + shift], bv[t + 1])
    else:
        for t in range(1, T):
            bv[t].addcmul_(av[t + shift], bv[t - 1])
    return b


def _chunk_fwd_kernel(u, delta, A, B, h0, s, e):
    """States of positions s..e-1 [T, B, D, N] given h0 [B, D, N], the state before s; and a = exp(ΔA)
    [T, B, D, N] (the backward reuses it)."""
    a = (delta[s:e].unsqueeze(-1) * A).exp_()
    b = _outer(delta[s:e] * u[s:e], B, s, e)
    b[0].addcmul_(a[0], h0)
    return _recur(a, b), a


def _chunk_bwd_kernel(u, delta, A, B, C, h0, dy, dh, s, e):
    """Gradients for positions s..e-1 given dh [B, D, N], the gradient reaching the chunk's last state.

    Returns du, ddelta [T, B, D]; dA [D, N]; dB, dC (chunk rows or [D, N]); dh0, the gradient of h0.
    """
    hs, a = _chunk_fwd_kernel(u, delta, A, B, h0, s, e)
    dts, dtu, dys = delta[s:e], delta[s:e] * u[s:e], dy[s:e]
    g = _outer(dys, C, s, e)
    g[-1] += dh
    # g_t = C_t dy_t + a_{t+1} g_{t+1}: the reverse recurrence's factor is a shifted by one position
    g = _recur(a, g, reverse=True, shift=1)
    dC = _grad_M(hs, dys, C)
    dB = _grad_M(g, dtu, B)
    gB = _dot(g, B, s, e)
    du = dts * gB
    ddelta = u[s:e] * gB
    dh0 = a[0] * g[0]
    q = a  # d(ΔA)_t = g_t h_{t-1} a_t, written over a (not needed any more)
    q[0].mul_(h0)
    q[1:].mul_(hs[:-1])
    q.mul_(g)
    ddelta += (q * A).sum(-1)
    dA = q.mul_(dts.unsqueeze(-1)).sum((0, 1))
    return du, ddelta, dA, dB, dC, dh0


def _selective_scan_chunked_fwd(u, delta, A, B, C, h0, chunk_size):
    """Time-major inputs (u, delta [L, B, D]). Returns y [L, B, D], chunk start states [K, B, D, N], final."""
    length = u.shape[0]
    y = u.new_empty(u.shape)
    starts = range(0, length, chunk_size)
    boundary = u.new_empty(len(starts), *h0.shape)
    h = h0
    for i, s in enumerate(starts):
        e = min(s + chunk_size, length)
        boundary[i] = h
        hs, _ = _chunk_fwd_kernel(u, delta, A, B, h, s, e)
        y[s:e] = _dot(hs, C, s, e)
        h = hs[-1]
    return y, boundary, h.clone()


def _selective_scan_chunked_bwd(u, delta, A, B, C, boundary, dy, dh, chunk_size):
    """Time-major backward. Returns du, ddelta [L, B, D], dA, dB, dC (time-major forms), dh0 [B, D, N]."""
    length = u.shape[0]
    du, ddelta = torch.empty_like(u), torch.empty_like(u)
    dA = torch.zeros_like(A)
    dB, dC = torch.zeros_like(B), torch.zeros_like(C)
    starts = list(range(0, length, chunk_size))
    for i in reversed(range(len(starts))):
        s = starts[i]
        e = min(s + chunk_size, length)
        du_c, dd_c, dA_c, dB_c, dC_c, dh = _chunk_bwd_kernel(u, delta, A, B, C, boundary[i], dy, dh, s, e)
        du[s:e], ddelta[s:e] = du_c, dd_c
        dA += dA_c
        for grad, part, M in ((dB, dB_c, B), (dC, dC_c, C)):
            if M.dim() == 2:
                grad += part
            else:
                grad[s:e] = part
    return du, ddelta, dA, dB, dC, dh


def _time_major(X: torch.Tensor) -> torch.Tensor:
    """[B, D, L] -> [L, B, D]; [B, N, L] -> [L, B, N]; [B, G, N, L] -> [L, B, G, N]; [D, N] unchanged."""
    if X.dim() == 2:
        return X.contiguous()
    return X.movedim(-1, 0).contiguous()


def _batch_major(X: torch.Tensor) -> torch.Tensor:
    """Inverse of _time_major."""
    if X.dim() == 2:
        return X
    return X.movedim(0, -1).contiguous()


class SelectiveScanChunkedFn(torch.autograd.Function):
    """Core recurrence h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t, y_t = C_t h_t, in the inputs' dtype.

    forward(u [B, D, L], delta [B, D, L], A [D, N], B, C, initial_state [B, D, N] or None, chunk_size)
    -> (y [B, D, L], final_state [B, D, N]).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, initial_state, chunk_size):
        batch, dim, _ = u.shape
        u_t, delta_t, B_t, C_t = (_time_major(X) for X in (u, delta, B, C))
        h0 = u.new_zeros(batch, dim, A.shape[1]) if initial_state is None else initial_state
        y, boundary, last = _selective_scan_chunked_fwd(u_t, delta_t, A, B_t, C_t, h0, chunk_size)
        ctx.save_for_backward(u_t, delta_t, A, B_t, C_t, boundary)
        ctx.chunk_size = chunk_size
        ctx.has_initial_state = initial_state is not None
        return _batch_major(y), last

    @staticmethod
    def backward(ctx, dy, dlast):
        u_t, delta_t, A, B_t, C_t, boundary = ctx.saved_tensors
        du, ddelta, dA, dB, dC, dh0 = _selective_scan_chunked_bwd(
            u_t, delta_t, A, B_t, C_t, boundary, _time_major(dy), dlast, ctx.chunk_size
        )
        dh0 = dh0 if ctx.has_initial_state else None
        grads = (_batch_major(du), _batch_major(ddelta), dA, _batch_major(dB), _batch_major(dC), dh0)
        return (*grads, None)


def _check_bc(name: str, X: torch.Tensor, batch: int, dim: int, N: int, length: int) -> None:
    shapes = {2: (dim, N), 3: (batch, N, length)}
    if X.dim() == 4 and X.shape[1] > 0 and dim % X.shape[1] == 0:
        shapes[4] = (batch, X.shape[1], N, length)
    if tuple(X.shape) != shapes.get(X.dim()):
        raise InputError(
            f"selective_scan_chunked: {name} has shape {tuple(X.shape)}; expected [D, N] = {[dim, N]}, "
            f"[B, N, L] = {[batch, N, length]} or [B, G, N, L] with G dividing D = {dim}"
        )


def selective_scan_chunked(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    chunk_size: int = 32,
):
    """Selective scan over chunks of ``chunk_size`` positions; same semantics as ``selective_scan_ref``.

    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t;  y_t = C_t h_t + D u_t;  out = y · SiLU(z).

    Args:
        u: [B, D, L] input.
        delta: [B, D, L] step sizes Δ (before ``delta_bias`` and softplus).
        A: [D, N] state matrix (diagonal per channel, real, normally negative).
        B: [D, N] (time-invariant), [B, N, L] (per position) or [B, G, N, L] (G groups of D // G channels).
        C: same forms as B.
        D: [D] skip connection, optional.
        z: [B, D, L] gate, optional.
        delta_bias: [D] added to Δ before softplus, optional.
        delta_softplus: apply softplus to Δ (+ bias).
        initial_state: [B, D, N] state before position 0, optional (zeros when None).
        return_final_state: also return the state after the last position.
        chunk_size: positions T per chunk; the scan holds one [B, D, T, N] block at a time. With the
            in-chunk loop, 32 and 64 are within ~10% of each other on 1 CPU thread (64 a little faster at
            L ≥ 4 k, 16 slower): benchmarks/NOTES-demo.md.

    Returns:
        out [B, D, L] in u's dtype, and final_state [B, D, N] in fp32 when asked. Computed in fp32.
    """
    if u.dim() != 3:
        raise InputError(f"selective_scan_chunked: u has shape {tuple(u.shape)}; expected [B, D, L]")
    batch, dim, length = u.shape
    if A.dim() != 2 or A.shape[0] != dim:
        raise InputError(
            f"selective_scan_chunked: A has shape {tuple(A.shape)}; expected [D, N] with D = {dim}"
        )
    N = A.shape[1]
    for name, X in (("delta", delta), ("z", z)):
        if X is not None and X.shape != u.shape:
            raise InputError(
                f"selective_scan_chunked: {name} has shape {tuple(X.shape)}; "
                f"expected u's shape {tuple(u.shape)}"
            )
    for name, X in (("D", D), ("delta_bias", delta_bias)):
        if X is not None and tuple(X.shape) != (dim,):
            raise InputError(
                f"selective_scan_chunked: {name} has shape {tuple(X.shape)}; expected [D] = [{dim}]"
            )
    _check_bc("B", B, batch, dim, N, length)
    _check_bc("C", C, batch, dim, N, length)
    if initial_state is not None and tuple(initial_state.shape) != (batch, dim, N):
        raise InputError(
            f"selective_scan_chunked: initial_state has shape {tuple(initial_state.shape)}; "
            f"expected [B, D, N] = {[batch, dim, N]}"
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InputError(f"selective_scan_chunked: chunk_size={chunk_size!r}; pass a positive int such as 64")

    dtype_in = u.dtype
    uf = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h0 = None if initial_state is None else initial_state.float()
    y, last = SelectiveScanChunkedFn.apply(uf, delta, A.float(), B.float(), C.float(), h0, chunk_size)
    if D is not None:
        y = y + uf * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    out = y.to(dtype_in)
    return (out, last) if return_final_state else out
