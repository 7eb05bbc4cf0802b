"""Streaming embeddings of real chromosomes and reads (resume after an interrupt), streamed audio scores."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqssm.config import MambaConfig
from seqssm.datasets.audio import load_audio
from seqssm.datasets.audio_stream import ResampledWindows
from seqssm.datasets.fasta import FastaFile
from seqssm.datasets.reads import iter_reads
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel
from seqssm.pipelines.stream_embed import (
    StreamAudioConfig,
    StreamEmbedConfig,
    stream_audio,
    stream_embed,
)
from seqssm.tokenizers import get_tokenizer
from seqssm.transforms import AudioTokenizer


def _save_model(path, **kw) -> MambaLMHeadModel:
    config = MambaConfig(**{"d_model": 16, "n_layer": 2, "vocab_size": 10, "d_state": 4, **kw})
    model = MambaLMHeadModel(config, impl="chunked")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path)
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("ckpt")
    return path, _save_model(path)


class Interrupt(Exception):
    pass


def _stop_after(k):
    def hook(chunk, position):
        if chunk == k - 1:
            raise Interrupt(position)

    return hook


def test_resume_after_interrupt_gives_the_uninterrupted_file(checkpoint, shared_data, tmp_path):
    ckpt, model = checkpoint
    fasta = shared_data / "dna" / "ce_chrI_1mb.fa"
    common = dict(checkpoint=str(ckpt), source=str(fasta), record="CHROMOSOME_I", start=500_000, end=501_003,
                  chunk_size=128, device="cpu")
    whole = stream_embed(StreamEmbedConfig(out=str(tmp_path / "whole"), **common))
    out = str(tmp_path / "resumed")
    with pytest.raises(Interrupt):
        stream_embed(StreamEmbedConfig(out=out, **common), on_chunk=_stop_after(3), save_every_s=0)
    assert not (tmp_path / "resumed" / "index.tsv").exists()
    assert (tmp_path / "resumed" / "stream_state.safetensors").exists()
    with pytest.raises(Interrupt):  # a second interruption, from the resumed position
        stream_embed(StreamEmbedConfig(out=out, **common), on_chunk=_stop_after(2), save_every_s=0)
    resumed = stream_embed(StreamEmbedConfig(out=out, **common))
    assert resumed.resumed_from == 5 * 128
    assert (tmp_path / "whole" / "embeddings.npy").read_bytes() == (tmp_path / "resumed" /
                                                                     "embeddings.npy").read_bytes()
    assert not (tmp_path / "resumed" / "stream_state.safetensors").exists()
    index = (tmp_path / "resumed" / "index.tsv").read_text().splitlines()
    assert index == ["id\trecord\tstart\tend\toffset",
                     "CHROMOSOME_I:500001-501003\tCHROMOSOME_I\t500000\t501003\t0"]
    # a finished job is not redone; a different job in the same folder is refused
    assert stream_embed(StreamEmbedConfig(out=out, **common)).resumed_from == 1003
    with pytest.raises(InputError, match="another job"):
        stream_embed(StreamEmbedConfig(out=out, **{**common, "chunk_size": 64}))

    # the streamed rows are the one-pass hidden states of the same bases
    bases = FastaFile(fasta).fetch("CHROMOSOME_I", 500_000, 501_003)
    ids = torch.as_tensor(get_tokenizer("nucleotide").encode(bases))[None]
    with torch.no_grad():
        expected = model.backbone(ids)[0].numpy()
    got = np.load(whole.embeddings, mmap_mode="r")
    assert got.dtype == np.float16 and got.shape == (1003, 16)
    np.testing.assert_allclose(got.astype(np.float32), expected, rtol=2e-3, atol=2e-3)


def test_no_resume_starts_over(checkpoint, shared_data, tmp_path):
    ckpt, _ = checkpoint
    common = dict(checkpoint=str(ckpt), source=str(shared_data / "dna" / "ce_chrI_1mb.fa"),
                  record="CHROMOSOME_II", end=300, chunk_size=100, device="cpu", out=str(tmp_path))
    with pytest.raises(Interrupt):
        stream_embed(StreamEmbedConfig(**common), on_chunk=_stop_after(1), save_every_s=0)
    with pytest.raises(InputError, match="--overwrite"):  # starting over deletes the interrupted run's rows
        stream_embed(StreamEmbedConfig(resume=False, **common))
    assert stream_embed(StreamEmbedConfig(resume=False, overwrite=True, **common)).resumed_from == 0
    job = json.loads((tmp_path / "stream.json").read_text())
    assert (job["record"], job["start"], job["end"], job["chunk_size"]) == ("CHROMOSOME_II", 0, 300, 100)


def test_megabase_read_from_a_bam(checkpoint, shared_data, tmp_path):
    """The tail of the 1,000,647 bp read of ce_large_seq.bam, found by name among the file's reads."""
    ckpt, model = checkpoint
    bam = shared_data / "dna" / "ce_large_seq.bam"
    result = stream_embed(StreamEmbedConfig(checkpoint=str(ckpt), source=str(bam), record="S1", start=999_000,
                                            chunk_size=256, device="cpu", out=str(tmp_path / "read")))
    assert (result.record, result.start, result.end) == ("S1", 999_000, 1_000_647)
    with iter_reads(bam) as reads:
        (read,) = [r for r in reads if r.name == "S1"]
    ids = torch.as_tensor(get_tokenizer("nucleotide").encode(read.sequence[999_000:]))[None]
    with torch.no_grad():
        expected = model.backbone(ids)[0].numpy()
    np.testing.assert_allclose(np.load(result.embeddings).astype(np.float32), expected, rtol=2e-3, atol=2e-3)


def test_source_errors(checkpoint, shared_data, tmp_path):
    ckpt, _ = checkpoint
    dna = shared_data / "dna"
    base = dict(checkpoint=str(ckpt), device="cpu", out=str(tmp_path))
    with pytest.raises(InputError, match="pass --region"):
        stream_embed(StreamEmbedConfig(source=str(dna / "ce_large_seq.bam"), **base))
    with pytest.raises(InputError, match="pass --region"):
        stream_embed(StreamEmbedConfig(source=str(dna / "ce_chrI_1mb.fa"), **base))
    with pytest.raises(InputError, match="CHROMOSOME_Z"):
        stream_embed(StreamEmbedConfig(source=str(dna / "ce_chrI_1mb.fa"), record="CHROMOSOME_Z", **base))
    with pytest.raises(InputError, match="past the end"):
        stream_embed(StreamEmbedConfig(source=str(dna / "ce_chrI_1mb.fa"), record="CHROMOSOME_II", end=5001,
                                       **base))
    with pytest.raises(InputError, match="chunk-size"):
        StreamEmbedConfig(source="x.fa", chunk_size=0, **base)
    bidirectional = tmp_path / "bi"
    _save_model(bidirectional, bidirectional=True)
    with pytest.raises(InputError, match="causal"):
        stream_embed(StreamEmbedConfig(**{**base, "checkpoint": str(bidirectional)},
                                       source=str(dna / "ce_chrI_1mb.fa"), record="CHROMOSOME_II"))


# ------------------------------------------------------------------------------------------ audio


@pytest.fixture(scope="module")
def audio_checkpoint(tmp_path_factory):
    torch.manual_seed(2)
    path = tmp_path_factory.mktemp("audio_ckpt")
    return path, _save_model(path, vocab_size=256, tokenizer="mulaw8")


def _one_pass_bits(model, tokens: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(tokens[None, :-1])[0]
    return (F.cross_entropy(logits, tokens[1:]) / math.log(2)).item()


def test_streamed_audio_score_equals_one_pass_on_an_mp3_slice(audio_checkpoint, shared_data, tmp_path, probes):
    ckpt, model = audio_checkpoint
    mp3 = shared_data / "audio" / "machine_wars.mp3"
    offset, frames = 2_000_000, 6_000
    result = stream_audio(StreamAudioConfig(checkpoint=str(ckpt), audio=str(mp3), out=str(tmp_path),
                                            offset=offset, num_frames=frames, window_seconds=0.05,
                                            chunk_size=300, embeddings=True, device="cpu"))
    assert (result.samples, result.sample_rate) == (frames, 22050)
    wave, _ = load_audio(mp3, offset=offset, num_frames=frames)
    tokens = AudioTokenizer("mulaw", 8).encode(wave[0])
    # seeked MP3 windows differ from one decode by float rounding, which can move a rare token by one step
    assert result.bits_per_sample == pytest.approx(_one_pass_bits(model, tokens), abs=2e-3)
    with torch.no_grad():
        hidden = model.backbone(tokens[None])[0].numpy()
    np.testing.assert_allclose(np.load(result.embeddings).astype(np.float32), hidden, atol=0.05)
    rows = (tmp_path / "scores.tsv").read_text().splitlines()
    assert rows[0] == "second\tstart_sample\tsamples\tbits_per_sample"
    assert [int(r.split("\t")[2]) for r in rows[1:]] == [frames - 1]
    assert probes == []  # every chunk's logits are checked for NaN / inf instead


def test_streamed_audio_at_the_model_rate_equals_resampling_the_whole_slice(audio_checkpoint, shared_data):
    """Windows resampled with aligned margins give exactly the samples of one resample of the slice."""
    wav = shared_data / "audio" / "fsdd" / "0_jackson_0.wav"
    wave, rate = load_audio(wav)
    for target in (16_000, 5_000):
        windows = ResampledWindows(str(wav), 100, wave.shape[1], rate, target, window_frames=1_000)
        got = torch.cat(list(windows))
        whole, _ = load_audio(wav, sample_rate=target, offset=100)
        assert got.shape == whole[0].shape
        torch.testing.assert_close(got, whole[0], rtol=0, atol=1e-6)


def test_streamed_wav_score_with_resampling_matches_one_pass(tmp_path, shared_data):
    torch.manual_seed(3)
    ckpt = tmp_path / "ckpt"
    model = _save_model(ckpt, vocab_size=256, tokenizer="mulaw8", sample_rate=6_000)
    wav = shared_data / "audio" / "fsdd" / "3_theo_7.wav"
    result = stream_audio(StreamAudioConfig(checkpoint=str(ckpt), audio=str(wav), out=str(tmp_path / "o"),
                                            window_seconds=0.1, chunk_size=257, device="cpu"))
    wave, _ = load_audio(wav, sample_rate=6_000)
    tokens = AudioTokenizer("mulaw", 8).encode(wave[0])
    assert result.samples == tokens.shape[0]
    assert result.bits_per_sample == pytest.approx(_one_pass_bits(model, tokens), rel=1e-5)


def _random_fasta(path, length, seed=0):
    rng = np.random.default_rng(seed)
    path.write_text(">c\n" + "".join(rng.choice(list("ACGT"), length)) + "\n")
    return str(path)


def test_save_interval_and_padding_keep_the_bytes(checkpoint, tmp_path):
    """Saving states only at the interval (here: never before the end) writes the same bytes as saving after
    every chunk; the padded last chunk is the one-pass rows; the timings are filled; no state is left."""
    from seqssm.pipelines.stream_embed import StreamTimings

    ckpt, model = checkpoint
    fasta = _random_fasta(tmp_path / "c.fa", 301)
    calls, timings = [], StreamTimings()
    common = dict(checkpoint=str(ckpt), source=fasta, chunk_size=64, device="cpu")
    rare = stream_embed(StreamEmbedConfig(out=str(tmp_path / "rare"), **common), timings=timings,
                        on_chunk=lambda k, e: calls.append((k, e)))
    assert calls == [(4, 301)]  # only after the last chunk: 5 chunks (64 × 4 + 45, padded to 64)
    every = stream_embed(StreamEmbedConfig(out=str(tmp_path / "every"), **common), save_every_s=0)
    assert rare.embeddings.read_bytes() == every.embeddings.read_bytes()
    assert len(timings.chunks) == 5 and timings.read > 0 and timings.launch > 0 and timings.save == 0
    assert not (tmp_path / "rare" / "stream_state.safetensors").exists()
    ids = torch.as_tensor(get_tokenizer("nucleotide").encode(open(fasta).read().split()[1]))[None]
    with torch.no_grad():
        expected = model.backbone(ids)[0].numpy()
    np.testing.assert_allclose(np.load(rare.embeddings).astype(np.float32), expected, rtol=2e-3, atol=2e-3)


@pytest.fixture()
def probes(monkeypatch):
    """Counts the probe forwards of ``load_checked`` (``pipelines.common.probe_model``), still running them."""
    import seqssm.pipelines.common as common

    calls, probe = [], common.probe_model
    monkeypatch.setattr(common, "probe_model", lambda model, ckpt: (calls.append(ckpt), probe(model, ckpt))[1])
    return calls


def _broken(path) -> str:
    """A checkpoint of finite weights (so it loads) whose outputs overflow to inf / NaN."""
    model = _save_model(path)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1e38)
    model.save_pretrained(path)
    return str(path)


def test_non_finite_outputs_are_refused_and_leave_nothing(tmp_path, probes):
    """No probe forward: the first chunk's finiteness check refuses the checkpoint, and nothing is left."""
    fasta = _random_fasta(tmp_path / "c.fa", 100)
    with pytest.raises(InputError, match="non-finite outputs .* for c:1-32: its weights are broken"):
        stream_embed(StreamEmbedConfig(checkpoint=_broken(tmp_path / "bad"), source=fasta, chunk_size=32,
                                       device="cpu", out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()
    assert probes == []


def test_cli_stream_runs_no_probe_and_a_broken_checkpoint_exits_2(checkpoint, tmp_path, probes, capsys, monkeypatch):
    """``seqssm embed --per-position --stream`` never runs the probe forward of load_checked (it would load a
    second set of GPU kernels); its rows are byte for byte those of a run with the probe; a checkpoint whose
    outputs are not finite still stops with one line and exit code 2."""
    from cli_harness import run_cli

    import seqssm.pipelines.stream_embed as se

    ckpt, _ = checkpoint
    fasta = _random_fasta(tmp_path / "c.fa", 301)
    args = ["embed", ckpt, fasta, "--per-position", "--stream", "--chunk-size", "64", "--device", "cpu", "--out"]
    assert run_cli([*args, tmp_path / "plain"], capsys, monkeypatch)[0] == 0
    assert probes == []
    load = se.load_checked
    monkeypatch.setattr(se, "load_checked", lambda *a, probe, **kw: load(*a, probe=True, **kw))
    assert run_cli([*args, tmp_path / "probed"], capsys, monkeypatch)[0] == 0
    assert probes == [str(ckpt)]  # the patched run did probe, and it changes no byte
    assert (tmp_path / "plain" / "embeddings.npy").read_bytes() == (tmp_path / "probed" / "embeddings.npy").read_bytes()
    monkeypatch.setattr(se, "load_checked", load)
    code, err = run_cli(["embed", _broken(tmp_path / "bad"), fasta, "--per-position", "--stream", "--chunk-size", "64",
                         "--device", "cpu", "--out", tmp_path / "bad_out"], capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith("gives non-finite outputs (NaN or inf) for c:1-64: its weights are "
                                                  "broken (a diverged run or a damaged file); train it again or "
                                                  "restore a good copy")
    assert not (tmp_path / "bad_out").exists()


def test_attention_models_refuse_a_region_past_their_key_budget_up_front(tmp_path):
    _save_model(tmp_path / "hybrid", layers="MA", n_heads=2, attn_max_len=64)
    fasta = _random_fasta(tmp_path / "c.fa", 100)
    common = dict(checkpoint=str(tmp_path / "hybrid"), source=fasta, chunk_size=16, device="cpu")
    with pytest.raises(InputError, match="--attn-max-len.*shorter --region"):
        stream_embed(StreamEmbedConfig(out=str(tmp_path / "long"), **common))
    assert not (tmp_path / "long").exists()
    assert stream_embed(StreamEmbedConfig(out=str(tmp_path / "short"), end=64, **common)).end == 64
