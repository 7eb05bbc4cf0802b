"""The audio language model's training windows: recordings laid end to end as one stream of μ-law ids.

A folder's recordings (recursive; WAV, FLAC, OGG, MP3) are split by file into train and val
(:func:`audio_lm_datasets`), and each split is laid end to end, in a seeded order, as one stream with
``SILENCE_GAP_SECONDS`` of digital silence between recordings. Windows are drawn anywhere in that stream,
so a window may be longer than any one recording (FSDD clips are 0.14-2.28 s) and then spans several,
with short silences between them: the model sees real signal and learns where an utterance starts and
ends, rather than long runs of padding. The gaps are exact silence (the tokenizer's ``pad_id``) and cost
the model almost nothing to predict, so they lower the validation bits by their share of the positions
(0.02 s per FSDD clip of 0.44 s on average: about 4 %). One long recording is cut in time instead: its
last ``val_fraction`` is val. Used by `seqssm pretrain --modality audio`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from seqssm.datasets.audio import audio_info, decoded_frames, load_audio
from seqssm.datasets.audio_sets import AUDIO_EXTENSIONS, FSDD_TEST_TAKES, fsdd_take
from seqssm.errors import InputError
from seqssm.transforms import AudioTokenizer

SILENCE_GAP_SECONDS = 0.02
PRELOAD_SAMPLES = 2**26  # a split of at most this many samples is decoded once into memory (64 MB of ids)
_TRAIN, _VAL = 0, 1


class AudioPiece(NamedTuple):
    """Frames [first, first + frames) of a file, in its own rate."""

    path: Path
    rate: int
    first: int
    frames: int


class AudioStreamWindows(Dataset):
    """Windows of ``window`` μ-law ids from recordings laid end to end: item i is int64 [window].

    The pieces are joined in the given order with ``gap`` samples of silence between them; item i starts
    at a position drawn uniformly from the whole stream with ``numpy.random.default_rng([seed, stream,
    i])``, so items are reproducible and the same in every DataLoader worker. Recordings are mixed to mono
    and resampled to ``sample_rate`` (each piece as a whole).

    With ``preload`` the whole stream is decoded and tokenized once, here, into one id tensor (a byte per
    sample for 8-bit ids) and items are slices of it: pretraining loads its batches in the training
    process, where decoding a few files per window (about 5 ms) would stall a GPU. Otherwise
    only the recordings under a window are decoded, by seeking (:meth:`read`); a resampled read starts and
    ends a little beyond the window, where the two rates' sample grids meet, so both paths give the same
    ids (exactly, in the tests and on a 22.05 kHz MP3 read at 8 kHz; float rounding in the resampler could
    in principle move a sample by one step).
    """

    def __init__(
        self,
        pieces: Sequence[AudioPiece],
        window: int,
        num_windows: int,
        *,
        sample_rate: int,
        tokenizer: AudioTokenizer,
        seed: int,
        stream: int,
        gap: int,
        preload: bool = False,
    ) -> None:
        self.pieces = list(pieces)
        self.window, self.num_windows, self.sample_rate = window, num_windows, sample_rate
        self.tokenizer, self.seed, self.stream, self.gap = tokenizer, seed, stream, gap
        # Each piece's length at sample_rate, rounded down so a read never runs past the file's end.
        self._lengths = np.array([p.frames * sample_rate // p.rate for p in self.pieces], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(self._lengths + gap)[:-1]]).astype(np.int64)
        self.total = int(self._starts[-1] + self._lengths[-1])
        self._ids = self._decode_all() if preload else None

    @property
    def files(self) -> list[Path]:
        """The recordings in this stream, in stream order."""
        return [p.path for p in self.pieces]

    def __len__(self) -> int:
        return self.num_windows

    def window_start(self, index: int) -> int:
        """First stream position (samples at ``sample_rate``) of item ``index``."""
        if not 0 <= index < self.num_windows:
            raise IndexError(f"window {index} out of range [0, {self.num_windows})")
        rng = np.random.default_rng([self.seed, self.stream, index])
        return int(rng.integers(self.total - self.window + 1))

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Stream samples [start, stop) as a float32 waveform [stop - start]; gaps are 0.0."""
        out = torch.zeros(stop - start, dtype=torch.float32)
        k = max(int(np.searchsorted(self._starts, start, side="right")) - 1, 0)
        while k < len(self.pieces) and self._starts[k] < stop:
            lo = max(start, int(self._starts[k]))
            hi = min(stop, int(self._starts[k] + self._lengths[k]))
            if lo < hi:
                wave = self._read_piece(self.pieces[k], lo - int(self._starts[k]), hi - int(self._starts[k]))
                out[lo - start : lo - start + wave.shape[0]] = wave
            k += 1
        return out

    def _decode_all(self) -> torch.Tensor:
        vocab = self.tokenizer.vocab_size
        dtype = torch.uint8 if vocab <= 256 else torch.int16 if vocab <= 2**15 else torch.int32
        ids = torch.full((self.total,), self.tokenizer.pad_id, dtype=dtype)
        for piece, start, length in zip(self.pieces, self._starts.tolist(), self._lengths.tolist(), strict=True):
            if length:
                wave = self._read_piece(piece, 0, length)
                ids[start : start + wave.shape[0]] = self.tokenizer.encode(wave).to(dtype)
        return ids

    def _read_piece(self, piece: AudioPiece, u: int, v: int) -> torch.Tensor:
        # Samples [u, v) of the piece at sample_rate; at most v - u (an MP3 may yield less than its header).
        if piece.rate == self.sample_rate:
            return load_audio(piece.path, None, "mix", piece.first + u, v - u)[0][0]
        # Read from a frame where the source and target sample grids meet (every rate/g frames), with a
        # margin wider than the sinc kernel on both sides, so each sample has the phase and the neighbours it
        # has when the whole piece is resampled. The kernel spans 6 / 0.99 periods of the lower rate on each
        # side (torchaudio's default lowpass_filter_width and rolloff, which load_audio uses).
        g = math.gcd(piece.rate, self.sample_rate)
        block_in, block_out = piece.rate // g, self.sample_rate // g
        reach = math.ceil(6 * block_in / (0.99 * min(block_in, block_out))) + 1  # source frames
        margin = -(-reach // block_in)  # in blocks
        first_block = max(u // block_out - margin, 0)
        offset = first_block * block_in
        end = min(piece.frames, (-(-v // block_out) + margin) * block_in)
        wave = load_audio(piece.path, self.sample_rate, "mix", piece.first + offset, end - offset)[0][0]
        skip = u - first_block * block_out
        return wave[skip : skip + v - u]

    def __getitem__(self, index: int) -> torch.Tensor:
        start = self.window_start(index)
        if self._ids is not None:
            return self._ids[start : start + self.window].long()
        return self.tokenizer.encode(self.read(start, start + self.window))


def audio_files(root: Path) -> list[Path]:
    files = [
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    if not files:
        raise InputError(f"{root}: no {'/'.join(AUDIO_EXTENSIONS)} recordings in this folder or below it; "
                         "give a folder of recordings or one audio file")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _unit_hash(seed: int, name: str) -> float:
    digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _val_flags(names: Sequence[str], seed: int, val_fraction: float) -> list[bool]:
    """Which files are val: FSDD takes 0-4 when every name is FSDD's, else a seeded hash of each name.

    The hash rule is stable: a file keeps its side when others are added or removed. Each side gets at
    least one file (the lowest hash goes to val, the highest to train, when the rule leaves one empty).
    """
    takes = [fsdd_take(name) for name in names]
    if all(take is not None for take in takes):
        flags = [take in FSDD_TEST_TAKES for take in takes]
        if any(flags) and not all(flags):
            return flags
    keys = [_unit_hash(seed, name) for name in names]
    flags = [key < val_fraction for key in keys]
    if not any(flags):
        flags[int(np.argmin(keys))] = True
    if all(flags):
        flags[int(np.argmax(keys))] = False
    return flags


def _frames(path: Path) -> tuple[int, int]:
    info = audio_info(path)
    # An MP3 header's frame count is an estimate; decoding the tail finds the real one.
    frames = decoded_frames(path) if info.format == "MP3" else info.frames
    if frames == 0:
        raise InputError(f"{path}: the recording has no frames (zero length); remove it")
    return info.sample_rate, frames


def audio_lm_datasets(
    data: str,
    window: int,
    *,
    num_train: int,
    num_val: int,
    seed: int,
    val_fraction: float,
    sample_rate: int | None,
    tokenizer: AudioTokenizer,
) -> tuple[AudioStreamWindows, AudioStreamWindows, int]:
    """Train and val datasets of μ-law token windows [window] int64 from a folder or file of recordings.

    Args:
        data: a folder (searched recursively; hidden files skipped) or one audio file.
        window: tokens per item.
        num_train, num_val: items in each dataset.
        seed: item i of a split is drawn from (seed, split, i); also seeds the file split and order.
        val_fraction: a folder: the share of files (seeded hash of each relative path) that is val, except
            FSDD's ``{digit}_{speaker}_{take}.wav`` names, split by its custom (takes 0-4 are val); one
            file (or a folder holding one): the last ``val_fraction`` of it in time.
        sample_rate: resample to this rate (Hz); None keeps the recordings' rate, which must be common.
        tokenizer: the :class:`AudioTokenizer` that turns samples into ids.

    Returns:
        (train, val, sample_rate): :class:`AudioStreamWindows` (see the module notes for the silence gaps
        between recordings), each decoded into memory once when it holds at most ``PRELOAD_SAMPLES``
        samples; their ``files`` list each split's recordings.
    """
    path = Path(data)
    if not path.exists():
        raise InputError(f"{data}: audio folder or file not found; check the path")
    if not 0 < val_fraction < 1:
        raise InputError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    files = audio_files(path) if path.is_dir() else [path]
    info = [_frames(f) for f in files]
    rates = sorted({rate for rate, _ in info})
    if sample_rate is None:
        if len(rates) > 1:
            raise InputError(f"{data}: recordings have sample rates {rates} Hz; pass --sample-rate to "
                             "resample them all to one rate")
        sample_rate = rates[0]
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
        raise InputError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    pieces = [AudioPiece(f, rate, 0, frames) for f, (rate, frames) in zip(files, info, strict=True)]

    if len(pieces) == 1:
        (piece,) = pieces
        cut = round(piece.frames * (1 - val_fraction))
        splits = {_TRAIN: [piece._replace(frames=cut)],
                  _VAL: [piece._replace(first=cut, frames=piece.frames - cut)]}
        hint = "lower --window or change --val-fraction"
    else:
        flags = _val_flags([f.relative_to(path).as_posix() for f in files], seed, val_fraction)
        splits = {}
        for stream in (_TRAIN, _VAL):
            chosen = [p for p, is_val in zip(pieces, flags, strict=True) if is_val == (stream == _VAL)]
            order = np.random.default_rng([seed, stream]).permutation(len(chosen))
            splits[stream] = [chosen[i] for i in order]
        hint = "lower --window or add recordings"

    gap = round(SILENCE_GAP_SECONDS * sample_rate)
    splits_out = []
    for stream, count in ((_TRAIN, num_train), (_VAL, num_val)):
        pieces = splits[stream]
        total = sum(p.frames * sample_rate // p.rate for p in pieces) + gap * (len(pieces) - 1)
        if total < window:
            name = "train" if stream == _TRAIN else "val"
            raise InputError(f"{data}: the {name} split holds {total} samples at {sample_rate} Hz, fewer "
                             f"than one window of {window}; {hint}")
        splits_out.append(AudioStreamWindows(
            pieces, window, count, sample_rate=sample_rate, tokenizer=tokenizer, seed=seed, stream=stream,
            gap=gap, preload=total <= PRELOAD_SAMPLES,
        ))
    return splits_out[0], splits_out[1], sample_rate
