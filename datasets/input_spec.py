"""Where labelled examples come from: the input fields that finetune, predict and probe share.

A light module (no torch) so that ``seqssm.cli`` can build its options from it; the reader that takes it
is ``seqssm.datasets.labelled.iter_examples``. The job configs inherit these fields (one definition each,
``seqssm.options``); ``InputSpec.of(cfg)`` takes them back out of a config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from seqssm.options import Options, one_of, option, positive


@dataclass(kw_only=True)
class InputSpec(Options):
    """The input file or folder and how to read it (tables, FASTA, BED with a genome, audio)."""

    data: str = option(argument=True, path=True,
                       help="Labelled table/FASTA, BED (with --genome), or audio folder/manifest.")
    modality: str | None = option("dna", help="dna or audio (raw waveform in patches).",
                                  check=one_of("dna", "audio"))
    data_format: str = option("auto", help="dna: table, fasta, bed; audio: folder, fsdd, manifest.")
    genome: str | None = option(None, path=True, help="BED input: the genome FASTA.")
    bed_labels: str | None = option(None, help="BED input: label column (0-based, e.g. 6) or a name→label table.")
    length: int | None = option(None, help="BED input: fixed window centred on each interval.", check=positive)
    sequence_column: str = option("sequence")
    label_column: str = option("label")
    id_column: str = option("id")
    fsdd_split: str = option("all", help="FSDD folder: all, train or test (takes 0-4).")
    sample_rate: int | None = option(None, help="audio: resample to this rate (default: the files').",
                                     check=positive)

    @classmethod
    def of(cls, config: Any, **changes: Any) -> InputSpec:
        """The input fields of ``config`` (any object with them) as an InputSpec, with ``changes``."""
        values = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls) if hasattr(config, f.name)}
        return cls(**{**values, **changes})
