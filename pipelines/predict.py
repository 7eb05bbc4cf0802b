"""`seqssm predict`: labels and class probabilities from a fine-tuned classifier, or from several of one
task as an ensemble.

Inputs are read by ``seqssm.datasets.labelled`` (tables, FASTA, BED with a genome, audio folders,
manifests, files; a mismatch with the classifier's modality is an error) and streamed, so any number of
sequences is predicted in constant memory. The table written is ``seqssm.pipelines.classify``'s.

Several checkpoints of one task (the same classes, modality, problem type and level; e.g. `seqssm finetune`
runs differing only in ``--init-seed``) predict as an ensemble, ``seqssm.models.ensemble.ClassifierEnsemble``:
each batch goes through every member and the table holds the mean of their probabilities, in the same format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seqssm.datasets.labelled import InputSpec, iter_examples
from seqssm.models.ensemble import ClassifierEnsemble, check_one_task
from seqssm.models.heads import load_classifier, read_task
from seqssm.pipelines.classify import TaskCollate, batched, pad_tokens_for, write_predictions
from seqssm.pipelines.common import CLASSIFIER, FILE, OutputPlan, check_checkpoint, progress, resolve_device
from seqssm.pipelines.configs_labelled import PredictConfig


@dataclass
class PredictResult:
    predictions: Path
    rows: int
    classes: list[str]
    members: int = 1


def predict_outputs(cfg: PredictConfig) -> OutputPlan:
    """The table ``predict`` writes and the inputs it must never replace."""
    labels = cfg.bed_labels if cfg.bed_labels is not None and not cfg.bed_labels.isdigit() else None
    inputs = [*(("checkpoint", c) for c in cfg.checkpoints), ("input", cfg.data), ("genome", cfg.genome),
              ("--bed-labels table", labels)]
    return OutputPlan([(cfg.out, FILE)], inputs=inputs, overwrite=cfg.overwrite)


def predict(cfg: PredictConfig) -> PredictResult:
    """Predict every input of ``cfg.data`` with the classifier at ``cfg.checkpoint`` (or the ensemble of
    several); write ``cfg.out``.

    The table (see the module doc) is written under a temporary name and renamed when complete.
    """
    device = resolve_device(cfg.device)
    names = cfg.checkpoints
    for name in names:  # before loading any weights
        check_checkpoint(name, "predict", modality=cfg.modality, kind=CLASSIFIER, patches_ok=True)
    check_one_task([(name, read_task(name)) for name in names])
    predict_outputs(cfg).check()
    members = [load_classifier(name, device, impl=cfg.impl) for name in names]
    model = members[0] if len(members) == 1 else ClassifierEnsemble(members, names)
    task = model.task
    spec = InputSpec.of(cfg, modality=task.modality, sample_rate=task.sample_rate)
    collate = TaskCollate(task, pad_tokens=pad_tokens_for(device, cfg.impl))
    batches = (collate(b) for b in batched(iter_examples(spec), cfg.batch_size))
    bar = progress(desc="predict", unit="seq")
    try:
        rows = write_predictions(cfg.out, model, batches, device, bar=bar, source=f"checkpoint {', '.join(names)}")
    finally:
        bar.close()
    return PredictResult(predictions=Path(cfg.out), rows=rows, classes=list(task.classes), members=len(members))
