"""Mamba-2 state space duality (SSD): plain PyTorch references.

The recurrence, per head h (scalar decay a = A_h < 0, state [P, N]):

    S_t = exp(dt_t a) S_{t-1} + dt_t x_t ⊗ B_t          (x_t [P], B_t [N])
    y_t = S_t C_t + D_h x_t                               (C_t [N])

Shapes: T batch rows (or 1 with ``cu_seqlens``), L length, H heads, P head dim, G groups of B/C (H % G == 0,
head h reads group h // (H / G)), N state size, S sequences, Q chunk size.

``ssd_sequential`` is the obviously-correct loop over time that the others are checked against;
``ssd_chunked_ref`` is the chunked algorithm of the Mamba-2 paper (Listing 1 / mamba_ssm's ``ssd_minimal``:
within a chunk a masked quadratic form, between chunks a recurrence over chunk states), which the Triton
kernels implement chunk by chunk; ``ssd_step_ref`` is one decode step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _heads(BC: torch.Tensor, n_heads: int) -> torch.Tensor:
    """[..., G, N] -> [..., H, N]: each group repeated for its H / G heads."""
    return BC.repeat_interleave(n_heads // BC.shape[-2], dim=-2)


def _spans(cu_seqlens: torch.Tensor | None, batch: int, length: int) -> list[tuple[int, int, int]]:
    """(row, start, end) of every sequence: one per row, or the ``cu_seqlens`` runs of row 0."""
    if cu_seqlens is None:
        return [(b, 0, length) for b in range(batch)]
    cu = [int(v) for v in cu_seqlens.tolist()]
    return [(0, cu[i], cu[i + 1]) for i in range(len(cu) - 1)]


def ssd_sequential(x, dt, A, B, C, D=None, initial_states=None, cu_seqlens=None):
    """The recurrence one position at a time, in fp32.

    Args:
        x: [T, L, H, P]; dt: [T, L, H] (positive step sizes, softplus already applied); A: [H] (negative).
        B, C: [T, L, G, N]; D: [H] optional skip.
        initial_states: [T, H, P, N] ([S, H, P, N] with ``cu_seqlens``) or None (zeros).
        cu_seqlens: [S + 1] offsets of S sequences packed in row 0 (T = 1), states reset at each.

    Returns:
        y [T, L, H, P] in x's dtype, final_states [T or S, H, P, N] fp32.
    """
    batch, length, heads, dim = x.shape
    xf, dtf, Af = x.float(), dt.float(), A.float()
    Bf, Cf = _heads(B.float(), heads), _heads(C.float(), heads)
    y = torch.zeros(batch, length, heads, dim, dtype=torch.float32, device=x.device)
    finals = []
    for i, (row, start, end) in enumerate(_spans(cu_seqlens, batch, length)):
        state = torch.zeros(heads, dim, B.shape[-1], dtype=torch.float32, device=x.device)
        if initial_states is not None:
            state = initial_states[i].float().clone()
        for t in range(start, end):
            decay = torch.exp(dtf[row, t] * Af)  # [H]
            state = decay[:, None, None] * state + (dtf[row, t, :, None] * xf[row, t])[:, :, None] \
                * Bf[row, t, :, None, :]
            y[row, t] = torch.einsum("hpn,hn->hp", state, Cf[row, t])
        finals.append(state)
    if D is not None:
        y = y + xf * D.float()[:, None]
    return y.to(x.dtype), torch.stack(finals)


def _segsum(a: torch.Tensor) -> torch.Tensor:
    """[..., Q] -> [..., Q, Q]: out[t, s] = a[s+1] + ... + a[t] for s <= t, -inf above the diagonal.

    Summed from the masked increments, not as a difference of cumulative sums, so that no large terms
    cancel (the paper's stable form)."""
    q = a.shape[-1]
    a = a[..., None].expand(*a.shape, q)  # [..., t, s] holds a[t]
    below = torch.tril(torch.ones(q, q, dtype=torch.bool, device=a.device), diagonal=-1)
    out = torch.cumsum(a.masked_fill(~below, 0), dim=-2)
    causal = torch.tril(torch.ones(q, q, dtype=torch.bool, device=a.device))
    return out.masked_fill(~causal, float("-inf"))


def _chunked_rows(x, dt, A, B, C, init, chunk_size):
    """The chunked algorithm on [T, L, ...] rows (no varlen); fp32 in, (y, final) out."""
    batch, length, heads, dim = x.shape
    q = chunk_size
    pad = -length % q
    if pad:  # dt = 0 on the padding: no decay and no input, so the final state is untouched
        x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
    n_chunks = x.shape[1] // q
    x, B, C = (t.reshape(batch, n_chunks, q, *t.shape[2:]) for t in (x, B, C))
    dt = dt.reshape(batch, n_chunks, q, heads)
    B, C = _heads(B, heads), _heads(C, heads)
    a = (dt * A).permute(0, 3, 1, 2)  # [T, H, c, Q]
    a_cs = torch.cumsum(a, dim=-1)
    xdt = x * dt[..., None]

    # Within chunks: y_t += sum_{s <= t} (C_t . B_s) exp(a_{s+1..t}) dt_s x_s.
    decay = torch.exp(_segsum(a))  # [T, H, c, Q, Q]
    y = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", C, B, decay, xdt)
    # Each chunk's own contribution to the state at its end.
    to_end = torch.exp(a_cs[..., -1:] - a_cs)  # [T, H, c, Q]
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B, to_end, xdt)
    # Between chunks: the recurrence over chunk states, from the initial state.
    if init is None:
        init = torch.zeros_like(states[:, 0])
    states = torch.cat([init[:, None], states], dim=1)  # [T, c + 1, H, P, N]
    chunk_decay = torch.exp(_segsum(F.pad(a_cs[..., -1], (1, 0))))  # [T, H, c + 1, c + 1]
    states = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, states)
    states, final = states[:, :-1], states[:, -1]
    # The state entering each chunk, decayed to each position and read out.
    y = y + torch.einsum("bclhn,bchpn,bhcl->bclhp", C, states, torch.exp(a_cs))
    return y.reshape(batch, n_chunks * q, heads, dim)[:, :length], final


def ssd_chunked_ref(x, dt, A, B, C, D=None, initial_states=None, cu_seqlens=None, chunk_size=64):
    """The chunked SSD algorithm in PyTorch (fp32 inside); same arguments and results as ``ssd_sequential``
    plus ``chunk_size`` Q. Differentiable in every input, the initial states included."""
    batch, length, heads, dim = x.shape
    xf, dtf, Af, Bf, Cf = x.float(), dt.float(), A.float(), B.float(), C.float()
    init = None if initial_states is None else initial_states.float()
    if cu_seqlens is None:
        y, final = _chunked_rows(xf, dtf, Af, Bf, Cf, init, chunk_size)
    else:
        ys, finals = [], []
        for i, (_, start, end) in enumerate(_spans(cu_seqlens, batch, length)):
            sl = slice(start, end)
            y_i, f_i = _chunked_rows(xf[:, sl], dtf[:, sl], Af, Bf[:, sl], Cf[:, sl],
                                     None if init is None else init[i : i + 1], chunk_size)
            ys.append(y_i)
            finals.append(f_i)
        y, final = torch.cat(ys, dim=1), torch.cat(finals)
    if D is not None:
        y = y + xf * D.float()[:, None]
    return y.to(x.dtype), final


def ssd_step_ref(state, x, dt, A, B, C, D=None):
    """One decode step, advancing ``state`` in place.

    Args:
        state: [T, H, P, N] fp32. x: [T, H, P]; dt: [T, H] (positive); A: [H]; B, C: [T, G, N]; D: [H].

    Returns:
        y [T, H, P] in x's dtype.
    """
    heads = x.shape[1]
    xf, dtf = x.float(), dt.float()
    Bf, Cf = _heads(B.float(), heads), _heads(C.float(), heads)
    decay = torch.exp(dtf * A.float())  # [T, H]
    state.mul_(decay[..., None, None]).add_((dtf[..., None] * xf)[..., None] * Bf[:, :, None, :])
    y = torch.einsum("bhpn,bhn->bhp", state, Cf)
    if D is not None:
        y = y + xf * D.float()[:, None]
    return y.to(x.dtype)
