"""How many bits a language model spends on each token of a sequence: the engine of ``seqssm score`` and
``seqssm score-variants``.

Causal models score left to right: position t costs ``-log2 p(x_t | x_<t)``. seqssm trains causal models
on raw windows without a BOS token (``seqssm.pipelines.objectives.causal_lm_loss``), so the first token of a
sequence has no prediction and is **not scored** (its value is NaN; totals cover positions 1..L-1). Long
sequences go through the model chunk by chunk, every layer's states carried (``seqssm.streaming.
stream_hidden``) and the last logits of one chunk predicting the first token of the next: the scores equal
one pass over the whole sequence, in memory set by the chunk.

Masked (bidirectional) models score by **pseudo-log-likelihood**: position t costs ``-log2 p(x_t | x_\\t)``
with x_t replaced by the mask token and everything else visible, every position in turn (Salazar et al.,
2020). Why PLL and not the masked-marginal score (mask only the variant's positions, compare p(alt) with
p(ref) there): PLL is a score of any sequence, so one definition serves ``score`` (a sequence has no
"variant position") and ``score-variants`` (indels change the length, where masked-marginal has no
position-by-position pairing), and a variant's score is exactly the difference of the two windows' scores.
Its cost: one forward per position. Copies with different masked positions are batched (``batch_size``
rows per forward), each seeing up to ``chunk_size`` tokens centred on its position, so a sequence longer
than the chunk is scored with that much context on each side (exact PLL for sequences up to the chunk).

Shapes: L sequence length, T chunk, B batch, V vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from seqssm.pipelines.common import autocast, require_finite
from seqssm.streaming import stream_hidden

LOG2 = math.log(2.0)


class Scorer:
    """Per-position bits of token id sequences under ``model`` (eval mode, on its device).

    ``mask_id``: the mask token of a bidirectional model's tokenizer. ``checkpoint`` names the model in
    messages about non-finite outputs.
    """

    def __init__(self, model, *, batch_size: int = 16, chunk_size: int = 1 << 16, mask_id: int | None = None,
                 checkpoint: str = "the model"):
        self.model, self.batch_size, self.chunk_size = model, batch_size, chunk_size
        self.causal = not model.config.bidirectional
        self.mask_id = mask_id
        self.source = f"checkpoint {checkpoint}"
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def bits(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        """Bits per position of each sequence ([L_i] float64, NaN where not scored): causal sequences of up
        to ``chunk_size`` tokens in padded batches of ``batch_size``, longer ones streamed; bidirectional by
        pseudo-log-likelihood."""
        if not self.causal:
            return [self.pll(ids) for ids in seqs]
        out: list[np.ndarray | None] = [None] * len(seqs)
        short = [i for i, ids in enumerate(seqs) if len(ids) <= self.chunk_size]
        for b in range(0, len(short), self.batch_size):
            rows = short[b:b + self.batch_size]
            for i, bits in zip(rows, self._causal_batch([seqs[i] for i in rows]), strict=True):
                out[i] = bits
        for i, ids in enumerate(seqs):
            if out[i] is None:
                pieces = (ids[s:s + self.chunk_size] for s in range(0, len(ids), self.chunk_size))
                out[i] = np.concatenate(list(self.stream(pieces)))
        return out

    def _causal_batch(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        # Right padding (id 0) never reaches earlier positions of a causal model; padded targets are cut off.
        width = max(len(s) for s in seqs)
        ids = np.zeros((len(seqs), width), dtype=np.int64)
        for r, s in enumerate(seqs):
            ids[r, :len(s)] = s
        ids_t = torch.from_numpy(ids).to(self.device)
        with autocast(self.device):
            logits = self.model(ids_t)
        logits = logits.float()
        require_finite(logits, self.source, f"a batch of {len(seqs)} sequences")
        bits = np.full((len(seqs), width), np.nan)
        if width > 1:
            nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids_t[:, 1:], reduction="none") / LOG2
            bits[:, 1:] = nll.double().cpu().numpy()
        return [bits[r, :len(s)] for r, s in enumerate(seqs)]

    @torch.no_grad()
    def stream(self, chunks: Iterable[np.ndarray], where: str = "a sequence") -> Iterator[np.ndarray]:
        """A causal model over one sequence given chunk by chunk ([T_i] ids each): yields each chunk's bits
        [T_i] as soon as it is computed (the very first token NaN), states carried between chunks."""
        cache, last, position = self.model.allocate_cache(1), None, 0
        for piece in chunks:
            if len(piece) == 0:
                continue
            ids = torch.as_tensor(np.asarray(piece, dtype=np.int64), device=self.device)
            with autocast(self.device):
                (logits,) = stream_hidden(self.model, [ids[None]], cache, logits=True)
            logits = logits[0].float()
            require_finite(logits, self.source, f"{where}, positions {position}-{position + len(ids)}")
            bits = np.full(len(ids), np.nan)
            predictors = logits[:-1] if last is None else torch.cat([last, logits[:-1]])
            targets = ids[1:] if last is None else ids
            if len(targets):
                nll = F.cross_entropy(predictors, targets, reduction="none") / LOG2
                bits[len(ids) - len(targets):] = nll.double().cpu().numpy()
            last, position = logits[-1:], position + len(ids)
            yield bits

    @torch.no_grad()
    def pll(self, ids: np.ndarray) -> np.ndarray:
        """Pseudo-log-likelihood bits [L] of one sequence under a bidirectional model: position t masked, the
        rest visible within ``chunk_size`` tokens centred on t; ``batch_size`` positions per forward."""
        length = len(ids)
        width = min(length, self.chunk_size)
        seq = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=self.device)
        offsets = torch.arange(width, device=self.device)
        bits = np.empty(length)
        for b in range(0, length, self.batch_size):
            pos = torch.arange(b, min(b + self.batch_size, length), device=self.device)
            first = (pos - width // 2).clamp(0, length - width)  # [B] where each copy's window starts
            windows = seq[first[:, None] + offsets]  # [B, W]
            rows, cols = torch.arange(len(pos), device=self.device), pos - first
            windows[rows, cols] = self.mask_id
            with autocast(self.device):
                hidden = self.model.backbone(windows)
            logits = self.model._logits(hidden[rows, cols]).float()  # [B, V]: only the masked positions
            require_finite(logits, self.source, f"masked positions {b}-{b + len(pos)}")
            nll = F.cross_entropy(logits, seq[pos], reduction="none") / LOG2
            bits[b:b + len(pos)] = nll.double().cpu().numpy()
        return bits


def total(bits: np.ndarray) -> tuple[int, float]:
    """(positions scored, their summed bits) of one sequence's bits (NaN = not scored)."""
    scored = ~np.isnan(bits)
    return int(scored.sum()), float(bits[scored].sum())
