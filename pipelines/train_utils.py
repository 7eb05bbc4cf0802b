"""Optimiser, schedule and run records shared by the training pipelines."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from seqssm.pipelines.common import atomic_path
from seqssm.version import versions  # noqa: F401  (re-exported)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay matrices only; norms, biases, embeddings' scale-free params, A_log and D never decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        (no_decay if p.ndim < 2 or leaf in ("A_log", "D") else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def cosine_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int, floor: float = 0.1,
                    seconds: float | None = None, start: float | None = None, clock=time.perf_counter):
    """Linear warm-up for ``warmup`` steps, then cosine decay to ``floor`` × the base rate at ``total``.

    With a time budget of ``seconds`` (counted on ``clock`` from ``start``, default: now), the decay's
    progress is the further along of the steps and the time, so a run that a wall-time cap cuts short still
    ends at the floor rate instead of mid-schedule; a run that finishes its steps in time is unaffected.
    """
    start = clock() if start is None else start

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        if seconds is not None:
            progress = max(progress, (clock() - start) / seconds)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class EpochSampler(torch.utils.data.Sampler[int]):
    """Indices 0..n-1 in a fresh order each epoch, a pure function of (seed, epoch), so a resumed run (or a
    DataLoader worker) needs no sampler state: ``set_epoch(epoch, start)`` skips the first ``start`` indices
    of that epoch's order, the ones trained on before the run stopped."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.start = n, seed, 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return max(0, self.n - self.start)

    def __iter__(self):
        seed = int(np.random.default_rng([self.seed, self.epoch]).integers(2**63))
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(seed))
        return iter(order[self.start:].tolist())


def write_run_record(directory: Path, config, extra: dict | None = None) -> Path:
    """Write ``run.json``: the full resolved config, versions and any results, for reproducibility."""
    record = {"config": dataclasses.asdict(config), "versions": versions(), **(extra or {})}
    path = Path(directory) / "run.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


# ---------------------------------------------------------------- run warnings
MIN_STEPS = 100  # fewer optimiser steps than this rarely trains a model from scratch
# The audio recipe's defaults (--patch-size 16, --clip-seconds 2: 1000 tokens a clip) are sized for 8 kHz
# recordings (FSDD); a fresh audio model has no rate of its own to compare with.
RECIPE_SAMPLE_RATE = 8000
RATE_FACTOR = 2.0  # a rate this many times the expected one is warned about
TIME_CHECK_STEPS = 10  # steps timed (after the first, which carries start-up costs) before the --max-minutes check


class RunWarnings(list):
    """A run's warnings: each printed once to stderr as one line ("warning: ...") and kept for run.json
    (``"warnings"``)."""

    def warn(self, message: str | None) -> None:
        if message and message not in self:
            self.append(message)
            print(f"warning: {message}", file=sys.stderr, flush=True)


def few_steps_warning(total: int, rows: int | None = None, *, epochs: int | None = None,
                      batch_size: int | None = None, minimum: int | None = None) -> str | None:
    """The warning for a run of ``total`` optimiser steps, None when it has at least ``minimum`` (default
    ``MIN_STEPS``): finetune's ``total`` = ``epochs`` × ceil(``rows`` / ``batch_size``); pretrain's is ``--steps``
    (``rows`` None)."""
    minimum = MIN_STEPS if minimum is None else minimum
    if total >= minimum:
        return None
    if rows is None:
        return f"this run gets only {total} optimiser steps (--steps {total}), fewer than {minimum}: raise --steps"
    return (f"this run gets only {total} optimiser steps ({epochs} epochs x {math.ceil(rows / batch_size)} batches "
            f"of {batch_size} from {rows} training rows), fewer than {minimum}: raise --epochs or lower --batch-size")


def time_cap_warning(step: int, seconds_per_step: float, seconds_left: float, total: int, max_minutes: float,
                     minimum: int | None = None) -> str | None:
    """The warning when ``--max-minutes`` will likely stop a run at ``step`` after ``seconds_per_step`` each, with
    ``seconds_left`` of the budget, before its ``total`` steps and before ``minimum`` (``MIN_STEPS``; ``total``
    or more: any cut, for a schedule that does not follow the clock); else None."""
    minimum = MIN_STEPS if minimum is None else minimum
    expected = step + max(0, int(seconds_left / max(seconds_per_step, 1e-9)))
    if expected >= total or expected >= minimum:
        return None
    return (f"--max-minutes {max_minutes:g} will likely stop this run after about {expected} of its {total} "
            f"optimiser steps ({seconds_per_step:.2g} s a step), {_short_of(minimum, total)}")


def time_cap_hit_warning(step: int, total: int, max_minutes: float, minimum: int | None = None) -> str | None:
    """The warning when ``--max-minutes`` stopped a run after ``step`` of ``total`` steps, fewer than ``minimum``
    (``MIN_STEPS``; ``total`` or more: any cut)."""
    minimum = MIN_STEPS if minimum is None else minimum
    if step >= total or step >= minimum:
        return None
    return f"--max-minutes {max_minutes:g} stopped this run after {step} of its {total} optimiser steps, " \
        + _short_of(minimum, total)


def _short_of(minimum: int, total: int) -> str:
    if minimum >= total:  # pretrain: the learning rate decays over --steps, not over the clock
        return "before its learning rate decayed: raise --max-minutes or lower --steps"
    return f"fewer than {minimum}: raise --max-minutes"


def sample_rate_warning(rate: int | None, expected: int | None, source: str,
                        factor: float = RATE_FACTOR) -> str | None:
    """The warning when audio at ``rate`` Hz is more than ``factor`` × the ``expected`` rate of ``source`` (e.g.
    "the 8000 Hz of --init-from run/checkpoint"): that many times the tokens per second; else None."""
    if rate is None or expected is None or rate <= factor * expected:
        return None
    return (f"the audio is at {rate} Hz, {rate / expected:.1f}x {source}: {rate / expected:.1f}x the tokens per "
            f"second of audio (slower, longer context); resample with --sample-rate {expected}")


class TimeCapWatch:
    """The --max-minutes warnings of a training loop, into ``warned``: call :meth:`step` after every optimiser
    step and :meth:`finish` after the loop.

    The pace is timed over the ``TIME_CHECK_STEPS`` steps after this process's first (which carries start-up
    costs), and :func:`time_cap_warning` says whether the cap, at that pace, stops the run short of ``total`` and
    of ``MIN_STEPS``; at the end, if nothing was said and the cap did stop the run, :func:`time_cap_hit_warning`.
    ``deadline`` is on ``time.perf_counter``'s clock; None (no cap) makes both calls do nothing. ``minimum``:
    the steps below which a cut is worth a warning (None: ``MIN_STEPS``; ``total``: any cut, for pretrain, whose
    schedule does not follow the clock).
    """

    def __init__(self, warned: RunWarnings, deadline: float | None, total: int, max_minutes: float | None,
                 minimum: int | None = None):
        self.warned, self.deadline, self.total, self.max_minutes = warned, deadline, total, max_minutes
        self.minimum = {} if minimum is None else {"minimum": minimum}
        self.timed: tuple[int, float] | None = None  # (step, clock) after the first step

    def step(self, step: int) -> None:
        if self.deadline is None:
            return
        now = time.perf_counter()
        self.timed = self.timed or (step, now)
        if step == self.timed[0] + TIME_CHECK_STEPS:
            self.warned.warn(time_cap_warning(step, (now - self.timed[1]) / TIME_CHECK_STEPS, self.deadline - now,
                                              self.total, self.max_minutes, **self.minimum))

    def finish(self, step: int) -> None:
        if self.deadline is None or any(w.startswith("--max-minutes") for w in self.warned):
            return
        if time.perf_counter() > self.deadline:
            self.warned.warn(time_cap_hit_warning(step, self.total, self.max_minutes, **self.minimum))
