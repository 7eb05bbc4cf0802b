"""The configs of the jobs on labelled data besides training: `seqssm predict`, `probe` and `evaluate`.

A light module (no job imported), so ``seqssm.cli`` builds the commands' options from these fields
(``seqssm.options``: a field is the option). Predict and probe inherit the input fields of
:class:`~seqssm.datasets.input_spec.InputSpec`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from seqssm.config import IMPLS
from seqssm.datasets.input_spec import InputSpec
from seqssm.errors import InputError
from seqssm.options import (
    Options,
    at_least,
    device_option,
    one_of,
    option,
    out_option,
    overwrite_option,
    positive,
)
from seqssm.pipelines.configs_train import checked_split, split_option

PROBE_POOLINGS = ("mean", "last", "cls", "flatten")
KMER_SIZES = (1, 2, 3, 4, 5, 6)
AUDIO_FEATURES = ("logmel", "mfcc")
BASELINE_FEATURES = ("auto", "onehot", *(f"kmer{k}" for k in KMER_SIZES), *AUDIO_FEATURES)
# seqssm.pipelines.metrics.SINGLE_LABEL_METRICS (not imported: it brings scikit-learn).
BASELINE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "mcc", "auroc")
TASKS = ("auto", "binary", "multiclass", "multilabel")


def _task(flag: str, value: str) -> None:
    if value not in TASKS:
        raise InputError(f"{flag} must be one of {', '.join(TASKS)}, got {value!r}")


@dataclass(kw_only=True)
class PredictConfig(InputSpec):
    """Everything `seqssm predict` takes; the Python API takes the same object.

    ``checkpoint``: one classifier checkpoint folder, or a list of them to predict as an ensemble (the mean
    of their probabilities, :class:`ClassifierEnsemble`). ``modality`` None takes the classifier's; given,
    it must match it. The input fields are those of :class:`InputSpec` (``sample_rate`` is the classifier's
    own). On the command line, checkpoints and data are the positional arguments (``seqssm.cli_tasks``).
    """

    checkpoint: str | Sequence[str] = option(cli=False)
    data: str = option(cli=False)
    out: str = out_option("TSV to write: id, predicted, prob_<class>…[, label].")
    modality: str | None = option(None, help="Must match the checkpoint's (a check).")
    sample_rate: int | None = option(None, cli=False)
    batch_size: int = option(64, check=positive)
    device: str = device_option()
    impl: str = option("auto", help="auto, triton, chunked or ref.", check=one_of(*IMPLS))
    overwrite: bool = overwrite_option()

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.checkpoint, (str, os.PathLike)):
            self.checkpoint = [os.fspath(c) for c in self.checkpoint]
            if not self.checkpoint:
                raise InputError("no checkpoint given: pass one classifier checkpoint folder or several")

    @property
    def checkpoints(self) -> list[str]:
        return [os.fspath(self.checkpoint)] if isinstance(self.checkpoint, (str, os.PathLike)) else self.checkpoint


@dataclass(kw_only=True)
class ProbeConfig(InputSpec):
    """Everything `seqssm probe` takes; the Python API takes the same object.

    The input fields are those of :class:`InputSpec` (the modality is the checkpoint's).
    ``max_examples``: probe a seeded random subset of this many inputs. ``C``: inverse L2 strength of the
    logistic regression. ``pooling``: see :class:`~seqssm.embedder.Embedder`.
    """

    checkpoint: str = option(argument=True, path=True, help="Backbone or classifier checkpoint folder.")
    data: str = option(position=1, help="Labelled table/FASTA, BED (with --genome), or labelled audio.")
    out: str | None = out_option("Folder for probe.json.", None)
    modality: str | None = option(None, cli=False)  # the checkpoint's
    sample_rate: int | None = option(None, cli=False)
    folds: int = option(5, help="Stratified cross-validation folds.", check=at_least(2))
    C: float = option(1.0, flags=("--C",), help="Inverse L2 strength of the logistic regression.",
                      check=positive)
    max_iter: int = option(1000, check=positive)
    pooling: str | None = option(None, help="mean, last, cls or flatten (all positions, for "
                                  "inputs of one length; default: mean).", check=one_of(*PROBE_POOLINGS))
    max_examples: int | None = option(None, help="Probe a seeded random subset of this size.", check=at_least(2))
    batch_size: int = option(32, check=positive)
    seed: int = option(0)
    device: str = device_option()
    overwrite: bool = overwrite_option()


@dataclass(kw_only=True)
class EvaluateConfig(Options):
    """Everything `seqssm evaluate` takes; the Python API takes the same object.

    ``labels``: a TSV/CSV table with ``id_column`` and ``label_column``, joined on id when the true labels
    are not in the predictions file (if given, it is used even when they are). ``history``: a fine-tuning
    ``train_log.tsv`` to plot. ``positive_label``: the positive class of a binary task (default: the second
    of the sorted labels). ``task``: "auto" infers binary / multiclass / multilabel from the table.
    """

    predictions: str = option(argument=True, path=True,
                              help="TSV from `seqssm predict` (id, predicted, prob_<label>…).")
    out: str = out_option("Folder for metrics.json, PNGs and report.html.")
    labels: str | None = option(None, path=True, help="Table with id and label columns, when predictions lack "
                                "them.")
    label_column: str = option("label")
    id_column: str = option("id")
    history: str | None = option(None, path=True, help="A train_log.tsv to plot as training curves.")
    title: str | None = option(None)
    positive_label: str | None = option(None)
    task: str = option("auto", help="auto, binary, multiclass or multilabel.", check=_task)
    baseline: str | None = option(None, path=True, help=(
        "A baseline's predictions of the same rows (e.g. baseline_predictions.tsv of finetune --baseline), shown "
        "beside."))
    overwrite: bool = overwrite_option()


@dataclass(kw_only=True)
class BaselineConfig(InputSpec):
    """Everything `seqssm baseline` takes; the Python API takes the same object.

    The data fields (those of :class:`InputSpec`, ``split``, ``seed``) are ``FinetuneConfig``'s, meaning the
    same, so one set of options gives both commands one split. ``features``: "auto" tries every feature set of
    the modality (DNA: kmer1…kmer6, and onehot for inputs of one length; audio: logmel, mfcc), or name one.
    ``metric``: the val score that picks the features and C. ``out``: folder for baseline.json and
    baseline_predictions.tsv (the table `seqssm evaluate` reads); None writes nothing (Python API).
    """

    out: str | None = out_option("Output folder (baseline.json, baseline_predictions.tsv).", None)
    fsdd_split: str = option("all", cli=False)  # the split below keeps FSDD's takes 0-4 as test
    split: Sequence[float] = split_option()
    seed: int = option(0, help="The split's seed, as finetune's --seed.")
    features: str = option("auto", help="auto (try all, pick on val), onehot, kmer1…kmer6, logmel, mfcc.",
                           check=one_of(*BASELINE_FEATURES))
    metric: str = option("accuracy", help="Val score that picks features and C: accuracy, balanced_accuracy, "
                         "macro_f1, mcc or auroc.", check=one_of(*BASELINE_METRICS))
    max_iter: int = option(2000, check=positive)
    overwrite: bool = overwrite_option()

    def __post_init__(self):
        super().__post_init__()
        if self.features in AUDIO_FEATURES and self.modality != "audio" or (
                self.modality == "audio" and self.features not in ("auto", *AUDIO_FEATURES)):
            raise InputError(f"--features {self.features} does not fit --modality {self.modality}")
        self.split = checked_split(self.split)
