"""A long, many-class, imbalanced DNA task built from the shared genomes: which region and strand a 1-2 kb
segment comes from.

    .venv/bin/python benchmarks/genome_segments.py --data-root ../shared/data --out segments.tsv \
        [--max-per-class 40]

Sources (files relative to the data root, see its README): the E. coli 536 chromosome cut into four equal
quarters (``ecoli_q1`` … ``ecoli_q4``: four classes that differ only by place, i.e. by local composition,
genomic islands and the replication strand's skew), the 1 Mb of C. elegans chromosome I (``ce_chrI``), the six
5 kb pieces of the other C. elegans chromosomes and the mitochondrion (``ce_other``) and phage lambda
(``lambda``). Each source is tiled into consecutive, non-overlapping segments whose lengths are drawn
uniformly from 1,000-2,000 nt (no two rows share a base, so no split leaks sequence); segments with more than
1% non-ACGT bases are dropped; each segment is then read from the given strand or reverse-complemented, at
random, and labelled ``{source}_{fwd|rev}``: 14 classes. Class sizes follow the sources' lengths (about 410
rows for each E. coli class, 335 for C. elegans chromosome I, 16 for lambda, 10 for ``ce_other``), so macro F1
and balanced accuracy weigh the rare classes that accuracy ignores. ``max_per_class`` keeps a seeded subset
of that many rows per class (for CPU runs).

Everything is a pure function of the input files and ``seed`` (numpy's seeded generator per source), so a
run rebuilds the same table from ``../shared/data`` every time and nothing is copied into the repository.
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

import numpy as np

from seqssm.datasets.fasta import iter_fasta

MIN_LEN, MAX_LEN = 1000, 2000
MAX_AMBIGUOUS = 0.01
QUARTERS = 4
_COMPLEMENT = str.maketrans("ACGTN", "TGCAN")


def _sources(root: Path) -> list[tuple[str, str, str]]:
    """(source name, record name, sequence) pieces, in a fixed order."""
    pieces = []
    (name, ecoli), = list(iter_fasta(root / "dna" / "ecoli_536.fna.gz"))
    q = len(ecoli) // QUARTERS
    for i in range(QUARTERS):
        end = len(ecoli) if i == QUARTERS - 1 else (i + 1) * q
        pieces.append((f"ecoli_q{i + 1}", f"{name}@{i * q}", ecoli[i * q:end]))
    for record, seq in iter_fasta(root / "dna" / "ce_chrI_1mb.fa"):
        pieces.append(("ce_chrI" if record == "CHROMOSOME_I" else "ce_other", f"{record}@0", seq))
    for record, seq in iter_fasta(root / "dna" / "lambda_phage.fa.gz"):
        pieces.append(("lambda", f"{record}@0", seq))
    return pieces


def build_rows(root: str | Path, seed: int = 0, max_per_class: int | None = None) -> list[tuple[str, str, str]]:
    """(sequence, label, id) rows; ids are ``record:start-end`` (0-based, end exclusive, in the record) plus
    the strand."""
    root = Path(root)
    by_class: dict[str, list[tuple[str, str, str]]] = {}
    for source, where, seq in _sources(root):
        record, offset = where.rsplit("@", 1)
        rng = np.random.default_rng([seed, zlib.crc32(where.encode())])
        seq = seq.upper()
        start = 0
        while True:
            length = int(rng.integers(MIN_LEN, MAX_LEN + 1))
            reverse = bool(rng.integers(2))  # drawn for every segment, kept or not: later draws stay put
            if start + length > len(seq):
                break
            segment = seq[start:start + length]
            ambiguous = length - sum(segment.count(b) for b in "ACGT")
            if ambiguous <= MAX_AMBIGUOUS * length:
                strand = "rev" if reverse else "fwd"
                text = segment.translate(_COMPLEMENT)[::-1] if reverse else segment
                first = int(offset) + start
                by_class.setdefault(f"{source}_{strand}", []).append(
                    (text, f"{source}_{strand}", f"{record}:{first}-{first + length}{'-' if reverse else '+'}"))
            start += length
    rows = []
    for label in sorted(by_class):
        members = by_class[label]
        if max_per_class is not None and len(members) > max_per_class:
            pick = np.random.default_rng([seed, zlib.crc32(label.encode())]).choice(
                len(members), max_per_class, replace=False)
            members = [members[i] for i in sorted(pick)]
        rows.extend(members)
    return rows


def write_table(rows, path: str | Path) -> Path:
    """Write ``sequence<TAB>label<TAB>id`` rows (the layout of ``../shared/data/labelled``) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write("sequence\tlabel\tid\n")
        f.writelines(f"{s}\t{lab}\t{i}\n" for s, lab, i in rows)
    tmp.replace(path)
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--out", required=True, help="TSV to write (sequence, label, id)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-per-class", type=int, default=None)
    args = ap.parse_args(argv)
    rows = build_rows(args.data_root, args.seed, args.max_per_class)
    write_table(rows, args.out)
    counts: dict[str, int] = {}
    for _, label, _ in rows:
        counts[label] = counts.get(label, 0) + 1
    print(f"{len(rows)} rows, {len(counts)} classes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
