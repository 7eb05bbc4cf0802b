"""The `seqssm` command line: each command parses its options into a pipeline's config and calls it.

A command's options are its config's fields (``seqssm.options``, built by ``seqssm.cli_build``): to add an
option, add a field to the config in ``seqssm/pipelines/configs_*.py``; nothing here changes. A new command
is a body ``@config_command(XConfig) def x(opts): run(opts.make(XConfig))`` plus its ``app.command(...)``
line with the examples. Job modules are imported inside the bodies so that ``seqssm --help`` stays fast;
the configs modules are light.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import NoReturn

import typer

from seqssm import cli_tasks
from seqssm.cli_build import Opts, config_command
from seqssm.errors import InputError
from seqssm.pipelines.configs_labelled import EvaluateConfig
from seqssm.pipelines.configs_score import ScoreConfig, ScoreVariantsConfig
from seqssm.pipelines.configs_sequence import (
    DemoConfig,
    EmbedConfig,
    ExportConfig,
    GenerateAudioConfig,
    GenerateConfig,
    StreamAudioConfig,
    StreamEmbedConfig,
)
from seqssm.pipelines.configs_train import PretrainConfig

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


@config_command(PretrainConfig)
def pretrain(opts: Opts):
    """Pretrain a language model on random windows of a genome (causal or masked), on whole records packed
    into rows (--pack: a FASTA's records or a BAM's reads), of audio, or of any files' raw bytes (--modality
    bytes)."""
    from seqssm.pipelines.pretrain import pretrain as run

    result = run(opts.make(PretrainConfig))
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun only rank 0 validates, saves and reports
    unit = {"audio": "sample", "bytes": "byte"}.get(opts["modality"], "base")
    typer.echo(f"validation: {result.val_bits_per_token:.4f} bits per {unit} (uniform {result.uniform_bits:.1f}) "
               f"after {result.steps} steps, {result.seconds:.0f} s")
    if result.packing:
        p = result.packing
        typer.echo(f"packing: {p['efficiency']:.1%} of row positions are bases ({p['sequences']} sequences in "
                   f"{p['rows']} rows of {p['row_length']})")
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


# Command-line only: --stream picks StreamEmbedConfig over EmbedConfig; --region is parsed into its record,
# start and end.
_EMBED_EXTRA = {
    "stream": (bool, typer.Option(False, help="With --per-position: one contig or read of any length, chunk by "
                                              "chunk with carried state, resumable (causal checkpoints).")),
    "region": (str | None, typer.Option(None, help="--stream: NAME or NAME:START-END (1-based, inclusive).")),
}
_SCORE_REGION = (str | None, typer.Option(None, help=(
    "NAME or NAME:START-END (1-based, inclusive): one FASTA record or part of it, or the reads overlapping it "
    "(indexed BAM/CRAM).")))


@config_command(EmbedConfig, StreamEmbedConfig, extra=_EMBED_EXTRA)
def embed(opts: Opts, stream: bool, region: str | None):
    """Embed FASTA records or windows: mean-pooled vectors, or one vector per base (streamed for long ones)."""
    if stream:
        from seqssm.pipelines.common import checkpoint_modality

        if checkpoint_modality(opts["checkpoint"], "embed --stream", given=opts["modality"]) == "bytes":
            raise InputError("--stream reads one FASTA contig or read; a byte-level model embeds files whole or in "
                             "--window tiles: drop --stream")
        if not opts["per_position"] or opts["window"] is not None:
            raise InputError("--stream writes per-position embeddings of one contig or read: add --per-position "
                             "and drop --window")
        from seqssm.pipelines.stream_embed import stream_embed

        record, start, end = parse_region(region) if region else (None, 0, None)
        streamed = stream_embed(opts.make(StreamEmbedConfig, source=opts["fasta"], record=record, start=start,
                                          end=end))
        typer.echo(f"{streamed.end - streamed.start} positions of {streamed.record} × {streamed.dim} dims: "
                   f"{streamed.embeddings} (index {streamed.index})")
        return
    from seqssm.pipelines.embed import embed as run

    result = run(opts.make(EmbedConfig))
    typer.echo(f"{result.count} embeddings of {result.dim} dims: {result.embeddings} (index {result.index})")


@config_command(StreamAudioConfig)
def score_audio(opts: Opts):
    """Bits per sample of a recording under an audio LM, in one streamed pass with constant memory."""
    from seqssm.pipelines.stream_embed import stream_audio

    result = stream_audio(opts.make(StreamAudioConfig))
    typer.echo(f"{result.samples} samples at {result.sample_rate} Hz: {result.bits_per_sample:.4f} bits per sample "
               f"({result.scores})")


@config_command(ScoreConfig, extra={"region": _SCORE_REGION})
def score(opts: Opts, region: str | None):
    """Log-likelihood of sequences in bits: per sequence (TSV) and per base (bedGraph).

    Causal models score left to right, bit cost -log2 p(x_t | x_<t); the first token of a sequence has no
    prediction (seqssm trains without a BOS token) and is not scored. Long contigs stream in chunks with
    carried state, in constant memory, with the same result as one pass. Masked (bidirectional) models use
    the pseudo-log-likelihood: each position masked in turn, the rest visible (one forward per position,
    batched); chosen over the masked-marginal score because it scores any sequence, so a variant's score
    (`seqssm score-variants`, indels included) is exactly the difference of two sequences' scores.
    """
    from seqssm.pipelines.score import score as run

    record, start, end = parse_region(region) if region else (None, 0, None)
    result = run(opts.make(ScoreConfig, record=record, start=start, end=end))
    typer.echo(f"{result.sequences} sequence(s), {result.scored} positions scored: {result.bits_per_token:.4f} "
               f"bits per position ({result.out}{', ' + str(result.per_position) if result.per_position else ''})")


@config_command(ScoreVariantsConfig)
def score_variants(opts: Opts):
    """Log-likelihood ratio (bits) of each ALT allele against REF, in a window centred on the variant.

    SEQSSM_LLR = log2 p(ALT window) - log2 p(REF window); > 0 where the ALT is more likely. SNVs, indels and
    multi-allelic records (one score per ALT). Records whose REF differs from --genome, contigs missing from
    it, symbolic alleles (<DEL>, *, breakends) and out-of-order records are skipped, counted and reported at
    the end, never fatal. Masked models score windows by pseudo-log-likelihood (see `seqssm score --help`).
    """
    from seqssm.pipelines.score_variants import score_variants as run

    result = run(opts.make(ScoreVariantsConfig))
    typer.echo(result.report())
    typer.echo(f"wrote {result.out} (index {result.index}){', ' + str(result.tsv) if result.tsv else ''}")


# Command-line only: the checkpoint's modality (which --modality may only confirm) picks GenerateAudioConfig
# over GenerateConfig.
_GENERATE_EXTRA = {"modality": (str | None, typer.Option(None, help=(
    "dna (FASTA out), audio (WAV out) or bytes (raw bytes out); default: the checkpoint's, and a contradicting "
    "value is refused.")))}


@config_command(GenerateConfig, GenerateAudioConfig, extra=_GENERATE_EXTRA)
def generate(opts: Opts, modality: str | None):
    """Sample DNA (to FASTA), audio (to WAV) or raw bytes from a causal checkpoint, with constant memory per token;
    which one is the checkpoint's modality."""
    if modality is not None and modality not in ("dna", "audio", "bytes"):
        raise InputError(f"--modality {modality!r} is not supported; use 'dna', 'audio' or 'bytes'")
    from seqssm.pipelines.common import LM, checkpoint_modality

    modality = checkpoint_modality(opts["checkpoint"], "generate", given=modality, takes=("dna", "audio", "byte"),
                                   kind=LM, causal=True)
    if modality == "audio":
        if opts["allow_ambiguous"] or opts["prompt_file"]:
            flag = "--allow-ambiguous is for DNA" if opts["allow_ambiguous"] else "--prompt-file is for bytes"
            raise InputError(f"{flag}; leave it out for an audio model")
        from seqssm.pipelines.audio_lm import generate_audio

        paths = generate_audio(opts.make(GenerateAudioConfig, num_clips=opts["num_sequences"]))
        typer.echo(f"wrote {len(paths)} clip(s) of {opts['seconds']:g} s: {', '.join(map(str, paths))}")
        return
    if modality == "bytes":
        from seqssm.pipelines.generate import generate as run

        path = run(opts.make(GenerateConfig, modality="bytes"))
        typer.echo(f"wrote {opts['length']} bytes to {path}")
        return
    if opts["prompt"]:
        from seqssm.tokenizers import NucleotideTokenizer

        NucleotideTokenizer().encode(opts["prompt"], source="--prompt")  # the flag in the message, before loading
    from seqssm.pipelines.generate import generate as run

    path = run(opts.make(GenerateConfig, modality="dna"))
    typer.echo(f"wrote {opts['num_sequences']} sequence(s) of {opts['length']} bases to {path}")


def info(checkpoint: Path = typer.Argument(..., help="Checkpoint folder.")):
    """Show a checkpoint's config and parameter count."""
    from seqssm.pipelines.info import info as run

    typer.echo(json.dumps(run(str(checkpoint)), indent=2))


@config_command(ExportConfig)
def export(opts: Opts):
    """Write a causal checkpoint in Hugging Face's or mamba_ssm's layout, for transformers or mamba_ssm to load."""
    from seqssm.pipelines.export import export as run

    path = run(opts.make(ExportConfig))
    typer.echo(f"wrote a {opts['format']} checkpoint to {path}")


@config_command(EvaluateConfig)
def evaluate(opts: Opts):
    """Score predictions with scikit-learn metrics; write metrics.json, pictures and an HTML report."""
    from seqssm.pipelines.evaluate import evaluate as run

    report = run(opts.make(EvaluateConfig))
    shown = ", ".join(f"{k} {v:.4f}" for k, v in report["metrics"].items() if isinstance(v, float))
    typer.echo(f"{report['task']}, {report['n']} rows: {shown}")
    if report.get("baseline"):
        shown = ", ".join(f"{k} {v:.4f}" for k, v in report["baseline"]["metrics"].items() if isinstance(v, float))
        typer.echo(f"baseline: {shown}")
    typer.echo(f"report: {Path(opts['out']) / 'report.html'}")


@config_command(DemoConfig)
def demo(opts: Opts):
    """The quick-start: pretrain on the bundled lambda phage genome, embed it, generate 1 kb of DNA."""
    from seqssm.pipelines.demo import demo as run

    run(opts.make(DemoConfig), echo=typer.echo)


app.command(epilog=_example(
    "seqssm pretrain genome.fa.gz --out runs/lm --steps 2000 --window 1024",
    "seqssm pretrain genome.fa.gz --out runs/mlm --objective mlm --rc-equivariant",
    "seqssm pretrain recordings/ --modality audio --out runs/audio --window 8000",
    "seqssm pretrain corpus/ --modality bytes --out runs/bytes --window 2048",
))(pretrain)
app.command(epilog=_example(
    "seqssm embed runs/lm/checkpoint genome.fa --out emb --window 1024",
    "seqssm embed runs/lm/checkpoint reads.fa --out emb_pos --per-position",
    "seqssm embed runs/lm/checkpoint chrI.fa.gz --out chrI --per-position --stream --region chrI:1-1000000",
    "seqssm embed runs/lm/checkpoint ce_large_seq.bam --out read --per-position --stream --region read_name",
    "seqssm embed runs/bytes/checkpoint notes.txt --out emb_bytes --window 4096",
))(embed)
app.command(name="score-audio", epilog=_example(
    "seqssm score-audio runs/audio/checkpoint machine_wars.mp3 --out scores",
))(score_audio)
app.command(epilog=_example(
    "seqssm score runs/lm/checkpoint genome.fa --out scores.tsv --per-position bits.bedgraph",
    "seqssm score runs/lm/checkpoint chrI.fa.gz --region chrI:1-1000000 --out chrI.tsv",
    "seqssm score runs/lm/checkpoint --bed peaks.bed --genome hg38.fa --out peaks.tsv",
    "seqssm score runs/lm/checkpoint reads.bam --out reads.tsv",
    "seqssm score runs/audio/checkpoint recordings/ --out clips.tsv",
    "seqssm score runs/bytes/checkpoint corpus/ --out files.tsv",
))(score)
app.command(name="score-variants", epilog=_example(
    "seqssm score-variants runs/lm/checkpoint calls.vcf.gz --genome hg38.fa --out scored.vcf.gz --tsv scored.tsv",
))(score_variants)
app.command(epilog=_example(
    "seqssm generate runs/lm/checkpoint --out sample.fa --length 1000 --top-p 0.95",
    "seqssm generate runs/lm/checkpoint --out more.fa --prompt ACGTTGCA -n 4",
    "seqssm generate runs/audio/checkpoint --seconds 2 --out clip.wav -n 4",
    "seqssm generate runs/bytes/checkpoint --prompt 'Once upon' --length 500 --out story.txt",
))(generate)
app.command(epilog=_example("seqssm info runs/demo/pretrain/checkpoint"))(info)
app.command(epilog=_example(
    "seqssm export runs/lm/checkpoint --format hf --out hf_model",
    "seqssm export runs/lm/checkpoint --format mamba_ssm --out mamba_model --pytorch-bin",
))(export)
app.command(epilog=_example("seqssm evaluate predictions.tsv --out report --history runs/ft/train_log.tsv"))(evaluate)
app.command(epilog=_example("seqssm demo --out runs/demo --minutes 2.5"))(demo)
app.command(epilog=cli_tasks.FINETUNE_EPILOG)(cli_tasks.finetune)
app.command(epilog=cli_tasks.PREDICT_EPILOG)(cli_tasks.predict)
app.command(epilog=cli_tasks.PROBE_EPILOG)(cli_tasks.probe)
app.command(epilog=cli_tasks.BASELINE_EPILOG)(cli_tasks.baseline)


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


def console() -> None:
    """The ``seqssm`` console script: :func:`main`, then an exit that skips the interpreter's teardown.

    Tearing down the modules of torch and the rest (objects freed one by one, after every output is
    written) took 0.6 s of each command on a CPU, more with torch._dynamo loaded (measured; a streamed
    embedding of a tiny region: 2.4 s end to end, 1.7-2.2 s without it). What an exit must still do is done
    first: non-daemon threads joined, the ``atexit`` handlers (they reap multiprocessing children and shut
    logging down), stdout and stderr flushed. Every output was closed, synced where needed and renamed into
    place by the job. ``main`` itself still raises ``SystemExit``, for callers that run the CLI inside
    their own process (the tests).
    """
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    exit_now(code)


def exit_now(code) -> NoReturn:
    """End the process as ``sys.exit(code)`` would, minus the interpreter's teardown (see :func:`console`)."""
    import atexit
    import threading

    if not isinstance(code, int):  # as sys.exit: None is 0, anything else is printed and is 1
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    # What the interpreter's own exit does first (Py_FinalizeEx): the threading exit hooks (they tell idle
    # ThreadPoolExecutor workers to stop; joining those by hand waits forever), then every non-daemon thread
    # joined.
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`seqssm ... | head`): nothing more to say
            code = code or 120
    os._exit(code)


if __name__ == "__main__":
    console()
