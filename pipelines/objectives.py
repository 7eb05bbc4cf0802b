"""Training objectives: next-token (causal LM) and masked-token (masked LM) losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def causal_lm_loss(model: torch.nn.Module, ids: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) over positions 1..L-1 of ids [B, L].

    ``weights`` [B, L] (optional) weighs each target position, e.g. down-weighting soft-masked repeats.
    """
    logits = model(ids[:, :-1]).float()
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    if weights is None:
        return losses.mean()
    w = weights[:, 1:].reshape(-1).float()
    return (losses * w).sum() / w.sum().clamp_min(1e-8)


def mask_tokens(
    ids: torch.Tensor,
    *,
    mask_id: int,
    vocab_ids: torch.Tensor,
    mask_prob: float = 0.15,
    special: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: choose ``mask_prob`` of the positions; of those 80% → mask, 10% → random, 10% kept.

    Args:
        ids: [B, L] token ids.
        mask_id: the mask token.
        vocab_ids: [K] ids a random replacement is drawn from (real symbols, never specials).
        special: [B, L] bool, positions never chosen (padding, bos/eos).
    Returns:
        inputs [B, L] (masked copy of ids) and labels [B, L]: the original id at chosen positions, IGNORE
        elsewhere, so the loss covers exactly the chosen positions.
    """
    draw = torch.rand(ids.shape, generator=generator).to(ids.device)
    chosen = draw < mask_prob
    if special is not None:
        chosen &= ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    action = torch.rand(ids.shape, generator=generator).to(ids.device)
    random_ids = vocab_ids.to(ids.device)[
        torch.randint(len(vocab_ids), ids.shape, generator=generator).to(ids.device)]
    inputs = torch.where(chosen & (action < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
    return inputs, labels


def masked_lm_loss(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy (nats) over the chosen positions only (labels != IGNORE), optionally weighted [B, L]."""
    logits = model(inputs, attention_mask=attention_mask).float()
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none",
                             ignore_index=IGNORE)
    chosen = (labels.reshape(-1) != IGNORE).float()
    w = chosen if weights is None else chosen * weights.reshape(-1).float()
    return (losses * w).sum() / w.sum().clamp_min(1e-8)
