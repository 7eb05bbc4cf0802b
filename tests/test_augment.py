"""Waveform augmentation, the weight average and the deadline schedule of fine-tuning, and the
MLM-pretrain → flatten fine-tune chain."""

from __future__ import annotations

import csv
import json
import math
import random
from importlib.resources import files

import numpy as np
import pytest
import torch
from tiny_data import tone_clips
from typer.testing import CliRunner

from seqssm.datasets.training_sets import AudioTrainClips
from seqssm.errors import InputError
from seqssm.models import load_model
from seqssm.models.heads import load_classifier
from seqssm.pipelines import finetune as finetune_module
from seqssm.pipelines.ema import WeightEMA
from seqssm.pipelines.finetune import (
    FinetuneConfig,
    FinetuneResult,
    _load_data,
    _loaders,
    _pooling_of,
    _task,
    finetune,
)
from seqssm.pipelines.pretrain import PretrainConfig, pretrain
from seqssm.pipelines.train_utils import cosine_schedule
from seqssm.transforms import SPEED_GRID, WaveformAugment, augment_waveform

OFF = {"speed": 0.0, "shift": 0.0, "time_masks": 0, "mask_fraction": 0.0, "noise_prob": 0.0}
TINY = {"d_model": 16, "n_layer": 1, "d_state": 4, "expand": 1, "device": "cpu", "impl": "chunked",
        "warmup_steps": 2, "batch_size": 4}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tone(freq: float = 500.0, n: int = 8000, rate: int = 8000) -> torch.Tensor:
    return 0.5 * torch.sin(2 * math.pi * freq * torch.arange(n) / rate)


def peak_hz(wave: torch.Tensor, rate: int = 8000) -> float:
    spectrum = torch.fft.rfft(wave * torch.hann_window(len(wave), periodic=False)).abs()
    return float(spectrum.argmax()) * rate / len(wave)


# ---------------------------------------------------------------- augment_waveform


def test_all_steps_off_is_a_copy_of_the_input():
    wave = torch.randn(1000, dtype=torch.float64)
    out = augment_waveform(wave, gen(0), **OFF)
    assert out.dtype == torch.float32 and torch.equal(out, wave.float())
    out[0] = 123.0
    assert wave[0] != 123.0


def test_same_seed_same_variant_other_seed_other_variant():
    wave = tone(n=4000) + 0.01 * torch.randn(4000)
    before = wave.clone()
    first, again, other = (augment_waveform(wave, gen(s), noise_prob=1.0) for s in (7, 7, 8))
    assert torch.equal(first, again)
    assert first.shape != other.shape or not torch.equal(first, other)
    assert torch.equal(wave, before)
    module = WaveformAugment(noise_prob=1.0)
    assert torch.equal(module(wave, gen(7)), first)


def test_speed_changes_duration_and_pitch_together():
    wave = tone(500.0, n=8000)
    lengths = set()
    for seed in range(40):
        out = augment_waveform(wave, gen(seed), **{**OFF, "speed": 0.1})
        factor = len(out) / len(wave)
        k = round(factor * SPEED_GRID)
        assert 36 <= k <= 44 and len(out) == math.ceil(len(wave) * k / SPEED_GRID)
        # Played at the same rate, a clip f times longer has its pitch divided by f (FFT bin of 1 Hz here).
        assert peak_hz(out) == pytest.approx(500.0 / factor, abs=1.5)
        lengths.add(len(out))
    assert len(lengths) >= 6


def test_shift_trims_or_pads_each_end_within_the_limit():
    wave = torch.arange(1, 1001, dtype=torch.float32)
    seen_pad, seen_trim = False, False
    for seed in range(30):
        out = augment_waveform(wave, gen(seed), **{**OFF, "shift": 0.1})
        real = out[out != 0]
        # The signal part is one contiguous, unchanged slice of the input; zeros only at the ends.
        assert torch.equal(real, wave[int(real[0]) - 1: int(real[-1])])
        lead = int((out != 0).nonzero()[0])
        tail = len(out) - 1 - int((out != 0).nonzero()[-1])
        assert lead <= 100 and tail <= 100 and int(real[0]) - 1 <= 100 and 1000 - int(real[-1]) <= 100
        seen_pad |= lead > 0 or tail > 0
        seen_trim |= real[0] > 1 or real[-1] < 1000
    assert seen_pad and seen_trim


def test_time_masks_zero_at_most_the_given_spans():
    wave = torch.rand(2000) + 1.0  # no zeros of its own
    for seed in range(20):
        out = augment_waveform(wave, gen(seed), **{**OFF, "time_masks": 3, "mask_fraction": 0.05})
        zeroed = out == 0
        assert out.shape == wave.shape and torch.equal(out[~zeroed], wave[~zeroed])
        assert int(zeroed.sum()) <= 3 * 100


def test_noise_at_the_drawn_snr():
    wave = tone(440.0, n=80_000)
    out = augment_waveform(wave, gen(1), **{**OFF, "noise_prob": 1.0, "snr_db": (20.0, 20.0)})
    snr = 10 * math.log10(float(wave.pow(2).mean() / (out - wave).pow(2).mean()))
    assert snr == pytest.approx(20.0, abs=0.2)
    never = augment_waveform(wave, gen(1), **{**OFF, "noise_prob": 0.0, "snr_db": (0.0, 0.0)})
    assert torch.equal(never, wave)


def test_bad_settings_and_inputs():
    with pytest.raises(InputError, match="speed"):
        augment_waveform(torch.zeros(10), speed=0.5)
    with pytest.raises(InputError, match="shift"):
        WaveformAugment(shift=-0.1)
    with pytest.raises(InputError, match="snr_db"):
        WaveformAugment(snr_db=(30.0, 10.0))
    with pytest.raises(InputError, match="time_masks"):
        WaveformAugment(time_masks=1.5)
    with pytest.raises(InputError, match=r"float waveform \[T\]"):
        augment_waveform(torch.zeros(2, 10))
    with pytest.raises(InputError, match=r"float waveform \[T\]"):
        augment_waveform(torch.zeros(10, dtype=torch.int64))


# ---------------------------------------------------------------- fine-tuning wiring


def write_clips(folder, per_class=6):
    """8 kHz clips of 0.05-0.1 s: class 'lo' a 300 Hz tone, 'hi' a 2 kHz tone."""
    return tone_clips(folder, (400, 800), per_class=per_class)


def train_dataset(cfg: FinetuneConfig):
    labels, splits, rate = _load_data(cfg)
    task = _task(cfg, labels, rate, None, _pooling_of(cfg, splits))  # --pooling auto resolved, as finetune does
    return _loaders(cfg, task, splits, rate, torch.device("cpu"))[0].dataset


def test_augment_is_off_by_default_and_the_flag_reaches_the_dataset(tmp_path):
    clips = str(write_clips(tmp_path / "clips"))
    assert FinetuneConfig(data="x", out="y").augment is False
    plain = train_dataset(FinetuneConfig(data=clips, out="y", modality="audio"))
    assert plain.augment is None
    augmented = train_dataset(FinetuneConfig(data=clips, out="y", modality="audio", augment=True))
    assert isinstance(augmented.augment, WaveformAugment)
    items = [augmented[i].data for i in range(4)]
    # Item i is a function of (seed, epoch, i): the same when read again, new in the next epoch.
    assert all(torch.equal(a, augmented[i].data) for i, a in enumerate(items))
    assert any(a.shape != plain[i].data.shape or not torch.equal(a, plain[i].data) for i, a in enumerate(items))
    augmented.set_epoch(1)
    assert any(a.shape != augmented[i].data.shape or not torch.equal(a, augmented[i].data)
               for i, a in enumerate(items))
    with pytest.raises(InputError, match="--augment perturbs waveforms"):
        FinetuneConfig(data="x", out="y", augment=True)
    with pytest.raises(InputError, match="--ema"):
        FinetuneConfig(data="x", out="y", ema=1.0)


def test_augment_seed_stream_is_apart_from_the_crop():
    # Same records, seeds and augmentation: the dataset's item equals the function applied with its seed.
    record_dir = files("seqssm.data") / "fsdd_7_jackson_32.wav"
    from seqssm.datasets.audio_sets import AudioRecord

    records = [AudioRecord("7_jackson_32", record_dir, "7")]
    data = AudioTrainClips(records, 8000, 2000, seed=3, augment=WaveformAugment())
    crop = AudioTrainClips(records, 8000, 2000, seed=3)
    seed = int(np.random.default_rng([3, 0, 0, 1]).integers(2**63))
    assert torch.equal(data[0].data, augment_waveform(crop[0].data, gen(seed)))


def test_cli_flags_reach_the_config(monkeypatch, tmp_path):
    from seqssm.cli import app

    seen = {}

    def fake(cfg):
        seen["cfg"] = cfg
        return FinetuneResult(checkpoint=tmp_path, metric="accuracy", best_value=1.0, best_step=1, steps=1,
                              seconds=0.0, sizes={})

    monkeypatch.setattr(finetune_module, "finetune", fake)
    clips = write_clips(tmp_path / "clips")
    result = CliRunner().invoke(app, ["finetune", str(clips), "--out", str(tmp_path / "o"), "--modality", "audio",
                                      "--augment", "--ema", "0.99"])
    assert result.exit_code == 0, result.output
    assert seen["cfg"].augment is True and seen["cfg"].ema == 0.99
    result = CliRunner().invoke(app, ["finetune", str(clips), "--out", str(tmp_path / "o"), "--modality", "audio"])
    assert result.exit_code == 0 and seen["cfg"].augment is False and seen["cfg"].ema is None


def test_augmented_audio_finetune_runs_and_is_reproducible(tmp_path):
    clips = write_clips(tmp_path / "clips")
    runs = [finetune(FinetuneConfig(data=str(clips), out=str(tmp_path / f"r{i}"), modality="audio", patch_size=8,
                                    epochs=2, augment=True, **TINY)) for i in range(2)]
    logs = [(tmp_path / f"r{i}" / "train_log.tsv").read_text().splitlines() for i in range(2)]
    assert [r.split("\t")[:-1] for r in logs[0]] == [r.split("\t")[:-1] for r in logs[1]]
    assert json.loads((tmp_path / "r0" / "run.json").read_text())["config"]["augment"] is True
    assert runs[0].test_metrics is not None


# ---------------------------------------------------------------- weight average


def test_weight_ema_follows_the_formula():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = WeightEMA(model, decay=0.9)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for n in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(4, 3))  # moves the BatchNorm running stats (float) and its counter (int)
        d = min(0.9, (1 + n) / (10 + n))
        for k, v in model.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v if v.is_floating_point() else v.clone()
        ema.update(model)
    for k, v in ema.model.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=1e-5, atol=1e-6)
    assert not ema.model.training and not any(p.requires_grad for p in ema.model.parameters())
    with pytest.raises(InputError, match="--ema"):
        WeightEMA(model, 0.0)


def test_ema_checkpoint_is_the_average(tmp_path):
    clips = write_clips(tmp_path / "clips")

    def run(name, ema):
        result = finetune(FinetuneConfig(data=str(clips), out=str(tmp_path / name), modality="audio", patch_size=8,
                                         epochs=2, lr=1e-2, ema=ema, **TINY))
        return load_classifier(result.checkpoint).state_dict()

    plain, nearly, averaged = run("plain", None), run("nearly", 1e-7), run("avg", 0.9)
    # A decay of ~0 tracks the weights themselves; 0.9 keeps a visibly different average.
    assert all(torch.allclose(plain[k], nearly[k], atol=1e-5) for k in plain)
    assert not torch.allclose(plain["head.weight"], averaged["head.weight"], atol=1e-4)


# ---------------------------------------------------------------- schedule


def _factor(warmup, total, **kw):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return cosine_schedule(optimizer, warmup, total, **kw).lr_lambdas[0]


def test_cosine_schedule_without_a_budget_follows_the_steps():
    factor = _factor(5, 55)
    assert factor(0) == pytest.approx(0.2) and factor(4) == pytest.approx(1.0)  # linear warm-up
    assert factor(5) == pytest.approx(1.0)
    assert factor(30) == pytest.approx(0.1 + 0.9 * 0.5)  # half the decay: the cosine's midpoint
    assert factor(55) == pytest.approx(0.1) and factor(80) == pytest.approx(0.1)  # the floor, and it stays


def test_cosine_schedule_follows_the_clock_when_it_is_further_along():
    now = [0.0]
    factor = _factor(2, 1000, start=0.0, seconds=100.0, clock=lambda: now[0])
    assert factor(0) == 0.5  # warm-up counts steps only
    now[0] = 50.0
    assert factor(10) == pytest.approx(0.1 + 0.9 * 0.5)  # half the time gone: the cosine's midpoint
    assert factor(900) == pytest.approx(_factor(2, 1000)(900))  # steps further along than time
    now[0] = 150.0
    assert factor(10) == pytest.approx(0.1)


# ---------------------------------------------------------------- MLM pretraining → flatten fine-tuning


def fixed_length_table(path, n=40, length=30, seed=0):
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(("sequence", "label", "id"))
        for i in range(n):
            seq = "".join(rng.choice("ACGT") for _ in range(length))
            if i % 2:
                seq = seq[:10] + "TATAAT" + seq[16:]
            writer.writerow((seq, str(i % 2), f"p{i}"))
    return str(path)


def test_mlm_pretrained_backbone_fine_tunes_with_flatten_pooling(tmp_path):
    genome = str(files("seqssm.data") / "lambda_phage.fa.gz")
    pre = pretrain(PretrainConfig(data=genome, out=str(tmp_path / "mlm"), objective="mlm", bidirectional=True,
                                  d_model=16, n_layer=2, d_state=4, expand=1, window=64, batch_size=4, steps=4,
                                  val_every=2, val_windows=4, device="cpu", impl="chunked"))
    table = fixed_length_table(tmp_path / "prom.tsv")
    result = finetune(FinetuneConfig(data=table, out=str(tmp_path / "ft"), init_from=str(pre.checkpoint),
                                     pooling="flatten", epochs=1, lr=1e-12, weight_decay=0.0, dropout=0.2,
                                     device="cpu", impl="chunked", batch_size=8))
    model = load_classifier(result.checkpoint)
    backbone = load_model(pre.checkpoint)
    assert model.config.to_dict() == backbone.config.to_dict() and model.config.bidirectional
    assert model.task.length == 30 and model.feature_dim == 30 * 16
    # At a learning rate of ~0 the fine-tuned backbone is the pretrained one: the weights were loaded.
    theirs = backbone.state_dict()
    assert all(torch.allclose(v, theirs[k], atol=1e-9) for k, v in model.lm.state_dict().items())
    record = json.loads((tmp_path / "ft" / "run.json").read_text())
    assert record["backbone"]["d_model"] == 16 and record["config"]["init_from"] == str(pre.checkpoint)
