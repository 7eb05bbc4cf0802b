"""The log-mel front end of audio classifiers (seqssm.models.frontends, `finetune --frontend logmel`).

Frames against an stft + mel filterbank reference, shapes and masks, rows batched equal rows alone, the
classifier's save / load round trip (same logits, no filterbank in the checkpoint), finetune → predict and
embed on a log-mel checkpoint, and bad values.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from safetensors.torch import load_file

from seqssm.config import MambaConfig
from seqssm.datasets.predictions import read_predictions
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel
from seqssm.models.frontends import (
    LOG_FLOOR,
    LOGMEL_BANDS,
    LogMelEmbedding,
    log_mel_frames,
    spectrogram_window,
)
from seqssm.models.heads import SequenceClassifier, TaskConfig, load_classifier
from seqssm.pipelines.configs_labelled import PredictConfig
from seqssm.pipelines.finetune import FinetuneConfig, finetune
from seqssm.pipelines.predict import predict

RATE = 8000


def reference_frames(wave: torch.Tensor, hop: int, n_mels: int) -> torch.Tensor:
    """One unpadded row [T] → [ceil(T / hop), F], from torch.stft and the mel filterbank directly."""
    n_fft = spectrogram_window(RATE)
    wave = wave / wave.abs().max()
    spec = torch.stft(wave, n_fft, hop, window=torch.hann_window(n_fft), center=True, pad_mode="constant",
                      return_complex=True).abs() ** 2  # [n_fft / 2 + 1, frames]
    fb = AF.melscale_fbanks(n_fft // 2 + 1, 0.0, RATE / 2, n_mels, RATE)  # [freqs, F]
    mel = fb.T @ spec
    return torch.log(mel + LOG_FLOOR).T[: -(-len(wave) // hop)]


def test_log_mel_frames_match_reference_and_padding_does_not_leak():
    torch.manual_seed(0)
    lengths = [1000, 517, 33, 80]
    wave = torch.randn(len(lengths), max(lengths)).mul(0.3)
    mask = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
    padded = torch.where(mask, wave, torch.full_like(wave, 7.0))  # what the padding holds must not matter
    frames, tokens = log_mel_frames(padded, mask, sample_rate=RATE, hop=16, n_mels=24)
    assert frames.shape == (4, 63, 24) and tokens.shape == (4, 63)
    assert tokens.sum(1).tolist() == [-(-n // 16) for n in lengths]
    for b, n in enumerate(lengths):
        alone = reference_frames(wave[b, :n], 16, 24)
        torch.testing.assert_close(frames[b, : len(alone)], alone, atol=1e-4, rtol=1e-4)
        assert not tokens[b, len(alone):].any()


def test_log_mel_embedding_shapes_and_bad_input():
    module = LogMelEmbedding(80, 12, sample_rate=RATE)
    embeds, mask = module(torch.randn(2, 801))
    assert embeds.shape == (2, 11, 12) and mask.all()
    assert sorted(module.state_dict()) == ["proj.bias", "proj.weight"]  # the filterbank is rebuilt, not saved
    with pytest.raises(InputError, match="float waveform"):
        module(torch.ones(2, 3, 4))
    with pytest.raises(InputError, match="attention_mask"):
        module(torch.randn(2, 50), torch.ones(2, 49, dtype=torch.bool))


def audio_lm(seed=0):
    torch.manual_seed(seed)
    config = MambaConfig(d_model=16, n_layer=1, vocab_size=256, d_state=4, expand=1, bidirectional=True,
                         tokenizer="mulaw8", sample_rate=RATE)
    return MambaLMHeadModel(config, impl="chunked")


def test_logmel_classifier_round_trip_gives_the_same_logits(tmp_path):
    task = TaskConfig(classes=["x", "y", "z"], modality="audio", patch_size=40, sample_rate=RATE,
                      frontend="logmel", n_mels=LOGMEL_BANDS)
    model = SequenceClassifier(audio_lm(), task).eval()
    torch.nn.init.normal_(model.head.weight)
    lengths = torch.tensor([400, 257])
    wave = torch.randn(2, 400)
    mask = torch.arange(400)[None] < lengths[:, None]
    logits = model(input_values=wave, attention_mask=mask)
    assert logits.shape == (2, 3)
    model.save_pretrained(tmp_path / "c")
    assert json.loads((tmp_path / "c" / "task.json").read_text())["frontend"] == "logmel"
    assert sorted(load_file(str(tmp_path / "c" / "head.safetensors"))) == [
        "head.bias", "head.weight", "patch.proj.bias", "patch.proj.weight"]
    loaded = load_classifier(tmp_path / "c").eval()
    assert loaded.task == task and isinstance(loaded.patch, LogMelEmbedding)
    torch.testing.assert_close(loaded(input_values=wave, attention_mask=mask), logits, atol=0, rtol=0)
    # A row alone gives what it gives in the padded batch.
    torch.testing.assert_close(loaded(input_values=wave[1:, :257]), logits[1:], atol=1e-5, rtol=1e-5)


def test_old_task_files_read_as_raw_and_bad_frontends():
    old = {"classes": ["a", "b"], "modality": "audio", "patch_size": 16, "sample_rate": RATE}
    assert TaskConfig.from_dict(old).frontend == "raw"
    with pytest.raises(InputError, match="frontend"):
        TaskConfig(**old, frontend="mfcc")
    with pytest.raises(InputError, match="frontend"):
        TaskConfig(classes=["a", "b"], frontend="logmel")  # DNA
    with pytest.raises(InputError, match="--frontend"):
        FinetuneConfig(data="x", out="y", modality="audio", frontend="mel")
    with pytest.raises(InputError, match="--frontend logmel"):
        FinetuneConfig(data="x", out="y", modality="dna", frontend="logmel")


def write_tones(folder, per_class=6):
    """8 kHz clips of 0.05-0.1 s in class folders: 'lo' a 300 Hz tone, 'hi' a 2 kHz one."""
    rng = np.random.default_rng(0)
    for label, freq in (("lo", 300), ("hi", 2000)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            n = int(rng.integers(400, 800))
            wave = 0.3 * np.sin(2 * np.pi * freq * np.arange(n) / RATE) + 0.01 * rng.standard_normal(n)
            sf.write(folder / label / f"{label}{i}.wav", wave.astype(np.float32), RATE, subtype="PCM_16")
    return folder


def test_finetune_logmel_then_predict_and_embed(tmp_path):
    data = write_tones(tmp_path / "clips")
    result = finetune(FinetuneConfig(
        data=str(data), out=str(tmp_path / "run"), modality="audio", frontend="logmel", patch_size=40,
        clip_seconds=0.05, d_model=16, n_layer=1, d_state=4, expand=1, epochs=2, batch_size=4, warmup_steps=1,
        device="cpu", impl="chunked"))
    model = load_classifier(result.checkpoint)
    assert model.task.frontend == "logmel" and model.task.patch_size == 40
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["config"]["frontend"] == "logmel" and record["task"]["frontend"] == "logmel"
    predict(PredictConfig(checkpoint=str(result.checkpoint), data=str(data), out=str(tmp_path / "p.tsv"),
                          device="cpu"))
    preds = read_predictions(tmp_path / "p.tsv")
    assert len(preds.ids) == 12 and set(preds.classes) == {"hi", "lo"}
    # The test rows predicted again from the checkpoint: the probabilities finetune wrote.
    own = read_predictions(tmp_path / "run" / "test_predictions.tsv")
    again = {i: p for i, p in zip(preds.ids, preds.probs, strict=True)}
    np.testing.assert_allclose(np.stack([again[i] for i in own.ids]), own.probs, atol=1e-5)
    from seqssm.embedder import Embedder

    vectors = Embedder(result.checkpoint, device="cpu").embed_audio(
        [str(data / "lo" / "lo0.wav")], sample_rate=RATE)
    assert vectors.shape == (1, 16) and np.isfinite(np.asarray(vectors)).all()
