"""`seqssm baseline`: the strong classical baseline a fine-tuned model has to beat, on exactly the split
`seqssm finetune` makes (``seqssm.datasets.splits.labelled_splits``), fitted by ``seqssm.pipelines.classical``;
writes ``baseline.json`` and ``baseline_predictions.tsv`` (the table `seqssm evaluate --baseline` reads)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from seqssm.datasets.labelled import InputSpec, natural_key
from seqssm.errors import InputError
from seqssm.pipelines.classical import BaselineResult, fit_baseline, write_baseline_predictions
from seqssm.pipelines.common import FILE, OutputPlan, atomic_path
from seqssm.pipelines.configs_labelled import BaselineConfig

__all__ = ["BaselineConfig", "BaselineResult", "baseline", "baseline_outputs"]


def baseline_outputs(cfg: BaselineConfig) -> OutputPlan:
    out = Path(cfg.out) if cfg.out is not None else None
    files = [(out / "baseline.json", FILE), (out / "baseline_predictions.tsv", FILE)] if out is not None else []
    labels = cfg.bed_labels if cfg.bed_labels is not None and not cfg.bed_labels.isdigit() else None
    return OutputPlan(files, folder=out, overwrite=cfg.overwrite,
                      inputs=[("data", cfg.data), ("genome", cfg.genome), ("--bed-labels table", labels)])


def baseline(cfg: BaselineConfig, echo=None) -> BaselineResult:
    """Split ``cfg.data`` as `seqssm finetune` does, fit the baseline, write ``{out}/baseline.json`` and
    ``{out}/baseline_predictions.tsv`` when ``out`` is given."""
    from seqssm.datasets.splits import labelled_splits
    from seqssm.pipelines.train_utils import versions

    baseline_outputs(cfg).check()
    _, splits, rate = labelled_splits(InputSpec.of(cfg), cfg.split, cfg.seed)
    if not splits["train"] or not splits["val"]:
        raise InputError(f"{cfg.data}: too few examples for a train and a val split; add data")
    result, probs = fit_baseline(splits, cfg.modality, rate, features=cfg.features, metric=cfg.metric,
                                 max_iter=cfg.max_iter, echo=echo)
    if cfg.out is not None:
        out = Path(cfg.out)
        classes = sorted({item.label for items in splits.values() for item in items}, key=natural_key)
        if splits["test"]:
            result.predictions = out / "baseline_predictions.tsv"
            write_baseline_predictions(result.predictions, splits["test"], probs, classes)
        record = {"config": dataclasses.asdict(cfg), "versions": versions(), "classes": classes,
                  "sample_rate": rate, "result": result.to_dict()}
        with atomic_path(out / "baseline.json") as tmp:
            tmp.write_text(json.dumps(record, indent=2, default=_json_default) + "\n")
        result.report = out / "baseline.json"
    return result


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)
