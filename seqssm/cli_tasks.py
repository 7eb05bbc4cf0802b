"""`seqssm finetune`, `predict`, `probe` and `baseline`: typer command functions generated from their configs
(``seqssm.cli_build``), registered in ``seqssm.cli`` with ``app.command(epilog=...)(fn)``. Each parses its
options into the job's config and calls the job; jobs are imported inside the functions so ``seqssm --help``
stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from seqssm.cli_build import Opts, config_command
from seqssm.config import IMPLS as MIXER_IMPLS
from seqssm.config import POOLINGS as HEAD_POOLINGS
from seqssm.errors import InputError
from seqssm.pipelines.configs_labelled import BaselineConfig, PredictConfig, ProbeConfig
from seqssm.pipelines.configs_train import FinetuneConfig

# The choices the configs check (their owners' lists; tests/test_bad_inputs.py checks they match).
IMPLS = MIXER_IMPLS
POOLINGS = HEAD_POOLINGS


def example_epilog(*lines: str) -> str:
    """The "Example:" block every command's --help ends with."""
    return "**Example:**\n\n" + "\n\n".join(f"`{line}`" for line in lines)


FINETUNE_EPILOG = example_epilog(
    "seqssm finetune promoters.tsv --out runs/prom --epochs 8 --rc-augment",
    "seqssm finetune peaks.bed --genome hg38.fa --bed-labels 6 --length 512 --init-from runs/mlm/checkpoint "
    "--out runs/peaks --freeze-backbone",
    "seqssm finetune fsdd/ --modality audio --out runs/digits --augment --ema 0.999",
    "seqssm finetune promoters.tsv --pooling flatten --seed 0 --init-seed 100 --out runs/prom_s0_i100",
)
PREDICT_EPILOG = example_epilog(
    "seqssm predict runs/prom/checkpoint new.fa --out predictions.tsv",
    "seqssm predict runs/digits/checkpoint clips/ --out digits.tsv",
    "seqssm predict runs/prom_i0/checkpoint runs/prom_i100/checkpoint runs/prom_i200/checkpoint new.fa "
    "--out ensemble.tsv",
)
PROBE_EPILOG = example_epilog("seqssm probe runs/mlm/checkpoint promoters.tsv --folds 5 --out probe")
BASELINE_EPILOG = example_epilog(
    "seqssm baseline promoters.tsv --out runs/prom_baseline --seed 0",
    "seqssm baseline fsdd/ --modality audio --out runs/digits_baseline",
    "seqssm finetune promoters.tsv --out runs/prom --baseline",
)


def _echo_test(metrics: dict | None, sizes: dict, predictions, notes: list) -> None:
    """The test split's scores (when it has rows), where its predictions went, and the notes on them."""
    if metrics is not None:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        typer.echo(f"test ({sizes['test']}): {shown}; predictions: {predictions}")
    for note in notes:
        typer.echo(f"note: {note}")


def _echo_folds(result) -> None:
    """`finetune --folds K`: per-fold and pooled out-of-fold scores, and the paired difference to the baseline."""
    from seqssm.pipelines.folds import paired_lines

    cv = result.folds
    for f, scores in enumerate(cv["per_fold"]):
        typer.echo(f"fold {f}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    _echo_test(cv["pooled"], {"test": f"{cv['rows']} rows pooled over {cv['folds']} folds"},
               result.test_predictions, [])
    if cv.get("baseline"):
        base = cv["baseline"]
        typer.echo("baseline pooled: " + ", ".join(f"{k} {v:.4f}" for k, v in base["pooled"].items()))
        typer.echo("paired over folds:")
        for line in paired_lines(base["paired"]):
            typer.echo(f"  {line}")


@config_command(FinetuneConfig)
def finetune(opts: Opts):
    """Fine-tune a backbone with a classification head on labelled DNA or audio."""
    config = opts.make(FinetuneConfig)
    from seqssm.pipelines.finetune import finetune as run

    result = run(config)
    if result.folds is not None:
        _echo_folds(result)
        return
    typer.echo(f"best val {result.metric} {result.best_value:.4f} at step {result.best_step} of {result.steps} "
               f"({result.seconds:.0f} s); checkpoint: {result.checkpoint}")
    _echo_test(result.test_metrics, result.sizes, result.test_predictions, result.test_notes)
    if result.baseline is not None:
        from seqssm.pipelines.classical import side_by_side

        base = result.baseline
        typer.echo(f"baseline: {base['features']} features, C {base['C']:g}, chosen on val {base['metric']}")
        for line in side_by_side(result.test_metrics, base["test_metrics"]):
            typer.echo(f"  {line}")


# Command-line only: the checkpoints and the input share one positional list (the input last), filling
# PredictConfig's checkpoint and data.
_PREDICT_EXTRA = {"checkpoints_and_data": (list[Path], typer.Argument(..., help=(
    "Classifier checkpoint folder(s) from `seqssm finetune`, then the input (last): table, FASTA, BED (with "
    "--genome), audio folder, manifest or file. Several checkpoints of one task predict as an ensemble (the "
    "mean of their probabilities).")))}


@config_command(PredictConfig, extra=_PREDICT_EXTRA)
def predict(opts: Opts, checkpoints_and_data: list[Path]):
    """Predict labels and class probabilities for any number of inputs, streamed in batches; with several
    checkpoints, the mean of their probabilities."""
    if len(checkpoints_and_data) < 2:
        raise InputError("give one or more classifier checkpoints and then the input, e.g. "
                         "`seqssm predict runs/a/checkpoint runs/b/checkpoint new.fa --out p.tsv`")
    *checkpoints, data = checkpoints_and_data
    config = opts.make(PredictConfig, checkpoint=[str(c) for c in checkpoints], data=str(data))
    from seqssm.pipelines.predict import predict as run

    result = run(config)
    ensemble = f", the mean of {result.members} checkpoints" if result.members > 1 else ""
    typer.echo(f"{result.rows} predictions over {len(result.classes)} classes{ensemble}: {result.predictions}")


@config_command(ProbeConfig)
def probe(opts: Opts):
    """Linear probe: cross-validated logistic regression on frozen embeddings (mean ± std over folds)."""
    config = opts.make(ProbeConfig)
    from seqssm.pipelines.probe import probe as run

    result = run(config)
    typer.echo(f"{result.n} inputs, {result.dim}-dim embeddings, {len(result.classes)} classes, "
               f"{result.folds}-fold CV:")
    for line in result.lines():
        typer.echo(f"  {line}")
    if result.report is not None:
        typer.echo(f"report: {result.report}")


@config_command(BaselineConfig)
def baseline(opts: Opts):
    """Classical baseline on finetune's split: k-mer / one-hot (DNA) or log-mel / MFCC statistics (audio),
    logistic regression with features and C chosen on val, scored on test."""
    config = opts.make(BaselineConfig)
    from seqssm.pipelines.baseline import baseline as run

    result = run(config, echo=lambda line: typer.echo(line, err=True))
    metric = config.metric
    typer.echo(f"baseline: {result.features} features, C {result.C:g} (val {metric} "
               f"{result.val_metrics[metric]:.4f}; sizes {result.sizes})")
    _echo_test(result.test_metrics, result.sizes, result.predictions, result.notes)
