"""Mixture-of-experts MLP (MoE-Mamba / Switch Transformer): a router sends each token to its top-k experts.

Routing: softmax router probabilities in fp32; each token's k best experts (ties broken by the lower expert
index, so the same input always gets the same assignment). In training each expert takes at most
``capacity = ceil(capacity_factor · T · k / E)`` of the T tokens, first choices before second choices and
earlier tokens first; an assignment past the capacity is dropped (the token passes through the residual
only). In eval there is no capacity, so a token's output depends on that token alone and stepping equals the
full forward. Top-2 gates are renormalised over the two chosen experts.

The Switch load-balancing loss ``E · sum_e f_e · P_e`` (f_e: fraction of tokens whose first choice is e, P_e:
mean router probability of e; 1 when balanced) of the last forward is kept in ``aux_loss``; ``counts``
[E] holds how many tokens chose each expert first and ``dropped`` how many assignments overflowed.

No host sync: every shape in the forward follows from T alone, never from the routing, so the GPU never
waits for the CPU to learn how many tokens an expert got (and a CUDA graph can capture a step). Training
scatters each kept assignment into a fixed [E, C] grid of slots (C = min(capacity, T); its slot is its rank
within its expert, from a cumulative sum) and each expert runs on its C slots; eval runs every expert on
every token, weighted by its gate (0 when not chosen), E / k times the expert FLOPs of a sparse dispatch but
no capacity and no data-dependent shape. ``counts`` and ``dropped`` stay on the device until read.
:func:`moe_reference` is the plain per-expert loop (``torch.nonzero``, host syncs) the tests compare with.

Shapes: T tokens (B · L flattened), D d_model, F d_ff, E experts, K top_k, C slots per expert.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Expert(nn.Module):
    """D → F → D with GELU."""

    def __init__(self, d_model: int, d_ff: int, device=None, dtype=None):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff, bias=False, device=device, dtype=dtype)
        self.fc2 = nn.Linear(d_ff, d_model, bias=False, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def route(probs: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """probs [T, E] → (experts [T, K] int64, gates [T, K]) of the k largest, ties to the lower index."""
    # A stable descending sort keeps equal probabilities in index order (torch.topk promises no order).
    order = torch.sort(probs, dim=-1, descending=True, stable=True).indices[:, :top_k]
    gates = probs.gather(1, order)
    if top_k > 1:
        gates = gates / gates.sum(-1, keepdim=True)
    return order, gates


def positions_in_experts(experts: torch.Tensor, n_experts: int) -> torch.Tensor:
    """experts [T, K] → position [T, K] int64: each assignment's rank within its expert, choice 0 of every
    token before choice 1, earlier tokens first."""
    onehot = F.one_hot(experts.t().reshape(-1), n_experts)  # [K·T, E], choice-major
    position = (onehot.cumsum(0) * onehot).sum(-1) - 1
    return position.reshape(experts.shape[1], experts.shape[0]).t()


def keep_within_capacity(experts: torch.Tensor, n_experts: int, capacity: int) -> torch.Tensor:
    """experts [T, K] → keep [T, K] bool: each expert's first ``capacity`` assignments, choice 0 of every
    token before choice 1, earlier tokens first."""
    return positions_in_experts(experts, n_experts) < capacity


class MoEMLP(nn.Module):
    """[B, L, D] → [B, L, D]: the weighted sum of each token's chosen experts."""

    def __init__(self, *, d_model: int, d_ff: int, n_experts: int, top_k: int = 1, capacity_factor: float = 1.25,
                 device=None, dtype=None):
        super().__init__()
        self.n_experts, self.top_k, self.capacity_factor = n_experts, top_k, capacity_factor
        self.router = nn.Linear(d_model, n_experts, bias=False, device=device, dtype=dtype)
        self.experts = nn.ModuleList(Expert(d_model, d_ff, device, dtype) for _ in range(n_experts))
        self.aux_loss: torch.Tensor | None = None
        self.counts = torch.zeros(n_experts, dtype=torch.long)  # [E], on the device of the last forward
        self._dropped = torch.zeros((), dtype=torch.long)

    @property
    def dropped(self) -> int:
        """Assignments the last forward dropped for capacity (reading it waits for the device)."""
        return int(self._dropped)

    def capacity(self, tokens: int) -> int:
        return math.ceil(self.capacity_factor * tokens * self.top_k / self.n_experts)

    def _record(self, probs: torch.Tensor, experts: torch.Tensor, keep: torch.Tensor | None) -> None:
        """The Switch loss, the first-choice counts and the dropped count of this forward, all on the device."""
        first = F.one_hot(experts[:, 0], self.n_experts).float()
        self.aux_loss = self.n_experts * (first.mean(0) * probs.mean(0)).sum()
        self.counts = first.sum(0).long().detach()
        self._dropped = (~keep).sum() if keep is not None else torch.zeros((), dtype=torch.long, device=probs.device)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = hidden.reshape(-1, hidden.shape[-1])  # [T, D]
        probs = torch.softmax(self.router(x).float(), dim=-1)
        experts, gates = route(probs, self.top_k)
        if not self.training:
            self._record(probs, experts, None)
            return self._dense(x, experts, gates).reshape(hidden.shape)
        tokens, n_experts = x.shape[0], self.n_experts
        slots = min(self.capacity(tokens), tokens)  # C: an expert never gets more than T assignments
        position = positions_in_experts(experts, n_experts)  # [T, K]
        keep = position < slots
        self._record(probs, experts, keep)
        # Slot of each assignment in the [E·C] grid; a dropped one goes to the spare slot E·C, never read.
        slot = torch.where(keep, experts * slots + position, n_experts * slots)  # [T, K]
        # Which token fills each slot (T: an empty slot, the zero row appended to x).
        owner = torch.full((n_experts * slots + 1,), tokens, dtype=torch.long, device=x.device)
        owner = owner.scatter(0, slot.reshape(-1), torch.arange(tokens, device=x.device).repeat_interleave(
            self.top_k))
        padded = torch.cat([x, x.new_zeros(1, x.shape[1])])
        grid = padded[owner[:-1]].reshape(n_experts, slots, x.shape[1])  # [E, C, D]
        y = torch.cat([expert(grid[e]) for e, expert in enumerate(self.experts)])  # [E·C, D]
        y = torch.cat([y, y.new_zeros(1, y.shape[1])])  # the spare slot: dropped assignments add 0
        weight = (gates * keep).to(x.dtype)  # [T, K]
        out = (y[slot] * weight[..., None]).to(x.dtype).sum(1)  # [T, D]
        return out.reshape(hidden.shape)

    def _dense(self, x: torch.Tensor, experts: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """x [T, D] → [T, D]: every expert on every row, weighted by its gate (0 when not chosen)."""
        weights = torch.zeros(x.shape[0], self.n_experts, dtype=gates.dtype, device=x.device)
        weights = weights.scatter(1, experts, gates)  # [T, E]
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            out = out + (expert(x) * weights[:, e:e + 1].to(x.dtype)).to(out.dtype)
        return out

    def step(self, hidden: torch.Tensor) -> torch.Tensor:
        """One token per row [B, D] → [B, D], no capacity (as eval); every expert runs on every row, weighted
        by its gate (0 when not chosen), so the shapes are static and a CUDA graph can replay it."""
        probs = torch.softmax(self.router(hidden).float(), dim=-1)
        experts, gates = route(probs, self.top_k)
        return self._dense(hidden, experts, gates)


def moe_reference(layer: MoEMLP, hidden: torch.Tensor) -> torch.Tensor:
    """The plain MoE forward of ``layer`` on hidden [B, L, D] (the tests' reference): per expert, the rows
    routed to it (``torch.nonzero``, a host sync per expert), run and index-added into the output. Same
    routing, capacity and gates as ``layer(hidden)``; sets nothing on the layer."""
    x = hidden.reshape(-1, hidden.shape[-1])  # [T, D]
    probs = torch.softmax(layer.router(x).float(), dim=-1)
    experts, gates = route(probs, layer.top_k)
    if layer.training:
        keep = keep_within_capacity(experts, layer.n_experts, layer.capacity(x.shape[0]))
    else:
        keep = torch.ones_like(experts, dtype=torch.bool)
    out = torch.zeros_like(x)
    for e, expert in enumerate(layer.experts):
        token, choice = torch.nonzero((experts == e) & keep, as_tuple=True)
        if token.numel():
            y = expert(x[token]) * gates[token, choice, None].to(x.dtype)
            out = out.index_add(0, token, y.to(out.dtype))
    return out.reshape(hidden.shape)
