"""Several classifiers of one task as one model (the mean of their probabilities), for `seqssm predict A B C`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from seqssm.errors import InputError
from seqssm.models.heads import SequenceClassifier, TaskConfig


class ClassifierEnsemble(torch.nn.Module):
    """Classifiers of one task as one model: probabilities are the mean of the members' (softmax rows, or
    each label's sigmoid for multi-label), every batch through every member.

    ``forward`` takes a member's inputs and gives logits of that mean, [B, K] or [B, L, K] in fp32: log p
    (single-label, so the softmax gives p back) or log-odds (multi-label, so the sigmoid does), hence
    ``probabilities``, ``classification_loss`` and the metrics treat it as one classifier.
    """

    def __init__(self, members: Sequence[SequenceClassifier], names: Sequence[str] | None = None):
        super().__init__()
        if not members:
            raise InputError("an ensemble needs at least one classifier")
        names = list(names) if names is not None else [f"member {i}" for i in range(len(members))]
        check_one_task(list(zip(names, (m.task for m in members), strict=True)))
        self.members = torch.nn.ModuleList(members)
        self.task = members[0].task

    def forward(self, input_ids=None, attention_mask=None, *, input_values=None) -> torch.Tensor:
        probs = torch.stack([m.probabilities(m(input_ids, attention_mask, input_values=input_values))
                             for m in self.members]).mean(0)
        if self.task.problem_type == "multi_label":
            return torch.logit(probs, eps=1e-7)  # eps: finite log-odds for saturated sigmoids
        return torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return self.members[0].probabilities(logits)


def check_one_task(tasks: Sequence[tuple[str, TaskConfig]]) -> None:
    """InputError unless every (checkpoint name, task) has the first one's task and reads inputs as it does:
    the members of an ensemble share each collated batch and the table's columns."""
    first_name, first = tasks[0]
    for name, task in tasks[1:]:
        differ = [f"{field} {getattr(first, field)!r} vs {getattr(task, field)!r}"
                  for field in ("classes", "modality", "problem_type", "level")
                  if getattr(first, field) != getattr(task, field)]
        if not differ and (first.pooling == "cls") != (task.pooling == "cls") and first.modality == "dna":
            differ.append(f"pooling {first.pooling!r} vs {task.pooling!r} (only cls pooling adds a cls token)")
        if not differ and first.modality == "audio" and first.sample_rate != task.sample_rate:
            differ.append(f"sample_rate {first.sample_rate} vs {task.sample_rate}")
        if differ:
            raise InputError(f"checkpoints {first_name} and {name} cannot be averaged: {'; '.join(differ)}; "
                             "ensemble classifiers of one task (same classes, modality, problem type, level)")
