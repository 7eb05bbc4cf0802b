"""`seqssm finetune`, `predict` and `probe`: typer command functions, registered in ``seqssm.cli`` with
``app.command(epilog=...)(fn)``. Each parses its options into a pipeline's config and calls it; pipelines
are imported inside the functions so ``seqssm --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from seqssm.errors import InputError, did_you_mean

# The choices of options whose owners (models, the embedder) import torch; checked here with the flag's name
# and a suggestion, before any of that is imported. tests/test_bad_inputs.py checks they match.
IMPLS = ("auto", "triton", "chunked", "ref")
POOLINGS = ("mean", "cls", "last", "flatten")
PROBE_POOLINGS = ("mean", "last", "cls")

# The one --overwrite option, shared by every command that writes (a typer OptionInfo is only read, so one
# object can be the default of many parameters).
OVERWRITE = typer.Option(False, "--overwrite", help="Replace outputs of an earlier run at --out (each only once "
                         "its new version is complete); without it an existing output is an error. A file never "
                         "replaces a folder (nor a folder a file), and no output ever replaces an input.")

# The one --resume option, shared by the training commands.
RESUME = typer.Option(False, "--resume", help="Continue the run in --out from its last saved training state "
                      "(OUT/trainer_state: written with every checkpoint, and on SIGTERM or Ctrl-C) exactly as if "
                      "it had not stopped; give the options it was started with. train_log.tsv is appended to.")


def example_epilog(*lines: str) -> str:
    """The "Example:" block every command's --help ends with."""
    return "**Example:**\n\n" + "\n\n".join(f"`{line}`" for line in lines)


FINETUNE_EPILOG = example_epilog(
    "seqssm finetune promoters.tsv --out runs/prom --epochs 8 --rc-augment",
    "seqssm finetune peaks.bed --genome hg38.fa --bed-labels 6 --length 512 --init-from runs/mlm/checkpoint "
    "--out runs/peaks --freeze-backbone",
    "seqssm finetune fsdd/ --modality audio --patch-size 16 --out runs/digits --augment --ema 0.999",
    "seqssm finetune promoters.tsv --pooling flatten --seed 0 --init-seed 100 --out runs/prom_s0_i100",
)
PREDICT_EPILOG = example_epilog(
    "seqssm predict runs/prom/checkpoint new.fa --out predictions.tsv",
    "seqssm predict runs/digits/checkpoint clips/ --out digits.tsv",
    "seqssm predict runs/prom_i0/checkpoint runs/prom_i100/checkpoint runs/prom_i200/checkpoint new.fa "
    "--out ensemble.tsv",
)
PROBE_EPILOG = example_epilog("seqssm probe runs/mlm/checkpoint promoters.tsv --folds 5 --out probe")


def _split(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--split {text!r}: give three comma-separated fractions, e.g. 0.8,0.1,0.1") from None


def _opt(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def check_choice(value: str | None, flag: str, choices: tuple[str, ...]) -> None:
    """InputError naming ``flag`` when ``value`` (None: not given) is not one of ``choices``."""
    if value is not None and value not in choices:
        raise InputError(f"{flag} {value!r} is not one of {', '.join(choices)}{did_you_mean(value, choices)}")


def check_positive(flag: str, value: float | None, *, zero: bool = False) -> None:
    """InputError naming ``flag`` unless ``value`` (None: not given) is > 0 (>= 0 with ``zero``)."""
    if value is not None and not (value >= 0 if zero else value > 0):
        raise InputError(f"{flag} must be {'zero or more' if zero else 'positive'}, got {value:g}")


def finetune(
    data: Path = typer.Argument(..., help="Labelled table/FASTA, BED (with --genome), or audio folder/manifest."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (checkpoint/, train_log.tsv, run.json, "
                             "test_predictions.tsv)."),
    modality: str = typer.Option("dna", help="dna or audio (raw waveform in patches)."),
    data_format: str = typer.Option("auto", help="dna: table, fasta, bed; audio: folder, fsdd, manifest."),
    genome: Path | None = typer.Option(None, help="BED input: the genome FASTA."),
    bed_labels: str | None = typer.Option(None, help="BED input: label column (0-based, e.g. 6) or a "
                                          "name→label table."),
    length: int | None = typer.Option(None, help="BED input: fixed window centred on each interval."),
    sequence_column: str = typer.Option("sequence"), label_column: str = typer.Option("label"),
    id_column: str = typer.Option("id"),
    sample_rate: int | None = typer.Option(None, help="audio: resample to this rate (default: the files')."),
    split: str = typer.Option("0.8,0.1,0.1", help="train,val,test fractions (seeded; FSDD keeps takes 0-4 "
                              "as test)."),
    problem_type: str = typer.Option("auto", help="auto, single_label or multi_label (';'-joined labels)."),
    level: str = typer.Option("sequence", help="sequence, or token (one label character per base)."),
    pooling: str = typer.Option("mean", help="mean (RC-invariant for RC models), cls, last, or flatten "
                                "(all positions; inputs of one length)."),
    dropout: float = typer.Option(0.1),
    init_from: Path | None = typer.Option(None, help="Backbone checkpoint; a fresh model when absent."),
    d_model: int = typer.Option(64), n_layer: int = typer.Option(2), d_state: int = typer.Option(16),
    expand: int = typer.Option(2),
    bidirectional: bool = typer.Option(True, help="Fresh model: bidirectional (Caduceus-style)."),
    rc_equivariant: bool = typer.Option(False, help="Fresh model: reverse-complement equivariant (DNA)."),
    patch_size: int = typer.Option(16, help="audio: samples per token (a linear map of each frame)."),
    clip_seconds: float = typer.Option(2.0, help="audio: random training crops of at most this length."),
    freeze_backbone: bool = typer.Option(False, help="Train the head only."),
    lr: float = typer.Option(2e-3, help="Head learning rate."),
    backbone_lr: float | None = typer.Option(None, help="Backbone learning rate (default: --lr)."),
    weight_decay: float = typer.Option(0.01), warmup_steps: int = typer.Option(50),
    grad_clip: float = typer.Option(1.0),
    epochs: int = typer.Option(10), batch_size: int = typer.Option(32),
    val_every: int | None = typer.Option(None, help="Validate every N steps (default: every epoch)."),
    metric: str = typer.Option("auto", help="Early-stopping metric: accuracy, balanced_accuracy, macro_f1, "
                               "micro_f1, mcc, auroc or loss."),
    patience: int | None = typer.Option(None, help="Stop after N validations without improvement."),
    class_weights: str | None = typer.Option(None, help="'balanced' or one weight per class, e.g. 1,3."),
    rc_augment: bool = typer.Option(False, help="DNA: reverse-complement training inputs at random."),
    augment: bool = typer.Option(False, help="audio: random speed (±10%), shift, time masks and noise on "
                                 "training clips."),
    ema: float | None = typer.Option(None, help="Validate, keep and test a moving average of the weights "
                                     "with this decay (e.g. 0.999)."),
    max_minutes: float | None = typer.Option(None, help="Stop after this much wall time (the learning rate "
                                             "decays by then)."),
    num_workers: int = typer.Option(0, help="DataLoader worker processes."),
    seed: int = typer.Option(0, help="Fixes the split (and, without --init-seed, everything else random)."),
    init_seed: int | None = typer.Option(None, help="Initialisation, data order, augmentation and dropout "
                                         "(default: --seed); vary it alone to train ensemble members on one split."),
    device: str = typer.Option("auto"), impl: str = typer.Option("auto", help="auto, triton, chunked or ref."),
    baseline: bool = typer.Option(False, "--baseline", help="Also fit `seqssm baseline` on this split and "
                                  "print both test scores side by side (run.json, baseline_predictions.tsv)."),
    overwrite: bool = OVERWRITE, resume: bool = RESUME,
):
    """Fine-tune a backbone with a classification head on labelled DNA or audio."""
    if not 0 <= dropout < 1:
        raise InputError(f"--dropout must be in [0, 1), got {dropout:g}")
    check_choice(pooling, "--pooling", POOLINGS)
    check_choice(impl, "--impl", IMPLS)
    for flag, value in (("--sample-rate", sample_rate), ("--length", length)):
        check_positive(flag, value)
    check_positive("--num-workers", num_workers, zero=True)
    from seqssm.pipelines.finetune import FinetuneConfig
    from seqssm.pipelines.finetune import finetune as run

    result = run(FinetuneConfig(
        data=str(data), out=str(out), modality=modality, data_format=data_format, genome=_opt(genome),
        bed_labels=bed_labels, length=length, sequence_column=sequence_column, label_column=label_column,
        id_column=id_column, sample_rate=sample_rate, split=_split(split), problem_type=problem_type, level=level,
        pooling=pooling, dropout=dropout, init_from=_opt(init_from), d_model=d_model, n_layer=n_layer,
        d_state=d_state, expand=expand, bidirectional=bidirectional, rc_equivariant=rc_equivariant,
        patch_size=patch_size, clip_seconds=clip_seconds, freeze_backbone=freeze_backbone, lr=lr,
        backbone_lr=backbone_lr, weight_decay=weight_decay, warmup_steps=warmup_steps, grad_clip=grad_clip,
        epochs=epochs, batch_size=batch_size, val_every=val_every, metric=metric, patience=patience,
        class_weights=class_weights, rc_augment=rc_augment, augment=augment, ema=ema, max_minutes=max_minutes,
        num_workers=num_workers, seed=seed, init_seed=init_seed, device=device, impl=impl, baseline=baseline,
        overwrite=overwrite, resume=resume,
    ))
    typer.echo(f"best val {result.metric} {result.best_value:.4f} at step {result.best_step} of {result.steps} "
               f"({result.seconds:.0f} s); checkpoint: {result.checkpoint}")
    if result.test_metrics is not None:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result.test_metrics.items())
        typer.echo(f"test ({result.sizes['test']}): {shown}; predictions: {result.test_predictions}")
    for note in result.test_notes:
        typer.echo(f"note: {note}")
    if result.baseline is not None:
        from seqssm.pipelines.baseline import side_by_side

        base = result.baseline
        typer.echo(f"baseline: {base['features']} features, C {base['C']:g}, chosen on val {base['metric']}")
        for line in side_by_side(result.test_metrics, base["test_metrics"]):
            typer.echo(f"  {line}")


def predict(
    checkpoints_and_data: list[Path] = typer.Argument(..., help="Classifier checkpoint folder(s) from `seqssm "
                                                      "finetune`, then the input (last): table, FASTA, BED (with "
                                                      "--genome), audio folder, manifest or file. Several "
                                                      "checkpoints of one task predict as an ensemble (the mean "
                                                      "of their probabilities)."),
    out: Path = typer.Option(..., "--out", "-o", help="TSV to write: id, predicted, prob_<class>…[, label]."),
    modality: str | None = typer.Option(None, help="Must match the checkpoint's (a check)."),
    data_format: str = typer.Option("auto"),
    genome: Path | None = typer.Option(None), bed_labels: str | None = typer.Option(None),
    length: int | None = typer.Option(None),
    sequence_column: str = typer.Option("sequence"), label_column: str = typer.Option("label"),
    id_column: str = typer.Option("id"),
    fsdd_split: str = typer.Option("all", help="FSDD folder: all, train or test (takes 0-4)."),
    batch_size: int = typer.Option(64), device: str = typer.Option("auto"), impl: str = typer.Option("auto"),
    overwrite: bool = OVERWRITE,
):
    """Predict labels and class probabilities for any number of inputs, streamed in batches; with several
    checkpoints, the mean of their probabilities."""
    check_choice(impl, "--impl", IMPLS)
    check_positive("--length", length)
    from seqssm.pipelines.predict import PredictConfig
    from seqssm.pipelines.predict import predict as run

    if len(checkpoints_and_data) < 2:
        raise InputError("give one or more classifier checkpoints and then the input, e.g. "
                         "`seqssm predict runs/a/checkpoint runs/b/checkpoint new.fa --out p.tsv`")
    *checkpoints, data = checkpoints_and_data
    result = run(PredictConfig(
        checkpoint=[str(c) for c in checkpoints],
        data=str(data), out=str(out), modality=modality, data_format=data_format,
        genome=_opt(genome), bed_labels=bed_labels, length=length, sequence_column=sequence_column,
        label_column=label_column, id_column=id_column, fsdd_split=fsdd_split, batch_size=batch_size,
        device=device, impl=impl, overwrite=overwrite,
    ))
    ensemble = f", the mean of {result.members} checkpoints" if result.members > 1 else ""
    typer.echo(f"{result.rows} predictions over {len(result.classes)} classes{ensemble}: {result.predictions}")


def probe(
    checkpoint: Path = typer.Argument(..., help="Backbone or classifier checkpoint folder."),
    data: Path = typer.Argument(..., help="Labelled table/FASTA, BED (with --genome), or labelled audio."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for probe.json."),
    data_format: str = typer.Option("auto"),
    genome: Path | None = typer.Option(None), bed_labels: str | None = typer.Option(None),
    length: int | None = typer.Option(None),
    sequence_column: str = typer.Option("sequence"), label_column: str = typer.Option("label"),
    id_column: str = typer.Option("id"), fsdd_split: str = typer.Option("all"),
    folds: int = typer.Option(5, help="Stratified cross-validation folds."),
    c: float = typer.Option(1.0, "--C", help="Inverse L2 strength of the logistic regression."),
    max_iter: int = typer.Option(1000),
    pooling: str | None = typer.Option(None, help="mean, last or cls (default: mean)."),
    max_examples: int | None = typer.Option(None, help="Probe a seeded random subset of this size."),
    batch_size: int = typer.Option(32), seed: int = typer.Option(0), device: str = typer.Option("auto"),
    overwrite: bool = OVERWRITE,
):
    """Linear probe: cross-validated logistic regression on frozen embeddings (mean ± std over folds)."""
    check_choice(pooling, "--pooling", PROBE_POOLINGS)
    check_positive("--length", length)
    from seqssm.pipelines.probe import ProbeConfig
    from seqssm.pipelines.probe import probe as run

    result = run(ProbeConfig(
        checkpoint=str(checkpoint), data=str(data), out=_opt(out), data_format=data_format, genome=_opt(genome),
        bed_labels=bed_labels, length=length, sequence_column=sequence_column, label_column=label_column,
        id_column=id_column, fsdd_split=fsdd_split, folds=folds, C=c, max_iter=max_iter, pooling=pooling,
        max_examples=max_examples, batch_size=batch_size, seed=seed, device=device, overwrite=overwrite,
    ))
    typer.echo(f"{result.n} inputs, {result.dim}-dim embeddings, {len(result.classes)} classes, "
               f"{result.folds}-fold CV:")
    for line in result.lines():
        typer.echo(f"  {line}")
    if result.report is not None:
        typer.echo(f"report: {result.report}")
