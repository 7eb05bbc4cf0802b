"""The `seqssm` command line: each command parses its options into a pipeline's config and calls it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from seqssm import cli_tasks
from seqssm.errors import InputError

app = typer.Typer(
    name="seqssm",
    help="Long-sequence models of DNA and audio with selective state space models (Mamba).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


_example = cli_tasks.example_epilog
OVERWRITE = cli_tasks.OVERWRITE
RESUME = cli_tasks.RESUME


@app.command(epilog=_example(
    "seqssm pretrain genome.fa.gz --out runs/lm --steps 2000 --window 1024",
    "seqssm pretrain genome.fa.gz --out runs/mlm --objective mlm --rc-equivariant",
    "seqssm pretrain recordings/ --modality audio --out runs/audio --window 8000",
))
def pretrain(
    data: Path = typer.Argument(..., help="Genome FASTA (plain, gzip or bgzip), or audio folder/file."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (checkpoint/, train_log.tsv, run.json)."),
    objective: str = typer.Option("clm", help="clm (causal, next token) or mlm (masked, bidirectional models)."),
    modality: str = typer.Option("dna", help="dna or audio (8-bit mu-law tokens)."),
    bidirectional: bool = typer.Option(False, help="Caduceus-style bidirectional backbone (use with mlm)."),
    rc_equivariant: bool = typer.Option(False, help="Reverse-complement-equivariant bidirectional model (mlm)."),
    mask_prob: float = typer.Option(0.15, help="mlm: fraction of positions chosen (80/10/10)."),
    sample_rate: int | None = typer.Option(None, help="audio: resample recordings to this rate (Hz)."),
    window: int = typer.Option(1024, help="Training window length in tokens (bases or samples)."),
    batch_size: int = typer.Option(16, help="Windows per step."),
    steps: int = typer.Option(1000, help="Optimiser steps."),
    lr: float = typer.Option(2e-3, help="Peak learning rate (AdamW, warm-up then cosine decay)."),
    weight_decay: float = typer.Option(0.1),
    warmup_steps: int = typer.Option(50),
    grad_clip: float = typer.Option(1.0, help="Gradient-norm clip."),
    val_every: int = typer.Option(100, help="Validate and checkpoint every N steps."),
    val_windows: int = typer.Option(64, help="Validation windows (from the last --val-fraction of each contig)."),
    val_fraction: float = typer.Option(0.1),
    max_minutes: float | None = typer.Option(None, help="Stop (and checkpoint) after this much wall time."),
    length_warmup_steps: int = typer.Option(0, help="Grow the length from --min-window to --window over N steps."),
    min_window: int = typer.Option(1024, help="First length of the warm-up (tokens per step stay constant)."),
    max_tokens_per_micro_batch: int | None = typer.Option(
        None, help="Cap one forward/backward: gradient accumulation, chunked backward beyond it."),
    d_model: int = typer.Option(128), n_layer: int = typer.Option(4), d_state: int = typer.Option(16),
    expand: int = typer.Option(2),
    init_from: Path | None = typer.Option(None, help="Continue from this checkpoint folder."),
    impl: str = typer.Option("auto", help="Scan path: auto, triton, chunked or ref."),
    seed: int = typer.Option(0), device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    overwrite: bool = OVERWRITE, resume: bool = RESUME,
):
    """Pretrain a language model on random windows of a genome (causal or masked) or of audio."""
    cli_tasks.check_choice(impl, "--impl", cli_tasks.IMPLS)
    cli_tasks.check_positive("--sample-rate", sample_rate)
    from seqssm.pipelines.pretrain import PretrainConfig
    from seqssm.pipelines.pretrain import pretrain as run

    result = run(PretrainConfig(
        data=str(data), out=str(out), objective=objective, modality=modality, bidirectional=bidirectional,
        rc_equivariant=rc_equivariant, mask_prob=mask_prob, sample_rate=sample_rate, window=window,
        batch_size=batch_size, steps=steps, lr=lr,
        weight_decay=weight_decay, warmup_steps=warmup_steps, grad_clip=grad_clip, val_every=val_every,
        val_windows=val_windows, val_fraction=val_fraction, max_minutes=max_minutes,
        length_warmup_steps=length_warmup_steps, min_window=min_window,
        max_tokens_per_micro_batch=max_tokens_per_micro_batch, d_model=d_model,
        n_layer=n_layer, d_state=d_state, expand=expand, init_from=str(init_from) if init_from else None,
        impl=impl, seed=seed, device=device, overwrite=overwrite, resume=resume,
    ))
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun only rank 0 validates, saves and reports
    unit = "sample" if modality == "audio" else "base"
    typer.echo(f"validation: {result.val_bits_per_token:.4f} bits per {unit} (uniform {result.uniform_bits:.1f}) "
               f"after {result.steps} steps, {result.seconds:.0f} s")
    typer.echo(f"checkpoint: {result.checkpoint}")


def parse_region(text: str) -> tuple[str, int, int | None]:
    """``NAME`` or ``NAME:START-END`` (1-based, inclusive, as samtools writes regions) -> (name, start, end)
    0-based half-open, the form used everywhere inside seqssm."""
    name, sep, span = text.rpartition(":")
    if not sep or "-" not in span:
        return text, 0, None
    first, _, last = span.replace(",", "").partition("-")
    if not (first.isdigit() and last.isdigit()) or int(first) < 1 or int(last) < int(first):
        raise InputError(f"--region {text!r}: use NAME or NAME:START-END with 1 <= START <= END (1-based, inclusive)")
    return name, int(first) - 1, int(last)


@app.command(epilog=_example(
    "seqssm embed runs/lm/checkpoint genome.fa --out emb --window 1024",
    "seqssm embed runs/lm/checkpoint reads.fa --out emb_pos --per-position",
    "seqssm embed runs/lm/checkpoint chrI.fa.gz --out chrI --per-position --stream --region chrI:1-1000000",
    "seqssm embed runs/lm/checkpoint ce_large_seq.bam --out read --per-position --stream --region read_name",
))
def embed(
    checkpoint: Path = typer.Argument(..., help="Checkpoint folder (config.json + model.safetensors)."),
    fasta: Path = typer.Argument(..., help="FASTA file to embed (with --stream also SAM/BAM/CRAM)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (embeddings.npy, index.tsv)."),
    window: int | None = typer.Option(None, help="Tile records into windows of this many bases."),
    stride: int | None = typer.Option(None, help="Window step (default: --window)."),
    per_position: bool = typer.Option(False, help="One float16 vector per base (memory-mapped .npy)."),
    stream: bool = typer.Option(False, help="With --per-position: one contig or read of any length, chunk by "
                                            "chunk with carried state, resumable (causal checkpoints)."),
    region: str | None = typer.Option(None, help="--stream: NAME or NAME:START-END (1-based, inclusive)."),
    chunk_size: int = typer.Option(65536, help="--stream: bases per chunk (sets the memory)."),
    reference: Path | None = typer.Option(None, help="--stream: the FASTA a CRAM file needs."),
    resume: bool = typer.Option(True, help="--stream: continue an interrupted run in --out."),
    batch_size: int = typer.Option(8), device: str = typer.Option("auto"),
    overwrite: bool = OVERWRITE,
):
    """Embed FASTA records or windows: mean-pooled vectors, or one vector per base (streamed for long ones)."""
    if stream:
        if not per_position or window is not None:
            raise InputError("--stream writes per-position embeddings of one contig or read: add --per-position "
                             "and drop --window")
        from seqssm.pipelines.stream_embed import StreamEmbedConfig, stream_embed

        record, start, end = parse_region(region) if region else (None, 0, None)
        streamed = stream_embed(StreamEmbedConfig(
            checkpoint=str(checkpoint), source=str(fasta), out=str(out), record=record, start=start, end=end,
            chunk_size=chunk_size, reference=str(reference) if reference else None, device=device, resume=resume,
            overwrite=overwrite,
        ))
        typer.echo(f"{streamed.end - streamed.start} positions of {streamed.record} × {streamed.dim} dims: "
                   f"{streamed.embeddings} (index {streamed.index})")
        return
    from seqssm.pipelines.embed import EmbedConfig
    from seqssm.pipelines.embed import embed as run

    result = run(EmbedConfig(checkpoint=str(checkpoint), fasta=str(fasta), out=str(out), window=window,
                             stride=stride, per_position=per_position, batch_size=batch_size, device=device,
                             overwrite=overwrite))
    typer.echo(f"{result.count} embeddings of {result.dim} dims: {result.embeddings} (index {result.index})")


@app.command(name="score-audio", epilog=_example(
    "seqssm score-audio runs/audio/checkpoint machine_wars.mp3 --out scores",
))
def score_audio(
    checkpoint: Path = typer.Argument(..., help="Causal audio checkpoint folder."),
    audio: Path = typer.Argument(..., help="Recording of any length (WAV/FLAC/OGG/MP3)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for scores.tsv (and embeddings.npy)."),
    embeddings: bool = typer.Option(False, help="Also write per-sample float16 embeddings."),
    window_seconds: float = typer.Option(30.0, help="Seconds decoded per seek."),
    chunk_size: int = typer.Option(65536, help="Samples per model chunk (sets the memory)."),
    device: str = typer.Option("auto"),
    overwrite: bool = OVERWRITE,
):
    """Bits per sample of a recording under an audio LM, in one streamed pass with constant memory."""
    from seqssm.pipelines.stream_embed import StreamAudioConfig, stream_audio

    result = stream_audio(StreamAudioConfig(checkpoint=str(checkpoint), audio=str(audio), out=str(out),
                                            window_seconds=window_seconds, chunk_size=chunk_size,
                                            embeddings=embeddings, device=device, overwrite=overwrite))
    typer.echo(f"{result.samples} samples at {result.sample_rate} Hz: {result.bits_per_sample:.4f} bits per sample "
               f"({result.scores})")


@app.command(epilog=_example(
    "seqssm score runs/lm/checkpoint genome.fa --out scores.tsv --per-position bits.bedgraph",
    "seqssm score runs/lm/checkpoint chrI.fa.gz --region chrI:1-1000000 --out chrI.tsv",
    "seqssm score runs/lm/checkpoint --bed peaks.bed --genome hg38.fa --out peaks.tsv",
    "seqssm score runs/lm/checkpoint reads.bam --out reads.tsv",
    "seqssm score runs/audio/checkpoint recordings/ --out clips.tsv",
))
def score(
    checkpoint: Path = typer.Argument(..., help="Language model checkpoint (causal or masked; DNA or audio)."),
    input: Path | None = typer.Argument(None, help="FASTA, SAM/BAM/CRAM, or (audio LM) a recording or a folder "
                                        "of them; leave out with --bed."),
    out: Path = typer.Option(..., "--out", "-o", help="TSV to write: id, record, start, end, strand, length, "
                             "scored, total_bits, bits_per_base."),
    per_position: Path | None = typer.Option(None, help="Also write the bits of every scored base as bedGraph."),
    region: str | None = typer.Option(None, help="NAME or NAME:START-END (1-based, inclusive): one FASTA record "
                                      "or part of it, or the reads overlapping it (indexed BAM/CRAM)."),
    bed: Path | None = typer.Option(None, help="BED intervals to score (on their strand), cut from --genome."),
    genome: Path | None = typer.Option(None, help="FASTA for --bed, and the reference a CRAM needs."),
    batch_size: int = typer.Option(16, help="Sequences per forward (causal), or masked copies per forward "
                                   "(masked models)."),
    chunk_size: int = typer.Option(65536, help="Longer sequences are streamed in chunks of this many tokens "
                                   "with carried state (causal; sets the memory), or scored with this much "
                                   "context (masked)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    overwrite: bool = OVERWRITE,
):
    """Log-likelihood of sequences in bits: per sequence (TSV) and per base (bedGraph).

    Causal models score left to right, bit cost -log2 p(x_t | x_<t); the first token of a sequence has no
    prediction (seqssm trains without a BOS token) and is not scored. Long contigs stream in chunks with
    carried state, in constant memory, with the same result as one pass. Masked (bidirectional) models use
    the pseudo-log-likelihood: each position masked in turn, the rest visible (one forward per position,
    batched); chosen over the masked-marginal score because it scores any sequence, so a variant's score
    (`seqssm score-variants`, indels included) is exactly the difference of two sequences' scores.
    """
    from seqssm.pipelines.score import ScoreConfig
    from seqssm.pipelines.score import score as run

    record, start, end = parse_region(region) if region else (None, 0, None)
    result = run(ScoreConfig(
        checkpoint=str(checkpoint), input=str(input) if input else None, out=str(out),
        per_position=str(per_position) if per_position else None, record=record, start=start, end=end,
        bed=str(bed) if bed else None, genome=str(genome) if genome else None, batch_size=batch_size,
        chunk_size=chunk_size, device=device, overwrite=overwrite,
    ))
    typer.echo(f"{result.sequences} sequence(s), {result.scored} positions scored: {result.bits_per_token:.4f} "
               f"bits per position ({result.out}{', ' + str(result.per_position) if result.per_position else ''})")


@app.command(name="score-variants", epilog=_example(
    "seqssm score-variants runs/lm/checkpoint calls.vcf.gz --genome hg38.fa --out scored.vcf.gz --tsv scored.tsv",
))
def score_variants(
    checkpoint: Path = typer.Argument(..., help="DNA language model checkpoint (causal or masked)."),
    vcf: Path = typer.Argument(..., help="VCF/BCF of variants (plain, gzip or bgzip)."),
    genome: Path = typer.Option(..., help="Reference FASTA the VCF was called against."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .vcf.gz: INFO SEQSSM_LLR per ALT (or SEQSSM_SKIP), "
                             "bgzipped, with a tabix .tbi beside it."),
    tsv: Path | None = typer.Option(None, help="Also write one row per ALT allele to this TSV."),
    window: int = typer.Option(1024, help="Bases of genome around each variant (the same flanks for REF and ALT)."),
    batch_size: int = typer.Option(16, help="Windows per forward (causal), or masked copies per forward."),
    both_strands: bool = typer.Option(False, help="Average the LLRs of both strands (always on for "
                                      "RC-equivariant models)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    overwrite: bool = OVERWRITE,
):
    """Log-likelihood ratio (bits) of each ALT allele against REF, in a window centred on the variant.

    SEQSSM_LLR = log2 p(ALT window) - log2 p(REF window); > 0 where the ALT is more likely. SNVs, indels and
    multi-allelic records (one score per ALT). Records whose REF differs from --genome, contigs missing from
    it, symbolic alleles (<DEL>, *, breakends) and out-of-order records are skipped, counted and reported at
    the end, never fatal. Masked models score windows by pseudo-log-likelihood (see `seqssm score --help`).
    """
    from seqssm.pipelines.score_variants import ScoreVariantsConfig
    from seqssm.pipelines.score_variants import score_variants as run

    result = run(ScoreVariantsConfig(
        checkpoint=str(checkpoint), vcf=str(vcf), genome=str(genome), out=str(out), tsv=str(tsv) if tsv else None,
        window=window, batch_size=batch_size, both_strands=both_strands, device=device, overwrite=overwrite,
    ))
    typer.echo(result.report())
    typer.echo(f"wrote {result.out} (index {result.index}){', ' + str(result.tsv) if result.tsv else ''}")


@app.command(epilog=_example(
    "seqssm generate runs/lm/checkpoint --out sample.fa --length 1000 --top-p 0.95",
    "seqssm generate runs/lm/checkpoint --out more.fa --prompt ACGTTGCA -n 4",
    "seqssm generate runs/audio/checkpoint --modality audio --seconds 2 --out clip.wav -n 4",
))
def generate(
    checkpoint: Path = typer.Argument(..., help="Causal checkpoint folder."),
    out: Path = typer.Option(..., "--out", "-o", help="FASTA file (dna) or WAV file (audio) to write."),
    modality: str = typer.Option("dna", help="dna (FASTA out) or audio (WAV out)."),
    length: int = typer.Option(1000, help="dna: bases to generate after the prompt."),
    seconds: float = typer.Option(2.0, help="audio: seconds to generate after the prompt."),
    prompt: str | None = typer.Option(None, help="dna: prompt DNA text."),
    prompt_fasta: Path | None = typer.Option(None, help="dna: prompt is the first record of this FASTA."),
    prompt_audio: Path | None = typer.Option(None, help="audio: continue this recording."),
    prompt_seconds: float | None = typer.Option(None, help="audio: use only the last S seconds of the prompt."),
    num_sequences: int = typer.Option(1, "--num-sequences", "-n", help="Sequences (or clips) to sample."),
    temperature: float = typer.Option(1.0), top_k: int = typer.Option(0, help="0 = off."),
    top_p: float = typer.Option(1.0, help="Nucleus sampling mass (1 = off)."),
    allow_ambiguous: bool = typer.Option(False, "--allow-ambiguous",
                                         help="dna: also sample N / ambiguity codes (default: A, C, G, T only)."),
    seed: int = typer.Option(0), device: str = typer.Option("auto"),
    overwrite: bool = OVERWRITE,
):
    """Sample DNA (to FASTA) or audio (to WAV) from a causal checkpoint, with constant memory per token."""
    if modality == "audio":
        if allow_ambiguous:
            raise InputError("--allow-ambiguous is for DNA; leave it out with --modality audio")
        from seqssm.pipelines.audio_lm import GenerateAudioConfig, generate_audio

        paths = generate_audio(GenerateAudioConfig(
            checkpoint=str(checkpoint), out=str(out), seconds=seconds,
            prompt_audio=str(prompt_audio) if prompt_audio else None, prompt_seconds=prompt_seconds,
            num_clips=num_sequences, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, device=device,
            overwrite=overwrite,
        ))
        typer.echo(f"wrote {len(paths)} clip(s) of {seconds:g} s: {', '.join(map(str, paths))}")
        return
    if modality != "dna":
        raise InputError(f"--modality {modality!r} is not supported; use 'dna' or 'audio'")
    if prompt:
        from seqssm.tokenizers import NucleotideTokenizer

        NucleotideTokenizer().encode(prompt, source="--prompt")  # the flag in the message, before any loading
    from seqssm.pipelines.generate import GenerateConfig
    from seqssm.pipelines.generate import generate as run

    path = run(GenerateConfig(checkpoint=str(checkpoint), out=str(out), length=length, prompt=prompt,
                              prompt_fasta=str(prompt_fasta) if prompt_fasta else None,
                              num_sequences=num_sequences, temperature=temperature, top_k=top_k, top_p=top_p,
                              seed=seed, device=device, allow_ambiguous=allow_ambiguous, overwrite=overwrite))
    typer.echo(f"wrote {num_sequences} sequence(s) of {length} bases to {path}")


@app.command(epilog=_example("seqssm info runs/demo/pretrain/checkpoint"))
def info(checkpoint: Path = typer.Argument(..., help="Checkpoint folder.")):
    """Show a checkpoint's config and parameter count."""
    from seqssm.pipelines.info import info as run

    typer.echo(json.dumps(run(str(checkpoint)), indent=2))


@app.command(epilog=_example(
    "seqssm export runs/lm/checkpoint --format hf --out hf_model",
    "seqssm export runs/lm/checkpoint --format mamba_ssm --out mamba_model --pytorch-bin",
))
def export(
    checkpoint: Path = typer.Argument(..., help="Causal checkpoint folder (seqssm, Hugging Face or mamba_ssm)."),
    fmt: str = typer.Option(..., "--format", help="hf (MambaForCausalLM) or mamba_ssm (MambaLMHeadModel)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for config.json and model.safetensors (a previous "
                             "export there is replaced with --overwrite)."),
    pytorch_bin: bool = typer.Option(False, help="mamba_ssm: also write pytorch_model.bin (a pickle), the file "
                                     "its from_pretrained reads."),
    overwrite: bool = OVERWRITE,
):
    """Write a causal checkpoint in Hugging Face's or mamba_ssm's layout, for transformers or mamba_ssm to load."""
    from seqssm.pipelines.export import ExportConfig
    from seqssm.pipelines.export import export as run

    path = run(ExportConfig(checkpoint=str(checkpoint), format=fmt, out=str(out), pytorch_bin=pytorch_bin,
                            overwrite=overwrite))
    typer.echo(f"wrote a {fmt} checkpoint to {path}")


@app.command(epilog=_example("seqssm evaluate predictions.tsv --out report --history runs/ft/train_log.tsv"))
def evaluate(
    predictions: Path = typer.Argument(..., help="TSV from `seqssm predict` (id, predicted, prob_<label>…)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for metrics.json, PNGs and report.html."),
    labels: Path | None = typer.Option(None, help="Table with id and label columns, when predictions lack them."),
    label_column: str = typer.Option("label"), id_column: str = typer.Option("id"),
    history: Path | None = typer.Option(None, help="A train_log.tsv to plot as training curves."),
    title: str | None = typer.Option(None), positive_label: str | None = typer.Option(None),
    task: str = typer.Option("auto", help="auto, binary, multiclass or multilabel."),
    overwrite: bool = OVERWRITE,
):
    """Score predictions with scikit-learn metrics; write metrics.json, pictures and an HTML report."""
    from seqssm.pipelines.evaluate import EvaluateConfig
    from seqssm.pipelines.evaluate import evaluate as run

    report = run(EvaluateConfig(
        predictions=str(predictions), out=str(out), labels=str(labels) if labels else None,
        label_column=label_column, id_column=id_column, history=str(history) if history else None, title=title,
        positive_label=positive_label, task=task, overwrite=overwrite,
    ))
    shown = ", ".join(f"{k} {v:.4f}" for k, v in report["metrics"].items() if isinstance(v, float))
    typer.echo(f"{report['task']}, {report['n']} rows: {shown}")
    typer.echo(f"report: {Path(out) / 'report.html'}")


@app.command(epilog=_example("seqssm demo --out runs/demo --minutes 2.5"))
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o"),
    minutes: float = typer.Option(2.5, help="Pretraining time budget."),
    steps: int = typer.Option(250, help="Pretraining steps (stops earlier at --minutes)."),
    seed: int = typer.Option(0), device: str = typer.Option("auto"),
    overwrite: bool = OVERWRITE,
):
    """The quick-start: pretrain on the bundled lambda phage genome, embed it, generate 1 kb of DNA."""
    if not minutes > 0 or steps < 1:
        raise InputError(f"--minutes and --steps must be positive, got --minutes {minutes:g} --steps {steps}")
    from seqssm.pipelines.demo import DemoConfig
    from seqssm.pipelines.demo import demo as run

    run(DemoConfig(out=str(out), minutes=minutes, steps=steps, seed=seed, device=device, overwrite=overwrite),
        echo=typer.echo)


app.command(epilog=cli_tasks.FINETUNE_EPILOG)(cli_tasks.finetune)
app.command(epilog=cli_tasks.PREDICT_EPILOG)(cli_tasks.predict)
app.command(epilog=cli_tasks.PROBE_EPILOG)(cli_tasks.probe)


# Typer vendors click (typer._click), so its parse errors are not click's classes; they are the bases of
# typer's public BadParameter.
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main() -> None:
    """Entry point: user mistakes become one line on stderr and exit code 2, never a traceback.

    That includes what click finds while parsing (an unknown option, a value of the wrong type, a missing
    argument), which it would otherwise draw as a box of several lines.
    """
    try:
        code = app(standalone_mode=False)
    except _CLICK_ERROR as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # bare `seqssm`: typer has printed the help
            sys.exit(2)
        ctx = getattr(err, "ctx", None)
        hint = f"; see `{ctx.command_path} --help`" if isinstance(err, _USAGE_ERROR) and ctx is not None else ""
        message = " ".join(err.format_message().split())
        typer.echo(f"seqssm: error: {message.rstrip('.') if hint else message}{hint}", err=True)
        sys.exit(err.exit_code)
    except typer.Abort:
        typer.echo("seqssm: aborted", err=True)
        sys.exit(1)
    except InputError as err:
        typer.echo(f"seqssm: error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("seqssm: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
