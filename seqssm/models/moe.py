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

Shapes: T tokens (B · L flattened), D d_model, F d_ff, E experts, K top_k.
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


def keep_within_capacity(experts: torch.Tensor, n_experts: int, capacity: int) -> torch.Tensor:
    """experts [T, K] → keep [T, K] bool: each expert's first ``capacity`` assignments, choice 0 of every
    token before choice 1, earlier tokens first."""
    onehot = F.one_hot(experts.t().reshape(-1), n_experts)  # [K·T, E], choice-major
    position = (onehot.cumsum(0) * onehot).sum(-1) - 1  # rank of each assignment within its expert
    return (position < capacity).reshape(experts.shape[1], experts.shape[0]).t()


class MoEMLP(nn.Module):
    """[B, L, D] → [B, L, D]: the weighted sum of each token's chosen experts."""

    def __init__(self, *, d_model: int, d_ff: int, n_experts: int, top_k: int = 1, capacity_factor: float = 1.25,
                 device=None, dtype=None):
        super().__init__()
        self.n_experts, self.top_k, self.capacity_factor = n_experts, top_k, capacity_factor
        self.router = nn.Linear(d_model, n_experts, bias=False, device=device, dtype=dtype)
        self.experts = nn.ModuleList(Expert(d_model, d_ff, device, dtype) for _ in range(n_experts))
        self.aux_loss: torch.Tensor | None = None
        self.counts = torch.zeros(n_experts, dtype=torch.long)
        self.dropped = 0

    def capacity(self, tokens: int) -> int:
        return math.ceil(self.capacity_factor * tokens * self.top_k / self.n_experts)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = hidden.reshape(-1, hidden.shape[-1])  # [T, D]
        probs = torch.softmax(self.router(x).float(), dim=-1)
        experts, gates = route(probs, self.top_k)
        if self.training:
            keep = keep_within_capacity(experts, self.n_experts, self.capacity(x.shape[0]))
        else:
            keep = torch.ones_like(experts, dtype=torch.bool)
        first = F.one_hot(experts[:, 0], self.n_experts).float()
        self.aux_loss = self.n_experts * (first.mean(0) * probs.mean(0)).sum()
        self.counts = first.sum(0).long().detach().cpu()
        self.dropped = int((~keep).sum())
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token, choice = torch.nonzero((experts == e) & keep, as_tuple=True)
            if token.numel():
                y = expert(x[token]) * gates[token, choice, None].to(x.dtype)
                out = out.index_add(0, token, y.to(out.dtype))
        return out.reshape(hidden.shape)

    def step(self, hidden: torch.Tensor) -> torch.Tensor:
        """One token per row [B, D] → [B, D], no capacity (as eval); every expert runs on every row, weighted
        by its gate (0 when not chosen), so the shapes are static and a CUDA graph can replay it."""
        probs = torch.softmax(self.router(hidden).float(), dim=-1)
        experts, gates = route(probs, self.top_k)
        weights = torch.zeros_like(probs).scatter(1, experts, gates)  # [B, E]
        out = torch.zeros_like(hidden)
        for e, expert in enumerate(self.experts):
            out = out + expert(hidden) * weights[:, e:e + 1].to(hidden.dtype)
        return out
