"""Self-pretraining for `seqssm finetune --self-pretrain-steps N`: before fine-tuning, the backbone is trained
as a language model on the task's own training rows (never its val or test rows), as Amos et al., "Never
Train from Scratch" (ICLR 2024) recommend over from-scratch comparisons.

The objective is the one `seqssm pretrain` trains on that backbone (``seqssm.pipelines.objectives``): masked
LM (15% of positions, 80/10/10) for a bidirectional or RC-equivariant DNA backbone, next-token (causal) LM
for a causal one, both strands drawn at random; audio: next-sample causal LM over 8-bit μ-law samples (as
`seqssm pretrain --modality audio`), which needs a causal backbone. Every random draw comes from its own
generator seeded by the run's init seed, and the global RNG streams are put back afterwards, so fine-tuning
draws the same dropout and data order with or without self-pretraining.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch

from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel
from seqssm.pipelines.common import autocast, progress
from seqssm.pipelines.objectives import IGNORE, causal_lm_loss, mask_tokens, masked_lm_loss
from seqssm.pipelines.train_utils import cosine_schedule, param_groups
from seqssm.tokenizers import NucleotideTokenizer

AUTO = "auto"
MASK_PROB = 0.15
MAX_TOKENS = 2048  # a longer training row is seen as random crops of this many tokens
EVAL_ROWS = 256  # the fixed rows (and masks) the loss before and after is measured on
# "auto" self-pretrains DNA training sets of at most this many rows (see auto_steps).
AUTO_MAX_ROWS = 0
AUTO_STEPS = 0


def objective_of(lm: MambaLMHeadModel, modality: str) -> str:
    """"mlm" or "clm": what `seqssm pretrain` trains this backbone with; InputError where it trains none."""
    bidirectional = lm.config.bidirectional or lm.config.rc_equivariant
    if modality == "audio" and bidirectional:
        raise InputError("--self-pretrain-steps on audio trains a next-sample (causal) LM, as `seqssm pretrain "
                         "--modality audio` does, and this backbone is bidirectional; add --no-bidirectional "
                         "or use --self-pretrain-steps 0")
    return "mlm" if bidirectional else "clm"


def auto_steps(modality: str, n_train: int) -> tuple[int, str]:
    """(steps, why) that ``auto`` resolves to for a training set of ``n_train`` rows."""
    if modality != "dna":
        return 0, "auto: off for audio (not measured to help)"
    if n_train > AUTO_MAX_ROWS or AUTO_STEPS == 0:
        return 0, "auto: off (self-pretraining did not beat fine-tuning from scratch in the CPU measurement)"
    return AUTO_STEPS, f"auto: on for DNA training sets of at most {AUTO_MAX_ROWS} rows"


def _digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


class _Rows:
    """The training rows as token id arrays, and random batches of them: [B, L] ids and a [B, L] mask."""

    def __init__(self, items: list, modality: str, rate: int | None, clip_samples: int | None):
        self.modality = modality
        if modality == "dna":
            self.tokenizer = NucleotideTokenizer()
            self.rows = [np.asarray(self.tokenizer.encode(str(item.data), source=f"input {item.id!r}"),
                                    dtype=np.int64) for item in items]
            self.limit = MAX_TOKENS
        else:
            from seqssm.datasets.audio_sets import load_record
            from seqssm.transforms import AudioTokenizer

            self.tokenizer = AudioTokenizer("mulaw", bits=8)
            self.rows = [self.tokenizer.encode(load_record(item, rate)[0][0]).numpy().astype(np.int64)
                         for item in items]
            self.limit = clip_samples
        self.pad = self.tokenizer.pad_id

    def batch(self, indices: Sequence[int], rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pieces = []
        for i in indices:
            row = self.rows[i]
            if len(row) > self.limit:
                start = int(rng.integers(len(row) - self.limit + 1))
                row = row[start:start + self.limit]
            if self.modality == "dna" and rng.random() < 0.5:  # both strands, as pretrain samples them
                row = self.tokenizer.reverse_complement(row)
            pieces.append(row)
        length = max(len(p) for p in pieces)
        ids = np.full((len(pieces), length), self.pad, dtype=np.int64)
        mask = np.zeros((len(pieces), length), dtype=bool)
        for b, p in enumerate(pieces):
            ids[b, :len(p)], mask[b, :len(p)] = p, True
        return torch.from_numpy(ids), torch.from_numpy(mask)


class _Loss:
    """The objective's loss (nats per predicted token) of a batch ids [B, L], mask [B, L]."""

    def __init__(self, kind: str, tokenizer):
        self.kind = kind
        if kind == "mlm":
            self.mask_id = tokenizer.mask_id
            self.vocab_ids = torch.tensor(sorted(set(range(tokenizer.vocab_size)) - set(tokenizer.special_ids)))

    def __call__(self, lm, ids, mask, generator: torch.Generator) -> torch.Tensor:
        if self.kind == "clm":
            return causal_lm_loss(lm, ids, weights=mask)
        inputs, labels = mask_tokens(ids, mask_id=self.mask_id, vocab_ids=self.vocab_ids, mask_prob=MASK_PROB,
                                     special=~mask, generator=generator)
        if not bool((labels != IGNORE).any()):  # a tiny batch may draw no position: score one real one
            labels[0, 0] = ids[0, 0]
        return masked_lm_loss(lm, inputs, labels, attention_mask=mask)


@torch.no_grad()
def _fixed_loss(lm, loss_fn: _Loss, batches, device) -> float:
    was = lm.training
    lm.eval()
    generator = torch.Generator().manual_seed(1234)  # the same masks before and after
    total = [float(loss_fn(lm, ids.to(device), mask.to(device), generator)) for ids, mask in batches]
    lm.train(was)
    return float(np.mean(total))


def self_pretrain(lm: MambaLMHeadModel, items: list, *, modality: str, steps: int, batch_size: int, lr: float,
                  seed: int, device: torch.device, rate: int | None = None, clip_samples: int | None = None,
                  requested=None, reason: str | None = None, max_seconds: float | None = None) -> dict:
    """Train ``lm`` in place for ``steps`` optimiser steps on ``items`` (the training rows: Examples of DNA,
    AudioRecords of audio) with its pretraining objective, or until ``max_seconds`` have passed; return the
    record for run.json (objective, steps done, rows and a digest of their ids, loss before / after in nats on
    fixed rows and masks, seconds)."""
    if not items:
        raise InputError("--self-pretrain-steps: the training split is empty")
    kind = objective_of(lm, modality)
    start = time.perf_counter()
    rows = _Rows(items, modality, rate, clip_samples)
    loss_fn = _Loss(kind, rows.tokenizer)
    rng = np.random.default_rng([seed, 7])
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    eval_idx = list(range(min(EVAL_ROWS, len(items))))
    eval_rng = np.random.default_rng([seed, 8])
    eval_batches = [rows.batch(eval_idx[i:i + batch_size], eval_rng) for i in range(0, len(eval_idx), batch_size)]
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # fine-tuning's streams stay as they were
        torch.manual_seed(int(rng.integers(2**62)))
        before = _fixed_loss(lm, loss_fn, eval_batches, device)
        optimizer = torch.optim.AdamW(param_groups(lm, 0.1), lr=lr, betas=(0.9, 0.95))
        scheduler = cosine_schedule(optimizer, max(1, steps // 10), steps)
        lm.train()
        order: list[int] = []
        running = math.nan
        bar = progress(total=steps, desc="self-pretrain", unit="step")
        done = 0
        for _ in range(steps):
            if max_seconds is not None and time.perf_counter() - start > max_seconds:
                break
            while len(order) < batch_size:  # epochs of a fresh permutation each
                order += rng.permutation(len(items)).tolist()
            chosen, order = order[:batch_size], order[batch_size:]
            ids, mask = rows.batch(chosen, rng)
            ids, mask = ids.to(device), mask.to(device)
            with autocast(device):
                loss = loss_fn(lm, ids, mask, generator)
                aux = lm.aux_loss()
            value = loss.item()
            if not math.isfinite(value):
                bar.close()
                raise InputError(f"self-pretraining diverged (loss {value}); lower --lr or use "
                                 "--self-pretrain-steps 0")
            optimizer.zero_grad(set_to_none=True)
            (loss + aux).backward()
            torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            running = value if math.isnan(running) else 0.9 * running + 0.1 * value
            done += 1
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}")
        bar.close()
        after = _fixed_loss(lm, loss_fn, eval_batches, device)
    seconds = time.perf_counter() - start
    cut = {"planned_steps": steps, "stopped_by": "--max-minutes"} if done < steps else {}
    record = {"steps": done, **cut, "requested": requested if requested is not None else steps, "objective": kind,
              "rows": len(items), "ids_digest": _digest([item.id for item in items]), "lr": lr,
              "loss_before": round(before, 5), "loss_after": round(after, 5), "seconds": round(seconds, 1),
              **({"reason": reason} if reason else {})}
    print(f"self-pretrain: {done} steps of {kind} on {len(items)} training rows, loss {before:.4f} -> "
          f"{after:.4f} nats ({seconds:.0f} s)", file=sys.stderr, flush=True)
    return record


def ids_digest(items: list) -> str:
    """The digest ``self_pretrain`` records of these rows' ids (for checks)."""
    return _digest([item.id for item in items])


def for_finetune(cfg, lm: MambaLMHeadModel, train: list, device: torch.device, rate: int | None, seed: int) -> dict:
    """Resolve ``cfg.self_pretrain_steps`` (a FinetuneConfig's; "auto": ``auto_steps``) and self-pretrain
    ``lm`` on the training rows ``train``; the run.json record (``steps`` 0 when off, with the reason)."""
    requested = cfg.self_pretrain_steps
    steps, reason = auto_steps(cfg.modality, len(train)) if requested == AUTO else (requested, None)
    if steps == 0:
        return {"steps": 0, "requested": requested, **({"reason": reason} if reason else {})}
    lr = cfg.backbone_lr if cfg.backbone_lr is not None else cfg.lr
    clip = round(cfg.clip_seconds * rate) if cfg.modality == "audio" else None
    return self_pretrain(lm, train, modality=cfg.modality, steps=steps, batch_size=cfg.batch_size, lr=lr,
                         seed=seed, device=device, rate=rate, clip_samples=clip, requested=requested,
                         reason=reason, max_seconds=None if cfg.max_minutes is None else 20 * cfg.max_minutes)
