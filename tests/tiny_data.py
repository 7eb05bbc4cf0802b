"""Shared by the fine-tuning test files: tiny labelled data written at test time (seeded, so each caller gets
the same files on every run)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import soundfile as sf


def motif_table(path: Path, n: int, lengths: tuple[int, int] = (15, 30), seed: int = 0) -> Path:
    """A labelled DNA table of ``n`` rows (sequence, label, id): class 1 rows carry GGGGGG; random bases of
    ``lengths`` (inclusive) around it, so batches are padded."""
    rng = random.Random(seed)
    rows = ["sequence\tlabel\tid"]
    for i in range(n):
        seq = "".join(rng.choice("ACGT") for _ in range(rng.randint(*lengths)))
        rows.append(f"{seq[:4] + 'GGGGGG' + seq[4:] if i % 2 else seq}\t{i % 2}\ts{i}")
    path.write_text("\n".join(rows) + "\n")
    return path


def tone_clips(folder: Path, samples: tuple[int, int], rate: int = 8000, per_class: int = 4) -> Path:
    """Class folders of WAV clips at ``rate``: 'lo' a 300 Hz tone, 'hi' a 2 kHz one, each of a seeded length in
    ``samples`` [low, high) plus a little noise."""
    rng = np.random.default_rng(0)
    for label, freq in (("lo", 300), ("hi", 2000)):
        for i in range(per_class):
            n = int(rng.integers(*samples))
            wave = 0.3 * np.sin(2 * np.pi * freq * np.arange(n) / rate) + 0.01 * rng.standard_normal(n)
            (folder / label).mkdir(parents=True, exist_ok=True)
            sf.write(folder / label / f"{label}{i}.wav", wave.astype(np.float32), rate, subtype="PCM_16")
    return folder
