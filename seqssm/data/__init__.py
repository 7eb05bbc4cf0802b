"""Small demo data shipped with seqssm (see ATTRIBUTION.md beside this file)."""

from importlib.resources import files
from pathlib import Path


def lambda_phage_fasta() -> Path:
    """Path of the bundled Enterobacteria phage lambda genome (NC_001416, 48,502 bp, gzip FASTA)."""
    return Path(str(files(__name__).joinpath("lambda_phage.fa.gz")))


def example_audio() -> Path:
    """Path of a bundled Free Spoken Digit Dataset recording ("seven", 8 kHz mono 16-bit WAV, 0.54 s; CC BY-SA 4.0)."""
    return Path(str(files(__name__).joinpath("fsdd_7_jackson_32.wav")))
