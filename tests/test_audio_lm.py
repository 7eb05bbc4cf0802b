"""Audio LM: training windows against a plain concatenation, split rules, sampling, scores, the CLI."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from cli_harness import run_cli_result

from seqssm.config import MambaConfig
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel, load_model
from seqssm.pipelines.audio_lm import (
    SILENCE_GAP_SECONDS,
    AudioStreamWindows,
    GenerateAudioConfig,
    audio_lm_datasets,
    generate_audio,
)
from seqssm.transforms import AudioTokenizer, mu_law_encode

RATE = 8000
GAP = round(SILENCE_GAP_SECONDS * RATE)
TOK = AudioTokenizer("mulaw", 8)
# Decoding one sample at a time is all tiny ops: on a shared 2-core machine OpenMP threads only wait.
ENV = {**os.environ, "SEQSSM_PROGRESS": "0", "OMP_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("one_thread")


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seqssm", *map(str, args)], capture_output=True, text=True, env=ENV)


@pytest.fixture
def seqssm(capsys, monkeypatch):
    """``seqssm(*args)`` in this process (``cli_harness``), as a finished process: exit code, stdout, stderr."""
    monkeypatch.setenv("SEQSSM_PROGRESS", "0")
    return lambda *args: run_cli_result(list(args), capsys, monkeypatch)


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in line, line


def write_wav(path: Path, n: int, rate: int = RATE, seed: int = 0, subtype: str = "PCM_16") -> np.ndarray:
    """A clip of n samples of noise with a slow sine under it; returns what a decoder reads back."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    x = 0.5 * np.sin(2 * np.pi * 220 * t + seed) + 0.3 * rng.uniform(-1, 1, n)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, rate, subtype=subtype)
    return sf.read(path, dtype="float32")[0]


def datasets(data, window=301, seed=0, val_fraction=0.25, sample_rate=None, num=6):
    return audio_lm_datasets(str(data), window, num_train=num, num_val=num, seed=seed,
                             val_fraction=val_fraction, sample_rate=sample_rate, tokenizer=TOK)


def concatenation(files: list[Path]) -> torch.Tensor:
    """The reference stream: every file decoded whole, joined by GAP zeros, μ-law encoded."""
    parts = []
    for i, f in enumerate(files):
        if i:
            parts.append(np.zeros(GAP, dtype=np.float32))
        parts.append(sf.read(f, dtype="float32")[0])
    return mu_law_encode(torch.from_numpy(np.concatenate(parts)))


def seeking_copy(ds: AudioStreamWindows) -> AudioStreamWindows:
    return AudioStreamWindows(ds.pieces, ds.window, len(ds), sample_rate=ds.sample_rate, tokenizer=TOK,
                              seed=ds.seed, stream=ds.stream, gap=ds.gap, preload=False)


@pytest.fixture
def clips(tmp_path) -> Path:
    """Five short clips (shorter than the windows used) in nested folders, plus files to ignore."""
    root = tmp_path / "clips"
    for i, (name, n) in enumerate([("a.wav", 37), ("sub/b.flac", 150), ("c.wav", 91), ("sub/deep/d.wav", 260),
                                   ("e.wav", 55)]):
        write_wav(root / name, n, seed=i)
    write_wav(root / ".hidden.wav", 500)
    write_wav(root / ".cache" / "x.wav", 500)
    (root / "notes.txt").write_text("not audio")
    return root


def test_items_are_windows_of_the_joined_clips(clips):
    train, val, rate = datasets(clips)
    assert rate == RATE
    names = sorted(p.relative_to(clips).as_posix() for p in train.files + val.files)
    assert names == ["a.wav", "c.wav", "e.wav", "sub/b.flac", "sub/deep/d.wav"]
    for ds in (train, val):
        reference = concatenation(ds.files)
        assert ds.total == len(reference)
        seeking = seeking_copy(ds)
        for i in range(len(ds)):
            item, start = ds[i], ds.window_start(i)
            assert item.dtype == torch.int64 and item.shape == (301,)
            assert 0 <= int(item.min()) and int(item.max()) < 256
            assert torch.equal(item, reference[start : start + 301])
            assert torch.equal(seeking[i], item)
    # The windows are longer than every clip, so each spans a silence gap.
    assert all((train[i] == TOK.pad_id).sum() >= GAP for i in range(len(train)))


def test_split_is_seeded_stable_and_complete(tmp_path):
    root = tmp_path / "many"
    for i in range(40):
        write_wav(root / f"take{i:02d}.wav", 31 + i, seed=i)
    train, val, _ = datasets(root, window=50, val_fraction=0.25)
    train_names, val_names = {p.name for p in train.files}, {p.name for p in val.files}
    assert not train_names & val_names and len(train_names | val_names) == 40
    assert 4 <= len(val_names) <= 16
    # A new recording leaves every other file on its side.
    write_wav(root / "take40.wav", 80, seed=40)
    train2, val2, _ = datasets(root, window=50, val_fraction=0.25)
    assert {p.name for p in val2.files} - {"take40.wav"} == val_names
    assert {p.name for p in train2.files} - {"take40.wav"} == train_names
    # Another seed draws another split and another order.
    other_train, other_val, _ = datasets(root, window=50, val_fraction=0.25, seed=1)
    assert {p.name for p in other_val.files} != val_names


def test_tiny_folder_still_gets_a_val_file(tmp_path):
    for i in range(2):
        write_wav(tmp_path / f"{i}.wav", 120, seed=i)
    train, val, _ = datasets(tmp_path, window=100, val_fraction=0.01)
    assert len(train.files) == len(val.files) == 1


def test_fsdd_names_split_by_take(tmp_path):
    for take in range(8):
        write_wav(tmp_path / f"3_bob_{take}.wav", 90 + take, seed=take)
    train, val, _ = datasets(tmp_path, window=50, val_fraction=0.9)
    assert sorted(p.stem for p in val.files) == [f"3_bob_{t}" for t in range(5)]
    assert sorted(p.stem for p in train.files) == ["3_bob_5", "3_bob_6", "3_bob_7"]


def test_fsdd_customary_split(shared_data):
    train, val, rate = datasets(shared_data / "audio" / "fsdd", window=8001, num=2)
    assert rate == 8000 and len(train.files) == 2700 and len(val.files) == 300
    assert {int(p.stem.split("_")[2]) for p in val.files} == set(range(5))
    assert all(int(p.stem.split("_")[2]) >= 5 for p in train.files)
    assert train[0].shape == val[1].shape == (8001,)


@pytest.mark.parametrize("as_folder", [False, True])
def test_one_long_recording_keeps_its_tail_for_val(tmp_path, as_folder):
    wave = write_wav(tmp_path / "rec" / "long.flac", 1001)
    data = tmp_path / "rec" if as_folder else tmp_path / "rec" / "long.flac"
    train, val, _ = datasets(data, window=101, val_fraction=0.2)
    cut = round(1001 * 0.8)
    assert train.total == cut and val.total == 1001 - cut
    ids = mu_law_encode(torch.from_numpy(wave))
    for ds, offset in ((train, 0), (val, cut)):
        seeking = seeking_copy(ds)
        for i in range(len(ds)):
            start = offset + ds.window_start(i)
            assert torch.equal(ds[i], ids[start : start + 101])
            assert torch.equal(seeking[i], ds[i])


def test_items_are_reproducible(clips):
    a, _, _ = datasets(clips, window=30, seed=3)
    b, _, _ = datasets(clips, window=30, seed=3)
    c, _, _ = datasets(clips, window=30, seed=4)
    assert all(torch.equal(a[i], b[i]) for i in range(len(a)))
    assert len({a.window_start(i) for i in range(len(a))}) > 1
    assert [a.window_start(i) for i in range(len(a))] != [c.window_start(i) for i in range(len(c))]


def test_rates_must_agree_or_be_given(tmp_path):
    write_wav(tmp_path / "lo.wav", 400, rate=8000)
    write_wav(tmp_path / "hi.wav", 900, rate=22050, seed=1)
    with pytest.raises(InputError, match="--sample-rate"):
        datasets(tmp_path)
    train, val, rate = datasets(tmp_path, window=200, sample_rate=16000)
    assert rate == 16000
    assert train.total + val.total == 400 * 2 + 900 * 16000 // 22050
    for ds in (train, val):
        seeking = seeking_copy(ds)
        assert all(torch.equal(seeking[i], ds[i]) for i in range(len(ds)))
        assert ds[0].shape == (200,)


def test_bad_data(tmp_path):
    with pytest.raises(InputError, match="not found"):
        datasets(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .wav"):
        datasets(tmp_path / "empty")
    write_wav(tmp_path / "short" / "one.wav", 100)
    with pytest.raises(InputError, match="lower --window"):
        datasets(tmp_path / "short", window=90, val_fraction=0.2)


# Sampling ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny random audio model with peaked next-sample distributions, so scores differ from 8 bits."""
    torch.manual_seed(0)
    config = MambaConfig(d_model=16, n_layer=2, d_state=4, vocab_size=256, tokenizer="mulaw8", sample_rate=RATE)
    model = MambaLMHeadModel(config, impl="ref")
    with torch.no_grad():
        # Tied to lm_head: peaked next-sample distributions (about 6 bits of entropy, not 8) ...
        model.backbone.embedding.weight.mul_(20)
        # ... that depend on the context through the mixers, not only on the last sample.
        for layer in model.backbone.layers:
            layer.mixer.out_proj.weight.mul_(30)
    path = tmp_path_factory.mktemp("audio_model") / "checkpoint"
    model.save_pretrained(path)
    return path


def read_ids(path: Path) -> torch.Tensor:
    wave, rate = sf.read(path, dtype="float32")
    assert rate == RATE
    return TOK.encode(torch.from_numpy(wave))


def scores(out: Path) -> dict[str, float]:
    lines = out.with_suffix(".scores.tsv").read_text().splitlines()
    assert lines[0] == "file\tprompt_seconds\tseconds\tmean_log2_prob"
    return {row.split("\t")[0]: float(row.split("\t")[3]) for row in lines[1:]}


def teacher_forced_log2_prob(model, context: torch.Tensor, generated: torch.Tensor) -> float:
    """Mean log2 p(generated[t] | context, generated[:t]) from one parallel forward pass."""
    ids = torch.cat([context, generated])[None]
    logp = model(ids[:, :-1]).log_softmax(-1)[0, len(context) - 1 :]
    return (logp.gather(1, generated[:, None]).mean() / math.log(2)).item()


def test_scores_are_the_model_log_probability(model_dir, tmp_path):
    out = tmp_path / "clip.wav"
    lines = []
    paths = generate_audio(GenerateAudioConfig(str(model_dir), str(out), seconds=0.03, num_clips=2,
                                               temperature=0.8, top_k=40, device="cpu"), echo=lines.append)
    assert [p.name for p in paths] == ["clip_1.wav", "clip_2.wav"]
    model = load_model(model_dir, impl="ref")
    table = scores(out)
    for path in paths:
        ids = read_ids(path)
        assert ids.shape == (240,)
        expected = teacher_forced_log2_prob(model, torch.tensor([TOK.pad_id]), ids)
        assert table[path.name] == pytest.approx(expected, abs=2e-4)
        assert -7.5 < expected < -0.1  # far from a uniform model's -8, far from deterministic
        assert any(line.startswith(str(path)) for line in lines)
    assert not torch.equal(read_ids(paths[0]), read_ids(paths[1]))


def test_prompted_clips_continue_the_prompt(model_dir, tmp_path):
    prompt_path = tmp_path / "prompt.wav"
    write_wav(prompt_path, 3000, rate=16000)  # resampled to the model's 8 kHz
    out = tmp_path / "cont.wav"
    paths = generate_audio(GenerateAudioConfig(str(model_dir), str(out), seconds=0.02, num_clips=2,
                                               prompt_audio=str(prompt_path), prompt_seconds=0.05, device="cpu"),
                           echo=lambda _: None)
    prompt_ids = TOK.encode(torch.from_numpy(sf.read(prompt_path, dtype="float32")[0][-800:]))
    from seqssm.datasets.audio import load_audio

    resampled = TOK.encode(load_audio(prompt_path, RATE, "mix", 3000 - 800, 800)[0][0])
    assert len(resampled) == 400 and len(prompt_ids) == 800
    model = load_model(model_dir, impl="ref")
    for path in paths:
        ids = read_ids(path)
        assert ids.shape == (400 + 160,)
        assert torch.equal(ids[:400], resampled)
        expected = teacher_forced_log2_prob(model, resampled, ids[400:])
        assert scores(out)[path.name] == pytest.approx(expected, abs=2e-4)
    assert out.with_suffix(".scores.tsv").read_text().splitlines()[1].split("\t")[1] == "0.0500"


def test_sampling_is_seeded_and_greedy_is_deterministic(model_dir, tmp_path):
    def sample(name, **kwargs):
        return generate_audio(GenerateAudioConfig(str(model_dir), str(tmp_path / name), seconds=0.01,
                                                  device="cpu", **kwargs), echo=lambda _: None)

    a, b, c = sample("a.wav", seed=5), sample("b.wav", seed=5), sample("c.wav", seed=6)
    assert a[0].read_bytes() == b[0].read_bytes() != c[0].read_bytes()
    greedy = sample("g.wav", top_k=1, num_clips=2, seed=1)
    assert torch.equal(read_ids(greedy[0]), read_ids(greedy[1]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_step_matches_eager_step(model_dir, tmp_path):
    def sample(name, graph):
        out = tmp_path / name
        paths = generate_audio(GenerateAudioConfig(str(model_dir), str(out), seconds=0.05, num_clips=3,
                                                   device="cuda", cuda_graph=graph), echo=lambda _: None)
        return [p.read_bytes() for p in paths], scores(out)

    (graph_clips, graph_scores), (eager_clips, eager_scores) = sample("g.wav", True), sample("e.wav", False)
    assert graph_clips == eager_clips
    assert list(graph_scores.values()) == list(eager_scores.values())


def test_bad_generate_options(model_dir, tmp_path):
    with pytest.raises(InputError, match=".wav"):
        GenerateAudioConfig(str(model_dir), str(tmp_path / "x.flac"))
    with pytest.raises(InputError, match="--prompt-audio"):
        GenerateAudioConfig(str(model_dir), str(tmp_path / "x.wav"), prompt_seconds=1.0)
    with pytest.raises(InputError, match="--seconds"):
        GenerateAudioConfig(str(model_dir), str(tmp_path / "x.wav"), seconds=0)


# The command line ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recordings")
    for i in range(4):
        write_wav(root / f"rec{i}.wav", 700 + 50 * i, seed=i)
    out = root.parent / "audio_run"
    proc = run("pretrain", root, "--modality", "audio", "--out", out, "--d-model", "16", "--n-layer", "1",
               "--d-state", "4", "--window", "64", "--batch-size", "2", "--steps", "3", "--val-every", "3",
               "--val-windows", "2", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "bits per sample (uniform 8.0)" in proc.stdout
    return out / "checkpoint"


# The pretraining run is a real process, as a user runs it; the commands after it run in this process.
@pytest.mark.slow  # its fixture imports torch in a child process: a few seconds
def test_cli_pretrain_then_generate(trained, tmp_path, seqssm):
    out = tmp_path / "x.wav"
    proc = seqssm("generate", trained, "--modality", "audio", "--seconds", "0.05", "--out", out, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    info = sf.info(out)
    assert (info.samplerate, info.frames, info.channels) == (RATE, 400, 1)
    table = scores(out)
    assert list(table) == ["x.wav"] and -64 < table["x.wav"] < 0
    assert "bits per sample" in proc.stdout and "x.wav" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.scores.tsv", "x.wav"]  # no temporary leftovers


def test_cli_rejects_a_dna_checkpoint(tmp_path, seqssm):
    config = MambaConfig(d_model=16, n_layer=1, d_state=4, vocab_size=10)
    MambaLMHeadModel(config).save_pretrained(tmp_path / "dna")
    out = tmp_path / "x.wav"
    assert_user_error(seqssm("generate", tmp_path / "dna", "--modality", "audio", "--out", out, "--device", "cpu"),
                      "mismatched modality")
    assert not out.exists()


@pytest.mark.slow  # its fixture imports torch in a child process: a few seconds
def test_cli_rejects_a_bad_prompt(trained, tmp_path, seqssm):
    bad = tmp_path / "bad.wav"
    bad.write_text("this is not a WAV file")
    out = tmp_path / "x.wav"
    common = ["generate", trained, "--modality", "audio", "--out", out, "--device", "cpu", "--prompt-audio"]
    assert_user_error(seqssm(*common, bad), "bad.wav", "cannot decode")
    assert not out.exists()
    with pytest.raises(InputError, match="does not exist"):
        generate_audio(GenerateAudioConfig(str(trained), str(out), prompt_audio=str(tmp_path / "missing.wav"),
                                           device="cpu"))
