"""A recording read window by window by seeking, resampled to a model's rate exactly as if the whole slice
were resampled at once (``ResampledWindows``), and the μ-law token chunks of each clip of a file or folder
(``clip_token_chunks``). Used by ``seqssm score-audio`` (one long recording) and ``seqssm score`` (clips), so
that a clip's bits agree between the two commands."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from torchaudio.transforms import Resample

from seqssm.datasets.audio import audio_info, decoded_frames, load_audio
from seqssm.datasets.audio_windows import audio_files
from seqssm.errors import InputError
from seqssm.transforms import AudioTokenizer

CLIP_WINDOW_SECONDS = 30.0


class ResampledWindows:
    """Token windows of a slice [a, b) of a recording at ``rate``, read by seeking.

    Resampling is a strided convolution with period ``period_in`` file frames -> ``period_out`` samples;
    windows start on that period and read ``margin`` extra frames each side, so every kept sample sees the
    same input as when the whole slice is resampled.
    """

    def __init__(self, path: str, a: int, b: int, file_rate: int, rate: int, window_frames: int):
        self.path, self.a, self.b, self.file_rate, self.rate = path, a, b, file_rate, rate
        g = math.gcd(file_rate, rate)
        self.period_in, self.period_out = file_rate // g, rate // g
        self.resample = None if rate == file_rate else Resample(file_rate, rate)
        # torchaudio's kernel reaches `width` frames either side of each period (lowpass_filter_width 6,
        # rolloff 0.99); one more period of margin covers the block's own span.
        width = math.ceil(6 * self.period_in / (0.99 * min(self.period_in, self.period_out)))
        self.margin = self.period_in * (1 + math.ceil(width / self.period_in))
        self.window = max(self.period_in, window_frames // self.period_in * self.period_in)
        self.total = math.ceil((b - a) * self.period_out / self.period_in)

    def __iter__(self):
        for s in range(0, self.b - self.a, self.window):
            e = min(s + self.window, self.b - self.a)
            if self.resample is None:
                wave, _ = load_audio(self.path, channel="mix", offset=self.a + s, num_frames=e - s)
                yield wave[0]
                continue
            lo, hi = max(0, s - self.margin), min(self.b - self.a, e + self.margin)
            wave, _ = load_audio(self.path, channel="mix", offset=self.a + lo, num_frames=hi - lo)
            out = self.resample(wave)[0].clamp_(-1.0, 1.0)
            first = (s - lo) // self.period_in * self.period_out
            count = min(self.total, math.ceil(e * self.period_out / self.period_in)) - \
                s // self.period_in * self.period_out
            yield out[first:first + count]


def clip_token_chunks(root: Path, tokenizer: AudioTokenizer, rate: int | None, chunk_size: int,
                      ) -> Iterator[tuple[str, int, Iterator[np.ndarray]]]:
    """(name, tokens, token chunks of at most ``chunk_size``) per recording of ``root`` (a file, or a folder
    read recursively); ``rate`` None keeps each file's own rate. Names are paths relative to the folder."""
    files = audio_files(root) if root.is_dir() else [root]
    for path in files:
        info = audio_info(path)
        frames = decoded_frames(path) if info.format == "MP3" else info.frames
        if frames == 0:
            raise InputError(f"{path}: the recording has no frames (zero length); give one that holds audio")
        windows = ResampledWindows(str(path), 0, frames, info.sample_rate, rate or info.sample_rate,
                                   round(CLIP_WINDOW_SECONDS * info.sample_rate))
        name = path.relative_to(root).as_posix() if root.is_dir() else path.name
        yield name, windows.total, _chunks(windows, tokenizer, chunk_size)


def _chunks(windows: ResampledWindows, tokenizer: AudioTokenizer, size: int) -> Iterator[np.ndarray]:
    for wave in windows:
        ids = tokenizer.encode(wave).numpy()
        for s in range(0, len(ids), size):
            yield ids[s:s + size]
