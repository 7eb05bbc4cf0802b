"""The configs of the scoring jobs: `seqssm score` (sequences, intervals, reads, clips) and `seqssm
score-variants` (VCF records).

A light module (no job imported), so ``seqssm.cli`` builds the commands' options from these fields
(``seqssm.options``: a field is the option).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seqssm.errors import InputError
from seqssm.options import Options, device_option, option, out_option, overwrite_option, positive_int


@dataclass(kw_only=True)
class ScoreConfig(Options):
    """Everything `seqssm score` takes; the Python API takes the same object.

    ``record``/``start``/``end`` select one FASTA record or part of it (0-based half-open; ``end`` None: to
    its end), or the reads overlapping it; on the command line they come from ``--region`` (``seqssm.cli``).
    A byte-level checkpoint (``seqssm pretrain --modality bytes``) scores ``input``'s raw bytes (a file, or
    every file of a folder; gzip decompressed): one row per file, or per ``window`` bytes of it.
    """

    checkpoint: str = option(argument=True, path=True,
                             help="Language model checkpoint (causal or masked; DNA, audio or bytes).")
    input: str | None = option(None, argument=True, path=True, help=(
        "FASTA, SAM/BAM/CRAM, (audio LM) a recording or a folder of them, or (byte LM) any file or folder; leave "
        "out with --bed."))
    out: str = out_option("TSV to write: id, record, start, end, strand, length, scored, total_bits, "
                          "bits_per_base.")
    per_position: str | None = option(None, path=True, help=(
        "Also write the bits of every scored base as bedGraph (bigWig for a .bw name, with pyBigWig installed)."))
    window: int | None = option(None, check=positive_int, help=(
        "Byte-level models: score each file in windows of this many bytes, each on its own (one row each)."))
    record: str | None = option(None, cli=False)
    start: int = option(0, cli=False)
    end: int | None = option(None, cli=False)
    bed: str | None = option(None, path=True, help="BED intervals to score (on their strand), cut from --genome.")
    genome: str | None = option(None, path=True, help="FASTA for --bed, and the reference a CRAM needs.")
    batch_size: int = option(16, check=positive_int, help=(
        "Sequences per forward (causal), or masked copies per forward (masked models)."))
    chunk_size: int = option(1 << 16, check=positive_int, help=(
        "Longer sequences are streamed in chunks of this many tokens with carried state (causal; sets the "
        "memory), or scored with this much context (masked)."))
    device: str = device_option()
    overwrite: bool = overwrite_option()

    def __post_init__(self):
        super().__post_init__()
        if (self.input is None) == (self.bed is None):
            raise InputError("give the sequences to score: an INPUT file, or --bed with --genome (not both)")
        if self.bed is not None and self.genome is None:
            raise InputError("--bed intervals are cut from a genome: add --genome FASTA")
        if self.bed is not None and self.record is not None:
            raise InputError("--region selects part of a FASTA or BAM INPUT; with --bed, put the intervals in the BED")
        if self.start < 0 or (self.end is not None and self.end <= self.start):
            raise InputError(f"--region [{self.start}, {self.end}) is empty or negative")


@dataclass(kw_only=True)
class ScoreVariantsConfig(Options):
    """Everything `seqssm score-variants` takes; the Python API takes the same object."""

    checkpoint: str = option(argument=True, path=True, help="DNA language model checkpoint (causal or masked).")
    vcf: str = option(argument=True, path=True, help="VCF/BCF of variants (plain, gzip or bgzip).")
    genome: str = option(path=True, help="Reference FASTA the VCF was called against.")
    out: str = out_option("Output .vcf.gz: INFO SEQSSM_LLR per ALT (or SEQSSM_SKIP), bgzipped, with a tabix "
                          ".tbi beside it.")
    tsv: str | None = option(None, path=True, help="Also write one row per ALT allele to this TSV.")
    window: int = option(1024, check=positive_int,
                         help="Bases of genome around each variant (the same flanks for REF and ALT).")
    batch_size: int = option(16, check=positive_int,
                             help="Windows per forward (causal), or masked copies per forward.")
    both_strands: bool = option(False, flags=("--both-strands",), help=(
        "Average the LLRs of both strands (always on for RC-equivariant models)."))
    device: str = device_option()
    overwrite: bool = overwrite_option()

    def __post_init__(self):
        super().__post_init__()
        if not self.out.endswith(".vcf.gz"):
            raise InputError(f"--out {self.out!r}: the VCF is written bgzipped and indexed; give a name ending "
                             "in .vcf.gz")
        if self.tsv is not None and Path(self.tsv).resolve() == Path(self.out).resolve():
            raise InputError(f"--tsv {self.tsv} is also --out; give two different files")
