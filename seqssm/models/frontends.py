"""Front ends of a classifier: inputs → token embeddings [B, L, D] and a token mask [B, L].

DNA (``TaskConfig.patch_size`` P > 1): :class:`DnaPatchEmbedding`, a linear map of the one-hot bases of each
non-overlapping patch of P bases (L = ceil(N / P) for N bases), so a 2 kb input is 250 tokens at P = 8 (the
pure function :func:`dna_patches`). Without it DNA enters base by base through the backbone's embedding.

Audio: waveform [B, T], two kinds, chosen by ``TaskConfig.frontend`` and saved with the classifier, one
token every P = ``patch_size`` samples either way (L = ceil(T / P)):

- "raw": a linear map of each non-overlapping frame of P samples (:class:`~seqssm.models.heads.PatchEmbedding`).
- "logmel": a linear map of each frame of a log-mel spectrogram (torchaudio ``MelSpectrogram``, windows of
  about 25 ms, hop P, F mel bands), the frames-as-tokens input of Audio Mamba and SSAMBA
  (:class:`LogMelEmbedding`; the pure function :func:`log_mel_frames`).

Padding samples are zeroed and the spectrogram pads with zeros (not reflection), so a row's frames do not
depend on the rows it is batched with; token t is real when its first sample t·P is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seqssm.errors import InputError

FRONTENDS = ("raw", "logmel")
LOGMEL_BANDS = 40
LOG_FLOOR = 1e-6  # added before the log: silence is log(1e-6), not -inf


def spectrogram_window(sample_rate: int) -> int:
    """The FFT size: about 25 ms rounded up to a power of two (256 samples at 8 kHz, 512 at 16 kHz)."""
    return 1 << max(3, math.ceil(math.log2(0.025 * sample_rate)))


def _mel(sample_rate: int, hop: int, n_mels: int):
    from torchaudio.transforms import MelSpectrogram  # imported when a log-mel model is built

    n_fft = spectrogram_window(sample_rate)
    return MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels, center=True,
                          pad_mode="constant", power=2.0)


def masked_waveform(waveform: torch.Tensor, attention_mask: torch.Tensor | None, normalize: bool = True,
                    dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The checks and clean-up both front ends start with: waveform [B, T] with padding zeroed (so a row's
    tokens do not depend on what its padding held) and, with ``normalize``, each row divided by its peak
    |sample| (in ``dtype`` when given); and the bool mask [B, T] (all True when None)."""
    if not isinstance(waveform, torch.Tensor) or waveform.dim() != 2 or not waveform.dtype.is_floating_point:
        got = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
        raise InputError(f"audio input must be a float waveform [B, T], got {got}")
    if attention_mask is None:
        attention_mask = torch.ones_like(waveform, dtype=torch.bool)
    elif attention_mask.shape != waveform.shape:
        raise InputError(f"audio attention_mask {tuple(attention_mask.shape)} differs from the waveform's "
                         f"{tuple(waveform.shape)}; pass one [B, T] mask of 1 (sample) / 0 (padding)")
    mask = attention_mask.bool()
    wave = waveform * mask
    if dtype is not None:
        wave = wave.to(dtype)
    if normalize:
        wave = wave / wave.abs().amax(dim=1, keepdim=True).clamp_min(1e-6)
    return wave, mask


def log_mel_frames(waveform: torch.Tensor, attention_mask: torch.Tensor | None, *, sample_rate: int, hop: int,
                   n_mels: int = LOGMEL_BANDS, normalize: bool = True,
                   transform: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Waveform [B, T] (right-padded, mask [B, T]) → log-mel frames [B, L, F] and token mask [B, L],
    L = ceil(T / hop), F = ``n_mels``; frame t is centred on sample t·hop. ``normalize`` divides each row by its
    peak |sample| first. ``transform``: a ``MelSpectrogram`` of these settings to reuse (built when None)."""
    wave, mask = masked_waveform(waveform, attention_mask, normalize, torch.float32)
    transform = transform if transform is not None else _mel(sample_rate, hop, n_mels).to(wave.device)
    n_tokens = -(-waveform.shape[1] // hop)
    power = transform(wave)[..., :n_tokens]  # [B, F, 1 + T // hop] → its first L frames
    frames = torch.log(power + LOG_FLOOR).transpose(1, 2)
    return frames, mask[:, ::hop]


class LogMelEmbedding(nn.Module):
    """Waveform [B, T] → [B, ceil(T / P), D]: a linear map of each log-mel frame (F bands, hop P samples).

    The mel filterbank and window are fixed buffers rebuilt from the settings (not saved); only ``proj`` is
    learnt. Log power is scaled by a fixed affine (log 1e-6 ≈ -13.8 maps near -1) so the inputs start near
    unit scale.
    """

    def __init__(self, patch_size: int, d_model: int, *, sample_rate: int, n_mels: int = LOGMEL_BANDS,
                 normalize: bool = True, device=None, dtype=None):
        super().__init__()
        self.patch_size, self.sample_rate, self.n_mels, self.normalize = patch_size, sample_rate, n_mels, normalize
        self.mel = _mel(sample_rate, patch_size, n_mels).to(device)
        for name, buffer in list(self.mel.named_buffers()):  # rebuilt from the settings: not in the checkpoint
            owner = self.mel.get_submodule(name.rpartition(".")[0]) if "." in name else self.mel
            owner.register_buffer(name.rpartition(".")[2], buffer, persistent=False)
        self.proj = nn.Linear(n_mels, d_model, device=device, dtype=dtype)

    def forward(self, waveform: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings [B, L, D], token mask [B, L])."""
        frames, mask = log_mel_frames(waveform, attention_mask, sample_rate=self.sample_rate, hop=self.patch_size,
                                      n_mels=self.n_mels, normalize=self.normalize, transform=self.mel)
        return self.proj(((frames + 7.0) / 7.0).to(self.proj.weight.dtype)), mask


def dna_patches(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, patch_size: int,
                vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [B, N] (right-padded, mask [B, N]) → one-hot patches [B, L, P * V] (float32) and the token
    mask [B, L], L = ceil(N / P), V = ``vocab_size``. Padding positions are all-zero, so a row's patches do not
    depend on its padding; a patch is real when its first base is. Feature p * V + v of a patch is "base p of the
    patch has id v"."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype.is_floating_point:
        got = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise InputError(f"DNA patches need token ids [B, N], got {got}")
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    if mask.shape != input_ids.shape:
        raise InputError(f"attention_mask {tuple(mask.shape)} differs from the ids' {tuple(input_ids.shape)}")
    batch, length = input_ids.shape
    n_tokens = -(-length // patch_size)
    pad = n_tokens * patch_size - length
    onehot = F.one_hot(input_ids.clamp(0, vocab_size - 1), vocab_size).float() * mask.unsqueeze(-1)
    onehot = F.pad(onehot, (0, 0, 0, pad))
    token_mask = F.pad(mask, (0, pad))[:, ::patch_size]
    return onehot.reshape(batch, n_tokens, patch_size * vocab_size), token_mask


class DnaPatchEmbedding(nn.Module):
    """Token ids [B, N] → [B, ceil(N / P), D]: a linear map of each patch's one-hot bases (:func:`dna_patches`),
    i.e. the sum of a learnt vector per (offset in the patch, base), as a k-mer embedding without a k-mer vocabulary."""

    def __init__(self, patch_size: int, vocab_size: int, d_model: int, *, device=None, dtype=None):
        super().__init__()
        self.patch_size, self.vocab_size = patch_size, vocab_size
        self.proj = nn.Linear(patch_size * vocab_size, d_model, device=device, dtype=dtype)

    def forward(self, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings [B, L, D], token mask [B, L])."""
        patches, mask = dna_patches(input_ids, attention_mask, self.patch_size, self.vocab_size)
        return self.proj(patches.to(self.proj.weight.dtype)), mask


def audio_frontend(frontend: str, patch_size: int, d_model: int, *, sample_rate: int, n_mels: int | None,
                   normalize: bool, device=None, dtype=None) -> nn.Module:
    """The front end a classifier's task names (``TaskConfig.frontend``)."""
    if frontend == "raw":
        from seqssm.models.heads import PatchEmbedding

        return PatchEmbedding(patch_size, d_model, normalize=normalize, device=device, dtype=dtype)
    if frontend == "logmel":
        return LogMelEmbedding(patch_size, d_model, sample_rate=sample_rate, n_mels=n_mels or LOGMEL_BANDS,
                               normalize=normalize, device=device, dtype=dtype)
    raise InputError(f"the audio front end must be one of {', '.join(FRONTENDS)}, got {frontend!r}")
