"""`seqssm baseline`: a typer command function, registered in ``seqssm.cli``. Its data options are
`seqssm finetune`'s, with the same meanings and defaults, so the same options give both one split."""

from __future__ import annotations

from pathlib import Path

import typer

from seqssm.cli_tasks import OVERWRITE, _opt, _split, check_positive, example_epilog

BASELINE_EPILOG = example_epilog(
    "seqssm baseline promoters.tsv --out runs/prom_baseline --seed 0",
    "seqssm baseline fsdd/ --modality audio --out runs/digits_baseline",
    "seqssm finetune promoters.tsv --out runs/prom --baseline",
)


def baseline(
    data: Path = typer.Argument(..., help="Labelled table/FASTA, BED (with --genome), or audio folder/manifest."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (baseline.json, baseline_predictions.tsv)."),
    modality: str = typer.Option("dna", help="dna or audio."),
    data_format: str = typer.Option("auto", help="dna: table, fasta, bed; audio: folder, fsdd, manifest."),
    genome: Path | None = typer.Option(None, help="BED input: the genome FASTA."),
    bed_labels: str | None = typer.Option(None, help="BED input: label column (0-based) or a name→label table."),
    length: int | None = typer.Option(None, help="BED input: fixed window centred on each interval."),
    sequence_column: str = typer.Option("sequence"), label_column: str = typer.Option("label"),
    id_column: str = typer.Option("id"),
    sample_rate: int | None = typer.Option(None, help="audio: resample to this rate (default: the files')."),
    split: str = typer.Option("0.8,0.1,0.1", help="train,val,test fractions, as for finetune."),
    seed: int = typer.Option(0, help="The split's seed, as finetune's --seed."),
    features: str = typer.Option("auto", help="auto (try all, pick on val), onehot, kmer1…kmer6, logmel, mfcc."),
    metric: str = typer.Option("accuracy", help="Val score that picks features and C: accuracy, "
                               "balanced_accuracy, macro_f1, mcc or auroc."),
    overwrite: bool = OVERWRITE,
):
    """Classical baseline on finetune's split: k-mer / one-hot (DNA) or log-mel / MFCC statistics (audio),
    logistic regression with features and C chosen on val, scored on test."""
    for flag, value in (("--sample-rate", sample_rate), ("--length", length)):
        check_positive(flag, value)
    from seqssm.pipelines.baseline import BaselineConfig
    from seqssm.pipelines.baseline import baseline as run

    result = run(BaselineConfig(
        data=str(data), out=str(out), modality=modality, data_format=data_format, genome=_opt(genome),
        bed_labels=bed_labels, length=length, sequence_column=sequence_column, label_column=label_column,
        id_column=id_column, sample_rate=sample_rate, split=_split(split), seed=seed, features=features,
        metric=metric, overwrite=overwrite,
    ), echo=lambda line: typer.echo(line, err=True))
    typer.echo(f"baseline: {result.features} features, C {result.C:g} (val {metric} "
               f"{result.val_metrics[metric]:.4f}; sizes {result.sizes})")
    if result.test_metrics is not None:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result.test_metrics.items())
        typer.echo(f"test ({result.sizes['test']}): {shown}; predictions: {result.predictions}")
    for note in result.notes:
        typer.echo(f"note: {note}")
