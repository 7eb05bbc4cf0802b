"""Multi-head attention for hybrid (Jamba-style) stacks: SDPA, rotary positions, a preallocated KV cache.

The layer has the mixer interface of ``MambaMixer`` (forward from a state, ``return_state``, prefill into a
cache, ``step``), with a ``KVCache`` as its state:

- decoding: ``allocate_state`` preallocates keys and values for ``max_len`` positions (static shapes, so a
  captured CUDA graph replays the step); ``pos`` [1] says how many are filled and is advanced in place.
- chunked / streamed forward (``state`` / ``return_state``): the keys and values of every earlier chunk are
  carried exactly (the returned state holds all of them, differentiable), so chunked equals one pass; past
  ``max_len`` positions in all it raises ``InputError`` naming ``--attn-max-len`` instead of windowing.

Shapes: B batch, L length, D d_model, H heads, E head dim = D / H, T positions held by a cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seqssm.errors import InputError


@dataclass
class KVCache:
    """k, v: [B, H, T, E] keys (rotated) and values; pos: [1] int64, how many of the T positions are filled."""

    k: torch.Tensor
    v: torch.Tensor
    pos: torch.Tensor


def rotate(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotary positions (GPT-NeoX halves): x [B, H, L, E] at positions [L] → [B, H, L, E]."""
    angles = positions.to(torch.float32)[:, None] * inv_freq[None]  # [L, E/2]
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


class AttentionMixer(nn.Module):
    """[B, L, D] → [B, L, D]: causal or bidirectional multi-head self-attention through
    ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on the GPU)."""

    kind = "A"

    def __init__(self, *, d_model: int, n_heads: int, causal: bool = True, max_len: int = 4096,
                 rope_base: float = 10000.0, impl: str = "auto", device=None, dtype=None):
        super().__init__()
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise InputError(f"AttentionMixer: d_model = {d_model} must split into {n_heads} heads of even width")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.causal, self.max_len, self.impl = causal, max_len, impl
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False, device=device, dtype=dtype)
        self.out_proj = nn.Linear(d_model, d_model, bias=False, device=device, dtype=dtype)
        self.rope_base = rope_base

    def allocate_state(self, batch_size: int, device=None, dtype=None, max_len: int | None = None) -> KVCache:
        """An empty cache of ``max_len`` positions (the config's ``attn_max_len`` when None)."""
        shape = (batch_size, self.n_heads, max_len or self.max_len, self.head_dim)
        return KVCache(k=torch.zeros(shape, device=device, dtype=dtype),
                       v=torch.zeros(shape, device=device, dtype=dtype),
                       pos=torch.zeros(1, dtype=torch.long, device=device))

    def _heads(self, hidden: torch.Tensor, start) -> tuple[torch.Tensor, ...]:
        """q, k, v [B, H, L, E] with q and k rotated to positions start .. start + L - 1."""
        q, k, v = self.qkv(hidden).unflatten(-1, (3, self.n_heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        positions = start + torch.arange(hidden.shape[1], device=hidden.device)
        # Computed per call, not a buffer: checkpoints hold only weights.
        inv_freq = self.rope_base ** (-torch.arange(0, self.head_dim, 2, device=hidden.device,
                                                    dtype=torch.float32) / self.head_dim)
        return rotate(q, positions, inv_freq), rotate(k, positions, inv_freq), v

    def _attend(self, q, k, v, past: int, key_mask: torch.Tensor | None) -> torch.Tensor:
        """q [B, H, L, E] against k, v [B, H, P + L, E] (P = past positions) → [B, L, D]."""
        length = q.shape[2]
        if self.causal and past == 0 and key_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            mask = None
            if self.causal:  # query i sits at position past + i and sees keys up to there
                rows = torch.arange(length, device=q.device)[:, None] + past
                mask = torch.arange(k.shape[2], device=q.device)[None] <= rows
            if key_mask is not None:  # bidirectional over right-padded rows: padding is never a key
                keys = key_mask.bool()[:, None, None, :]
                mask = keys if mask is None else mask & keys
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(y.transpose(1, 2).flatten(-2))

    def forward(self, hidden: torch.Tensor, state: KVCache | None = None, *, return_state: bool = False,
                cache: KVCache | None = None, key_mask: torch.Tensor | None = None):
        """hidden [B, L, D] → [B, L, D].

        ``state``: the keys/values of the earlier chunks (exact carry); with ``return_state`` the state after
        this chunk comes back too (all positions so far). ``cache``: prefill a preallocated cache in place.
        ``key_mask`` [B, L] (bidirectional only): 1 = token, 0 = right padding.
        """
        if not self.causal and (state is not None or return_state or cache is not None):
            raise InputError("AttentionMixer: a bidirectional attention layer has no left-to-right state; "
                             "run the full sequence")
        length = hidden.shape[1]
        if cache is not None:
            past = int(cache.pos)
            if past + length > cache.k.shape[2]:
                raise InputError(f"attention KV cache holds {cache.k.shape[2]} positions but {past + length} "
                                 "are needed; raise --attn-max-len (the model's attn_max_len)")
            q, k, v = self._heads(hidden, past)
            cache.k[:, :, past:past + length] = k
            cache.v[:, :, past:past + length] = v
            cache.pos += length
            return self._attend(q, cache.k[:, :, :past + length], cache.v[:, :, :past + length], past, None)
        past = 0 if state is None else int(state.pos)
        if past + length > self.max_len and (state is not None or return_state):
            raise InputError(f"attention layers carry every earlier key across chunks, up to {self.max_len} "
                             f"positions (the model's attn_max_len); this sequence needs {past + length}: stream a "
                             "shorter region, or pretrain with a larger --attn-max-len")
        q, k, v = self._heads(hidden, past)
        if state is not None:
            k = torch.cat([state.k[:, :, :past].to(k.dtype), k], dim=2)
            v = torch.cat([state.v[:, :, :past].to(v.dtype), v], dim=2)
        out = self._attend(q, k, v, past, key_mask)
        if not return_state:
            return out
        return out, KVCache(k=k, v=v, pos=torch.full((1,), past + length, dtype=torch.long, device=k.device))

    def step(self, hidden: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One token per row: [B, D] → [B, D]; writes its key/value at ``cache.pos`` and advances it.

        Only tensor ops on the cache's fixed buffers (no host sync), so the step can be graph-captured; the
        caller keeps the total length within the cache (``Decoder`` checks it against ``attn_max_len``).
        """
        q, k, v = self._heads(hidden[:, None], cache.pos)
        cache.k.index_copy_(2, cache.pos, k.to(cache.k.dtype))
        cache.v.index_copy_(2, cache.pos, v.to(cache.v.dtype))
        mask = (torch.arange(cache.k.shape[2], device=hidden.device) <= cache.pos)[None]  # [1, T]
        y = F.scaled_dot_product_attention(q, cache.k.to(q.dtype), cache.v.to(q.dtype), attn_mask=mask)
        cache.pos.add_(1)
        return self.out_proj(y[:, :, 0].flatten(-2))
