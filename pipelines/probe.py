"""Linear probing: how much of a label a frozen backbone's embeddings carry, by cross-validation.

Every input is embedded once (the backbone is frozen, so the folds would only recompute the same vectors),
then a standardised logistic regression (scikit-learn) is cross-validated with stratified, shuffled folds
seeded by ``seed``; the result is the mean ± standard deviation over folds of each metric.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from seqssm.datasets.labelled import InputSpec, iter_examples
from seqssm.embedder import Embedder
from seqssm.errors import InputError
from seqssm.pipelines.common import FILE, OutputPlan, atomic_path, check_checkpoint, probe_model
from seqssm.pipelines.configs_labelled import ProbeConfig
from seqssm.pipelines.train_utils import versions


@dataclass
class ProbeResult:
    """``metrics``: name → {"mean", "std", "folds": per-fold scores}."""

    metrics: dict
    n: int
    dim: int
    classes: list[str]
    folds: int
    report: Path | None = None

    def lines(self) -> list[str]:
        return [f"{name}: {m['mean']:.4f} ± {m['std']:.4f}" for name, m in self.metrics.items()]


def probe_embeddings(features: np.ndarray, labels: list[str], *, folds: int = 5, C: float = 1.0,
                     max_iter: int = 1000, seed: int = 0) -> dict:
    """Cross-validated logistic regression on features [N, F] → {metric: {"mean", "std", "folds"}}."""
    classes, y = np.unique(np.asarray(labels), return_inverse=True)
    if len(classes) < 2:
        raise InputError(f"probe: all {len(labels)} inputs have label {str(classes[0])!r}; need two classes or more")
    counts = np.bincount(y)
    if counts.min() < folds:
        rare = str(classes[int(counts.argmin())])
        raise InputError(f"probe: class {rare!r} has {counts.min()} inputs, fewer than --folds {folds}; lower "
                         "--folds or add data")
    scoring = {"accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy", "macro_f1": "f1_macro",
               "auroc": "roc_auc" if len(classes) == 2 else "roc_auc_ovr"}
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_validate(model, features, y, cv=cv, scoring=scoring, error_score="raise")
    return {name: {"mean": float(np.mean(scores[f"test_{name}"])), "std": float(np.std(scores[f"test_{name}"])),
                   "folds": [float(v) for v in scores[f"test_{name}"]]} for name in scoring}


def probe_outputs(cfg: ProbeConfig) -> OutputPlan:
    """``{out}/probe.json`` (nothing without ``out``) and the inputs it must never replace."""
    out = Path(cfg.out) if cfg.out is not None else None
    labels = cfg.bed_labels if cfg.bed_labels is not None and not cfg.bed_labels.isdigit() else None
    return OutputPlan([(out / "probe.json", FILE)] if out is not None else [], folder=out, overwrite=cfg.overwrite,
                      inputs=[("checkpoint", cfg.checkpoint), ("input", cfg.data), ("genome", cfg.genome),
                              ("--bed-labels table", labels)])


def probe(cfg: ProbeConfig) -> ProbeResult:
    """Embed ``cfg.data`` with the frozen backbone of ``cfg.checkpoint`` and cross-validate a linear probe;
    write ``{out}/probe.json`` when ``out`` is given."""
    check_checkpoint(cfg.checkpoint, "probe", patches_ok=True)
    probe_outputs(cfg).check()
    embedder = Embedder(cfg.checkpoint, pooling=cfg.pooling, batch_size=cfg.batch_size, device=cfg.device)
    probe_model(embedder.lm, cfg.checkpoint)
    spec = InputSpec.of(cfg, modality=embedder.modality, sample_rate=embedder.sample_rate)
    examples = list(iter_examples(spec, require_labels=True))
    if any(";" in e.label for e in examples):
        raise InputError(f"{cfg.data}: multi-label cells (';') are not supported by the probe; it is one "
                         "multi-class logistic regression")
    if cfg.max_examples is not None and cfg.max_examples < len(examples):
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(examples), cfg.max_examples, replace=False))
        examples = [examples[i] for i in keep]
    data = [e.data for e in examples]
    features = embedder.embed_sequences(data) if embedder.modality == "dna" else embedder.embed_audio(data)
    if not np.isfinite(features).all():
        raise InputError(f"checkpoint {cfg.checkpoint} gives non-finite embeddings (NaN or inf) of {cfg.data}: "
                         "its weights are broken (a diverged run or a damaged file); train it again or restore it")
    labels = [e.label for e in examples]
    metrics = probe_embeddings(features, labels, folds=cfg.folds, C=cfg.C, max_iter=cfg.max_iter, seed=cfg.seed)
    classes = sorted(set(labels))
    result = ProbeResult(metrics=metrics, n=len(examples), dim=int(features.shape[1]), classes=classes,
                         folds=cfg.folds)
    if cfg.out is not None:
        out = Path(cfg.out)
        record = {"config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, "n": result.n,
                  "dim": result.dim, "classes": classes, "metrics": metrics, "versions": versions()}
        with atomic_path(out / "probe.json") as tmp:
            tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
        result.report = out / "probe.json"
    return result
