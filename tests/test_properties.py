"""Property-based tests (hypothesis): tokenizers, and the FASTA, table and audio readers read back what was
written, whatever the line width, line ending, compression, quoting or waveform."""

from __future__ import annotations

import csv
import gzip
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pysam
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqssm.datasets.audio import load_audio
from seqssm.datasets.fasta import FastaFile, FastaStream, iter_fasta
from seqssm.datasets.labelled import read_labelled_table
from seqssm.errors import InputError
from seqssm.tokenizers import ByteTokenizer, NucleotideTokenizer
from seqssm.transforms import AudioTokenizer

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
IUPAC = "ACGTNRYSWKMBDHVU"
DNA_TEXT = st.text(alphabet=IUPAC + IUPAC.lower(), max_size=200)
TOK = NucleotideTokenizer()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A folder for the files of each example (hypothesis runs many examples in one test call)."""
    return tmp_path_factory.mktemp("examples")


def _fresh(root: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=root))


# ----------------------------------------------------------------------------------------------- tokenizers


def _canonical(seq: str) -> str:
    """What the nucleotide vocabulary keeps of a base: upper case, U as T, ambiguity codes as N."""
    out = seq.upper().replace("U", "T")
    return "".join(c if c in "ACGT" else "N" for c in out)


@SETTINGS
@given(DNA_TEXT)
def test_nucleotide_round_trip_and_soft_mask(seq):
    ids, soft = TOK.encode(seq, return_soft_mask=True)
    assert ids.dtype == np.int64 and ids.shape == (len(seq),)
    assert TOK.decode(ids) == _canonical(seq)
    assert soft.tolist() == [c.islower() for c in seq]
    assert np.array_equal(TOK.encode_codes(seq), ids.astype(np.uint8))
    with_specials = TOK.encode(seq, add_special_tokens=True)
    assert with_specials[0] == TOK.bos_id and with_specials[-1] == TOK.eos_id
    assert TOK.decode(with_specials) == _canonical(seq)
    assert TOK.decode(with_specials, skip_special_tokens=False) == "^" + _canonical(seq) + "$"


@SETTINGS
@given(DNA_TEXT)
def test_reverse_complement_of_text_and_of_ids_agree(seq):
    rc = TOK.reverse_complement(seq)
    assert TOK.reverse_complement(rc) == seq.replace("U", "T").replace("u", "t")
    assert np.array_equal(TOK.encode(rc), TOK.reverse_complement(TOK.encode(seq)))
    ids = torch.as_tensor(TOK.encode(seq))
    assert torch.equal(TOK.reverse_complement(TOK.reverse_complement(ids)), ids)


@SETTINGS
@given(DNA_TEXT, st.integers(0, 200), st.sampled_from("XZ-*.1 \t>é"))
def test_a_character_outside_iupac_is_named_with_its_position(seq, at, bad):
    at = min(at, len(seq))
    text = seq[:at] + bad + seq[at:]
    with pytest.raises(InputError, match=f"at position {at} in rec") as err:
        TOK.encode(text, source="rec")
    assert "\n" not in str(err.value)
    if bad.isascii():  # errors="unk" maps ASCII non-bases; non-ASCII text stays an error
        assert TOK.encode(text, errors="unk")[at] == TOK.unk_id


@SETTINGS
@given(st.binary(max_size=300))
def test_byte_tokenizer_round_trips_any_bytes(raw):
    tok = ByteTokenizer()
    ids = tok.encode(raw)
    assert ids.min(initial=0) >= 0 and ids.max(initial=0) < 256
    assert tok.decode_bytes(ids) == raw
    assert tok.decode_bytes(tok.encode(raw, add_special_tokens=True)) == raw


@SETTINGS
@given(st.text(max_size=100))
def test_byte_tokenizer_round_trips_any_text(text):
    tok = ByteTokenizer()
    assert tok.decode(tok.encode(text)) == text
    ids, mask = tok.encode_batch([text, text[:3]])
    assert ids[1, mask[1].sum():].tolist() == [tok.pad_id] * int((~mask[1]).sum())


def _mu_law_bound(x: np.ndarray, q: int) -> np.ndarray:
    mu = q - 1
    return (np.abs(x) + 1 / mu) * ((1 + mu) ** (1 / mu) - 1) + 1e-6


@SETTINGS
@given(st.sampled_from(["mulaw", "linear"]), st.sampled_from([4, 8, 12]),
       st.lists(st.floats(-1.5, 1.5, allow_nan=False, width=32), min_size=1, max_size=200))
def test_audio_tokenizers_are_monotone_in_range_and_within_their_error_bound(kind, bits, values):
    tok = AudioTokenizer(kind, bits)
    x = torch.tensor(sorted(values), dtype=torch.float32)
    ids = tok.encode(x)
    assert ids.dtype == torch.int64 and int(ids.min()) >= 0 and int(ids.max()) < tok.vocab_size
    assert bool((ids[1:] >= ids[:-1]).all()), "a louder sample got a smaller id"
    back = tok.decode(ids).numpy()
    clipped = x.clamp(-1, 1).numpy()
    assert np.all(np.abs(back) <= 1 + 1e-6)
    mu = tok.vocab_size - 1
    bound = np.full_like(clipped, 1 / mu + 1e-6) if kind == "linear" else _mu_law_bound(clipped, tok.vocab_size)
    assert np.all(np.abs(back - clipped) <= bound)
    assert int(tok.encode(torch.zeros(1))) == tok.pad_id


@SETTINGS
@given(st.sampled_from([math.nan, math.inf, -math.inf]), st.integers(0, 9))
def test_audio_tokenizer_refuses_non_finite_samples(value, at):
    wave = torch.zeros(10)
    wave[at] = value
    with pytest.raises(InputError, match="NaN or infinite"):
        AudioTokenizer().encode(wave)


# -------------------------------------------------------------------------------------------------- FASTA

NAMES = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.|:-", min_size=1,
                max_size=12)
RECORDS = st.lists(st.tuples(NAMES, st.text(alphabet="ACGTNacgtnRY", min_size=1, max_size=300)), min_size=1,
                   max_size=5, unique_by=lambda r: r[0])


def _write_fasta(path: Path, records, widths, newline: str, compression: str) -> Path:
    lines = []
    for (name, seq), width in zip(records, widths, strict=True):
        lines.append(f">{name} some description")
        lines += [seq[i:i + width] for i in range(0, len(seq), width)]
    text = newline.join(lines) + newline
    if compression == "plain":
        path.write_bytes(text.encode())
    elif compression == "gzip":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        plain = path.with_name(path.name + ".txt")
        plain.write_bytes(text.encode())
        pysam.tabix_compress(str(plain), str(path), force=True)
    return path


@SETTINGS
@given(RECORDS, st.data(), st.sampled_from(["\n", "\r\n"]), st.sampled_from(["plain", "gzip", "bgzip"]))
def test_fasta_readers_read_back_what_was_written(scratch, records, data, newline, compression):
    widths = [data.draw(st.integers(1, 80)) for _ in records]
    folder = _fresh(scratch)
    path = _write_fasta(folder / "x.fa.gz", records, widths, newline, compression)
    assert list(iter_fasta(path)) == records
    stream = FastaStream(path)
    assert stream.lengths == {name: len(seq) for name, seq in records}
    # Regions in ascending order within each record, and a record revisited from its start.
    for name, seq in records + records[:1]:
        cut = sorted(data.draw(st.lists(st.integers(0, len(seq)), min_size=2, max_size=4)))
        for start, end in zip(cut, cut[1:], strict=False):
            assert stream.fetch(name, start, end) == seq[start:end]
    stream.close()
    if compression != "gzip":  # random access: an index of one line width per record
        with FastaFile(path) as indexed:
            assert indexed.lengths == stream.lengths
            for name, seq in records:
                start = data.draw(st.integers(0, len(seq)))
                assert indexed.fetch(name, start) == seq[start:]
    shutil.rmtree(folder)


# ------------------------------------------------------------------------------------------------- tables

CELL = st.text(alphabet=st.characters(exclude_categories=("Cs", "Cc"))
               | st.sampled_from("\t,;\"' \n"), min_size=1, max_size=15).map(str.strip).filter(bool)


@SETTINGS
@given(st.lists(st.tuples(st.text(alphabet="ACGTacgtN", min_size=1, max_size=40), CELL, CELL), min_size=1,
                max_size=20),
       st.sampled_from([(".tsv", "\t"), (".csv", ",")]), st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
       st.booleans())
def test_table_reader_reads_back_labels_and_ids_whatever_the_quoting(scratch, rows, kind, quoting, gz):
    suffix, delimiter = kind
    folder = _fresh(scratch)
    path = folder / ("t" + suffix + (".gz" if gz else ""))
    with (gzip.open(path, "wt", newline="", encoding="utf-8") if gz
          else open(path, "w", newline="", encoding="utf-8")) as f:
        writer = csv.writer(f, delimiter=delimiter, quoting=quoting, lineterminator="\r\n")
        writer.writerow(["id", "sequence", "label"])
        writer.writerows([(rid, seq, label) for seq, label, rid in rows])
    table = read_labelled_table(path)
    assert table.sequences == [seq for seq, _, _ in rows]
    assert table.labels == [label for _, label, _ in rows]
    assert table.ids == [rid for _, _, rid in rows]
    assert set(table.classes) == set(table.labels) and len(table.classes) == len(set(table.labels))
    assert table.label_indices.tolist() == [table.classes.index(label) for label in table.labels]
    shutil.rmtree(folder)


# -------------------------------------------------------------------------------------------------- audio

FORMATS = {"PCM_16": 2 / 2**15, "PCM_24": 2 / 2**23, "FLOAT": 1e-7}


@SETTINGS
@given(st.integers(1, 2), st.integers(1, 1500), st.sampled_from(sorted(FORMATS)), st.sampled_from(["WAV", "FLAC"]),
       st.integers(0, 2**32 - 1), st.data())
def test_audio_reader_reads_back_within_quantisation_error(scratch, channels, frames, subtype, container, seed, data):
    if container == "FLAC" and subtype == "FLOAT":
        subtype = "PCM_16"  # FLAC holds integers only
    wave = np.random.default_rng(seed).uniform(-1, 1, (frames, channels)).astype(np.float32)
    folder = _fresh(scratch)
    path = folder / f"a.{container.lower()}"
    sf.write(path, wave, 8000, subtype=subtype, format=container)
    got, rate = load_audio(path, channel=None)
    assert rate == 8000 and got.shape == (channels, frames) and got.dtype == torch.float32
    assert np.max(np.abs(got.numpy() - wave.T)) <= FORMATS[subtype]
    mixed, _ = load_audio(path)
    assert np.allclose(mixed[0].numpy(), got.numpy().mean(0), atol=1e-6)
    offset = data.draw(st.integers(0, frames - 1))
    count = data.draw(st.integers(1, frames - offset))
    window, _ = load_audio(path, channel=None, offset=offset, num_frames=count)
    assert torch.equal(window, got[:, offset:offset + count])  # seeking is sample-exact for WAV and FLAC
    shutil.rmtree(folder)
