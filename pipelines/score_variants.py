"""``seqssm score-variants``: how much a language model prefers each ALT allele of a VCF to the reference.

For a record at REF [p, p + len(REF)) and each of its ALTs, the reference window is about ``window``
bases of the genome centred on REF, and the alternate window the same bases with REF replaced by ALT
(same flanks, so an indel changes the window's length). The score is the log-likelihood ratio in bits,

    SEQSSM_LLR = log2 p(alt window) - log2 p(ref window) = ref_bits - alt_bits,

> 0 where the model finds the ALT more likely. The windows are scored as ``seqssm score`` scores a sequence
(``seqssm.pipelines.likelihood``): left to right for causal models (the first base of a window unscored;
both windows share it), by pseudo-log-likelihood for masked ones (one forward per position of each window:
about 2 × window forwards per ALT). For reverse-complement-equivariant models, and for any model with
``both_strands``, each window is also scored as its reverse complement and the two strands' LLRs averaged.

Outputs: ``out`` (.vcf.gz), every record of the input in its order with ``SEQSSM_LLR`` (Number=A, "." for a
symbolic ALT) or ``SEQSSM_SKIP`` (why it was not scored) added to INFO, bgzipped and tabix-indexed
(``out.tbi``); and ``tsv``, one row per ALT. Records that cannot be scored are counted, never fatal: a contig
missing from the genome, a REF that differs from it, only symbolic ALTs (``<DEL>``, ``*``, breakends), and
records out of order (left out of the VCF, which could not be indexed otherwise).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pysam

from seqssm.datasets.vcf import (
    UNSORTED,
    ReferenceGenome,
    Variant,
    header_with_info,
    iter_variants,
    open_vcf,
    variant_window,
    with_info,
)
from seqssm.errors import InputError, require_file
from seqssm.pipelines.common import (
    FILE,
    LM,
    OutputPlan,
    atomic_path,
    check_checkpoint,
    load_checked,
    progress,
    resolve_device,
)
from seqssm.pipelines.likelihood import Scorer, total
from seqssm.tokenizers import get_tokenizer

__all__ = ["ScoreVariantsConfig", "ScoreVariantsResult", "score_variants", "score_variants_outputs"]

INFO_LINES = [
    '##INFO=<ID=SEQSSM_LLR,Number=A,Type=Float,Description="seqssm: log2 likelihood ratio of the ALT window to the '
    'REF window (bits; > 0: ALT more likely)">',
    '##INFO=<ID=SEQSSM_SKIP,Number=1,Type=String,Description="seqssm: why the record was not scored '
    '(missing_contig, ref_mismatch, symbolic)">',
]
TSV_HEADER = "chrom\tpos\tid\tref\talt\tllr_bits\tref_bits\talt_bits\twindow_start\twindow_end\tstatus\n"


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class ScoreVariantsConfig:
    """What ``seqssm score-variants`` takes; each field's help is the CLI option's."""

    checkpoint: str = field(metadata=_help("DNA language model checkpoint (causal or masked)."))
    vcf: str = field(default="", metadata=_help("VCF/BCF of variants (plain, gzip or bgzip)."))
    genome: str = field(default="", metadata=_help("Reference FASTA the VCF was called against."))
    out: str = field(default="", metadata=_help("Output .vcf.gz (bgzipped, with a tabix .tbi beside it)."))
    tsv: str | None = field(default=None, metadata=_help("Also write one row per ALT allele to this TSV."))
    window: int = field(default=1024, metadata=_help("Bases of genome around each variant."))
    batch_size: int = field(default=16, metadata=_help(
        "Windows per forward (causal), or masked copies per forward (masked models)."))
    both_strands: bool = field(default=False, metadata=_help(
        "Average the LLRs of both strands (always on for RC-equivariant models)."))
    device: str = field(default="auto", metadata=_help("auto, cpu, cuda or cuda:N."))
    overwrite: bool = field(default=False, metadata=_help("Replace existing outputs."))

    def __post_init__(self):
        for flag, value in (("--window", self.window), ("--batch-size", self.batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{flag} must be a positive integer, got {value!r}")
        if not self.out.endswith(".vcf.gz"):
            raise InputError(f"--out {self.out!r}: the VCF is written bgzipped and indexed; give a name ending "
                             "in .vcf.gz")
        if self.tsv is not None and Path(self.tsv).resolve() == Path(self.out).resolve():
            raise InputError(f"--tsv {self.tsv} is also --out; give two different files")


@dataclass
class ScoreVariantsResult:
    out: Path
    index: Path
    tsv: Path | None
    records: int = 0
    scored_records: int = 0
    scored_alleles: int = 0
    skipped: Counter = field(default_factory=Counter)  # records by reason
    symbolic_alleles: int = 0  # symbolic ALTs of records otherwise scored

    def report(self) -> str:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        extra = f"; {self.symbolic_alleles} symbolic ALT(s) of scored records left unscored" \
            if self.symbolic_alleles else ""
        return (f"{self.records} records: {self.scored_records} scored ({self.scored_alleles} ALT alleles), "
                f"{sum(self.skipped.values())} skipped ({skipped}){extra}")


def score_variants_outputs(cfg: ScoreVariantsConfig) -> list[OutputPlan]:
    inputs = [("checkpoint", cfg.checkpoint), ("VCF file", cfg.vcf), ("genome", cfg.genome)]
    plans = [OutputPlan([(cfg.out, FILE), (cfg.out + ".tbi", FILE)], inputs=inputs, overwrite=cfg.overwrite)]
    if cfg.tsv is not None:
        plans.append(OutputPlan([(cfg.tsv, FILE)], inputs=inputs, overwrite=cfg.overwrite, flag="--tsv"))
    return plans


class _Windows:
    """The token windows of a batch of records, scored together."""

    def __init__(self, tokenizer, genome: ReferenceGenome, window: int, both: bool):
        self.tokenizer, self.genome, self.window, self.both = tokenizer, genome, window, both

    def sequences(self, variant: Variant) -> tuple[list, list[np.ndarray]]:
        """(per ALT: (start, end) or None for a symbolic one, flat list of token windows): ref[, ref rc], then
        per scored ALT alt[, alt rc]."""
        spans, seqs = [], []
        for i, alt in enumerate(variant.alts):
            if variant.symbolic[i]:
                spans.append(None)
                continue
            start, end, ref_seq, alt_seq = variant_window(self.genome, variant, alt, self.window)
            if not seqs:
                seqs += self._encode(ref_seq, variant, "REF")
            seqs += self._encode(alt_seq, variant, f"ALT {alt}")
            spans.append((start, end))
        return spans, seqs

    def _encode(self, seq: str, variant: Variant, what: str) -> list[np.ndarray]:
        ids = self.tokenizer.encode(seq, source=f"the {what} window of {variant.contig}:{variant.pos}")
        return [ids, self.tokenizer.reverse_complement(ids)] if self.both else [ids]


def score_variants(cfg: ScoreVariantsConfig) -> ScoreVariantsResult:
    """Score every ALT of ``cfg.vcf``; write the annotated VCF (+ index) and TSV; see the module notes."""
    require_file(cfg.vcf, "VCF file")
    require_file(cfg.genome, "genome FASTA (--genome)")
    check_checkpoint(cfg.checkpoint, "score-variants", modality="dna", kind=LM)
    for plan in score_variants_outputs(cfg):
        plan.check()
    vcf = open_vcf(cfg.vcf)
    genome = ReferenceGenome(cfg.genome)
    device = resolve_device(cfg.device)
    model = load_checked(cfg.checkpoint, device).eval()
    tokenizer = get_tokenizer(model.config.tokenizer)
    both = cfg.both_strands or model.config.rc_equivariant
    # chunk_size: the context of a masked position; windows stay whole (an indel can make one longer).
    scorer = Scorer(model, batch_size=cfg.batch_size, chunk_size=max(1 << 16, 2 * cfg.window),
                    mask_id=tokenizer.mask_id, checkpoint=cfg.checkpoint)
    windows = _Windows(tokenizer, genome, cfg.window, both)
    result = ScoreVariantsResult(Path(cfg.out), Path(cfg.out + ".tbi"), Path(cfg.tsv) if cfg.tsv else None)
    with contextlib.ExitStack() as stack:
        vcf_tmp = stack.enter_context(atomic_path(cfg.out))
        tbi_tmp = stack.enter_context(atomic_path(cfg.out + ".tbi"))
        table = open(stack.enter_context(atomic_path(cfg.tsv)), "w") if cfg.tsv else None  # noqa: SIM115
        if table is not None:
            stack.callback(table.close)
            table.write(TSV_HEADER)
        with pysam.BGZFile(str(vcf_tmp), "wb") as out:
            out.write(header_with_info(vcf, INFO_LINES).encode())
            batch: list[Variant] = []
            bar = stack.enter_context(progress(desc="score-variants", unit="record"))
            for variant in iter_variants(vcf, genome, cfg.vcf):
                result.records += 1
                batch.append(variant)
                if len(batch) >= cfg.batch_size:
                    _flush(batch, windows, scorer, both, out, table, result)
                    bar.update(len(batch))
                    batch = []
            _flush(batch, windows, scorer, both, out, table, result)
            bar.update(len(batch))
        if table is not None:
            table.flush()
        try:
            pysam.tabix_index(str(vcf_tmp), preset="vcf", force=True, index=str(tbi_tmp))
        except (OSError, ValueError) as err:
            raise InputError(f"cannot index the output of {cfg.vcf} ({err}); check the VCF") from None
    vcf.close()
    genome.close()
    return result


def _flush(batch: list[Variant], windows: _Windows, scorer: Scorer, both: bool, out, table,
           result: ScoreVariantsResult) -> None:
    plans, flat = [], []
    for variant in batch:
        if variant.skip is None:
            spans, seqs = windows.sequences(variant)
            plans.append((spans, len(flat), len(seqs)))
            flat += seqs
        else:
            plans.append(None)
    totals = [total(bits)[1] for bits in scorer.bits(flat)] if flat else []
    strands = 2 if both else 1
    for variant, plan in zip(batch, plans, strict=True):
        if plan is None:
            result.skipped[variant.skip] += 1
            if variant.skip != UNSORTED:  # an out-of-order record would make the output unindexable
                out.write((with_info(variant.line, {"SEQSSM_SKIP": variant.skip}) + "\n").encode())
            _rows(table, variant, [None] * len(variant.alts), variant.skip)
            continue
        spans, first, _ = plan
        ref = totals[first:first + strands]
        scores, k = [], first + strands
        for span in spans:
            if span is None:
                scores.append(None)
                result.symbolic_alleles += 1
                continue
            alt = totals[k:k + strands]
            k += strands
            scores.append((float(np.mean(ref)) - float(np.mean(alt)), float(np.mean(ref)), float(np.mean(alt)),
                           span))
            result.scored_alleles += 1
        result.scored_records += 1
        llr = ",".join("." if s is None else f"{s[0]:.4f}" for s in scores)
        out.write((with_info(variant.line, {"SEQSSM_LLR": llr}) + "\n").encode())
        _rows(table, variant, scores, "scored")


def _rows(table, variant: Variant, scores: list, status: str) -> None:
    if table is None:
        return
    for alt, s in zip(variant.alts, scores, strict=True):
        head = f"{variant.contig}\t{variant.pos}\t{variant.id or '.'}\t{variant.ref}\t{alt}"
        if s is None:
            table.write(f"{head}\tnan\tnan\tnan\t.\t.\t{'symbolic' if status == 'scored' else status}\n")
        else:
            llr, ref_bits, alt_bits, (start, end) = s
            table.write(f"{head}\t{llr:.6f}\t{ref_bits:.6f}\t{alt_bits:.6f}\t{start}\t{end}\t{status}\n")
