"""Reverse-complement parameter sharing (Caduceus-PS): a model whose output for rc(x) is the rc of its
output for x, exactly, for any weights.

Hidden states [B, L, D] carry the two strands in channel halves [fwd | rc]. The reverse complement of a
hidden state flips it along length and channels at once: that swaps the halves and reverses each, so
``rc_hidden([a, b]) = [flip(b), flip(a)]``. Every module keeps the property:
- the embedding writes ``[emb(x), flip(emb(rc(x)))]``;
- a layer applies one shared bidirectional mixer to the forward half and to the rc of the reverse half;
- norms are per half with a shared weight (``rms_norm(rc_halves=True)``);
- the LM head scores the forward half with W and the flipped reverse half with W's complement rows.

Right padding: the rc of a padded row reverses only its real prefix (padding stays at the right), so a
padded batch gives each row what it would give alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from seqssm.errors import InputError
from seqssm.models.bidirectional import BiMambaMixer, reverse_index, reverse_padded

STRAND_AVERAGE_KINDS = ("pooled", "per_position", "token_logits")


def complement_map(tokenizer, size: int | None = None) -> torch.Tensor:
    """[size] int64 map id → complement id from ``tokenizer.reverse_complement`` (A↔T, C↔G, the rest fixed).

    ``size`` (≥ the tokenizer's vocab) extends the map with fixed points, for padded embedding rows.
    """
    vocab = tokenizer.vocab_size
    size = vocab if size is None else size
    if size < vocab:
        raise InputError(f"complement_map: size {size} is smaller than the tokenizer's vocab ({vocab})")
    # reverse_complement reverses and complements; undoing the reversal leaves the complement of each id.
    comp = torch.as_tensor(tokenizer.reverse_complement(torch.arange(vocab)[None]))[0].flip(0).long()
    return torch.cat([comp, torch.arange(vocab, size)])


def _rc_ids(ids: torch.Tensor, complement: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    flipped = ids.flip(-1) if index is None else ids.gather(1, index)
    return complement[flipped]


def _rc_hidden(hidden: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    return reverse_padded(hidden, index).flip(-1)


def _index(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    return None if attention_mask is None else reverse_index(attention_mask.long())


def reverse_complement_ids(
    ids: torch.Tensor, complement: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """ids [B, L] → their reverse complement; with a right-padding mask [B, L] only each real prefix is
    reversed and the padding stays in place (its ids complemented). ``complement`` [V] from
    :func:`complement_map`.
    """
    return _rc_ids(ids, complement.to(ids.device), _index(attention_mask))


def reverse_complement_hidden(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The rc of RC-PS hidden states [B, L, D]: flipped along channels and along each row's real prefix."""
    return _rc_hidden(hidden, _index(attention_mask))


class RCPSEmbedding(nn.Embedding):
    """ids [B, L] → [B, L, D] = [emb(x), flip(emb(rc(x)))], one table of width D / 2 for both strands.

    A subclass of ``nn.Embedding`` so its table keeps the name ``weight`` (checkpoints, tying to the head).
    """

    def __init__(self, num_embeddings: int, d_model: int, complement: torch.Tensor, *, device=None, dtype=None):
        super().__init__(num_embeddings, d_model // 2, device=device, dtype=dtype)
        self.register_buffer("complement", complement.to(device=device, dtype=torch.long))

    def forward(self, input_ids: torch.Tensor, rev_index: torch.Tensor | None = None) -> torch.Tensor:
        """``rev_index`` [B, L] from :func:`reverse_index` for right-padded rows, else None."""
        fwd = super().forward(input_ids)
        rc = super().forward(_rc_ids(input_ids, self.complement, rev_index))
        return torch.cat([fwd, _rc_hidden(rc, rev_index)], dim=-1)


class RCPSBiMambaMixer(BiMambaMixer):
    """[B, L, D] → [B, L, D]: the shared BiMamba mixer (width D / 2) on the forward half and, rc'd in and
    out, on the reverse half. Both halves run as one batch of 2B rows.
    """

    def forward(self, hidden: torch.Tensor, *, rev_index: torch.Tensor | None = None) -> torch.Tensor:
        fwd, rev = hidden.chunk(2, dim=-1)
        both = torch.cat([fwd, _rc_hidden(rev, rev_index)], dim=0)
        index = None if rev_index is None else rev_index.repeat(2, 1)
        out_fwd, out_rev = super().forward(both, rev_index=index).chunk(2, dim=0)
        return torch.cat([out_fwd, _rc_hidden(out_rev, rev_index)], dim=-1)


class RCPSLMHead(nn.Linear):
    """[B, L, D] → logits [B, L, V] = W·fwd + W[complement]·flip(rev); weight [V, D / 2] (tied to the
    embedding). Logits for rc(x) are those of x flipped along L with the vocabulary complemented.
    """

    def __init__(self, d_model: int, num_embeddings: int, complement: torch.Tensor, *, device=None, dtype=None):
        super().__init__(d_model // 2, num_embeddings, bias=False, device=device, dtype=dtype)
        self.register_buffer("complement", complement.to(device=device, dtype=torch.long))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        fwd, rev = hidden.chunk(2, dim=-1)
        return F.linear(fwd, self.weight) + F.linear(rev.flip(-1), self.weight[self.complement])


def _check_mask(mask: torch.Tensor | None, shape: tuple, what: str) -> None:
    if mask is not None and (not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(shape)):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise InputError(f"{what}: attention_mask must be [B, L] = {tuple(shape)}, got {got}")


def rc_invariant_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over real tokens of RC-PS hidden states, strands combined: the same vector for x and rc(x).

    Args:
        hidden: [B, L, D] from an ``rc_equivariant`` backbone.
        attention_mask: [B, L] 1 for tokens, 0 for padding (any position order); None = all real.

    Returns:
        [B, D / 2]: (mean(fwd half) + channel-flipped mean(rev half)) / 2, as Caduceus pools RC-PS models.
    """
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3 or hidden.shape[-1] % 2:
        got = tuple(hidden.shape) if isinstance(hidden, torch.Tensor) else type(hidden).__name__
        raise InputError(f"rc_invariant_pool: hidden must be [B, L, D] with D even (two strand halves), "
                         f"got {got}")
    _check_mask(attention_mask, hidden.shape[:2], "rc_invariant_pool")
    if attention_mask is None:
        mean = hidden.mean(dim=1)
    else:
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # [B, L, 1]
        count = weights.sum(dim=1)
        if (count == 0).any():
            row = int((count[:, 0] == 0).nonzero()[0])
            raise InputError(f"rc_invariant_pool: row {row} of attention_mask has no real token; drop empty "
                             "sequences before pooling")
        mean = (hidden * weights).sum(dim=1) / count
    fwd, rev = mean.chunk(2, dim=-1)
    return (fwd + rev.flip(-1)) / 2


def strand_average(
    fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    tokenizer,
    *,
    kind: str = "pooled",
) -> torch.Tensor:
    """Test-time strand averaging: (fn(x) + fn(rc(x)) mapped back onto x's strand) / 2.

    Args:
        fn: called as ``fn(ids, attention_mask)``; returns [B, ...] (kind "pooled"), [B, L, ...]
            ("per_position": flipped back along each real prefix) or token logits [B, L, V]
            ("token_logits": flipped back and the vocabulary axis complemented, since the rc strand's
            base v at a position is base complement(v) on x).
        ids: [B, L] token ids, right-padded.
        attention_mask: [B, L] 1 for tokens, 0 for padding, or None.
        tokenizer: gives the complement map (``NucleotideTokenizer``).

    Returns:
        the averaged output, shaped as ``fn``'s. Padding positions of per-position outputs are averaged
        with themselves and mean nothing.
    """
    if kind not in STRAND_AVERAGE_KINDS:
        raise InputError(f"strand_average: kind must be one of {STRAND_AVERAGE_KINDS}, got {kind!r}")
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        got = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise InputError(f"strand_average: ids must be a [B, L] tensor of token ids, got {got}")
    _check_mask(attention_mask, ids.shape, "strand_average")
    index = _index(attention_mask)
    out = fn(ids, attention_mask)
    out_rc = fn(_rc_ids(ids, complement_map(tokenizer).to(ids.device), index), attention_mask)
    if kind != "pooled":
        if out_rc.dim() < 2 or out_rc.shape[:2] != ids.shape:
            raise InputError(f"strand_average(kind={kind!r}): fn must return [B, L, ...] for ids "
                             f"{tuple(ids.shape)}, got {tuple(out_rc.shape)}")
        back = torch.arange(ids.shape[1], device=ids.device).flip(0).expand_as(ids) if index is None else index
        out_rc = out_rc.gather(1, back.view(*back.shape, *[1] * (out_rc.dim() - 2)).expand_as(out_rc))
        if kind == "token_logits":
            out_rc = out_rc[..., complement_map(tokenizer, out_rc.shape[-1]).to(ids.device)]
    return (out + out_rc) / 2
