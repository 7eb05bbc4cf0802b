"""Training objectives: next-token (causal LM) and masked-token (masked LM) losses, pretraining's
``Objective`` over them (plain windows or ``--pack``'s packed rows) and its validation, and the mixture-of-experts
load-balancing loss with its expert-use tallies (``ExpertUse``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from seqssm.device import autocast
from seqssm.models import MambaLMHeadModel

IGNORE = -100


def causal_lm_loss(model: torch.nn.Module, ids: torch.Tensor, weights: torch.Tensor | None = None,
                   seq_idx: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) over positions 1..L-1 of ids [B, L].

    ``weights`` [B, L] (optional) weighs each target position, e.g. down-weighting soft-masked repeats.
    ``seq_idx`` [B, L] (packed rows, -1 on padding): the model runs each sequence alone, and a position whose
    target is padding or the next sequence's first token predicts nothing (:func:`packed_next_targets`).
    """
    if seq_idx is None:
        logits = model(ids[:, :-1]).float()
        targets = ids[:, 1:]
    else:
        logits = model(ids[:, :-1], seq_idx=seq_idx[:, :-1]).float()
        targets = packed_next_targets(ids, seq_idx)
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none",
                             ignore_index=IGNORE)
    if weights is None and seq_idx is None:
        return losses.mean()
    w = (targets.reshape(-1) != IGNORE).float()
    if weights is not None:
        w = w * weights[:, 1:].reshape(-1).float()
    return (losses * w).sum() / w.sum().clamp_min(1e-8)


def packed_next_targets(ids: torch.Tensor, seq_idx: torch.Tensor) -> torch.Tensor:
    """targets [B, L-1]: ids[:, 1:], IGNORE where position t+1 is padding or in another sequence than t."""
    same = (seq_idx[:, 1:] == seq_idx[:, :-1]) & (seq_idx[:, :-1] >= 0)
    return torch.where(same, ids[:, 1:], torch.full_like(ids[:, 1:], IGNORE))


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
    seq_idx: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy (nats) over the chosen positions only (labels != IGNORE), optionally weighted [B, L];
    ``seq_idx`` [B, L]: packed rows, each sequence run alone (label padding IGNORE, see ``mask_tokens``)."""
    packed = {} if seq_idx is None else {"seq_idx": seq_idx}
    logits = model(inputs, attention_mask=attention_mask, **packed).float()
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none",
                             ignore_index=IGNORE)
    chosen = (labels.reshape(-1) != IGNORE).float()
    w = chosen if weights is None else chosen * weights.reshape(-1).float()
    return (losses * w).sum() / w.sum().clamp_min(1e-8)


class Objective:
    """The loss of one batch of windows ids [B, L]: next-token (clm) or masked-token (mlm) cross-entropy; with
    ``seq_idx`` [B, L] (``--pack``: packed rows, -1 on padding) each sequence runs alone, nothing is predicted
    at padding nor across a boundary, and padding is never masked.

    Returns (mean loss in nats, number of predicted positions: an int, or a 0-dim tensor where it depends on the
    batch, so that a training step never waits on the device for it) so validation can average exactly.
    ``cfg``: a ``PretrainConfig`` (its ``objective`` and ``mask_prob``).
    """

    def __init__(self, cfg, tokenizer):
        self.kind = cfg.objective
        self.mask_prob = cfg.mask_prob
        if self.kind == "mlm":
            self.mask_id = tokenizer.mask_id
            self.vocab_ids = torch.tensor(sorted(set(range(tokenizer.vocab_size)) - set(tokenizer.special_ids)))

    def __call__(self, model, ids: torch.Tensor, generator: torch.Generator | None = None,
                 seq_idx: torch.Tensor | None = None):
        if self.kind == "clm":
            if seq_idx is None:
                return causal_lm_loss(model, ids), ids.shape[0] * (ids.shape[1] - 1)
            n = (packed_next_targets(ids, seq_idx) != IGNORE).sum()
            return causal_lm_loss(model, ids, seq_idx=seq_idx), n
        inputs, labels = mask_tokens(ids, mask_id=self.mask_id, vocab_ids=self.vocab_ids, mask_prob=self.mask_prob,
                                     special=None if seq_idx is None else seq_idx < 0, generator=generator)
        return masked_lm_loss(model, inputs, labels, seq_idx=seq_idx), (labels != IGNORE).sum()


def on_device(batch, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(ids, seq_idx) of a batch: windows ids [B, L] (seq_idx None), or ``--pack``'s [ids, seq_idx] pair."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device), None
    ids, seq_idx = batch
    return ids.to(device), seq_idx.to(device)


@torch.no_grad()
def evaluate_bits(model, objective: Objective, batches, device) -> float:
    """Validation loss in bits per predicted token, averaged over every predicted position.

    The masked-LM masks are drawn from a fixed seed, so every validation scores the same positions.
    """
    model.eval()
    generator = torch.Generator().manual_seed(1234)
    total, count = 0.0, 0
    for batch in batches:
        ids, seq_idx = on_device(batch, device)
        with autocast(device):
            loss, n = objective(model, ids, generator, seq_idx)
        n = int(n)
        total += loss.item() * n
        count += n
    model.train()
    return total / max(count, 1) / math.log(2)


class ExpertUse:
    """The mixture-of-experts side of training (MoE-Mamba): the load-balancing loss that joins the training
    loss, and how evenly the tokens spread over the experts, for the log and run.json.

    Call :meth:`loss` after every training forward (each micro-batch): it returns the weighted Switch
    loss of that forward (``config.moe_aux_weight · sum over MoE layers``; 0.0 for a model without MoE
    layers, or with them frozen) and tallies each layer's first-choice counts. :meth:`row`
    closes a log interval: per MoE layer (by backbone index i) ``moe{i}_max_share`` (the busiest expert's
    share of the tokens; 1 / n_experts when balanced) and ``moe{i}_balance`` (entropy of the shares / log
    n_experts: 1 balanced, 0 one expert takes all), and ``aux_loss`` (the mean weighted balance loss per
    forward). Counts are summed over ranks under torchrun; the state is JSON for resume.
    """

    def __init__(self, model: torch.nn.Module):
        lm = next((m for m in model.modules() if isinstance(m, MambaLMHeadModel)), None)
        self.layers = [] if lm is None else [(i, layer.moe) for i, layer in enumerate(lm.backbone.layers)
                                             if layer.moe is not None]
        self.weight = 0.0 if lm is None else float(lm.config.moe_aux_weight)
        experts = self.layers[0][1].n_experts if self.layers else 0
        # [M, E] since the last row, on the device the counts come from: loss() adds to it without a host
        # sync; it is read only when a log row (or the resume state) is written.
        self.interval = torch.zeros(len(self.layers), experts, dtype=torch.long)
        self.total = torch.zeros_like(self.interval)  # [M, E] over the run (CPU)
        self._aux_sum, self.forwards = torch.zeros(()), 0  # on the device, like interval
        self._last: torch.Tensor | float = 0.0

    @property
    def last(self) -> float:
        """The value of the last loss(), for the divergence check (reading it waits for the device)."""
        return float(self._last)

    @property
    def aux_sum(self) -> float:
        return float(self._aux_sum)

    def __bool__(self) -> bool:
        return bool(self.layers)

    @property
    def columns(self) -> list[str]:
        """The log columns ([] without MoE layers)."""
        if not self.layers:
            return []
        return ["aux_loss", *(f"moe{i}_{what}" for i, _ in self.layers for what in ("max_share", "balance"))]

    def loss(self) -> torch.Tensor | float:
        """The weighted balance loss of the last forward (a 0-dim tensor that backpropagates to the routers)."""
        ran = [(row, moe) for row, (_, moe) in enumerate(self.layers) if moe.aux_loss is not None]
        if ran and self.interval.device != ran[0][1].counts.device:
            self.interval = self.interval.to(ran[0][1].counts.device)
        for row, moe in ran:  # frozen (eval-mode) layers too: their use is still worth logging
            self.interval[row] += moe.counts
        trained = [moe.aux_loss for _, moe in ran if moe.training and moe.aux_loss.requires_grad]
        self._last = 0.0
        if not trained:
            return 0.0
        aux = self.weight * sum(trained)
        self._last = aux.detach()
        self._aux_sum = self._aux_sum.to(aux.device) + self._last.float()
        self.forwards += 1
        return aux

    def row(self, world: int = 1, device: torch.device | None = None) -> dict[str, float]:
        """The log cells of the interval since the last row (every rank calls it under torchrun); starts the
        next interval."""
        if not self.layers:
            return {}
        interval = self.interval.to("cpu", copy=True)
        aux = torch.tensor([self.aux_sum, float(self.forwards)], dtype=torch.float64)
        if world > 1:
            packed = torch.cat([interval.reshape(-1).double(), aux]).to(device)
            torch.distributed.all_reduce(packed)
            packed = packed.cpu()
            interval = packed[:-2].round().long().reshape(interval.shape)
            aux = packed[-2:]
        self.total += interval
        self.interval.zero_()
        self._aux_sum, self.forwards = torch.zeros(()), 0
        cells = {"aux_loss": float(aux[0] / aux[1]) if aux[1] else math.nan}
        for (i, _), counts in zip(self.layers, interval, strict=True):
            cells.update({f"moe{i}_{k}": v for k, v in share_stats(counts).items()})
        return cells

    def record(self) -> dict | None:
        """For run.json: the tokens each expert took first, per MoE layer, over the whole run."""
        if not self.layers:
            return None
        moe = self.layers[0][1]
        return {"layers": [i for i, _ in self.layers], "n_experts": moe.n_experts, "top_k": moe.top_k,
                "aux_weight": self.weight, "counts": self.total.tolist(),
                **{k: [share_stats(c)[k] for c in self.total] for k in ("max_share", "balance")}}

    def state(self) -> dict:
        return {"interval": self.interval.tolist(), "total": self.total.tolist(), "aux_sum": self.aux_sum,
                "forwards": self.forwards}

    def load_state(self, state: dict | None) -> None:
        if state is not None and self.layers:
            self.interval = torch.tensor(state["interval"], dtype=torch.long)
            self.total = torch.tensor(state["total"], dtype=torch.long)
            self._aux_sum = torch.tensor(float(state["aux_sum"]))
            self.forwards = int(state["forwards"])


def share_stats(counts: torch.Tensor) -> dict[str, float]:
    """counts [E] → the busiest expert's share and the normalised entropy of the shares (NaN with no tokens)."""
    n = float(counts.sum())
    if n == 0:
        return {"max_share": math.nan, "balance": math.nan}
    p = counts.double() / n
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"max_share": float(p.max()), "balance": float(entropy / math.log(len(p))) if len(p) > 1 else 1.0}
