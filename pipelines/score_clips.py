"""Audio clips for ``seqssm score``: each recording's μ-law tokens, decoded window by window by seeking and
resampled to the model's rate exactly as ``seqssm score-audio`` does (``stream_embed._Windows``), so a
clip's total bits here equal that command's bits per sample times its scored samples."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from seqssm.datasets.audio import audio_info, decoded_frames
from seqssm.errors import InputError
from seqssm.pipelines.audio_lm import _audio_files
from seqssm.pipelines.score import ScoreConfig, _Item
from seqssm.pipelines.stream_embed import _Windows
from seqssm.transforms import AudioTokenizer

WINDOW_SECONDS = 30.0


def audio_items(cfg: ScoreConfig, model) -> Iterator[tuple[_Item, Iterator[np.ndarray]]]:
    """(row, token chunks of at most ``cfg.chunk_size``) per recording of ``cfg.input`` (a file or folder)."""
    if model.config.bidirectional:
        raise InputError(f"checkpoint {cfg.checkpoint} is a bidirectional audio model; `seqssm score` scores audio "
                         "with causal audio LMs (`seqssm pretrain --modality audio`)")
    root = Path(cfg.input)
    files = _audio_files(root) if root.is_dir() else [root]
    tokenizer = AudioTokenizer.from_name(model.config.tokenizer)
    for path in files:
        info = audio_info(path)
        frames = decoded_frames(path) if info.format == "MP3" else info.frames
        if frames == 0:
            raise InputError(f"{path}: the recording has no frames (zero length); give one that holds audio")
        rate = model.config.sample_rate or info.sample_rate
        windows = _Windows(str(path), 0, frames, info.sample_rate, rate, round(WINDOW_SECONDS * info.sample_rate))
        name = path.relative_to(root).as_posix() if root.is_dir() else path.name
        yield _Item(name, name, 0, windows.total, ".", lambda s, e: ""), _chunks(windows, tokenizer, cfg.chunk_size)


def _chunks(windows: _Windows, tokenizer: AudioTokenizer, size: int) -> Iterator[np.ndarray]:
    for wave in windows:
        ids = tokenizer.encode(wave).numpy()
        for s in range(0, len(ids), size):
            yield ids[s:s + size]
