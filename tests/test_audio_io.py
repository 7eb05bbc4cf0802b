"""load_audio / audio_info / decoded_frames: rates, channels, seeked windows against full decodes, errors."""

from __future__ import annotations

import math
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from seqssm.datasets.audio import audio_info, decoded_frames, load_audio
from seqssm.errors import InputError

RATE = 8000
FRAMES = 6007  # odd, not a multiple of any codec block


def _stereo(frames: int = FRAMES, rate: int = RATE) -> np.ndarray:
    t = np.arange(frames) / rate
    rng = np.random.default_rng(1)
    left = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(frames)
    right = 0.3 * np.sin(2 * np.pi * 97 * t + 1.0)
    return np.stack([left, right], axis=1).astype(np.float32)


@pytest.fixture
def stereo_wav(tmp_path: Path) -> Path:
    path = tmp_path / "stereo.wav"
    sf.write(path, _stereo(), RATE, subtype="PCM_16")
    return path


def _full(path: Path) -> np.ndarray:
    data, _ = sf.read(path, dtype="float32", always_2d=True)
    return data


def test_rate_channels_and_mixdown(stereo_wav: Path):
    full = _full(stereo_wav)
    both, rate = load_audio(stereo_wav, channel=None)
    assert rate == RATE and both.dtype == torch.float32 and both.shape == (2, FRAMES)
    torch.testing.assert_close(both, torch.from_numpy(full.T.copy()), rtol=0, atol=0)
    mono, _ = load_audio(stereo_wav)
    assert mono.shape == (1, FRAMES)
    torch.testing.assert_close(mono[0], torch.from_numpy(full.mean(axis=1)), rtol=0, atol=1e-7)
    right, _ = load_audio(stereo_wav, channel=1)
    torch.testing.assert_close(right[0], torch.from_numpy(full[:, 1].copy()), rtol=0, atol=0)
    assert audio_info(stereo_wav) == (RATE, FRAMES, 2, "WAV")


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
@pytest.mark.parametrize(("offset", "num_frames"), [(0, 1), (1, 999), (1151, 2047), (4000, FRAMES - 4000)])
def test_window_equals_slice_of_full_decode(tmp_path: Path, fmt: str, offset: int, num_frames: int):
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, _stereo(), RATE, format=fmt)
    full = _full(path)
    window, _ = load_audio(path, channel=None, offset=offset, num_frames=num_frames)
    expected = torch.from_numpy(full[offset : offset + num_frames].T.copy())
    torch.testing.assert_close(window, expected, rtol=0, atol=0)


def test_window_read_seeks_instead_of_decoding_everything(stereo_wav: Path, monkeypatch):
    calls = []
    real_seek, real_read = sf.SoundFile.seek, sf.SoundFile.read

    def seek(self, frames, *args, **kwargs):
        calls.append(("seek", frames))
        return real_seek(self, frames, *args, **kwargs)

    def read(self, frames=-1, *args, **kwargs):
        calls.append(("read", frames))
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "seek", seek)
    monkeypatch.setattr(sf.SoundFile, "read", read)
    load_audio(stereo_wav, offset=3001, num_frames=17)
    # soundfile's own tell() calls seek(0, SEEK_CUR) inside read; what matters is one seek, one short read
    assert calls[:2] == [("seek", 3001), ("read", 17)]
    assert [frames for op, frames in calls if op == "read"] == [17]


def test_constant_bitrate_mp3_window_matches_full_decode(tmp_path: Path):
    # libsndfile 1.2.2 mis-decodes chunked reads of the VBR MP3s its own encoder writes (mpg123 reports
    # "part2_3_length too large"), so this tmp file is CBR; the real VBR-free track is tested below.
    path = tmp_path / "tone.mp3"
    with sf.SoundFile(path, "w", 22050, 2, format="MP3", bitrate_mode="CONSTANT") as handle:
        handle.write(_stereo(3 * 22050, 22050))
    full = _full(path)
    for offset in (0, 1151, 33333, len(full) - 1000):
        window, _ = load_audio(path, channel=None, offset=offset, num_frames=1000)
        expected = torch.from_numpy(full[offset : offset + 1000].T.copy())
        torch.testing.assert_close(window, expected, rtol=0, atol=1e-6)


MP3_TOL = 1e-6  # seeking in MP3 lands on the exact sample; values differ by float rounding (<= 1.8e-7 seen)


def test_mp3_window_near_start_matches_sequential_decode(shared_data: Path):
    path = shared_data / "audio" / "machine_wars.mp3"
    with sf.SoundFile(path) as handle:  # decoded from frame 0, no seek
        head = handle.read(20000, dtype="float32", always_2d=True)
    window, rate = load_audio(path, channel=None, offset=12345, num_frames=5003)
    assert rate == 22050 and window.shape == (2, 5003)
    torch.testing.assert_close(window, torch.from_numpy(head[12345:17348].T.copy()), rtol=0, atol=MP3_TOL)


def test_mp3_windows_mid_and_end_match_a_decode_started_elsewhere(shared_data: Path):
    path = shared_data / "audio" / "machine_wars.mp3"
    end = decoded_frames(path)
    for offset in (3_203_117, end - 5003):
        lead = 44100  # two seconds of MP3 frames decoded before the window in the longer read
        longer, _ = load_audio(path, channel=None, offset=offset - lead, num_frames=lead + 5003)
        window, _ = load_audio(path, channel=None, offset=offset, num_frames=5003)
        assert window.shape == (2, 5003)
        torch.testing.assert_close(window, longer[:, lead:], rtol=0, atol=MP3_TOL)


def test_mp3_header_overstates_length_and_reads_stop_at_the_decoded_end(shared_data: Path):
    path = shared_data / "audio" / "machine_wars.mp3"
    info = audio_info(path)
    end = decoded_frames(path)
    assert info[0] == 22050 and info[2] == 2 and info[3] == "MP3"
    assert 6_300_000 < end < info.frames  # README: about 6.4 M samples; the header estimate is larger
    last, _ = load_audio(path, offset=end - 1000, num_frames=1000)
    assert last.shape == (1, 1000)
    short, _ = load_audio(path, offset=end - 500, num_frames=1000)
    assert short.shape == (1, 500)
    torch.testing.assert_close(short, last[:, 500:], rtol=0, atol=MP3_TOL)
    with pytest.raises(InputError, match="machine_wars.mp3: no audio decoded"):
        load_audio(path, offset=end, num_frames=10)


@pytest.mark.parametrize(("orig", "new"), [(8000, 16000), (8000, 22050), (22050, 16000)])
def test_resampling_changes_length_by_the_ratio_and_keeps_the_tone(tmp_path: Path, orig: int, new: int):
    frames = 4001
    t = np.arange(frames) / orig
    path = tmp_path / "tone.wav"
    sf.write(path, (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), orig, subtype="FLOAT")
    wave, rate = load_audio(path, sample_rate=new)
    assert rate == new and wave.shape == (1, math.ceil(frames * new / orig))
    torch.testing.assert_close(wave, AF.resample(load_audio(path)[0], orig, new), rtol=0, atol=1e-4)
    inner = torch.arange(200, wave.shape[1] - 200)  # away from the zero-padded edges
    expected = 0.5 * torch.sin(2 * math.pi * 300 * inner.double() / new)
    torch.testing.assert_close(wave[0, inner].double(), expected, rtol=0, atol=2e-3)


def test_values_are_clipped_to_full_scale(tmp_path: Path):
    path = tmp_path / "hot.wav"
    sf.write(path, np.array([0.5, 1.5, -2.0, -0.25], dtype=np.float32), RATE, subtype="FLOAT")
    wave, _ = load_audio(path)
    torch.testing.assert_close(wave[0], torch.tensor([0.5, 1.0, -1.0, -0.25]), rtol=0, atol=0)


def test_bundled_clip_loads():
    path = Path(str(files("seqssm.data").joinpath("fsdd_7_jackson_32.wav")))
    wave, rate = load_audio(path)
    assert rate == 8000 and wave.shape == (1, 4301)
    assert 0.2 < float(wave.abs().max()) < 1.0  # a spoken digit, not silence


def _write_bad(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.wav"
    sf.write(good, _stereo(), RATE, subtype="PCM_16")
    wav = good.read_bytes()
    flac = tmp_path / "good.flac"
    sf.write(flac, _stereo(), RATE)
    paths = {
        "truncated": (tmp_path / "truncated.wav", wav[: len(wav) // 2]),
        "truncated_header": (tmp_path / "header.wav", wav[:30]),
        "garbage": (tmp_path / "garbage.wav", np.random.default_rng(0).bytes(3000)),
        "empty": (tmp_path / "empty.wav", b""),
        "corrupt_flac": (tmp_path / "corrupt.flac", flac.read_bytes()[:300] + bytes(3000)),
        "unsupported": (tmp_path / "notes.xyz", b"not audio at all"),
    }
    for path, data in paths.values():
        path.write_bytes(data)
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros((0, 1), np.float32), RATE)
    return {name: path for name, (path, _) in paths.items()} | {"zero": zero, "good": good}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("truncated", "truncated.wav: truncated: the header declares 24028 bytes"),
        ("truncated_header", "header.wav: cannot decode as WAV"),
        ("garbage", "garbage.wav: cannot decode as WAV .Format not recognised"),
        ("empty", "empty.wav: the file is empty"),
        ("corrupt_flac", "corrupt.flac: .*corrupt"),
        ("unsupported", r"notes.xyz: unsupported audio format '\.xyz'"),
        ("zero", "zero.wav: the audio clip has no frames"),
    ],
)
def test_bad_files_raise_input_error_naming_the_file(tmp_path: Path, case: str, message: str):
    path = _write_bad(tmp_path)[case]
    with pytest.raises(InputError, match=message):
        load_audio(path)
    if case not in ("zero", "corrupt_flac"):  # audio_info reads the header only
        with pytest.raises(InputError, match=path.name):
            audio_info(path)


def test_missing_file_and_directory(tmp_path: Path):
    with pytest.raises(InputError, match="nope.wav: audio file not found"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(InputError, match="is a directory"):
        audio_info(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_rate": 0}, "sample_rate .Hz. must be at least 1, got 0"),
        ({"sample_rate": -16000}, "sample_rate .Hz. must be at least 1"),
        ({"sample_rate": 16000.5}, "sample_rate .Hz. must be an integer"),
        ({"channel": 2}, "channel 2 asked for, the file has 2"),
        ({"channel": "left"}, "channel .* must be an integer"),
        ({"offset": -1}, "offset .frames. must be at least 0"),
        ({"offset": FRAMES}, f"offset {FRAMES} is past the end"),
        ({"offset": FRAMES - 10, "num_frames": 11}, "runs past the end of the file"),
        ({"num_frames": 0}, "num_frames must be at least 1"),
    ],
)
def test_bad_arguments_raise_input_error(stereo_wav: Path, kwargs: dict, message: str):
    with pytest.raises(InputError, match=message) as caught:
        load_audio(stereo_wav, **kwargs)
    assert "stereo.wav" in str(caught.value) and "\n" not in str(caught.value)


def test_decoded_frames_equals_header_for_wav(stereo_wav: Path):
    assert decoded_frames(stereo_wav) == FRAMES
