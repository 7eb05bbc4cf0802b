"""The configs of the jobs on sequences and recordings: `seqssm embed` (whole, tiled or streamed),
`score-audio`, `generate` (DNA or audio), `export` and `demo`.

A light module (no job imported), so ``seqssm.cli`` builds the commands' options from these fields
(``seqssm.options``: a field is the option). ``embed`` and ``generate`` each take two configs (one per
path); the fields they share have one default, which ``seqssm.cli_build`` checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seqssm.config import EXPORT_FORMATS as FORMATS
from seqssm.errors import InputError
from seqssm.options import (
    Options,
    device_option,
    one_of,
    option,
    out_option,
    overwrite_option,
    positive,
    positive_int,
)


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """The sampling options every generator takes, checked once here."""
    if not temperature > 0:
        raise InputError(f"--temperature must be > 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise InputError(f"--top-p must be in (0, 1], got {top_p}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise InputError(f"--top-k must be an integer >= 0 (0 = off), got {top_k}")

@dataclass(kw_only=True)
class EmbedConfig(Options):
    """Everything `seqssm embed` takes; the Python API takes the same object.

    ``window`` None embeds each FASTA record whole; otherwise records are tiled into windows of that many
    bases every ``stride`` (default: ``window``) bases, the last window of a record possibly shorter.
    ``modality`` None: the checkpoint's (what every caller wants; "dna" or "bytes" only to insist, a value
    that contradicts the checkpoint is refused). A byte-level checkpoint (``seqssm pretrain --modality
    bytes``): ``fasta`` is any file or folder of files, read as raw bytes (gzip decompressed), each file one
    record, windows in bytes.
    """

    checkpoint: str = option(argument=True, path=True, help="Checkpoint folder (config.json + model.safetensors).")
    fasta: str = option(argument=True, path=True, help="FASTA file to embed (with --stream also SAM/BAM/CRAM; "
                        "with --modality bytes any file or folder).")
    modality: str | None = option(None, help="dna (FASTA records) or bytes (each file's raw bytes); default: the "
                                  "checkpoint's, and a contradicting value is refused.", check=one_of("dna", "bytes"))
    out: str = out_option("Output folder (embeddings.npy, index.tsv).")
    window: int | None = option(None, help="Tile records into windows of this many bases.", check=positive)
    stride: int | None = option(None, help="Window step (default: --window).")
    per_position: bool = option(False, help="One float16 vector per base (memory-mapped .npy).")
    batch_size: int = option(8, check=positive)
    device: str = device_option()
    overwrite: bool = overwrite_option()

    def __post_init__(self):
        super().__post_init__()
        if self.stride is not None and (self.window is None or self.stride <= 0):
            raise InputError("--stride needs --window and must be positive")
        if self.stride is not None and self.stride > self.window:
            raise InputError(f"--stride {self.stride} is longer than --window {self.window}: the tiles would skip "
                             "bases; use a stride of at most the window")


@dataclass(kw_only=True)
class StreamEmbedConfig(Options):
    """What ``seqssm embed --per-position --stream`` takes.

    ``source`` is a FASTA (plain or bgzip, indexed on first use; plain gzip, read front to back) or, by its
    suffix, a SAM/BAM/CRAM file.
    ``record`` names the FASTA contig or the read (None: the file's only contig / read). ``start``/``end``
    select a 0-based half-open region of it (end None: to its end). ``reference`` is the FASTA a CRAM needs.
    ``resume`` continues an interrupted run in ``out``; False starts over. Starting over where an earlier
    run's files are (another job, or ``resume`` False) needs ``overwrite``; since a streamed run is written
    in place so that it can resume, those files are deleted when the new run starts.
    On the command line ``source`` is embed's FASTA argument and ``record``/``start``/``end`` come from
    ``--region`` (``seqssm.cli``).
    """

    checkpoint: str = option(argument=True, path=True)
    source: str = option(cli=False)
    out: str = out_option("Output folder (embeddings.npy, index.tsv).")
    record: str | None = option(None, cli=False)
    start: int = option(0, cli=False)
    end: int | None = option(None, cli=False)
    chunk_size: int | None = option(None, help="--stream: bases per chunk (sets the memory; default 2^18 on a GPU, "
                                    "2^16 on the CPU).", check=positive_int)
    reference: str | None = option(None, path=True, help="--stream: the FASTA a CRAM file needs.")
    device: str = device_option()
    resume: bool = option(True, help="--stream: continue an interrupted run in --out.")
    overwrite: bool = overwrite_option()

    def __post_init__(self):
        super().__post_init__()
        if self.start < 0 or (self.end is not None and self.end <= self.start):
            raise InputError(f"region [{self.start}, {self.end}) is empty or negative; use 0 <= start < end")


@dataclass(kw_only=True)
class StreamAudioConfig(Options):
    """Score (and optionally embed) a recording with a causal audio LM in one streamed pass (`score-audio`).

    ``offset``/``num_frames`` select a slice in the file's own frames (None: to the end). ``window_seconds``
    of audio are decoded per seek. The model's ``sample_rate`` (None: the file's) sets the token rate; a
    window is resampled with enough file context on both sides, aligned to the resampler's period, that
    its samples equal those of resampling the whole slice at once.
    """

    checkpoint: str = option(argument=True, path=True, help="Causal audio checkpoint folder.")
    audio: str = option(argument=True, path=True, help="Recording of any length (WAV/FLAC/OGG/MP3).")
    out: str = out_option("Folder for scores.tsv (and embeddings.npy).")
    offset: int = option(0, cli=False)
    num_frames: int | None = option(None, cli=False)
    embeddings: bool = option(False, help="Also write per-sample float16 embeddings.")
    window_seconds: float = option(30.0, help="Seconds decoded per seek.", check=positive)
    chunk_size: int = option(1 << 16, help="Samples per model chunk (sets the memory).", check=positive_int)
    device: str = device_option()
    overwrite: bool = overwrite_option()


@dataclass
class GenerateConfig(Options):
    """Everything `seqssm generate` takes; the Python API takes the same object.

    ``modality`` None: the checkpoint's ("dna" or "bytes" only to insist; a contradicting value is refused).
    A byte-level checkpoint: ``length`` bytes of any value 0–255 are drawn after the prompt (``prompt`` as
    UTF-8, or ``prompt_file``'s raw bytes) and written as they are, one sequence. The checks that depend
    on the modality run when it is known (here when given, else once the pipeline has read the checkpoint).
    """

    checkpoint: str = option(argument=True, path=True, help="Causal checkpoint folder.")
    out: str = out_option("FASTA file (dna), WAV file (audio) or raw bytes (bytes) to write.")
    length: int = option(1000, help="dna: bases (bytes: bytes) to generate after the prompt.")
    prompt: str | None = option(None, help="dna: prompt DNA text (bytes: any text, UTF-8).")
    prompt_fasta: str | None = option(None, path=True, help="dna: prompt is the first record of this FASTA.")
    prompt_file: str | None = option(None, path=True, help="bytes: the prompt is this file's raw bytes.")
    modality: str | None = option(None, cli=False, check=one_of("dna", "bytes"))  # the command line's --modality
    num_sequences: int = option(1, flags=("--num-sequences", "-n"), help="Sequences (or clips) to sample.")
    temperature: float = option(1.0)
    top_k: int = option(0, help="0 = off.")
    top_p: float = option(1.0, help="Nucleus sampling mass (1 = off).")
    seed: int = option(0)
    device: str = device_option()
    name: str = option("seqssm_sample", cli=False)
    allow_ambiguous: bool = option(False, flags=("--allow-ambiguous",),
                                   help="dna: also sample N / ambiguity codes (default: A, C, G, T only).")
    overwrite: bool = overwrite_option()

    def __post_init__(self):
        super().__post_init__()
        if self.length <= 0 or self.num_sequences <= 0:
            raise InputError("--length and --num-sequences must be positive")
        check_sampling(self.temperature, self.top_k, self.top_p)
        if sum(p is not None for p in (self.prompt, self.prompt_fasta, self.prompt_file)) > 1:
            raise InputError("give one of --prompt, --prompt-fasta, --prompt-file, not several")
        if self.modality == "bytes":
            for flag, used in (("--prompt-fasta", self.prompt_fasta), ("--allow-ambiguous", self.allow_ambiguous)):
                if used:
                    raise InputError(f"{flag} is for DNA; a byte-level model takes --prompt TEXT or --prompt-file")
            if self.num_sequences != 1:
                raise InputError(f"a byte-level model writes one stream of raw bytes to --out; use -n 1 (got "
                                 f"{self.num_sequences}), once per --seed for more samples")
        elif self.modality == "dna" and self.prompt_file:
            raise InputError("--prompt-file is for byte-level models (raw bytes); for DNA give --prompt-fasta")


@dataclass
class GenerateAudioConfig(Options):
    """Everything `seqssm generate --modality audio` takes; the Python API takes the same object.

    On the command line ``num_clips`` is ``--num-sequences``."""

    checkpoint: str = option(argument=True, path=True)
    out: str = out_option("WAV file to write.")
    seconds: float = option(2.0, help="audio: seconds to generate after the prompt.")
    prompt_audio: str | None = option(None, path=True, help="audio: continue this recording.")
    prompt_seconds: float | None = option(None, help="audio: use only the last S seconds of the prompt.")
    num_clips: int = option(1, cli=False)
    temperature: float = option(1.0)
    top_k: int = option(0)
    top_p: float = option(1.0)
    seed: int = option(0)
    device: str = device_option()
    cuda_graph: bool = option(True, cli=False)
    overwrite: bool = overwrite_option()

    def __post_init__(self):
        super().__post_init__()
        if not self.seconds > 0:
            raise InputError(f"--seconds must be > 0, got {self.seconds}")
        if self.num_clips < 1:
            raise InputError(f"--num-sequences (clips) must be positive, got {self.num_clips}")
        check_sampling(self.temperature, self.top_k, self.top_p)
        if self.prompt_seconds is not None and (self.prompt_audio is None or not self.prompt_seconds > 0):
            raise InputError("--prompt-seconds needs --prompt-audio and must be > 0")
        if Path(self.out).suffix.lower() != ".wav":
            raise InputError(f"--out {self.out!r}: audio is written as WAV; give a path ending in .wav")


@dataclass(kw_only=True)
class ExportConfig(Options):
    """checkpoint: any folder ``load_model`` reads (seqssm, HF or mamba_ssm); format: "hf" or "mamba_ssm";
    out: the folder to write. pytorch_bin (mamba_ssm only): also write ``pytorch_model.bin`` (``torch.save``
    of the state dict), the one file mamba_ssm's ``from_pretrained`` reads; seqssm itself never reads it.
    """

    checkpoint: str = option(argument=True, path=True,
                             help="Causal checkpoint folder (seqssm, Hugging Face or mamba_ssm).")
    format: str = option(flags=("--format",), help="hf (MambaForCausalLM) or mamba_ssm (MambaLMHeadModel).")
    out: str = out_option("Folder for config.json and model.safetensors (a previous export there is replaced "
                          "with --overwrite).")
    pytorch_bin: bool = option(False, help="mamba_ssm: also write pytorch_model.bin (a pickle), the file its "
                               "from_pretrained reads.")
    overwrite: bool = overwrite_option()

    def __post_init__(self):
        super().__post_init__()
        if self.format not in FORMATS:
            raise InputError(f"--format {self.format!r}: use one of {', '.join(FORMATS)}")
        if self.pytorch_bin and self.format != "mamba_ssm":
            raise InputError("--pytorch-bin is for --format mamba_ssm; Hugging Face reads model.safetensors")


@dataclass(kw_only=True)
class DemoConfig(Options):
    """`seqssm demo`: pretrain on the bundled lambda phage genome, embed it, generate 1 kb of DNA."""

    out: str = out_option(None, "runs/demo")
    minutes: float = option(20.0, help="Safety cap on pretraining wall time (warns when it stops training early).")
    steps: int = option(400, help="Pretraining steps: the budget (a slow machine takes longer, same model).")
    threads: int | None = option(None, check=positive_int, help=(
        "CPU threads for torch (default: the cores the load average leaves idle, at least 1)."))
    device: str = device_option()
    seed: int = option(0)
    overwrite: bool = overwrite_option()

    def __post_init__(self):
        super().__post_init__()
        if not self.minutes > 0 or self.steps < 1:
            raise InputError(f"--minutes and --steps must be positive, got --minutes {self.minutes:g} "
                             f"--steps {self.steps}")
