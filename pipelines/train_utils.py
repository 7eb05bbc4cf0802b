"""Optimiser, schedule and run records shared by the training pipelines."""

from __future__ import annotations

import dataclasses
import json
import math
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
