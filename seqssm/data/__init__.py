"""Small demo data shipped with seqssm (see ATTRIBUTION.md beside this file)."""

from importlib.resources import files
from pathlib import Path


def lambda_phage_fasta() -> Path:
    """Path of the bundled Enterobacteria phage lambda genome (NC_001416, 48,502 bp, gzip FASTA)."""
    return Path(str(files(__name__).joinpath("lambda_phage.fa.gz")))
