"""μ-law and linear quantisation: derived error bounds, fixed points, clipping, modules, AudioTokenizer."""

from __future__ import annotations

import math
from importlib.resources import files
from pathlib import Path

import pytest
import torch

from seqssm.datasets.audio import load_audio
from seqssm.errors import InputError
from seqssm.transforms import (
    AudioTokenizer,
    LinearDecode,
    LinearEncode,
    MuLawDecode,
    MuLawEncode,
    linear_decode,
    linear_encode,
    mu_law_decode,
    mu_law_encode,
)

# Decoding runs in float32 (torchaudio casts ids to float): a few ulps near full scale, amplified by the
# exp in the μ-law expansion, sit on top of the exact bounds below.
FLOAT_SLACK = 2e-6


def _grid() -> torch.Tensor:
    return torch.cat([torch.linspace(-1, 1, 400_001), torch.rand(10_007) * 2 - 1])


def _mu_law_bound(x: torch.Tensor, mu: int) -> torch.Tensor:
    # The companded value is off by at most 1/μ after rounding; expanding F(|x|) + 1/μ gives this bound.
    return (x.abs() + 1 / mu) * ((1 + mu) ** (1 / mu) - 1)


@pytest.mark.parametrize("channels", [4, 256, 65536])
def test_mu_law_round_trip_within_the_derived_bound_and_the_bound_is_tight(channels: int):
    x = _grid()
    error = (mu_law_decode(mu_law_encode(x, channels), channels) - x).abs()
    bound = _mu_law_bound(x, channels - 1)
    assert bool((error <= bound + FLOAT_SLACK).all())
    assert float((error / bound).max()) > 0.95


def test_mu_law_8_bit_worst_case_numbers():
    x = _grid()
    error = (mu_law_decode(mu_law_encode(x)) - x).abs()
    worst = (1 + 1 / 255) * (256 ** (1 / 255) - 1)  # the bound at full scale, 0.0221
    assert 0.95 * worst < float(error.max()) <= worst + FLOAT_SLACK
    quiet = x.abs() < 0.01  # companding spends its levels near silence: there it beats linear tenfold
    assert float(error[quiet].max()) < 1 / 255 / 10


@pytest.mark.parametrize("channels", [2, 256, 65536])
def test_linear_round_trip_within_half_a_step_and_the_bound_is_tight(channels: int):
    x = _grid()
    error = (linear_decode(linear_encode(x, channels), channels) - x).abs()
    half_step = 1 / (channels - 1)  # levels 2k/(Q-1) - 1, so half the spacing is 1/(Q-1)
    assert bool((error <= half_step + FLOAT_SLACK).all())
    assert float(error.max()) > 0.99 * half_step


@pytest.mark.parametrize(
    ("encode", "decode"), [(mu_law_encode, mu_law_decode), (linear_encode, linear_decode)]
)
def test_levels_are_fixed_points_and_ends_map_to_the_extreme_ids(encode, decode):
    ids = torch.arange(256)
    torch.testing.assert_close(encode(decode(ids)), ids, rtol=0, atol=0)
    out = encode(torch.tensor([-1.0, 1.0, -7.5, 3.0, 0.0]))
    assert out.dtype == torch.int64 and out.tolist() == [0, 255, 0, 255, 128]


def test_linear_encode_matches_a_plain_python_reference_on_random_values():
    x = torch.rand(2000, dtype=torch.float64) * 2 - 1
    expected = torch.tensor([math.floor((v + 1) / 2 * 255 + 0.5) for v in x.tolist()])
    torch.testing.assert_close(linear_encode(x), expected, rtol=0, atol=0)


def test_modules_match_functions_and_keep_shape():
    x = torch.rand(3, 2, 777) * 2 - 1
    for encoder, decoder, encode, decode in [
        (MuLawEncode(64), MuLawDecode(64), mu_law_encode, mu_law_decode),
        (LinearEncode(64), LinearDecode(64), linear_encode, linear_decode),
    ]:
        ids = encoder(x)
        assert ids.shape == x.shape and ids.dtype == torch.int64
        torch.testing.assert_close(ids, encode(x, 64), rtol=0, atol=0)
        torch.testing.assert_close(decoder(ids), decode(ids, 64), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["mulaw", "linear"])
def test_tokenizer_vocab_pad_and_round_trip(kind: str):
    tok = AudioTokenizer(kind, bits=8)
    assert tok.vocab_size == 256 and tok.pad_id == 128
    silence = float(tok.decode(torch.tensor([tok.pad_id]))[0])
    assert abs(silence) <= (_mu_law_bound(torch.tensor(0.0), 255) if kind == "mulaw" else 1 / 255) + 1e-7
    wave = torch.rand(2, 1001) * 2 - 1
    ids = tok.encode(wave)
    assert ids.dtype == torch.int64 and ids.shape == wave.shape
    assert int(ids.min()) >= 0 and int(ids.max()) < tok.vocab_size
    error = (tok.decode(ids) - wave).abs()
    bound = _mu_law_bound(wave, 255) if kind == "mulaw" else torch.full_like(wave, 1 / 255)
    assert bool((error <= bound + FLOAT_SLACK).all())
    assert AudioTokenizer.from_name(tok.name).name == tok.name == f"{kind}8"


def test_mu_law_beats_linear_on_real_speech_at_8_bits():
    path = Path(str(files("seqssm.data").joinpath("fsdd_7_jackson_32.wav")))
    wave = load_audio(path)[0][0]
    snr = {}
    for kind in ("mulaw", "linear"):
        tok = AudioTokenizer(kind, bits=8)
        noise = tok.decode(tok.encode(wave)) - wave
        snr[kind] = 10 * math.log10(float(wave.pow(2).sum()) / float(noise.pow(2).sum()))
    assert snr["mulaw"] > snr["linear"] + 3


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: AudioTokenizer("alaw"), "kind 'alaw' is not one of"),
        (lambda: AudioTokenizer("mulaw", bits=0), "bits must be an integer from 1 to 16"),
        (lambda: AudioTokenizer("mulaw", bits=17), "bits must be an integer from 1 to 16"),
        (lambda: AudioTokenizer("linear", bits=True), "bits must be an integer"),
        (lambda: AudioTokenizer.from_name("mulaw"), "is not a kind and bit count"),
        (lambda: AudioTokenizer().decode(torch.tensor([0, 256])), r"ids must lie in \[0, 256\)"),
        (lambda: AudioTokenizer().decode(torch.tensor([-1])), r"got \[-1, -1\]"),
        (lambda: AudioTokenizer().decode(torch.tensor([0.5])), "expected integer ids"),
        (lambda: AudioTokenizer().encode(torch.tensor([1, 2])), "expected a float waveform"),
        (lambda: AudioTokenizer().encode(torch.tensor([0.1, float("nan")])), "NaN or infinite"),
    ],
)
def test_tokenizer_input_errors(make, message: str):
    with pytest.raises(InputError, match=message):
        make()
