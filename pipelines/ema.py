"""An exponential moving average of a model's weights, which fine-tuning validates, keeps and tests."""

from __future__ import annotations

import copy

import torch

from seqssm.errors import InputError


def check_decay(decay: float) -> None:
    """The one check of an ``--ema`` value, for the config (early) and the average itself."""
    if not 0 < decay < 1:
        raise InputError(f"--ema must be a decay in (0, 1), e.g. 0.999; got {decay}")


class WeightEMA:
    """A frozen copy of ``model`` (in eval mode) that trails it: after each optimiser step,
    ``ema ← d·ema + (1 − d)·current`` for every floating-point parameter and buffer (others are copied),
    with d = min(decay, (1 + n) / (10 + n)) at update n.

    The warm-up of d (TensorFlow's ``ExponentialMovingAverage(num_updates=)``) keeps the first averages
    from dragging in the random initialisation for ~1 / (1 − decay) steps. With decay 0.999 the average
    spans about the last 1,000 steps.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        check_decay(decay)
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """d of the next update."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average towards ``model``'s current weights (same architecture as the copy)."""
        weight = 1 - self.current_decay()
        self.updates += 1
        ours, theirs = list(self.model.parameters()), list(model.parameters())
        if len(ours) != len(theirs):
            raise ValueError("WeightEMA.update: the model has a different set of parameters than the average")
        torch._foreach_lerp_(ours, theirs, weight)
        for mine, current in zip(self.model.buffers(), model.buffers(), strict=True):
            if mine.is_floating_point():
                mine.lerp_(current, weight)
            else:
                mine.copy_(current)

    def state_dict(self) -> dict:
        """{"updates": n, "model": the average's state dict}: what resuming a run restores."""
        return {"updates": self.updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.model.load_state_dict(state["model"])
