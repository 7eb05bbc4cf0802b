"""Packed sequences: several sequences in one row, marked by ``seq_idx`` or ``cu_seqlens``.

The model runs each sequence as if alone: every (row, run of one ``seq_idx`` value) is moved into its own row
of a right-padded batch, the ordinary forward runs on that (a causal layer never looks right, and a
bidirectional one reverses each row's real prefix, so padding reaches no real position and every state
starts at zero at each sequence start), and the outputs go back to the packed positions. Exact for every
backbone kind; it costs the padding of the longest sequence, not a kernel that resets states in place.

Shapes: B rows, L packed length, S sequences, M the longest sequence, D d_model.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from seqssm.errors import InputError


class Unpacked(NamedTuple):
    """Where each packed position goes: valid [B, L] bool, seg / pos [B, L] (sequence and offset in it)."""

    valid: torch.Tensor
    seg: torch.Tensor
    pos: torch.Tensor
    n_seq: int
    max_len: int

    def pad(self, packed: torch.Tensor, fill=0) -> torch.Tensor:
        """packed [B, L, ...] → padded [S, M, ...]."""
        out = packed.new_full((self.n_seq, self.max_len, *packed.shape[2:]), fill)
        out[self.seg[self.valid], self.pos[self.valid]] = packed[self.valid]
        return out

    def mask(self) -> torch.Tensor:
        """[S, M] attention mask of the padded batch (1 = token)."""
        return self.pad(self.valid.long())

    def repack(self, padded: torch.Tensor) -> torch.Tensor:
        """padded [S, M, ...] → packed [B, L, ...], zeros where ``seq_idx`` is -1."""
        out = padded.new_zeros((*self.valid.shape, *padded.shape[2:]))
        out[self.valid] = padded[self.seg[self.valid], self.pos[self.valid]]
        return out


def seq_idx_from_cu_seqlens(cu_seqlens: torch.Tensor, length: int) -> torch.Tensor:
    """cu_seqlens [S + 1] (offsets of each sequence in one packed row) → seq_idx [1, L] (-1 past the last)."""
    cu = cu_seqlens.long()
    if cu.dim() != 1 or cu.numel() < 2 or int(cu[0]) != 0 or bool((cu[1:] < cu[:-1]).any()) \
            or int(cu[-1]) > length:
        raise InputError(f"cu_seqlens must be [S + 1] non-decreasing offsets from 0 to at most L = {length}, "
                         f"got {cu.tolist()[:8]}")
    pos = torch.arange(length, device=cu.device)
    idx = torch.bucketize(pos, cu[1:], right=True)
    return torch.where(pos < cu[-1], idx, -1).unsqueeze(0)


def unpack(seq_idx: torch.Tensor, shape: torch.Size) -> Unpacked:
    """The map of a [B, L] ``seq_idx`` (a sequence is a run of one value >= 0 in a row; -1 is padding)."""
    if not isinstance(seq_idx, torch.Tensor) or seq_idx.shape != shape or seq_idx.dtype.is_floating_point:
        got = tuple(seq_idx.shape) if isinstance(seq_idx, torch.Tensor) else type(seq_idx).__name__
        raise InputError(f"seq_idx must be an integer [B, L] tensor of shape {tuple(shape)}, got {got}")
    valid = seq_idx >= 0
    if not bool(valid.any()):
        raise InputError("seq_idx marks no position as part of a sequence (all -1)")
    starts = torch.ones_like(valid)
    starts[:, 1:] = seq_idx[:, 1:] != seq_idx[:, :-1]
    starts &= valid
    flat = starts.flatten()
    seg = (torch.cumsum(flat.long(), 0) - 1).view(shape)
    first = torch.nonzero(flat).squeeze(1)  # flat index where each sequence starts
    index = torch.arange(flat.numel(), device=seq_idx.device).view(shape)
    pos = index - first[seg.clamp(min=0)]
    n_seq = int(first.numel())
    max_len = int(pos[valid].max()) + 1
    return Unpacked(valid, seg, pos, n_seq, max_len)
