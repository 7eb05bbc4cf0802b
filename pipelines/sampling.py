"""Drawing the next token from logits on the device: temperature, top-k, top-p and an allowed-token mask.

:func:`sample_tokens` is a pure function of the logits and a tensor of uniform noise, made only of
fixed-shape tensor ops (no ``.item()``, no boolean indexing, no host-side draw), so it runs inside
a CUDA graph and never waits for the host. The draw is Gumbel-max: ``argmax(logits / T + g)`` with
``g = -log(-log(u))`` is a sample from ``softmax(logits / T)``, and filtered tokens (logit -inf) can never
win. With the same noise, the same logits give the same token on every run.
"""

from __future__ import annotations

import torch

from seqssm.pipelines.configs_sequence import check_sampling  # noqa: F401 (checked with the options)

__all__ = ["check_sampling", "sample_tokens", "symbol_mask"]

# Uniform noise is clamped into (0, 1) so that the Gumbel transform stays finite (a draw of exactly 0 or 1
# would give -inf or +inf and could pick a filtered token).
_U_MIN = torch.finfo(torch.float32).tiny
_U_MAX = 1.0 - 2.0**-24


def symbol_mask(vocab_size: int, ids) -> torch.Tensor:
    """bool [vocab_size]: True at ``ids`` (the tokens a sampler may draw), False elsewhere."""
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    mask[torch.as_tensor(list(ids), dtype=torch.long)] = True
    return mask


def sample_tokens(
    logits: torch.Tensor,
    noise: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    allowed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row from logits [B, V], filtered and drawn with the given uniform noise.

    Args:
        logits: [B, V] unnormalised scores, any float dtype (computed in fp32).
        noise: [B, V] uniform [0, 1) numbers (``torch.rand`` on the logits' device); the only randomness.
        temperature: logits are divided by it before filtering (> 0).
        top_k: keep the k largest logits of each row (ties at the k-th value stay); 0 = off.
        top_p: keep the smallest set of most likely tokens whose probability reaches top_p (the most
            likely token always stays); 1 = off.
        allowed: [V] bool on the logits' device, or None: tokens outside it are never drawn. Applied
            before top-k and top-p, so those act on the allowed tokens' renormalised distribution.

    Returns:
        ids [B] int64 and their log-probability [B] fp32 under the model itself (temperature 1, no
        filtering), which is what a score of the generated sequence needs.
    """
    raw = logits.float()
    scaled = raw if temperature == 1 else raw / temperature  # every op is a kernel launch in a decode step
    if allowed is not None:
        scaled = scaled.masked_fill(~allowed, float("-inf"))
    vocab = scaled.shape[-1]
    if 0 < top_k < vocab:
        kth = torch.topk(scaled, top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, descending=True, dim=-1, stable=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the mass before it already reaches top_p; the first one always stays.
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scaled = scaled.masked_fill(drop, float("-inf"))
    # scaled + Gumbel noise, the Gumbel draw being -log(-log(u)).
    ids = torch.argmax(scaled - torch.log(-torch.log(noise.float().clamp(_U_MIN, _U_MAX))), dim=-1)
    logprob = raw.log_softmax(-1).gather(-1, ids[:, None])[:, 0]
    return ids, logprob
