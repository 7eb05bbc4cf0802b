"""Audio record sources (folders, manifests, FSDD), the clip dataset and the long-recording window sampler."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from seqssm.datasets.audio import load_audio
from seqssm.datasets.audio_sets import (
    AudioClipDataset,
    AudioRecord,
    folder_records,
    fsdd_records,
    load_record,
    manifest_records,
)
from seqssm.errors import InputError

RATE = 8000


def _write(path: Path, frames: int, rate: int = RATE, channels: int = 1, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).uniform(-0.5, 0.5, (frames, channels)).astype(np.float32)
    sf.write(path, data, rate, subtype="PCM_16" if path.suffix == ".wav" else None)
    return path


def _decode(path: Path, rate: int | None = None) -> torch.Tensor:
    return load_audio(path, rate)[0][0]


# --- FSDD ---------------------------------------------------------------------------------------------


def test_fsdd_split_counts_and_labels(shared_data: Path):
    root = shared_data / "audio" / "fsdd"
    train, test, every = (fsdd_records(root, split) for split in ("train", "test", "all"))
    assert (len(train), len(test), len(every)) == (2700, 300, 3000)
    assert {r.id for r in train}.isdisjoint(r.id for r in test)
    assert all(int(r.id.rsplit("_", 1)[1]) < 5 for r in test)
    assert all(int(r.id.rsplit("_", 1)[1]) >= 5 for r in train)
    assert Counter(r.label for r in test) == {str(d): 30 for d in range(10)}
    assert all(r.label == r.id[0] and r.path.is_file() for r in every)


def test_fsdd_dataset_items(shared_data: Path):
    records = fsdd_records(shared_data / "audio" / "fsdd", "test")[::3]
    data = AudioClipDataset(records, sample_rate=16000, clip_length=12001, crop="center")
    assert data.classes == [str(d) for d in range(10)]
    wave, mask, label = data[3]
    decoded = _decode(records[3].path, 16000)
    assert wave.shape == mask.shape == (12001,) and label == int(records[3].label)
    assert wave.dtype == torch.float32 and mask.dtype == torch.bool
    assert int(mask.sum()) == min(decoded.shape[0], 12001)


def test_fsdd_rejects_foreign_file_names(tmp_path: Path):
    _write(tmp_path / "3_theo_1.wav", 100)
    _write(tmp_path / "three.wav", 100)
    with pytest.raises(InputError, match=r"three.wav: name is not \{digit\}_\{speaker\}_\{take\}.wav"):
        fsdd_records(tmp_path)
    with pytest.raises(InputError, match="split 'dev'"):
        fsdd_records(tmp_path, "dev")


# --- folder per class and manifests -------------------------------------------------------------------


def test_folder_records(tmp_path: Path):
    _write(tmp_path / "dog" / "b.flac", 50)
    _write(tmp_path / "cat" / "a.wav", 50)
    _write(tmp_path / "dog" / "indoor" / "c.wav", 50)
    _write(tmp_path / ".trash" / "x.wav", 50)
    _write(tmp_path / "dog" / ".y.wav", 50)
    (tmp_path / "dog" / "notes.txt").write_text("not audio")
    (tmp_path / "README.md").write_text("read me")
    records = folder_records(tmp_path)
    assert [(r.id, r.label) for r in records] == [("cat/a", "cat"), ("dog/b", "dog"), ("dog/indoor/c", "dog")]
    assert records[2].path == tmp_path / "dog" / "indoor" / "c.wav"


def test_folder_records_errors(tmp_path: Path):
    with pytest.raises(InputError, match="folder not found"):
        folder_records(tmp_path / "absent")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(InputError, match="no .* files in any class folder"):
        folder_records(tmp_path)
    _write(tmp_path / "loose.wav", 10)
    with pytest.raises(InputError, match="audio file loose.wav lie outside any class folder"):
        folder_records(tmp_path)


@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_manifest_records_and_segments_read_by_seeking(tmp_path: Path, delimiter: str):
    _write(tmp_path / "audio" / "one.wav", 8000, channels=2)
    _write(tmp_path / "audio" / "two.flac", 4001, seed=1)
    suffix = ".csv" if delimiter == "," else ".tsv"
    rows = [["path", "label", "start", "end"], ["audio/one.wav", "yes", "0.25", "0.5"]]
    rows += [["audio/two.flac", "no", "", ""], [str(tmp_path / "audio" / "one.wav"), "no", "0.5", ""]]
    manifest = tmp_path / f"list{suffix}"
    manifest.write_text("\n".join(delimiter.join(row) for row in rows) + "\n")
    records = manifest_records(manifest)
    assert [(r.id, r.label, r.start, r.end) for r in records] == [
        ("audio/one.wav@0.25-0.5", "yes", 0.25, 0.5),
        ("audio/two.flac", "no", 0.0, None),
        (str(tmp_path / "audio" / "one.wav") + "@0.5-", "no", 0.5, None),
    ]
    full = _decode(tmp_path / "audio" / "one.wav")
    segment, rate = load_record(records[0])
    assert rate == RATE
    torch.testing.assert_close(segment[0], full[2000:4000], rtol=0, atol=0)
    torch.testing.assert_close(load_record(records[2])[0][0], full[4000:], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("file,label\na.wav,x\n", "no 'path' column"),
        ("path,label\nb.wav,x\n", r"line 2: audio file .*b.wav not found"),
        ("path,label,start\na.wav,x,soon\n", "line 2: start 'soon' is not a number of seconds"),
        ("path,label,start\na.wav,x,-1\n", "start '-1' must be a finite, non-negative"),
        ("path,label,start,end\na.wav,x,0.5,0.5\n", r"end 0.5 s is not after start 0.5 s"),
        ("path,label\na.wav,x\na.wav,\n", "line 3: empty label"),
        ("path,label\n", "header but no rows"),
    ],
)
def test_manifest_errors(tmp_path: Path, table: str, message: str):
    _write(tmp_path / "a.wav", 100)
    manifest = tmp_path / "m.csv"
    manifest.write_text(table)
    with pytest.raises(InputError, match=message):
        manifest_records(manifest)


def test_manifest_suffix_and_missing(tmp_path: Path):
    with pytest.raises(InputError, match=r"must be a .csv or .tsv"):
        manifest_records(tmp_path / "m.xlsx")
    with pytest.raises(InputError, match="manifest not found"):
        manifest_records(tmp_path / "m.tsv")


# --- clip dataset -------------------------------------------------------------------------------------


@pytest.fixture
def clips(tmp_path: Path) -> list[AudioRecord]:
    lengths = {"long": 3001, "short": 777, "exact": 1000}
    return [
        AudioRecord(name, _write(tmp_path / f"{name}.wav", n, seed=i), label=name[0])
        for i, (name, n) in enumerate(lengths.items())
    ]


def test_random_crop_is_a_seeded_slice(clips: list[AudioRecord]):
    data = AudioClipDataset(clips, RATE, 1000, crop="random", seed=7)
    full = _decode(clips[0].path)
    wave, mask, _ = data[0]
    starts = [s for s in range(full.shape[0] - 999) if torch.equal(full[s : s + 1000], wave)]
    assert len(starts) == 1 and bool(mask.all())
    rng = np.random.default_rng([7, 0, 0])  # the documented seeding: (seed, epoch, index)
    assert starts[0] == int(rng.integers(full.shape[0] - 999))
    torch.testing.assert_close(AudioClipDataset(clips, RATE, 1000, seed=7)[0][0], wave, rtol=0, atol=0)
    assert not torch.equal(AudioClipDataset(clips, RATE, 1000, seed=8)[0][0], wave)
    data.set_epoch(1)
    assert not torch.equal(data[0][0], wave)


def test_center_crop_and_padding_with_mask(clips: list[AudioRecord]):
    data = AudioClipDataset(clips, RATE, 1000, crop="center")
    wave, mask, label = data[0]
    torch.testing.assert_close(wave, _decode(clips[0].path)[1000:2000], rtol=0, atol=0)
    assert label == data.classes.index("l") and bool(mask.all())
    wave, mask, _ = data[1]
    torch.testing.assert_close(wave[:777], _decode(clips[1].path), rtol=0, atol=0)
    assert bool((wave[777:] == 0).all()) and mask.tolist() == [True] * 777 + [False] * 223
    wave, mask, _ = data[2]
    torch.testing.assert_close(wave, _decode(clips[2].path), rtol=0, atol=0)
    assert bool(mask.all())


def test_resampled_clips_and_batches(clips: list[AudioRecord]):
    data = AudioClipDataset(clips, 16000, 1600, crop="center")
    wave, mask, _ = data[1]
    assert int(mask.sum()) == math.ceil(777 * 16000 / RATE) == 1554
    torch.testing.assert_close(wave[:1554], _decode(clips[1].path, 16000), rtol=0, atol=0)
    waves, masks, labels = next(iter(DataLoader(data, batch_size=3)))
    assert waves.shape == masks.shape == (3, 1600) and labels.tolist() == [1, 2, 0]


def test_labels_classes_and_unlabelled(clips: list[AudioRecord]):
    data = AudioClipDataset(clips, RATE, 100, classes=["s", "l", "e", "z"])
    assert [data[i][2] for i in range(3)] == [1, 0, 2]
    unlabelled = AudioClipDataset([AudioRecord("u", clips[0].path)], RATE, 100)
    assert unlabelled[0][2] == -1 and unlabelled.classes == []
    with pytest.raises(InputError, match=r"labels \['e'\] are not among classes"):
        AudioClipDataset(clips, RATE, 100, classes=["s", "l"])


def test_skip_bad_warns_once_listing_the_files(clips: list[AudioRecord], tmp_path: Path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF garbage, not a wave file")
    missing = tmp_path / "missing.wav"
    records = [*clips, AudioRecord("broken", broken, "b"), AudioRecord("missing", missing, "b")]
    with pytest.raises(InputError, match="broken.wav: cannot decode"):
        AudioClipDataset(records, RATE, 100)[3]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = AudioClipDataset(records, RATE, 100, skip_bad=True)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "skipped 2 unreadable" in text and "broken.wav" in text and "missing.wav" in text
    assert len(data) == 3 and [r.id for r, _ in data.skipped] == ["broken", "missing"]
    assert "b" in data.classes  # label indices do not shift when files are skipped
    with pytest.raises(InputError, match="all 1 audio records are unreadable"):
        AudioClipDataset([AudioRecord("broken", broken)], RATE, 100, skip_bad=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crop": "left"}, "crop 'left'"),
        ({"clip_length": 0}, "clip_length"),
        ({"sample_rate": 0}, "sample_rate"),
        ({"seed": -1}, "seed"),
        ({"channel": "left"}, "channel must be 'mix'"),
    ],
)
def test_clip_dataset_argument_errors(clips: list[AudioRecord], kwargs: dict, message: str):
    arguments = {"sample_rate": RATE, "clip_length": 100} | kwargs
    with pytest.raises(InputError, match=message):
        AudioClipDataset(clips, **arguments)
