"""Audio quantisation: waveforms in [-1, 1] to integer ids and back (μ-law or linear), torchaudio style,
and random waveform augmentation for training classifiers (:func:`augment_waveform`).

Pure functions, thin ``nn.Module`` wrappers, and :class:`AudioTokenizer`, which the model pipelines use
as they use the DNA tokenizers. With Q = ``quantization_channels`` levels and μ = Q - 1, both quantisers
round to the nearest of Q levels spread over [-1, 1], in the linear domain or the companded one:

- linear: levels ``2k/μ - 1``, k = 0..μ; a value is off by at most half a step, ``|x̂ - x| <= 1/μ``
  (1/255 for 8 bits).
- μ-law: y = F(x) = sign(x)·ln(1 + μ|x|)/ln(1 + μ) is rounded to the same grid, so y is off by at most 1/μ.
  F⁻¹(y) = sign(y)·((1 + μ)^|y| - 1)/μ grows convexly in |y|, so the worst case is rounding away from
  zero: ``|x̂ - x| <= F⁻¹(F(|x|) + 1/μ) - |x| = (|x| + 1/μ)·((1 + μ)^(1/μ) - 1)``, a relative error:
  2.2% of |x| plus 8.6e-5 for 8 bits, 0.022 at full scale.
"""

from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import nn

from seqssm.errors import InputError

__all__ = [
    "AudioTokenizer",
    "WaveformAugment",
    "LinearDecode",
    "LinearEncode",
    "augment_waveform",
    "MuLawDecode",
    "MuLawEncode",
    "linear_decode",
    "linear_encode",
    "mu_law_decode",
    "mu_law_encode",
]


def mu_law_encode(x: torch.Tensor, quantization_channels: int = 256) -> torch.Tensor:
    """μ-law companding then uniform quantisation: float [..., T] in [-1, 1] -> int64 ids [..., T] in [0, Q).

    Values outside [-1, 1] are clipped first (torchaudio's encoder would map them outside [0, Q)).
    """
    return AF.mu_law_encoding(x.clamp(-1.0, 1.0), quantization_channels)


def mu_law_decode(ids: torch.Tensor, quantization_channels: int = 256) -> torch.Tensor:
    """Inverse of :func:`mu_law_encode`: int ids [..., T] in [0, Q) -> float32 [..., T] in [-1, 1]."""
    return AF.mu_law_decoding(ids, quantization_channels)


def linear_encode(x: torch.Tensor, quantization_channels: int = 256) -> torch.Tensor:
    """Uniform quantisation: float [..., T] in [-1, 1] -> int64 ids [..., T] in [0, Q); clips first.

    Rounds half up, like torchaudio's μ-law encoder, so the two differ only by the companding.
    """
    mu = quantization_channels - 1
    return torch.floor((x.clamp(-1.0, 1.0) + 1.0) * (mu / 2) + 0.5).to(torch.int64)


def linear_decode(ids: torch.Tensor, quantization_channels: int = 256) -> torch.Tensor:
    """Inverse of :func:`linear_encode`: int ids [..., T] in [0, Q) -> float32 [..., T] in [-1, 1]."""
    return ids.to(torch.float32) * (2.0 / (quantization_channels - 1)) - 1.0


class MuLawEncode(nn.Module):
    """:func:`mu_law_encode` as a module: float [..., T] -> int64 [..., T]."""

    def __init__(self, quantization_channels: int = 256) -> None:
        super().__init__()
        self.quantization_channels = quantization_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mu_law_encode(x, self.quantization_channels)


class MuLawDecode(nn.Module):
    """:func:`mu_law_decode` as a module: int [..., T] -> float32 [..., T]."""

    def __init__(self, quantization_channels: int = 256) -> None:
        super().__init__()
        self.quantization_channels = quantization_channels

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return mu_law_decode(ids, self.quantization_channels)


class LinearEncode(nn.Module):
    """:func:`linear_encode` as a module: float [..., T] -> int64 [..., T]."""

    def __init__(self, quantization_channels: int = 256) -> None:
        super().__init__()
        self.quantization_channels = quantization_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_encode(x, self.quantization_channels)


class LinearDecode(nn.Module):
    """:func:`linear_decode` as a module: int [..., T] -> float32 [..., T]."""

    def __init__(self, quantization_channels: int = 256) -> None:
        super().__init__()
        self.quantization_channels = quantization_channels

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return linear_decode(ids, self.quantization_channels)


_CODECS = {"mulaw": (mu_law_encode, mu_law_decode), "linear": (linear_encode, linear_decode)}


class AudioTokenizer:
    """Waveform samples <-> token ids, one token per sample, ``2**bits`` ids and no special tokens.

    ``pad_id`` is the id of silence (0.0), 128 for 8 bits with either kind: an audio language model needs
    no pad, mask or separator token, padded positions are marked by the dataset's mask (the loss must
    ignore them), and padding with silence keeps the padded tail a plausible signal while the vocabulary
    stays exactly ``2**bits``.

    Args:
        kind: ``"mulaw"`` (companded, finer steps near silence; the WaveNet / SampleRNN choice) or
            ``"linear"`` (uniform steps).
        bits: 1 to 16 bits per sample.
    """

    def __init__(self, kind: str = "mulaw", bits: int = 8) -> None:
        if kind not in _CODECS:
            raise InputError(f"AudioTokenizer: kind {kind!r} is not one of {sorted(_CODECS)}")
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
            raise InputError(f"AudioTokenizer: bits must be an integer from 1 to 16, got {bits!r}")
        self.kind = kind
        self.bits = bits
        self.vocab_size = 2**bits
        self._encode, self._decode = _CODECS[kind]
        self.pad_id = int(self._encode(torch.zeros(1), self.vocab_size))

    @property
    def name(self) -> str:
        """Short name for checkpoint configs, e.g. ``"mulaw8"``; ``AudioTokenizer.from_name`` reverses it."""
        return f"{self.kind}{self.bits}"

    @classmethod
    def from_name(cls, name: str) -> AudioTokenizer:
        """The tokenizer that :attr:`name` describes (``"mulaw8"``, ``"linear16"``…)."""
        kind = name.rstrip("0123456789")
        if kind not in _CODECS or kind == name:
            raise InputError(f"audio tokenizer name {name!r} is not a kind and bit count such as 'mulaw8'")
        return cls(kind, int(name[len(kind) :]))

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """Float waveform [..., T] in [-1, 1] (clipped if outside) -> int64 ids [..., T]."""
        if not torch.is_floating_point(wave):
            raise InputError(f"AudioTokenizer.encode: expected a float waveform, got dtype {wave.dtype}")
        if not bool(torch.isfinite(wave).all()):
            raise InputError(
                "AudioTokenizer.encode: the waveform holds NaN or infinite values; clean it first"
            )
        return self._encode(wave, self.vocab_size)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Int ids [..., T] in [0, vocab_size) -> float32 waveform [..., T] in [-1, 1]."""
        if torch.is_floating_point(ids) or torch.is_complex(ids):
            raise InputError(f"AudioTokenizer.decode: expected integer ids, got dtype {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise InputError(
                f"AudioTokenizer.decode: ids must lie in [0, {self.vocab_size}), got "
                f"[{int(ids.min())}, {int(ids.max())}]; were they made by a tokenizer with more bits?"
            )
        return self._decode(ids, self.vocab_size)

    def __repr__(self) -> str:
        return f"AudioTokenizer(kind={self.kind!r}, bits={self.bits})"


# Speed factors lie on a grid of 1/SPEED_GRID steps: resampling by SPEED_GRID : k keeps torchaudio's
# polyphase kernel small (a random real ratio would reduce to a huge integer one and cost seconds).
SPEED_GRID = 40


def _check_augment(speed: float, shift: float, time_masks: int, mask_fraction: float, noise_prob: float,
                   snr_db: tuple[float, float]) -> None:
    if not 0 <= speed < 0.5:
        raise InputError(f"augment: speed must be in [0, 0.5) (a ±fraction), got {speed}")
    if not 0 <= shift < 0.5:
        raise InputError(f"augment: shift must be in [0, 0.5) (a fraction of the clip per end), got {shift}")
    if isinstance(time_masks, bool) or not isinstance(time_masks, int) or time_masks < 0:
        raise InputError(f"augment: time_masks must be a non-negative integer, got {time_masks!r}")
    if not 0 <= mask_fraction < 1:
        raise InputError(f"augment: mask_fraction must be in [0, 1), got {mask_fraction}")
    if not 0 <= noise_prob <= 1:
        raise InputError(f"augment: noise_prob must be in [0, 1], got {noise_prob}")
    if len(snr_db) != 2 or snr_db[0] > snr_db[1]:
        raise InputError(f"augment: snr_db must be (low, high) in dB with low <= high, got {snr_db}")


def augment_waveform(
    wave: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    speed: float = 0.1,
    shift: float = 0.1,
    time_masks: int = 2,
    mask_fraction: float = 0.05,
    noise_prob: float = 0.5,
    snr_db: tuple[float, float] = (10.0, 30.0),
) -> torch.Tensor:
    """One random training variant of a mono waveform: [T] float -> a new [T'] float32 tensor.

    The steps, in order, each drawn from ``generator`` (so a seeded generator gives the same variant):

    - speed: resample by a factor f in [1 - speed, 1 + speed] (steps of 1/40) and keep the sample rate, so
      duration and pitch change together (Kaldi-style speed perturbation): T' ≈ f·T.
    - shift: each end is trimmed, or extended with silence, by up to ``shift`` × T samples, independently;
      this moves the utterance against the clip's borders, and at least (1 - 2·shift)·T samples survive.
    - time masks: ``time_masks`` spans of up to ``mask_fraction`` × T samples are set to 0 (SpecAugment's
      time masking, on the waveform).
    - noise: with probability ``noise_prob``, white Gaussian noise at an SNR uniform in ``snr_db`` (dB,
      against the clip's mean power after the steps above).

    There is no random gain: the classifiers scale every clip to peak 1 (``TaskConfig.normalize_audio``),
    which would undo it, and a gain before noise at a given SNR changes nothing either.
    """
    _check_augment(speed, shift, time_masks, mask_fraction, noise_prob, snr_db)
    if not isinstance(wave, torch.Tensor) or wave.dim() != 1 or not wave.is_floating_point():
        got = tuple(wave.shape) if isinstance(wave, torch.Tensor) else type(wave).__name__
        raise InputError(f"augment: expected a float waveform [T], got {got}")

    def randint(low: int, high: int) -> int:  # inclusive of both ends
        return int(torch.randint(low, high + 1, (), generator=generator))

    x = wave.detach().to(torch.float32).clone()
    if x.numel() == 0:
        return x
    steps = int(speed * SPEED_GRID + 1e-9)
    if steps:
        new = SPEED_GRID + randint(-steps, steps)
        if new != SPEED_GRID:
            x = AF.resample(x, SPEED_GRID, new)
    limit = int(shift * x.numel())
    if limit:
        left, right = randint(-limit, limit), randint(-limit, limit)
        x = x[max(0, -left): x.numel() - max(0, -right)]
        x = torch.nn.functional.pad(x, (max(0, left), max(0, right)))
    width = int(mask_fraction * x.numel())
    if width:
        for _ in range(time_masks):
            span = randint(0, width)
            start = randint(0, x.numel() - span)
            x[start: start + span] = 0.0
    if noise_prob > 0 and float(torch.rand((), generator=generator)) < noise_prob:
        snr = snr_db[0] + (snr_db[1] - snr_db[0]) * float(torch.rand((), generator=generator))
        scale = torch.sqrt(x.pow(2).mean() / 10 ** (snr / 10))
        x = x + scale * torch.randn(x.shape, generator=generator)
    return x


class WaveformAugment(nn.Module):
    """:func:`augment_waveform` with fixed settings (checked here): [T] -> [T'], drawn from ``generator``."""

    def __init__(self, speed: float = 0.1, shift: float = 0.1, time_masks: int = 2, mask_fraction: float = 0.05,
                 noise_prob: float = 0.5, snr_db: tuple[float, float] = (10.0, 30.0)) -> None:
        super().__init__()
        _check_augment(speed, shift, time_masks, mask_fraction, noise_prob, snr_db)
        self.settings = {"speed": speed, "shift": shift, "time_masks": time_masks, "mask_fraction": mask_fraction,
                         "noise_prob": noise_prob, "snr_db": tuple(snr_db)}

    def forward(self, wave: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return augment_waveform(wave, generator, **self.settings)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings.items())
