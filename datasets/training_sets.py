"""The training and evaluation datasets of fine-tuning, as :class:`~seqssm.datasets.labelled.Example` items:
random audio crops (augmented on request), DNA reverse-complemented at random, whole audio clips. Every
random choice is drawn from (seed, epoch, index), so each DataLoader worker and a resumed run see the same
items."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from seqssm.datasets.audio_sets import AudioClipDataset, AudioRecord, load_record
from seqssm.datasets.labelled import Example
from seqssm.tokenizers import NucleotideTokenizer
from seqssm.transforms import WaveformAugment


class AudioTrainClips(Dataset):
    """Training clips: random crops of ``clip_samples``, then (``augment``) a random variant of each, both
    drawn from (seed, epoch, index), so every DataLoader worker gives the same item; as Examples."""

    def __init__(self, records: list[AudioRecord], sample_rate: int, clip_samples: int, seed: int,
                 augment: WaveformAugment | None = None):
        classes = sorted({r.label for r in records})
        self.clips = AudioClipDataset(records, sample_rate, clip_samples, crop="random", seed=seed, classes=classes)
        self.seed, self.augment = seed, augment

    def set_epoch(self, epoch: int) -> None:
        self.clips.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> Example:
        wave, mask, _ = self.clips[i]
        record = self.clips.records[i]
        wave = wave[mask]
        if self.augment is not None:
            # A stream apart from the crop's (the trailing 1), from the same (seed, epoch, index).
            seed = int(np.random.default_rng([self.seed, self.clips.epoch, i, 1]).integers(2**63))
            wave = self.augment(wave, torch.Generator().manual_seed(seed))
        return Example(record.id, wave, record.label)


class RCFlipped(Dataset):
    """DNA training Examples, each reverse-complemented (a token-level label reversed with it) with probability
    1/2, drawn from (seed, epoch, index), so every DataLoader worker and a resumed run flip the same ones."""

    def __init__(self, items: list[Example], seed: int, token_level: bool):
        self.items, self.seed, self.token_level, self.epoch = items, seed, token_level, 0
        self.tokenizer = NucleotideTokenizer()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Example:
        e = self.items[i]
        # A stream apart from the shuffling's and the audio crops' (the trailing 2).
        if np.random.default_rng([self.seed, self.epoch, i, 2]).random() >= 0.5:
            return e
        label = e.label[::-1] if self.token_level and e.label else e.label
        return Example(e.id, self.tokenizer.reverse_complement(e.data), label)


class AudioEvalClips(Dataset):
    """Whole clips, decoded when read."""

    def __init__(self, records: list[AudioRecord], sample_rate: int):
        self.records, self.sample_rate = records, sample_rate

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Example:
        record = self.records[i]
        return Example(record.id, load_record(record, self.sample_rate)[0][0], record.label)
