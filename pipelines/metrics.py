"""Every metric of a classification: the loss and scores fine-tuning validates and tests with, the scores
`seqssm evaluate` reports, and the cross-validated scores of `seqssm probe`, computed here only."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, matthews_corrcoef, roc_auc_score

from seqssm.models.heads import IGNORE_INDEX, SequenceClassifier, TaskConfig, classification_loss
from seqssm.pipelines.classify import predict_batches

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "micro_f1", "mcc", "auroc", "loss")


def compute_metrics(logits: torch.Tensor, probs: torch.Tensor, targets: torch.Tensor, task: TaskConfig) -> dict:
    """Loss and sklearn metrics of one split: logits/probs [N, K] or [N, L, K], targets as encode_targets."""
    k = task.num_labels
    loss = float(classification_loss(logits, targets, task.problem_type))
    probs = probs.reshape(-1, k).numpy()
    targets = targets.reshape(-1).numpy() if task.level == "token" else targets.numpy()
    if task.level == "token":
        keep = targets != IGNORE_INDEX
        probs, targets = probs[keep], targets[keep]
    out = {"loss": loss}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        if task.problem_type == "multi_label":
            pred = (probs >= 0.5).astype(int)
            out["accuracy"] = accuracy_score(targets, pred)
            out["macro_f1"] = f1_score(targets, pred, average="macro", zero_division=0)
            out["micro_f1"] = f1_score(targets, pred, average="micro", zero_division=0)
            both = [j for j in range(k) if 0 < targets[:, j].sum() < len(targets)]
            out["auroc"] = roc_auc_score(targets[:, both], probs[:, both], average="macro") if both else math.nan
        else:
            pred = probs.argmax(axis=1)
            out["accuracy"] = accuracy_score(targets, pred)
            out["balanced_accuracy"] = balanced_accuracy_score(targets, pred)
            out["macro_f1"] = f1_score(targets, pred, labels=list(range(k)), average="macro", zero_division=0)
            out["mcc"] = matthews_corrcoef(targets, pred)
            present = len(np.unique(targets))
            if k == 2 and present == 2:
                out["auroc"] = roc_auc_score(targets, probs[:, 1])
            elif present == k:
                out["auroc"] = roc_auc_score(targets, probs, multi_class="ovr", labels=list(range(k)))
            else:
                out["auroc"] = math.nan
    return {name: float(value) for name, value in out.items()}


def cat_batches(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along the batch axis; token-level [B, L, ...] pieces are right-padded to one L."""
    if tensors[0].dim() >= 2 and len({t.shape[1] for t in tensors}) > 1:
        length = max(t.shape[1] for t in tensors)
        fill = IGNORE_INDEX if not tensors[0].is_floating_point() else 0.0
        tensors = [torch.nn.functional.pad(t, (0, 0) * (t.dim() - 2) + (0, length - t.shape[1]), value=fill)
                   for t in tensors]
    return torch.cat(tensors)


def evaluate_split(model: SequenceClassifier, batches, device: torch.device, source: str = "the model") -> dict:
    """Loss and metrics of the model on collated, labelled batches; InputError naming ``source`` when its
    outputs are not finite (training diverged)."""
    logits, probs, targets = [], [], []
    diverged = "training diverged; lower --lr (and --backbone-lr) or keep --grad-clip small"
    for batch, lg, pr in predict_batches(model, batches, device, source, diverged):
        logits.append(lg.cpu())
        probs.append(pr.cpu())
        targets.append(batch["targets"])
    return compute_metrics(cat_batches(logits), cat_batches(probs), cat_batches(targets), model.task)
