"""``seqssm score``: the log-likelihood of sequences under a language model, per sequence and per position.

Inputs: the records of a FASTA (or one ``--region`` of it), BED intervals cut from ``--genome`` (on their
strand: a '-' interval is scored as its reverse complement), the reads of a SAM/BAM/CRAM file (primary
alignments, as sequenced), audio clips (one file, or a folder of them) under an audio LM, or under a
byte-level LM any file (or folder of files) as raw bytes, whole or in ``--window`` pieces (``bits_per_byte``;
``record`` is the file, ``start``/``end`` byte offsets).

Outputs: ``--out`` TSV, one row per sequence: ``id record start end strand length scored total_bits
bits_per_base`` (``bits_per_sample`` for audio). ``start``/``end`` are 0-based half-open on ``record``;
``total_bits`` is ``-log2 p(sequence)`` summed over the ``scored`` positions (the log-likelihood in bits is
its negative; multiply by ln 2 = 0.6931 for nats), ``bits_per_base`` = total_bits / scored. With
``--per-position``, a bedGraph: ``record start end bits`` for every scored base, at its position on the
record (for reads, the read name and the position in the read as sequenced).

How positions are scored (see ``seqssm.pipelines.likelihood``): causal models left to right, the first
token not scored (seqssm trains without a BOS token, so it has no prediction); sequences longer than
``chunk_size`` are streamed in chunks with every layer's states carried, in constant memory, with the same
result as one pass. Bidirectional (masked) models by pseudo-log-likelihood: each position masked in turn,
with up to ``chunk_size`` tokens of context centred on it, ``batch_size`` masked copies per forward; this
costs one forward per position, so it suits reads, intervals and windows, not whole chromosomes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqssm.datasets.audio_stream import clip_token_chunks
from seqssm.datasets.byte_windows import iter_byte_files
from seqssm.datasets.reads import iter_reads
from seqssm.datasets.vcf import ReferenceGenome
from seqssm.errors import InputError, did_you_mean, require_file
from seqssm.pipelines.common import (
    FILE,
    LM,
    OutputPlan,
    atomic_path,
    checkpoint_modality,
    load_checked,
    progress,
    resolve_device,
)
from seqssm.pipelines.configs_score import ScoreConfig
from seqssm.pipelines.likelihood import Scorer, total
from seqssm.tokenizers import get_tokenizer
from seqssm.transforms import AudioTokenizer

__all__ = ["ScoreConfig", "ScoreResult", "score", "score_outputs"]

READ_SUFFIXES = (".sam", ".bam", ".cram")
BIGWIG_SUFFIXES = (".bw", ".bigwig")


@dataclass
class ScoreResult:
    out: Path
    per_position: Path | None
    sequences: int
    scored: int
    total_bits: float

    @property
    def bits_per_token(self) -> float:
        return self.total_bits / self.scored if self.scored else float("nan")


@dataclass
class _Item:
    """One sequence to score: [start, end) of ``record`` on ``strand``; ``fetch(s, e)`` gives record bases."""

    id: str
    record: str
    start: int
    end: int
    strand: str
    fetch: Callable[[int, int], str]


def score_outputs(cfg: ScoreConfig) -> list[OutputPlan]:
    inputs = [("checkpoint", cfg.checkpoint), ("input", cfg.input), ("BED file", cfg.bed), ("genome", cfg.genome)]
    plans = [OutputPlan([(cfg.out, FILE)], inputs=inputs, overwrite=cfg.overwrite, flag="--out")]
    if cfg.per_position:
        if Path(cfg.per_position).resolve() == Path(cfg.out).resolve():
            raise InputError(f"--per-position {cfg.per_position} is also --out; give two different files")
        plans.append(OutputPlan([(cfg.per_position, FILE)], inputs=inputs, overwrite=cfg.overwrite,
                                flag="--per-position"))
    return plans


# ------------------------------------------------------------------------------------------ inputs


def _fasta_items(cfg: ScoreConfig) -> Iterator[_Item]:
    genome = ReferenceGenome(cfg.input)
    names = genome.contigs
    if cfg.record is not None:
        if cfg.record not in genome.lengths:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise InputError(f"--region: {cfg.input} has no record {cfg.record!r}{did_you_mean(cfg.record, names)}; "
                             f"it has {shown}")
        length = genome.lengths[cfg.record]
        end = length if cfg.end is None else cfg.end
        if end > length:
            raise InputError(f"--region {cfg.record}:{cfg.start + 1}-{end} ends past the end of {cfg.record} "
                             f"(length {length}); give an END of at most {length}")
        whole = cfg.start == 0 and end == length
        yield _Item(cfg.record if whole else f"{cfg.record}:{cfg.start + 1}-{end}", cfg.record, cfg.start, end,
                    "+", lambda s, e: genome.fetch(cfg.record, s, e))
        return
    for name in names:
        yield _Item(name, name, 0, genome.lengths[name], "+", lambda s, e, n=name: genome.fetch(n, s, e))


def _bed_items(cfg: ScoreConfig) -> Iterator[_Item]:
    from seqssm.datasets.intervals import read_bed

    intervals = read_bed(cfg.bed)
    genome = ReferenceGenome(cfg.genome)
    for iv in intervals:
        if iv.contig not in genome.lengths:
            raise InputError(f"{iv.source}: contig {iv.contig!r} is not in --genome {cfg.genome}"
                             f"{did_you_mean(iv.contig, genome.contigs)}")
        if iv.end > genome.lengths[iv.contig] or iv.end == iv.start:
            raise InputError(f"{iv.source}: interval [{iv.start}, {iv.end}) is empty or runs past the end of "
                             f"{iv.contig} (length {genome.lengths[iv.contig]})")
        name = iv.name or f"{iv.contig}:{iv.start + 1}-{iv.end}"
        yield _Item(name, iv.contig, iv.start, iv.end, iv.strand if iv.strand == "-" else "+",
                    lambda s, e, c=iv.contig: genome.fetch(c, s, e))


def _read_items(cfg: ScoreConfig) -> Iterator[_Item]:
    region = None
    if cfg.record is not None:
        region = cfg.record if cfg.end is None and cfg.start == 0 else (cfg.record, cfg.start, cfg.end)
    with iter_reads(cfg.input, region=region, reference=cfg.genome, primary_only=True,
                    original_strand=True) as reads:
        for read in reads:
            seq = read.sequence
            yield _Item(read.name, read.name, 0, len(seq), "+", lambda s, e, q=seq: q[s:e])


def _byte_items(cfg: ScoreConfig) -> Iterator[_Item]:
    """Each file of ``cfg.input`` as raw bytes: whole, or in ``cfg.window`` pieces (ids ``file:start-end``)."""
    for name, data in iter_byte_files(cfg.input):
        if cfg.window is None:
            yield _Item(name, name, 0, len(data), "+", lambda s, e, d=data: d[s:e].tobytes())
            continue
        for start in range(0, len(data), cfg.window):
            end = min(start + cfg.window, len(data))
            yield _Item(f"{name}:{start + 1}-{end}", name, start, end, "+", lambda s, e, d=data: d[s:e].tobytes())


def _pieces(item: _Item, size: int, tokenizer) -> Iterator[np.ndarray]:
    """Token ids of ``item`` in chunks of ``size``, in reading order of its strand."""
    if item.strand == "-":
        for e in range(item.end, item.start, -size):
            s = max(item.start, e - size)
            bases = tokenizer.reverse_complement(item.fetch(s, e))
            yield tokenizer.encode(bases, source=f"{item.id} ({item.record}:{s + 1}-{e}, minus strand)")
    else:
        for s in range(item.start, item.end, size):
            e = min(s + size, item.end)
            yield tokenizer.encode(item.fetch(s, e), source=f"{item.id} ({item.record}:{s + 1}-{e})")


# ------------------------------------------------------------------------------------------ outputs


class _BedGraph:
    """Per-position lines ``record start end bits``, in the reading order of each sequence's strand."""

    def __init__(self, path: Path):
        self.file = open(path, "w")  # noqa: SIM115 (closed by close())

    def add(self, record: str, where: np.ndarray, bits: np.ndarray) -> None:
        self.file.write("".join(f"{record}\t{p}\t{p + 1}\t{b:.6g}\n" for p, b in zip(where, bits, strict=True)))

    def close(self) -> None:
        self.file.close()  # closing twice is harmless for a file


class _BigWig:
    """The same as bigWig (pyBigWig): contigs in ``sizes`` order, positions ascending and not repeated."""

    def __init__(self, path: Path, sizes: list[tuple[str, int]], flag_path: str):
        import pyBigWig

        self.flag_path = flag_path
        self.file = pyBigWig.open(str(path), "w")
        self.file.addHeader(sizes)

    def add(self, record: str, where: np.ndarray, bits: np.ndarray) -> None:
        if not len(where):
            return
        order = np.argsort(where, kind="stable")  # a minus-strand chunk comes in descending order
        starts = where[order].astype(np.int64)
        try:
            self.file.addEntries([record] * len(starts), starts.tolist(), ends=(starts + 1).tolist(),
                                 values=bits[order].astype(np.float64).tolist())
        except RuntimeError:
            raise InputError(f"--per-position {self.flag_path}: a bigWig takes each base once, contigs in genome "
                             f"order, positions ascending; {record}:{int(starts[0]) + 1} breaks that (overlapping, "
                             "unsorted or long minus-strand intervals); write bedGraph instead") from None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.file = None


class _Writer:
    """The TSV rows, and the per-position track (bedGraph or bigWig), each written to a temporary first."""

    def __init__(self, table, track, unit: str):
        self.table, self.track = table, track
        self.table.write(f"id\trecord\tstart\tend\tstrand\tlength\tscored\ttotal_bits\tbits_per_{unit}\n")
        self.sequences, self.scored, self.bits = 0, 0, 0.0

    def positions(self, item: _Item, offset: int, bits: np.ndarray) -> None:
        """Track entries of ``bits`` (NaN skipped) for oriented positions offset.. of ``item``."""
        if self.track is None:
            return
        t = np.arange(offset, offset + len(bits))
        where = item.end - 1 - t if item.strand == "-" else item.start + t
        keep = ~np.isnan(bits)
        self.track.add(item.record, where[keep], bits[keep])

    def row(self, item: _Item, scored: int, bits: float) -> None:
        length = item.end - item.start
        mean = bits / scored if scored else float("nan")
        self.table.write(f"{item.id}\t{item.record}\t{item.start}\t{item.end}\t{item.strand}\t{length}\t{scored}\t"
                         f"{bits:.6f}\t{mean:.6f}\n")
        self.sequences, self.scored, self.bits = self.sequences + 1, self.scored + scored, self.bits + bits


# ------------------------------------------------------------------------------------------ the job


def score(cfg: ScoreConfig) -> ScoreResult:
    """Score every sequence of ``cfg``'s input; write the TSV (and bedGraph); see the module notes."""
    for what, path in (("BED file (--bed)", cfg.bed), ("genome FASTA (--genome)", cfg.genome)):
        if path is not None:
            require_file(path, what)
    modality = checkpoint_modality(cfg.checkpoint, "score", takes=("dna", "audio", "byte"), kind=LM)
    audio, raw = modality == "audio", modality == "bytes"
    if cfg.input is not None and not ((audio or raw) and Path(cfg.input).is_dir()):
        require_file(cfg.input, "input")
    if raw and (cfg.bed or cfg.record is not None):
        raise InputError(f"{'--bed' if cfg.bed else '--region'} is for DNA; a byte-level model scores whole files "
                         "(or --window pieces of them)")
    if cfg.window is not None and not raw:
        raise InputError("--window is for byte-level models; a DNA model scores whole records (--region or --bed "
                         "for parts)")
    if audio and (cfg.bed or cfg.record is not None or cfg.per_position):
        flag = "--bed" if cfg.bed else "--region" if cfg.record is not None else "--per-position"
        raise InputError(f"{flag} is for DNA; an audio LM scores whole clips (for per-second bits of a long "
                         "recording use `seqssm score-audio`)")
    bigwig = bool(cfg.per_position) and Path(cfg.per_position).suffix.lower() in BIGWIG_SUFFIXES
    if bigwig and raw:
        raise InputError(f"--per-position {cfg.per_position}: bigWig is for genomes; write bedGraph (a name ending "
                         ".bedgraph) for bytes")
    if bigwig:
        _check_bigwig(cfg)
    plans = score_outputs(cfg)
    for plan in plans:
        plan.check()
    device = resolve_device(cfg.device)
    model = load_checked(cfg.checkpoint, device).eval()
    if audio:
        tokenizer, items = None, None
        clips = _audio_items(cfg, model)
    else:
        tokenizer = get_tokenizer(model.config.tokenizer)
        suffix = Path(cfg.input).suffix.lower() if cfg.input else ""
        items = (_byte_items(cfg) if raw else _bed_items(cfg) if cfg.bed else
                 _read_items(cfg) if suffix in READ_SUFFIXES else _fasta_items(cfg))
    scorer = Scorer(model, batch_size=cfg.batch_size, chunk_size=cfg.chunk_size,
                    mask_id=getattr(tokenizer, "mask_id", None), checkpoint=cfg.checkpoint)
    with contextlib.ExitStack() as stack:
        table = open(stack.enter_context(atomic_path(cfg.out)), "w")  # noqa: SIM115 (closed by the stack)
        stack.callback(table.close)
        track = None
        if cfg.per_position:
            where = stack.enter_context(atomic_path(cfg.per_position))
            track = _BigWig(where, _sizes(cfg), cfg.per_position) if bigwig else _BedGraph(where)
            stack.callback(track.close)
        writer = _Writer(table, track, "sample" if audio else "byte" if raw else "base")
        bar = stack.enter_context(progress(desc="score", unit="bp" if not audio else "sample", unit_scale=True))
        if audio:
            for item, pieces in clips:
                n, bits = 0, 0.0
                for chunk in scorer.stream(pieces, where=item.id):
                    scored, summed = total(chunk)
                    n, bits = n + scored, bits + summed
                    bar.update(len(chunk))
                writer.row(item, n, bits)
        else:
            _score_dna(items, tokenizer, scorer, writer, bar)
        table.flush()
        if track is not None:
            track.close()  # a bigWig's index is written on close, before the rename
    return ScoreResult(Path(cfg.out), Path(cfg.per_position) if cfg.per_position else None, writer.sequences,
                       writer.scored, writer.bits)


def _check_bigwig(cfg: ScoreConfig) -> None:
    try:
        import pyBigWig  # noqa: F401
    except ImportError:
        raise InputError(f"--per-position {cfg.per_position}: bigWig output needs the pyBigWig package (pip install "
                         "pyBigWig); or write bedGraph (a name ending .bedgraph)") from None
    suffix = Path(cfg.input).suffix.lower() if cfg.input else ""
    if suffix in READ_SUFFIXES:
        raise InputError(f"--per-position {cfg.per_position}: a bigWig needs every contig's length before the first "
                         "entry, which reads do not give; write bedGraph (a name ending .bedgraph) for reads")


def _sizes(cfg: ScoreConfig) -> list[tuple[str, int]]:
    """(contig, length) of the genome (--bed) or FASTA the bigWig's positions lie on, in file order."""
    genome = ReferenceGenome(cfg.genome if cfg.bed else cfg.input)
    return [(name, genome.lengths[name]) for name in genome.contigs]


def _score_dna(items: Iterator[_Item], tokenizer, scorer: Scorer, writer: _Writer, bar) -> None:
    pending: list[tuple[_Item, np.ndarray]] = []

    def flush():
        for (item, _), bits in zip(pending, scorer.bits([ids for _, ids in pending]), strict=True):
            writer.positions(item, 0, bits)
            writer.row(item, *total(bits))
            bar.update(len(bits))
        pending.clear()

    empty = True
    for item in items:
        empty = False
        if item.end - item.start <= scorer.chunk_size:
            pending.append((item, next(_pieces(item, scorer.chunk_size, tokenizer))))
            if len(pending) >= scorer.batch_size:
                flush()
            continue
        flush()  # rows stay in input order
        if scorer.causal:
            n, bits, offset = 0, 0.0, 0
            for chunk in scorer.stream(_pieces(item, scorer.chunk_size, tokenizer), where=item.id):
                writer.positions(item, offset, chunk)
                scored, summed = total(chunk)
                n, bits, offset = n + scored, bits + summed, offset + len(chunk)
                bar.update(len(chunk))
            writer.row(item, n, bits)
        else:
            ids = np.concatenate(list(_pieces(item, scorer.chunk_size, tokenizer)))
            chunk = scorer.pll(ids)
            writer.positions(item, 0, chunk)
            writer.row(item, *total(chunk))
            bar.update(len(chunk))
    flush()
    if empty:
        raise InputError("the input holds no sequences to score (no records, intervals or reads)")


def _audio_items(cfg: ScoreConfig, model) -> Iterator[tuple[_Item, Iterator[np.ndarray]]]:
    """(row, token chunks) per recording of ``cfg.input`` (a file or folder), as ``score-audio`` reads them."""
    if model.config.bidirectional:
        raise InputError(f"checkpoint {cfg.checkpoint} is a bidirectional audio model; `seqssm score` scores audio "
                         "with causal audio LMs (`seqssm pretrain --modality audio`)")
    tokenizer = AudioTokenizer.from_name(model.config.tokenizer)
    for name, length, chunks in clip_token_chunks(Path(cfg.input), tokenizer, model.config.sample_rate,
                                                 cfg.chunk_size):
        yield _Item(name, name, 0, length, ".", lambda s, e: ""), chunks
