"""Byte-level models (MambaByte-style, token-free): the byte tokenizer on every byte value, `seqssm pretrain
--modality bytes` on text, a FASTA read as raw bytes and gzip, then load, embed, score (against a forward
pass by hand, in bits per byte) and generate (raw bytes), and the bad inputs refused in one line."""

from __future__ import annotations

import gzip
import json
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqssm import Embedder
from seqssm.config import MambaConfig
from seqssm.datasets.byte_windows import ByteWindowDataset, read_bytes, tile_bytes
from seqssm.models import MambaLMHeadModel, load_model
from seqssm.pipelines.configs_score import ScoreConfig
from seqssm.pipelines.configs_sequence import EmbedConfig, GenerateConfig
from seqssm.pipelines.configs_train import PretrainConfig
from seqssm.pipelines.embed import embed
from seqssm.pipelines.generate import generate
from seqssm.pipelines.pretrain import pretrain
from seqssm.pipelines.score import score
from seqssm.tokenizers import ByteTokenizer, get_tokenizer

TOK = ByteTokenizer()
TEXT = ("The quick brown fox jumps over the lazy dog. Ünïcödé ✓ and tabs\tand\r\nnewlines.\n" * 40).encode()
ODD = bytes(range(256)) + b"\x00\x00\xff\xfe\xc3("  # NUL, every value, invalid UTF-8
FASTA = b">chr1 a test contig\nACGTACGTTTGACNNACGT\nacgtacgatcgatcgatcgatgc\n>chr2\n" + b"GATTACA" * 300 + b"\n"
TINY = {"d_model": 16, "n_layer": 1, "d_state": 4, "window": 32, "batch_size": 4, "steps": 4, "val_every": 2,
        "val_windows": 4, "warmup_steps": 1, "device": "cpu"}


def test_byte_tokenizer_round_trips_every_byte_value():
    ids = TOK.encode(ODD)
    assert ids.dtype == np.int64 and ids.tolist() == list(ODD)
    assert TOK.decode_bytes(ids) == ODD
    assert TOK.encode(TEXT.decode()).tolist() == list(TEXT)  # str is UTF-8 encoded
    with_specials = TOK.encode(ODD, add_special_tokens=True)
    assert with_specials[0] == TOK.bos_id and with_specials[-1] == TOK.eos_id
    assert TOK.decode_bytes(with_specials) == ODD  # specials dropped
    assert min(TOK.special_ids) == 256 and TOK.vocab_size == 260
    assert isinstance(get_tokenizer(TOK.name), ByteTokenizer)  # what a checkpoint's config.json names
    ids, mask = TOK.encode_batch([b"\x00\x01", ODD])
    assert ids.shape == (2, len(ODD)) and (ids[0, 2:] == TOK.pad_id).all() and mask.sum() == 2 + len(ODD)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny byte model pretrained on a text file, and one on a gzip FASTA read as raw bytes (CLM)."""
    root = tmp_path_factory.mktemp("bytes")
    (root / "text.txt").write_bytes(TEXT + ODD)
    (root / "genome.fa.gz").write_bytes(gzip.compress(FASTA))
    torch.manual_seed(0)
    text = pretrain(PretrainConfig(data=str(root / "text.txt"), out=str(root / "text_run"), modality="bytes", **TINY))
    fasta = pretrain(PretrainConfig(data=str(root / "genome.fa.gz"), out=str(root / "fasta_run"), modality="bytes",
                                    **TINY))
    return {"root": root, "text": text, "fasta": fasta, "ckpt": text.checkpoint}


def test_pretrain_reports_bits_per_byte_and_records_the_tokenizer(runs):
    for result in (runs["text"], runs["fasta"]):
        run = json.loads((result.checkpoint.parent / "run.json").read_text())
        assert run["status"] == "complete" and run["config"]["modality"] == "bytes"
        bits = run["result"]["val_bits_per_byte"]
        assert bits == run["result"]["val_bits_per_token"] == result.val_bits_per_token
        assert 0 < bits < 9 and result.uniform_bits == 8.0  # log2(256) values, not the 260-id vocabulary
        config = json.loads((result.checkpoint / "config.json").read_text())
        assert config["tokenizer"] == "byte" and config["vocab_size"] == 260
        assert isinstance(get_tokenizer(load_model(result.checkpoint).config.tokenizer), ByteTokenizer)


def test_byte_windows_are_the_files_bytes_and_keep_out_of_the_val_tail(runs, tmp_path):
    path = runs["root"] / "genome.fa.gz"
    assert read_bytes(path).tobytes() == FASTA  # gzip decompressed, headers and newlines kept
    train = ByteWindowDataset(path, 40, num_samples=50, seed=3, split="train", val_fraction=0.2)
    val = ByteWindowDataset(path, 40, num_samples=20, seed=3, split="val", val_fraction=0.2)
    train_end = len(FASTA) - round(0.2 * len(FASTA))
    for data, lo, hi in ((train, 0, train_end), (val, train_end, len(FASTA))):
        for i in range(len(data)):
            name, start, end = data.locate(i)
            assert name == "genome.fa.gz" and lo <= start and end <= hi
            assert bytes(data[i].tolist()) == FASTA[start:end]
    again = ByteWindowDataset(path, 40, num_samples=50, seed=3, split="train", val_fraction=0.2)
    assert all(torch.equal(train[i], again[i]) for i in range(50))  # item i is a function of (seed, i)
    tiles = list(tile_bytes(path, 1000, 600))
    assert [(s, e) for _, s, e, _ in tiles] == [(0, 1000), (600, 1600), (1200, len(FASTA))]
    assert bytes(tiles[-1][3].tolist()) == FASTA[1200:]


def test_large_plain_files_are_memory_mapped_with_the_same_windows(tmp_path, monkeypatch):
    import seqssm.datasets.byte_windows as byte_windows

    (tmp_path / "t.txt").write_bytes(ODD * 20)
    plain = ByteWindowDataset(tmp_path / "t.txt", 64, num_samples=8, seed=1)
    monkeypatch.setattr(byte_windows, "MEMMAP_MIN_BYTES", 1)
    assert isinstance(read_bytes(tmp_path / "t.txt"), np.memmap)
    mapped = ByteWindowDataset(tmp_path / "t.txt", 64, num_samples=8, seed=1)
    assert all(torch.equal(plain[i], mapped[i]) for i in range(8))


def test_embed_pooled_per_window_and_per_position_and_the_python_api(runs, tmp_path):
    ckpt, path = runs["ckpt"], runs["root"] / "text.txt"
    data = path.read_bytes()
    model = load_model(ckpt).eval()
    pooled = embed(EmbedConfig(checkpoint=str(ckpt), fasta=str(path), out=str(tmp_path / "e"), modality="bytes",
                               device="cpu"))
    vectors = np.load(pooled.embeddings)
    assert vectors.shape == (1, 16) and pooled.count == 1
    row = (tmp_path / "e" / "index.tsv").read_text().splitlines()[1]
    assert row == f"text.txt:1-{len(data)}\ttext.txt\t0\t{len(data)}"
    with torch.no_grad():
        hand = model.backbone(torch.as_tensor(TOK.encode(data))[None]).mean(1)[0].numpy()
    np.testing.assert_allclose(vectors[0], hand, rtol=1e-4, atol=1e-5)
    windows = embed(EmbedConfig(checkpoint=str(ckpt), fasta=str(path), out=str(tmp_path / "w"), modality="bytes",
                                window=1000, device="cpu"))
    assert windows.count == math.ceil(len(data) / 1000)
    per = embed(EmbedConfig(checkpoint=str(ckpt), fasta=str(path), out=str(tmp_path / "p"), modality="bytes",
                            window=1000, per_position=True, device="cpu"))
    assert np.load(per.embeddings, mmap_mode="r").shape == (len(data), 16)
    api = Embedder(ckpt, device="cpu")
    assert api.modality == "bytes"
    np.testing.assert_allclose(api.embed(path), vectors, rtol=1e-4, atol=1e-5)  # a path: the file's raw bytes
    assert api.embed_bytes([b"\x00\xff", "text"]).shape == (2, 16)
    assert [a.shape for a in api.embed([b"abc", b"\x00"], per_position=True)] == [(3, 16), (1, 16)]


def _embedded(result):
    return np.load(result.embeddings), result.index.read_text()


@pytest.mark.parametrize("extra", [{}, {"window": 100}, {"window": 100, "stride": 60, "per_position": True}])
def test_embed_takes_the_modality_from_the_checkpoint(extra, runs, tmp_path):
    """No --modality: a byte checkpoint embeds the file's raw bytes, exactly as with --modality bytes. (It used
    to read a FASTA as DNA records, and with --window tile it with nucleotide ids the model never saw.)"""
    ckpt, fasta = runs["fasta"].checkpoint, runs["root"] / "genome.fa.gz"
    common = dict(checkpoint=str(ckpt), fasta=str(fasta), device="cpu", batch_size=3, **extra)
    auto = _embedded(embed(EmbedConfig(out=str(tmp_path / "auto"), **common)))
    explicit = _embedded(embed(EmbedConfig(out=str(tmp_path / "bytes"), modality="bytes", **common)))
    assert np.array_equal(auto[0], explicit[0]) and auto[1] == explicit[1]
    if extra.get("per_position"):  # one row per byte of every tile
        assert auto[0].shape == (sum(end - start for _, start, end, _ in tile_bytes(fasta, 100, 60)), 16)
        return
    tiles = list(tile_bytes(fasta, extra.get("window")))
    assert auto[0].shape == (len(tiles), 16)
    assert auto[1].splitlines()[1].startswith(f"genome.fa.gz:1-{tiles[0][2]}\tgenome.fa.gz\t0\t")
    model = load_model(ckpt).eval()
    for row, (_, _, _, ids) in zip(auto[0], tiles, strict=True):  # each row: the mean over that tile's bytes
        with torch.no_grad():
            hand = model.backbone(torch.as_tensor(ids)[None]).mean(1)[0].numpy()
        np.testing.assert_allclose(row, hand, rtol=1e-4, atol=1e-5)


def test_generate_takes_the_modality_from_the_checkpoint(runs, tmp_path, capsys, monkeypatch):
    ckpt = runs["ckpt"]
    common = dict(checkpoint=str(ckpt), length=41, seed=2, prompt="The", device="cpu")
    auto = generate(GenerateConfig(out=str(tmp_path / "auto.bin"), **common)).read_bytes()
    explicit = generate(GenerateConfig(out=str(tmp_path / "bytes.bin"), modality="bytes", **common)).read_bytes()
    assert auto == explicit and len(auto) == 41
    outs = []
    for name, flag in (("cli_auto.bin", []), ("cli_bytes.bin", ["--modality", "bytes"])):
        code, out, err = _cli(["generate", ckpt, *flag, "--length", "41", "--seed", "2", "--prompt", "The", "--out",
                               tmp_path / name, "--device", "cpu"], capsys, monkeypatch)
        assert code in (0, None) and "wrote 41 bytes" in out, err
        outs.append((tmp_path / name).read_bytes())
    assert outs == [auto, auto]
    for name, flag in (("e_auto", []), ("e_bytes", ["--modality", "bytes"])):
        code, out, err = _cli(["embed", ckpt, runs["root"] / "text.txt", *flag, "--window", "500", "--out",
                               tmp_path / name, "--device", "cpu"], capsys, monkeypatch)
        assert code in (0, None), err
    assert np.array_equal(np.load(tmp_path / "e_auto" / "embeddings.npy"), np.load(tmp_path / "e_bytes" /
                                                                                    "embeddings.npy"))


def _hand_bits(model, data: bytes) -> float:
    """-log2 p(bytes 1..N-1 | the bytes before), by one forward pass (the first byte is not scored)."""
    ids = torch.as_tensor(TOK.encode(data))[None]
    with torch.no_grad():
        logits = model(ids).float()
    return float(F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum")) / math.log(2)


def _rows(path):
    lines = path.read_text().splitlines()
    head = lines[0].split("\t")
    return head, [dict(zip(head, line.split("\t"), strict=True)) for line in lines[1:]]


def test_score_equals_a_forward_pass_by_hand_in_bits_per_byte(runs, tmp_path):
    ckpt, root = runs["ckpt"], runs["root"]
    model = load_model(ckpt).eval()
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "a.txt").write_bytes(TEXT[:700])
    (folder / "b.bin").write_bytes(ODD)
    # chunk_size below a file's length: streamed with carried state, the same bits as one pass
    result = score(ScoreConfig(checkpoint=str(ckpt), input=str(folder), out=str(tmp_path / "s.tsv"), chunk_size=300,
                               per_position=str(tmp_path / "s.bedgraph"), device="cpu"))
    head, rows = _rows(tmp_path / "s.tsv")
    assert head[-1] == "bits_per_byte" and [r["record"] for r in rows] == ["a.txt", "b.bin"]
    for row, data in zip(rows, (TEXT[:700], ODD), strict=True):
        hand = _hand_bits(model, data)
        assert int(row["scored"]) == len(data) - 1
        assert float(row["total_bits"]) == pytest.approx(hand, rel=1e-4)
        assert float(row["bits_per_byte"]) == pytest.approx(hand / (len(data) - 1), rel=1e-4)
    assert result.scored == 700 - 1 + len(ODD) - 1
    assert len((tmp_path / "s.bedgraph").read_text().splitlines()) == result.scored
    score(ScoreConfig(checkpoint=str(ckpt), input=str(root / "text.txt"), out=str(tmp_path / "w.tsv"), window=500,
                      device="cpu"))
    _, rows = _rows(tmp_path / "w.tsv")
    data = (root / "text.txt").read_bytes()
    assert len(rows) == math.ceil(len(data) / 500) and rows[1]["id"] == "text.txt:501-1000"
    assert float(rows[1]["total_bits"]) == pytest.approx(_hand_bits(model, data[500:1000]), rel=1e-4)


def test_generate_writes_n_raw_bytes(runs, tmp_path):
    ckpt = runs["ckpt"]
    (tmp_path / "prompt.bin").write_bytes(b"\x00The quick")
    outs = []
    for i, prompt in enumerate(({"prompt": "The qu"}, {"prompt_file": str(tmp_path / "prompt.bin")}, {}, {})):
        out = generate(GenerateConfig(checkpoint=str(ckpt), out=str(tmp_path / f"g{i}.txt"), length=57, seed=1,
                                      modality="bytes", device="cpu", **prompt))
        outs.append(out.read_bytes())
    assert [len(o) for o in outs] == [57] * 4
    assert outs[2] == outs[3]  # seeded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g0.txt", "g1.txt", "g2.txt", "g3.txt", "prompt.bin"]


def test_save_load_round_trip_gives_the_same_logits(runs, tmp_path):
    model = load_model(runs["ckpt"]).eval()
    model.save_pretrained(tmp_path / "again")
    again = load_model(tmp_path / "again").eval()
    ids = torch.as_tensor(TOK.encode(ODD, add_special_tokens=True))[None]
    with torch.no_grad():
        assert torch.equal(model(ids), again(ids))
    assert again.config == model.config


def test_masked_byte_model_pretrains_and_scores(tmp_path):
    (tmp_path / "t.txt").write_bytes(TEXT)
    result = pretrain(PretrainConfig(data=str(tmp_path / "t.txt"), out=str(tmp_path / "mlm"), modality="bytes",
                                     objective="mlm", bidirectional=True, **{**TINY, "steps": 2}))
    assert math.isfinite(result.val_bits_per_token)
    (tmp_path / "short.txt").write_bytes(b"hello\x00world")
    scored = score(ScoreConfig(checkpoint=str(result.checkpoint), input=str(tmp_path / "short.txt"),
                               out=str(tmp_path / "s.tsv"), device="cpu"))
    assert scored.scored == 11  # pseudo-log-likelihood: every byte


# ------------------------------------------------------------------------------------------ bad input


def _cli(args, capsys, monkeypatch) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `seqssm ARGS`, in this process."""
    from seqssm import cli

    monkeypatch.setattr(sys, "argv", ["seqssm", *map(str, args)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


@pytest.fixture(scope="module")
def dna_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("dna") / "lm"
    MambaLMHeadModel(MambaConfig(d_model=16, n_layer=1, vocab_size=10, d_state=4)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def audio_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "alm"
    MambaLMHeadModel(MambaConfig(d_model=16, n_layer=1, vocab_size=256, d_state=4, tokenizer="mulaw8",
                                 sample_rate=8000)).save_pretrained(path)
    return path


def test_pretrain_cli_reports_bits_per_byte(runs, tmp_path, capsys, monkeypatch):
    code, out, err = _cli(["pretrain", runs["root"] / "genome.fa.gz", "--modality", "bytes", "--out", tmp_path / "r",
                           "--steps", "2", "--window", "16", "--batch-size", "2", "--d-model", "8", "--n-layer", "1",
                           "--val-windows", "2", "--device", "cpu"], capsys, monkeypatch)
    assert code in (0, None), err
    assert "bits per byte (uniform 8.0)" in out


def test_generate_cli_writes_bytes(runs, tmp_path, capsys, monkeypatch):
    code, out, err = _cli(["generate", runs["ckpt"], "--modality", "bytes", "--length", "33", "--prompt", "Th",
                           "--out", tmp_path / "x.bin", "--device", "cpu"], capsys, monkeypatch)
    assert code in (0, None), err
    assert len((tmp_path / "x.bin").read_bytes()) == 33 and "wrote 33 bytes" in out


@pytest.mark.parametrize("case,message", [
    ("rc-equivariant", "--rc-equivariant is for DNA"),
    ("init from a DNA model", "--modality bytes but checkpoint"),
    ("missing data", "does not exist"),
    ("empty file", "is empty (0 bytes)"),
    ("window too long", "is longer than every file"),
    ("corrupt gzip", "corrupt or truncated gzip"),
    ("embed a DNA model as bytes", "--modality bytes but checkpoint"),
    ("embed bytes --stream", "drop --stream"),
    ("embed a byte model as DNA", "--modality dna but checkpoint"),
    ("embed a byte model --stream", "drop --stream"),
    ("embed an audio model as bytes", "seqssm score-audio"),
    ("embed an audio model as DNA", "seqssm score-audio"),
    ("generate bytes -n 2", "use -n 1"),
    ("generate bytes --allow-ambiguous", "--allow-ambiguous is for DNA"),
    ("generate DNA --prompt-file", "--prompt-file is for byte-level models"),
    ("generate bytes -n 2 without --modality", "use -n 1"),
    ("generate a DNA model as bytes", "--modality bytes but checkpoint"),
    ("generate a byte model as DNA", "--modality dna but checkpoint"),
    ("generate a byte model as audio", "--modality audio but checkpoint"),
    ("generate an audio model as bytes", "--modality bytes but checkpoint"),
    ("generate an audio model as DNA", "--modality dna but checkpoint"),
    ("score bytes --region", "--region is for DNA"),
    ("score DNA --window", "--window is for byte-level models"),
    ("score bytes bigWig", "bigWig is for genomes"),
])
def test_bad_byte_inputs_exit_2_with_one_line(case, message, runs, dna_ckpt, audio_ckpt, tmp_path, capsys,
                                              monkeypatch):
    ckpt, text = runs["ckpt"], runs["root"] / "text.txt"
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(TEXT)[:40])
    (tmp_path / "p.bin").write_bytes(b"x")
    train = ["pretrain", "--modality", "bytes", "--out", tmp_path / "r", "--steps", "1", "--device", "cpu"]
    args = {
        "rc-equivariant": [*train, text, "--rc-equivariant", "--bidirectional", "--objective", "mlm"],
        "missing data": [*train, tmp_path / "nope.txt"],
        "init from a DNA model": [*train, text, "--init-from", dna_ckpt],
        "empty file": [*train, tmp_path / "empty.txt"],
        "window too long": [*train, text, "--window", "4096"],
        "corrupt gzip": [*train, tmp_path / "bad.gz"],
        "embed a DNA model as bytes": ["embed", dna_ckpt, text, "--modality", "bytes", "--out", tmp_path / "e"],
        "embed a byte model as DNA": ["embed", ckpt, text, "--modality", "dna", "--out", tmp_path / "e"],
        "embed a byte model --stream": ["embed", ckpt, text, "--per-position", "--stream", "--out", tmp_path / "e"],
        "embed an audio model as bytes": ["embed", audio_ckpt, text, "--modality", "bytes", "--out", tmp_path / "e"],
        "embed an audio model as DNA": ["embed", audio_ckpt, text, "--modality", "dna", "--out", tmp_path / "e"],
        "embed bytes --stream": ["embed", ckpt, text, "--modality", "bytes", "--per-position", "--stream",
                                 "--out", tmp_path / "e"],
        "generate bytes -n 2": ["generate", ckpt, "--modality", "bytes", "-n", "2", "--out", tmp_path / "g"],
        "generate bytes --allow-ambiguous": ["generate", ckpt, "--modality", "bytes", "--allow-ambiguous",
                                             "--out", tmp_path / "g"],
        "generate DNA --prompt-file": ["generate", dna_ckpt, "--prompt-file", tmp_path / "p.bin", "--out",
                                       tmp_path / "g"],
        "generate bytes -n 2 without --modality": ["generate", ckpt, "-n", "2", "--out", tmp_path / "g"],
        "generate a DNA model as bytes": ["generate", dna_ckpt, "--modality", "bytes", "--out", tmp_path / "g"],
        "generate a byte model as DNA": ["generate", ckpt, "--modality", "dna", "--out", tmp_path / "g"],
        "generate a byte model as audio": ["generate", ckpt, "--modality", "audio", "--out", tmp_path / "g"],
        "generate an audio model as bytes": ["generate", audio_ckpt, "--modality", "bytes", "--out", tmp_path / "g"],
        "generate an audio model as DNA": ["generate", audio_ckpt, "--modality", "dna", "--out", tmp_path / "g"],
        "score bytes --region": ["score", ckpt, text, "--region", "text.txt:1-10", "--out", tmp_path / "s.tsv"],
        "score DNA --window": ["score", dna_ckpt, text, "--window", "10", "--out", tmp_path / "s.tsv"],
        "score bytes bigWig": ["score", ckpt, text, "--per-position", tmp_path / "s.bw", "--out", tmp_path / "s.tsv"],
    }[case]
    code, _, err = _cli(args, capsys, monkeypatch)
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    if case.startswith(("embed", "generate")) and "--modality" in message:  # a contradicting --modality:
        assert "mismatched modality:" in lines[0] and "drop --modality" in lines[0], lines[0]  # the checkpoint's wins
    assert not (tmp_path / "r").exists() and not (tmp_path / "g").exists()
