"""Caduceus-style BiMamba: a forward mixer plus a mixer on the reversed sequence, summed.

With right padding the reverse direction must start at each row's own last real token, otherwise the
padding would be scanned first and leak into every real position. So the reversal is a gather with
per-row indices that reverses the real prefix and leaves the padding in place behind it.
"""

from __future__ import annotations

import torch
from torch import nn

from seqssm.models.mixer import MambaMixer


def reverse_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L] right-padded mask (1 = real) -> [B, L] gather index reversing each row's real prefix.

    Position t < n_b maps to n_b - 1 - t; padding positions map to themselves. The map is its own inverse.
    """
    length = attention_mask.shape[1]
    n = attention_mask.sum(dim=1, keepdim=True)  # [B, 1]
    pos = torch.arange(length, device=attention_mask.device).unsqueeze(0)  # [1, L]
    return torch.where(pos < n, n - 1 - pos, pos)


def reverse_padded(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """Reverse [B, L, D] along L within each row's real prefix (a plain flip when ``index`` is None)."""
    if index is None:
        return x.flip(1)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class BiMambaMixer(nn.Module):
    """out = fwd(x) + reverse(rev(reverse(x))); with ``weight_tie`` the two share in_proj and out_proj.

    The conv, x_proj, dt_proj, A_log and D stay separate per direction (Caduceus' choice: the projections
    carry most parameters, the SSM dynamics are what differ between reading directions).
    """

    def __init__(self, *, weight_tie: bool = True, **mixer_kwargs):
        super().__init__()
        self.weight_tie = weight_tie
        self.fwd = MambaMixer(**mixer_kwargs)
        self.rev = MambaMixer(**mixer_kwargs)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the projection modules (again, e.g. after ``to_empty``)."""
        if self.weight_tie:
            self.rev.in_proj = self.fwd.in_proj
            self.rev.out_proj = self.fwd.out_proj

    def forward(self, hidden: torch.Tensor, *, rev_index: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, D] -> [B, L, D]; ``rev_index`` from :func:`reverse_index` for right-padded batches."""
        out_rev = self.rev(reverse_padded(hidden, rev_index))
        return self.fwd(hidden) + reverse_padded(out_rev, rev_index)
