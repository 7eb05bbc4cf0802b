"""Sequence-length warm-up: short sequences first, growing to the full length, tokens per step constant.

HyenaDNA trained its 1 Mbp models this way, with each stage's length, batch size and gradient accumulation
written out by hand. Here the stages follow from four numbers: the final length, the tokens every optimiser
step sees, the tokens one forward/backward can hold in memory, and the warm-up length. At every stage

    batch_size (sequences per step) = tokens_per_step / seq_len
    micro_batch_size * grad_accum   = batch_size,   micro_batch_size * seq_len <= max_tokens_per_micro_batch

and when even one sequence is over that memory limit, it goes through ``seqssm.streaming.chunked_backward``
in chunks of ``chunk_size`` positions (exact gradients), so the schedule reaches lengths that do not fit.
The learning-rate schedule needs no change: every step averages the same number of tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from seqssm.errors import InputError
from seqssm.streaming import chunked_backward, lm_chunk_loss

__all__ = ["LengthScheduleConfig", "Stage", "plan_length_schedule", "stage_at", "step_backward"]


@dataclass(frozen=True)
class Stage:
    """One stage: steps [start_step, end_step) (end_step None: to the end of training) at one length."""

    start_step: int
    end_step: int | None
    seq_len: int
    batch_size: int
    micro_batch_size: int
    grad_accum: int
    chunk_size: int | None

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


@dataclass(frozen=True)
class LengthScheduleConfig:
    """Lengths grow by ``growth`` from ``min_length`` to ``max_length`` over ``warmup_steps`` steps, split
    evenly between the warm-up stages (the first stages take the remainder); then ``max_length`` to the end.

    ``tokens_per_step`` must be a multiple of every stage length (powers of two make it so).
    ``max_tokens_per_micro_batch`` is what one forward/backward holds in memory (e.g. 2**16 on a CPU,
    the largest batch × length measured to fit on a GPU).
    """

    max_length: int
    tokens_per_step: int
    max_tokens_per_micro_batch: int
    min_length: int = 1024
    warmup_steps: int = 0
    growth: int = 2
    lengths: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        for name in ("max_length", "tokens_per_step", "max_tokens_per_micro_batch", "min_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"length schedule: {name} must be a positive integer, got {value!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise InputError(f"length schedule: warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        if isinstance(self.growth, bool) or not isinstance(self.growth, int) or self.growth < 2:
            raise InputError(f"length schedule: growth must be an integer >= 2, got {self.growth!r}")
        if self.warmup_steps and self.min_length > self.max_length:
            raise InputError(f"length schedule: min_length {self.min_length} is above max_length "
                             f"{self.max_length}; lower min_length")
        lengths = [self.max_length]
        if self.warmup_steps:
            lengths = []
            length = self.min_length
            while length < self.max_length:
                lengths.append(length)
                length *= self.growth
            lengths.append(self.max_length)
            if len(lengths) - 1 > self.warmup_steps:
                raise InputError(f"length schedule: {len(lengths) - 1} warm-up stages need warmup_steps >= "
                                 f"{len(lengths) - 1}, got {self.warmup_steps}; raise warmup_steps or min_length")
        for length in lengths:
            if self.tokens_per_step % length:
                raise InputError(f"length schedule: tokens_per_step {self.tokens_per_step} is not a multiple "
                                 f"of the stage length {length}; use a multiple of every length, e.g. "
                                 f"{math.lcm(*lengths) * max(1, self.tokens_per_step // math.lcm(*lengths))}")
        object.__setattr__(self, "lengths", tuple(lengths))


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def plan_length_schedule(cfg: LengthScheduleConfig) -> tuple[Stage, ...]:
    """The stages of ``cfg`` in order; the last one runs to the end of training."""
    warm = len(cfg.lengths) - 1
    stages, start = [], 0
    for i, length in enumerate(cfg.lengths):
        steps = None if i == warm else cfg.warmup_steps // warm + (i < cfg.warmup_steps % warm)
        batch = cfg.tokens_per_step // length
        per_micro = cfg.max_tokens_per_micro_batch // length
        if per_micro >= 1:
            micro, chunk = _largest_divisor_at_most(batch, per_micro), None
        else:
            micro, chunk = 1, cfg.max_tokens_per_micro_batch
        end = None if steps is None else start + steps
        stages.append(Stage(start, end, length, batch, micro, batch // micro, chunk))
        start = end
    return tuple(stages)


def stage_at(stages: tuple[Stage, ...], step: int) -> Stage:
    """The stage that optimiser step ``step`` (0-based) belongs to."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InputError(f"stage_at: step must be an integer >= 0, got {step!r}")
    for stage in stages:
        if stage.end_step is None or step < stage.end_step:
            return stage
    raise InputError("stage_at: the schedule has no open-ended last stage; build it with plan_length_schedule")


def step_backward(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, stage: Stage,
                  *, ignore_index: int = -100, extra_loss: Callable[[], torch.Tensor | float] | None = None) -> float:
    """Gradients of one optimiser step, accumulated over the stage's micro-batches (and chunks).

    The gradients and the returned loss are those of the mean token cross-entropy over the whole step's
    batch, whatever the split. Causal LM: ``inputs = ids[:, :-1]``, ``targets = ids[:, 1:]``; masked LM:
    the masked inputs and the labels.

    Args:
        model: a MambaLMHeadModel in train mode (``chunk_size`` stages need one).
        inputs, targets: [batch_size, seq_len] of this stage, on the model's device.

        extra_loss: called after each micro-batch's forward, a loss of that forward to train on as well (the
            MoE load-balancing loss, ``objectives.ExpertUse.loss``), weighted by the micro-batch's share of the
            rows; not part of the returned loss. Chunked stages take none (their forward is in pieces).

    Returns:
        The step's mean loss (nats); call ``optimizer.step()`` after.
    """
    expected = (stage.batch_size, stage.seq_len)
    if tuple(inputs.shape) != expected or tuple(targets.shape) != expected:
        raise InputError(f"step_backward: inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} must "
                         f"both be [batch_size, seq_len] = {list(expected)} at this stage")
    normaliser = max(int((targets != ignore_index).sum()), 1)
    total = 0.0
    for rows in range(0, stage.batch_size, stage.micro_batch_size):
        x = inputs[rows:rows + stage.micro_batch_size]
        y = targets[rows:rows + stage.micro_batch_size]
        if stage.chunk_size is None:
            logits = model(x).float()
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=ignore_index,
                                   reduction="sum") / normaliser
            extra = 0.0 if extra_loss is None else extra_loss() * (x.shape[0] / stage.batch_size)
            (loss + extra).backward()
        else:
            if extra_loss is not None:
                raise InputError("step_backward: a chunked stage cannot add an extra loss (e.g. MoE balancing); "
                                 "raise max_tokens_per_micro_batch to the stage's length")
            loss = chunked_backward(model, x, lm_chunk_loss(y, ignore_index=ignore_index, normaliser=normaliser),
                                    chunk_size=stage.chunk_size)
        total += float(loss.detach())
    return total
