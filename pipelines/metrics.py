"""Every metric of a classification: the loss and scores fine-tuning validates and tests with, the scores
`seqssm evaluate` reports, the cross-validated scores of `seqssm probe` and those of `seqssm baseline`,
computed here only.

A score that is undefined on some rows is never a silent NaN: AUROC averages the classes that have both
positive and negative rows (and says so in ``notes``), and is NaN only with a note saying why. torch is
imported only by the functions that take tensors, so `seqssm evaluate` starts without it.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    matthews_corrcoef,
    roc_auc_score,
)

if TYPE_CHECKING:
    import torch

    from seqssm.models.heads import SequenceClassifier, TaskConfig

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "micro_f1", "mcc", "auroc", "loss")
# The scores each kind of task has (loss aside): micro F1 of a single-label task is its accuracy, and
# balanced accuracy and MCC have no one multi-label form, so neither is logged as a column of NaNs.
SINGLE_LABEL_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "mcc", "auroc")
MULTI_LABEL_METRICS = ("accuracy", "macro_f1", "micro_f1", "auroc")


def task_metrics(problem_type: str) -> tuple[str, ...]:
    """The scores (loss aside) of a "single_label" or "multi_label" task, in log-column order."""
    return MULTI_LABEL_METRICS if problem_type == "multi_label" else SINGLE_LABEL_METRICS


def per_class_curves(y_bin: np.ndarray, probs: np.ndarray, classes, notes: list[str] | None = None):
    """One-vs-rest AUROC and AUPRC {class: value} of the classes with both positive and negative rows;
    y_bin [N, K] 0/1, probs [N, K]. Each class left out gets a line in ``notes``."""
    auroc, auprc = {}, {}
    for k, name in enumerate(classes):
        positives = int(y_bin[:, k].sum())
        if 0 < positives < len(y_bin):
            auroc[name] = float(roc_auc_score(y_bin[:, k], probs[:, k]))
            auprc[name] = float(average_precision_score(y_bin[:, k], probs[:, k]))
        elif notes is not None:
            notes.append(f"AUROC/AUPRC of {name!r} undefined: {'no' if positives == 0 else 'only'} true "
                         f"{name!r} rows")
    return auroc, auprc


def macro_auroc(y_bin: np.ndarray, probs: np.ndarray, classes=None, notes: list[str] | None = None) -> float:
    """Macro one-vs-rest AUROC (scikit-learn's ``multi_class="ovr"``) over the classes with both positive and
    negative rows; NaN, with a note, when there are none. y_bin [N, K] 0/1, probs [N, K]."""
    k = y_bin.shape[1]
    classes = list(classes) if classes is not None else [str(j) for j in range(k)]
    own: list[str] = []
    auroc, _ = per_class_curves(y_bin, probs, classes, own)
    if not auroc:
        if notes is not None:
            notes.append(f"AUROC undefined: no class has both positive and negative rows among {len(y_bin)}")
        return math.nan
    if len(auroc) < k and notes is not None:
        absent = [c for c in classes if c not in auroc]
        notes.append(f"AUROC is the macro average over the {len(auroc)} of {k} classes with both positive and "
                     f"negative rows (left out: {', '.join(absent[:8])}{' …' if len(absent) > 8 else ''})")
    return float(np.mean(list(auroc.values())))


def single_label_scores(y: np.ndarray, probs: np.ndarray, classes=None, notes: list[str] | None = None) -> dict:
    """Accuracy, balanced accuracy, macro F1 (over all K classes), MCC and AUROC (binary: of class 1; else
    macro one-vs-rest over the classes present) of integer labels y [N] in [0, K) and probabilities [N, K]."""
    y = np.asarray(y, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    pred = probs.argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        out = {"accuracy": accuracy_score(y, pred), "balanced_accuracy": balanced_accuracy_score(y, pred),
               "macro_f1": f1_score(y, pred, labels=list(range(k)), average="macro", zero_division=0),
               "mcc": matthews_corrcoef(y, pred)}
    y_bin = (y[:, None] == np.arange(k)[None, :]).astype(int)
    if k == 2 and 0 < y_bin[:, 1].sum() < len(y):
        out["auroc"] = roc_auc_score(y_bin[:, 1], probs[:, 1])
    else:
        out["auroc"] = macro_auroc(y_bin, probs, classes, notes)
    return {name: float(value) for name, value in out.items()}


def multi_label_scores(targets: np.ndarray, probs: np.ndarray, classes=None, notes: list[str] | None = None) -> dict:
    """Subset accuracy, macro / micro F1 (threshold 0.5) and macro AUROC of 0/1 targets [N, K], probs [N, K]."""
    targets = np.asarray(targets).astype(int)
    pred = (np.asarray(probs) >= 0.5).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        out = {"accuracy": accuracy_score(targets, pred),
               "macro_f1": f1_score(targets, pred, average="macro", zero_division=0),
               "micro_f1": f1_score(targets, pred, average="micro", zero_division=0),
               "auroc": macro_auroc(targets, np.asarray(probs), classes, notes)}
    return {name: float(value) for name, value in out.items()}


def compute_metrics(logits: torch.Tensor, probs: torch.Tensor, targets: torch.Tensor, task: TaskConfig,
                    notes: list[str] | None = None) -> dict:
    """Loss and the task's scores (``task_metrics``) of one split: logits/probs [N, K] or [N, L, K], targets as
    encode_targets. Why a score is partial or undefined goes into ``notes``."""
    from seqssm.models.heads import IGNORE_INDEX, classification_loss

    k = task.num_labels
    loss = float(classification_loss(logits, targets, task.problem_type))
    probs = probs.reshape(-1, k).numpy()
    targets = targets.reshape(-1).numpy() if task.level == "token" else targets.numpy()
    if task.level == "token":
        keep = targets != IGNORE_INDEX
        probs, targets = probs[keep], targets[keep]
    if task.problem_type == "multi_label":
        scores = multi_label_scores(targets, probs, task.classes, notes)
    else:
        scores = single_label_scores(targets, probs, task.classes, notes)
    return {"loss": loss, **scores}


def cat_batches(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along the batch axis; token-level [B, L, ...] pieces are right-padded to one L."""
    import torch

    from seqssm.models.heads import IGNORE_INDEX

    if tensors[0].dim() >= 2 and len({t.shape[1] for t in tensors}) > 1:
        length = max(t.shape[1] for t in tensors)
        fill = IGNORE_INDEX if not tensors[0].is_floating_point() else 0.0
        tensors = [torch.nn.functional.pad(t, (0, 0) * (t.dim() - 2) + (0, length - t.shape[1]), value=fill)
                   for t in tensors]
    return torch.cat(tensors)


def evaluate_split(model: SequenceClassifier, batches, device: torch.device, source: str = "the model",
                   notes: list[str] | None = None) -> dict:
    """Loss and metrics of the model on collated, labelled batches; InputError naming ``source`` when its
    outputs are not finite (training diverged)."""
    from seqssm.pipelines.classify import predict_batches

    logits, probs, targets = [], [], []
    diverged = "training diverged; lower --lr (and --backbone-lr) or keep --grad-clip small"
    for batch, lg, pr in predict_batches(model, batches, device, source, diverged):
        logits.append(lg.cpu())
        probs.append(pr.cpu())
        targets.append(batch["targets"])
    return compute_metrics(cat_batches(logits), cat_batches(probs), cat_batches(targets), model.task, notes)
