"""Decode audio files through soundfile (libsndfile): whole clips or seeked windows, mono, resampled.

libsndfile (1.2.2 in the pinned soundfile wheel) reads WAV, FLAC, OGG/Vorbis/Opus and MP3 (through
mpg123), among others; `soundfile.available_formats()` lists them. A window (``offset``, ``num_frames``,
counted in the file's own frames) is read by seeking, so a few seconds of a long recording cost a few
seconds of decoding, not the whole file.

Seeking is sample-exact for WAV, FLAC and OGG. For MP3 it lands on the right sample but the decoded values
differ from a sequential decode by float rounding only (at most 1.8e-7 over 40 random offsets in a
22.05 kHz stereo track; the tests allow 1e-6), because mpg123 restarts its synthesis filter a few MP3
frames before the seek point.

An MP3 file's frame count in its header (what `audio_info` reports) is an estimate from the bitrate and
the file size: the decoder may yield a little less (``machine_wars.mp3``: 6,412,934 declared, 6,407,424
decoded). A window that reaches into that gap comes back shorter than asked; nothing else does.
`decoded_frames` finds the real count by decoding only the tail.

Known fault: VBR MP3s written by libsndfile 1.2.2's own encoder decode correctly in one read but not in
pieces (mpg123 logs "part2_3_length too large" and later reads come back near zero), so windows of
such files are wrong; CBR files and the real VBR-free tracks tested here are fine. Re-encode to FLAC.
"""

from __future__ import annotations

import functools
import operator
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import torch
from torchaudio.transforms import Resample

from seqssm.datasets.sniff import binary_kind, read_head
from seqssm.errors import InputError

__all__ = ["AudioInfo", "audio_info", "decoded_frames", "load_audio"]

# libsndfile's log says "data : 32000 (should be 15978)" when a WAV-family file is cut short; it would
# otherwise read the shorter file silently. Streaming writers put 0 or 0xFFFFFFFF there when the length
# is unknown at write time: those files are whole.
_DATA_SIZE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_STREAMING_SIZES = {0, 0xFFFFFFFF}
_KNOWN_SUFFIXES = {name.lower() for name in sf.available_formats()} | {"wave", "oga", "opus", "aif"}


class AudioInfo(NamedTuple):
    """What the header of an audio file says (``frames`` is an estimate for MP3, see the module notes)."""

    sample_rate: int
    frames: int
    channels: int
    format: str


def _positive_int(value, what: str, where: str, minimum: int = 1) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise InputError(f"{where}: {what} must be an integer, got {value!r}") from None
    if value < minimum:
        raise InputError(f"{where}: {what} must be at least {minimum}, got {value}")
    return value


@functools.lru_cache(maxsize=16)
def _resampler(orig_freq: int, new_freq: int) -> Resample:
    # torchaudio.functional.resample rebuilds its sinc kernel on every call (0.25 s for 22.05 -> 16 kHz on
    # one core); the module builds it once and then costs 0.01 s per second of audio. Same algorithm.
    return Resample(orig_freq, new_freq)


def _reason(err: Exception) -> str:
    # libsndfile messages look like "Error opening 'x.wav': Format not recognised."
    return str(err).split(":")[-1].strip().rstrip(".") or "unreadable"


def _open(path: str | Path) -> sf.SoundFile:
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an audio file; give the path of a file")
    if not path.is_file():
        raise InputError(f"{path}: audio file not found; check the path")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes); copy or export it again")
    try:
        handle = sf.SoundFile(str(path))
    except sf.SoundFileError as err:
        reason = _reason(err)
        suffix = path.suffix.lower().lstrip(".")
        if suffix not in _KNOWN_SUFFIXES:
            raise InputError(
                f"{path}: unsupported audio format '.{suffix}' ({reason}); "
                "convert it to WAV, FLAC, OGG or MP3"
            ) from None
        head = read_head(path, 512)
        kind = binary_kind(head)
        if kind is None:  # a text file behind an audio extension
            first = head.splitlines()[0][:20].decode("utf-8", "replace") if head.strip() else ""
            raise InputError(f"{path}: cannot decode as {suffix.upper()}: it is a text file (it starts with "
                             f"{first!r}), not audio; give a WAV, FLAC, OGG or MP3 file") from None
        if "audio" not in kind and not kind.startswith("binary data"):
            raise InputError(f"{path}: cannot decode as {suffix.upper()}: it is {kind}, not audio; give a WAV, FLAC, "
                             "OGG or MP3 file") from None
        raise InputError(
            f"{path}: cannot decode as {suffix.upper()} ({reason}); the file is corrupt"
        ) from None
    truncated = _DATA_SIZE.search(handle.extra_info)
    if truncated is not None:
        declared, present = int(truncated.group(1)), int(truncated.group(2))
        if present < declared and declared not in _STREAMING_SIZES:
            handle.close()
            raise InputError(
                f"{path}: truncated: the header declares {declared} bytes of audio, "
                f"the file holds {present}; copy or export it again"
            )
    return handle


def audio_info(path: str | Path) -> AudioInfo:
    """Sample rate, frame count, channel count and container format (``"WAV"``, ``"MP3"``…) of a file.

    Reads the header only. Raises InputError for a missing, truncated, corrupt or unsupported file.
    """
    with _open(path) as handle:
        return AudioInfo(handle.samplerate, handle.frames, handle.channels, handle.format)


def decoded_frames(path: str | Path) -> int:
    """Frames the decoder really yields: the header's count, checked by decoding only the tail of the file.

    Equal to ``audio_info(path).frames`` for WAV, FLAC and OGG; at most that for MP3, whose header count
    is an estimate. Starts one second before the declared end and doubles the distance until a read
    yields audio, so it costs about a second of decoding.
    """
    with _open(path) as handle:
        declared = handle.frames
        back = min(declared, handle.samplerate)
        while back > 0:
            start = declared - back
            try:
                handle.seek(start)
                got = handle.read(back, dtype="float32", always_2d=True).shape[0]
            except sf.SoundFileError as err:
                raise InputError(
                    f"{path}: decoding failed near frame {start} ({_reason(err)}); the file is corrupt"
                ) from None
            if got > 0 or start == 0:
                return start + got
            back = min(declared, 2 * back)
        return 0


def load_audio(
    path: str | Path,
    sample_rate: int | None = None,
    channel: str | int | None = "mix",
    offset: int = 0,
    num_frames: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Decode a file, or a window of it, into a float32 waveform [C, T] with values in [-1, 1].

    Args:
        path: a file libsndfile reads (WAV, FLAC, OGG, MP3, …).
        sample_rate: resample to this rate (Hz) with torchaudio's windowed-sinc resampler
            (``torchaudio.transforms.Resample``, kernel cached per rate pair); None keeps the file's
            rate. A window is resampled on its own, so its edges see zero padding.
        channel: ``"mix"`` averages the channels (C = 1), an int picks that channel (C = 1), None keeps
            every channel (C = the file's channels).
        offset: first frame of the window, in the file's own frames (before resampling).
        num_frames: frames to read from ``offset``, in the file's own frames; None reads to the end.
            The window is read by seeking. It may come back shorter only for an MP3 whose header
            overstates its length (see the module notes).

    Returns:
        (waveform [C, T] float32, its sample rate). Values are clipped to [-1, 1]: float files, MP3
        decoding and resampling can overshoot full scale, and the quantisers expect that range.

    Raises:
        InputError: missing, truncated, corrupt or unsupported file; a clip with no frames; a
        sample rate, channel, offset or window that does not fit.
    """
    where = str(path)
    if sample_rate is not None:
        sample_rate = _positive_int(sample_rate, "sample_rate (Hz)", where)
    offset = _positive_int(offset, "offset (frames)", where, minimum=0)
    if num_frames is not None:
        num_frames = _positive_int(num_frames, "num_frames", where)
    if not (channel is None or channel == "mix"):
        channel = _positive_int(channel, "channel ('mix', None or an index)", where, minimum=0)

    with _open(path) as handle:
        file_rate, frames, channels = handle.samplerate, handle.frames, handle.channels
        if frames == 0:
            raise InputError(f"{where}: the audio clip has no frames (zero length); remove or replace it")
        if isinstance(channel, int) and channel >= channels:
            raise InputError(f"{where}: channel {channel} asked for, the file has {channels} (0-based)")
        if offset >= frames:
            raise InputError(f"{where}: offset {offset} is past the end of the file ({frames} frames)")
        if num_frames is not None and offset + num_frames > frames:
            raise InputError(
                f"{where}: window [{offset}, {offset + num_frames}) runs past the end of the file "
                f"({frames} frames); lower offset or num_frames"
            )
        try:
            if offset:
                handle.seek(offset)
            data = handle.read(-1 if num_frames is None else num_frames, dtype="float32", always_2d=True)
        except sf.SoundFileError as err:
            raise InputError(
                f"{where}: decoding failed near frame {offset} ({_reason(err)}); the file is corrupt"
            ) from None
    if data.shape[0] == 0:
        raise InputError(
            f"{where}: no audio decoded from frame {offset} although the header promises {frames} frames; "
            "the file is truncated"
        )
    finite = np.isfinite(data)
    if not finite.all():
        # Clipping would turn inf into full scale and keep NaN, which no tokenizer or model can take.
        frame, chan = np.argwhere(~finite)[0]
        raise InputError(f"{where}: frame {offset + int(frame)} (channel {int(chan)}) is {data[frame, chan]} "
                         "(NaN or infinite samples: a float file written from broken data); fix or re-export it")

    wave = torch.from_numpy(data).T  # [C, T] view of the [T, C] frames
    if channel == "mix":
        wave = wave.mean(dim=0, keepdim=True)
    elif channel is not None:
        wave = wave[channel : channel + 1]
    wave = wave.contiguous()
    if sample_rate is not None and sample_rate != file_rate:
        wave = _resampler(file_rate, sample_rate)(wave)
    return wave.clamp_(-1.0, 1.0), sample_rate or file_rate
