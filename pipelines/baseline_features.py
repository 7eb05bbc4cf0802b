"""The features of `seqssm baseline`: k-mer frequencies and one-hot bases (DNA), log-mel and MFCC statistics
(audio). Each function maps N inputs to a matrix [N, F] (scipy CSR for k-mers, dense float32 otherwise)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seqssm.errors import InputError
from seqssm.pipelines.configs_labelled import AUDIO_FEATURES, KMER_SIZES  # noqa: F401 (re-exported)

N_MELS = 40
N_MFCC = 20

_BASES = np.full(256, -1, dtype=np.int64)
for _i, _b in enumerate("ACGT"):
    _BASES[ord(_b)] = _BASES[ord(_b.lower())] = _i


def _codes(sequence: str) -> np.ndarray:
    """int64 [L]: A, C, G, T (any case) as 0-3, anything else -1."""
    return _BASES[np.frombuffer(sequence.encode("ascii", "replace"), dtype=np.uint8)]


def kmer_frequencies(sequences: Sequence[str], k: int):
    """CSR float32 [N, 4**k]: the frequency of each overlapping k-mer of each sequence (counts over the windows
    of k bases, all of them A/C/G/T, divided by their number; a sequence with none is a row of zeros)."""
    from scipy.sparse import csr_matrix

    rows, cols = [], []
    weights = 4 ** np.arange(k - 1, -1, -1)
    for r, sequence in enumerate(sequences):
        codes = _codes(sequence)
        if len(codes) < k:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(codes, k)
        windows = windows[(windows >= 0).all(axis=1)]
        if len(windows):
            cols.append(windows @ weights)
            rows.append(np.full(len(windows), r))
    if not cols:
        return csr_matrix((len(sequences), 4 ** k), dtype=np.float32)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    counts = csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(sequences), 4 ** k))
    counts.sum_duplicates()
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scale = np.where(totals > 0, 1.0 / np.maximum(totals, 1), 0.0).astype(np.float32)
    return csr_matrix(counts.multiply(scale[:, None]), dtype=np.float32)


def one_hot(sequences: Sequence[str]) -> np.ndarray:
    """float32 [N, L * 4]: position-major one-hot of DNA strings of one length L (a non-ACGT base is zeros)."""
    lengths = {len(s) for s in sequences}
    if len(lengths) != 1:
        raise InputError(f"one-hot features need sequences of one length, got lengths {min(lengths)} to "
                         f"{max(lengths)}")
    codes = np.stack([_codes(s) for s in sequences])
    out = np.zeros((*codes.shape, 4), dtype=np.float32)
    rows, cols = np.nonzero(codes >= 0)
    out[rows, cols, codes[rows, cols]] = 1.0
    return out.reshape(len(sequences), -1)


def _spectrogram_settings(sample_rate: int) -> dict:
    """25-32 ms frames every 10 ms, whatever the rate."""
    n_fft = 1 << int(np.ceil(np.log2(0.025 * sample_rate)))
    return {"n_fft": n_fft, "hop_length": max(1, sample_rate // 100), "n_mels": N_MELS}


def audio_statistics(waveforms, sample_rate: int, kind: str) -> np.ndarray:
    """float32 [N, 2F]: the mean and standard deviation over time of each clip's log-mel bands (F = 40) or
    MFCCs with their deltas (F = 40: 20 coefficients and 20 deltas); waveforms: N mono tensors [T]."""
    import torch
    from torchaudio.functional import compute_deltas
    from torchaudio.transforms import MFCC, MelSpectrogram

    if kind not in AUDIO_FEATURES:
        raise InputError(f"audio baseline features are {', '.join(AUDIO_FEATURES)}, got {kind!r}")
    settings = _spectrogram_settings(sample_rate)
    if kind == "logmel":
        transform = MelSpectrogram(sample_rate=sample_rate, **settings)
    else:
        transform = MFCC(sample_rate=sample_rate, n_mfcc=N_MFCC, melkwargs=settings)
    rows = []
    with torch.no_grad():
        for wave in waveforms:
            wave = torch.as_tensor(wave, dtype=torch.float32).reshape(-1)
            if len(wave) < settings["n_fft"]:  # reflect padding of the first frame needs n_fft / 2 samples
                wave = torch.nn.functional.pad(wave, (0, settings["n_fft"] - len(wave)))
            frames = transform(wave)  # [F, frames]
            if kind == "logmel":
                frames = torch.log(frames + 1e-6)
            else:
                frames = torch.cat([frames, compute_deltas(frames[None])[0]])
            rows.append(torch.cat([frames.mean(dim=1), frames.std(dim=1, unbiased=False)]).numpy())
    return np.stack(rows).astype(np.float32)
