"""The `seqssm` command: a tiny end-to-end round trip, help text and bad input. The pretraining run and the
import check are real processes, as a user runs them; the other commands go through the console script's entry
point in this process (``cli_harness``: the same code, without 1-5 s of imports each)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from Bio import SeqIO
from cli_harness import run_cli_result

SEQSSM = str(Path(sys.executable).parent / "seqssm")
TINY = ["--d-model", "16", "--n-layer", "1", "--d-state", "4", "--window", "32", "--batch-size", "2",
        "--val-windows", "2", "--device", "cpu"]


def run(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEQSSM_PROGRESS": "0"}
    return subprocess.run([SEQSSM, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env)


@pytest.fixture
def seqssm(capsys, monkeypatch):
    """``seqssm(*args)``: the command run in this process, as a finished process (exit code, stdout, stderr)."""
    monkeypatch.setenv("SEQSSM_PROGRESS", "0")
    return lambda *args: run_cli_result(list(args), capsys, monkeypatch)


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in line, line


@pytest.fixture(scope="module")
def genome(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("genome") / "toy.fa.gz"
    seqs = ["".join(rng.choice(list("ACGT"), n)) for n in (900, 400)]
    with gzip.open(path, "wt") as f:
        for i, s in enumerate(seqs):
            f.write(f">contig{i}\n{s}\n")
    return path


@pytest.fixture(scope="module")
def checkpoint(genome, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    proc = run("pretrain", genome, "--out", out, "--steps", "4", "--val-every", "2", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "bits per base" in proc.stdout
    log = (out / "train_log.tsv").read_text().splitlines()
    assert len(log) == 3  # header + validations at steps 2 and 4
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["steps"] == 4 and "torch" in record["versions"]
    return out / "checkpoint"


def test_info(checkpoint, seqssm):
    proc = seqssm("info", checkpoint)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["config"]["d_model"] == 16 and info["parameters"] > 0


def test_embed_windows_and_per_position(checkpoint, genome, tmp_path, seqssm):
    proc = seqssm("embed", checkpoint, genome, "--out", tmp_path / "w", "--window", "256", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    emb = np.load(tmp_path / "w" / "embeddings.npy")
    index = (tmp_path / "w" / "index.tsv").read_text().splitlines()
    # 900 bp -> 4 windows (last 132 bp), 400 bp -> 2 windows
    assert emb.shape == (6, 16) and len(index) == 7 and np.isfinite(emb).all()
    assert index[4].split("\t") == ["contig0:769-900", "contig0", "768", "900"]

    proc = seqssm("embed", checkpoint, genome, "--out", tmp_path / "p", "--per-position", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    pos = np.load(tmp_path / "p" / "embeddings.npy", mmap_mode="r")
    assert pos.shape == (1300, 16) and pos.dtype == np.float16


def test_generate_writes_fasta(checkpoint, tmp_path, seqssm):
    out = tmp_path / "gen.fa"
    proc = seqssm("generate", checkpoint, "--out", out, "--length", "50", "-n", "2", "--prompt", "ACGTACGT",
               "--top-k", "3", "--top-p", "0.9", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    records = list(SeqIO.parse(out, "fasta"))
    assert [len(r.seq) for r in records] == [50, 50]
    assert set("".join(str(r.seq) for r in records)) <= set("ACGT")


def test_help_shows_an_example(seqssm):
    for command in ("pretrain", "embed", "generate", "info", "demo"):
        proc = seqssm(command, "--help")
        assert proc.returncode == 0 and "Example" in proc.stdout and f"seqssm {command}" in proc.stdout


def test_help_and_option_parsing_do_not_import_torch(tmp_path):
    """`seqssm CMD --help` and the CLI module (every config dataclass and option check) start without torch,
    numpy or scikit-learn: those load only when a command runs its job."""
    code = ("import sys, seqssm.cli; "
            "print(sorted(m for m in ('torch', 'numpy', 'sklearn') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_missing_fasta(tmp_path, seqssm):
    assert_user_error(seqssm("pretrain", tmp_path / "nope.fa", "--out", tmp_path / "o", *TINY), "nope.fa",
                      "does not exist")


def test_empty_and_non_fasta(tmp_path, seqssm):
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    assert_user_error(seqssm("pretrain", empty, "--out", tmp_path / "o", *TINY), "empty.fa")
    text = tmp_path / "notes.fa"
    text.write_text("hello world\nthis is not a FASTA file\n")
    assert_user_error(seqssm("pretrain", text, "--out", tmp_path / "o", *TINY), "notes.fa")


def test_characters_outside_iupac(tmp_path, seqssm):
    bad = tmp_path / "bad.fa"
    bad.write_text(">r1\nACGTACGTAC\n>r2\nACGT1234ACGT\n")
    assert_user_error(seqssm("pretrain", bad, "--out", tmp_path / "o", *TINY), "'1'")


def test_window_longer_than_genome(genome, tmp_path, seqssm):
    args = [a if a != "32" else "5000" for a in TINY]
    assert_user_error(seqssm("pretrain", genome, "--out", tmp_path / "o", *args), "window")


def test_not_a_checkpoint(genome, tmp_path, seqssm):
    assert_user_error(seqssm("info", tmp_path), str(tmp_path))
    out = tmp_path / "gen.fa"
    assert_user_error(seqssm("generate", tmp_path, "--out", out, "--device", "cpu"), str(tmp_path))
    assert not out.exists()


def test_failed_run_leaves_no_partial_output(checkpoint, tmp_path, seqssm):
    out = tmp_path / "emb"
    bad = tmp_path / "bad.fa"
    bad.write_text(">r1\n" + "ACGT" * 100 + "\n>r2\nAC-GT\n")
    assert_user_error(seqssm("embed", checkpoint, bad, "--out", out, "--device", "cpu"), "'-'")
    assert not (out / "embeddings.npy").exists() and not (out / "index.tsv").exists()
    assert not out.exists() or list(out.iterdir()) == []


def test_parse_region_is_one_based_inclusive_at_the_edge():
    from seqssm.cli import parse_region
    from seqssm.errors import InputError

    assert parse_region("chrI") == ("chrI", 0, None)
    assert parse_region("chrI:1-1,000") == ("chrI", 0, 1000)
    assert parse_region("HLA:A*01:5-5") == ("HLA:A*01", 4, 5)
    for bad in ("chrI:0-10", "chrI:10-5", "chrI:a-b"):
        with pytest.raises(InputError):
            parse_region(bad)


def test_streamed_per_position_equals_one_pass(checkpoint, genome, tmp_path, seqssm):
    plain = tmp_path / "toy.fa"
    plain.write_bytes(gzip.decompress(genome.read_bytes()))
    proc = seqssm("embed", checkpoint, plain, "--out", tmp_path / "s", "--per-position", "--stream",
               "--region", "contig0:101-300", "--chunk-size", "64", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    streamed = np.load(tmp_path / "s" / "embeddings.npy")
    proc = seqssm("embed", checkpoint, plain, "--out", tmp_path / "p", "--per-position", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    whole = np.load(tmp_path / "p" / "embeddings.npy")
    assert streamed.shape == (200, 16)
    # the stream starts at base 100 with a zero state, the one-pass run at base 0: compare a one-pass run of the
    # same region instead, which starts from the same zero state
    region = tmp_path / "region.fa"
    region.write_text(">r\n" + plain.read_text().split("\n")[1][100:300] + "\n")
    proc = seqssm("embed", checkpoint, region, "--out", tmp_path / "r", "--per-position", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(streamed.astype(np.float32), np.load(tmp_path / "r" / "embeddings.npy").astype(
        np.float32), atol=2e-2, rtol=2e-2)
    assert whole.shape == (1300, 16)


def test_stream_needs_per_position(checkpoint, genome, tmp_path, seqssm):
    assert_user_error(seqssm("embed", checkpoint, genome, "--out", tmp_path / "x", "--stream"), "--per-position")


def test_predict_ensemble_and_mismatched_checkpoints(tmp_path, seqssm):
    import torch

    from seqssm.config import MambaConfig
    from seqssm.models import MambaLMHeadModel
    from seqssm.models.heads import SequenceClassifier, TaskConfig

    def classifier(name, classes):
        torch.manual_seed(len(name))
        config = MambaConfig(d_model=8, n_layer=1, d_state=4, expand=1, vocab_size=10)
        SequenceClassifier(MambaLMHeadModel(config, impl="chunked"), TaskConfig(classes=classes)).save_pretrained(
            tmp_path / name)
        return tmp_path / name

    one, two, three = classifier("one", ["0", "1"]), classifier("two", ["0", "1"]), classifier("three", ["0", "2"])
    data = tmp_path / "in.tsv"
    data.write_text("sequence\tid\nACGTAC\tx\nGGGA\ty\n")
    proc = seqssm("predict", one, two, data, "--out", tmp_path / "p.tsv", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "2 predictions over 2 classes, the mean of 2 checkpoints" in proc.stdout
    out = tmp_path / "q.tsv"
    assert_user_error(seqssm("predict", one, three, data, "--out", out, "--device", "cpu"), str(one), str(three),
                      "classes ['0', '1'] vs ['0', '2']")
    assert not out.exists()


def test_console_script_joins_threads_runs_atexit_flushes_and_keeps_the_exit_code(monkeypatch, capsys):
    """``seqssm.cli.console`` (the console script) skips only the interpreter's teardown: a running
    non-daemon thread is waited for, the atexit handlers run, the exit code is main's."""
    import threading
    import time

    from seqssm import cli

    done, calls = [], []

    def fake_main():
        print("result line")
        threading.Thread(target=lambda: (time.sleep(0.2), done.append(True))).start()
        raise SystemExit(3)

    class Exited(Exception):
        pass

    def fake_exit(code):
        calls.append(("exit", code))
        raise Exited

    def fake_shutdown():  # threading's real one here would also stop this test process's thread pools
        calls.append(("threads",))
        for thread in started:
            thread.join()

    started = []
    real_start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: (started.append(self), real_start(self))[1])
    monkeypatch.setattr(cli, "main", fake_main)
    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    monkeypatch.setattr(threading, "_shutdown", fake_shutdown)
    monkeypatch.setattr("atexit._run_exitfuncs", lambda: calls.append(("atexit",)))
    with pytest.raises(Exited):
        cli.console()
    assert done == [True] and calls == [("threads",), ("atexit",), ("exit", 3)]
    assert capsys.readouterr().out == "result line\n"
    monkeypatch.setattr(cli, "main", lambda: None)
    with pytest.raises(Exited):
        cli.console()
    assert calls[-1] == ("exit", 0)


def test_console_exit_does_not_wait_for_idle_thread_pools(tmp_path):
    """A ThreadPoolExecutor left open (its idle workers are non-daemon threads) must not hang the fast exit,
    as it does not hang Python's own: a real process, with the atexit handler's output checked."""
    code = ("import atexit; from concurrent.futures import ThreadPoolExecutor\n"
            "pool = ThreadPoolExecutor(1); pool.submit(int).result()\n"
            "atexit.register(lambda: print('atexit ran', flush=True))\n"
            "from seqssm.cli import exit_now; exit_now(4)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 4 and proc.stdout == "atexit ran\n", proc.stderr


def test_console_script_writes_complete_outputs(checkpoint, genome, tmp_path):
    """Through the real console script (fast exit): the streamed rows equal an in-process run's, the index
    is written, and a user error still exits 2 with one line."""
    from seqssm.pipelines.stream_embed import StreamEmbedConfig, stream_embed

    proc = run("embed", checkpoint, genome, "--out", tmp_path / "s", "--per-position", "--stream", "--region",
               "contig0:1-300", "--chunk-size", "128", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "300 positions of contig0" in proc.stdout
    here = stream_embed(StreamEmbedConfig(checkpoint=str(checkpoint), source=str(genome), record="contig0", end=300,
                                          chunk_size=128, device="cpu", out=str(tmp_path / "here")))
    assert (tmp_path / "s" / "embeddings.npy").read_bytes() == here.embeddings.read_bytes()
    assert (tmp_path / "s" / "index.tsv").read_text() == here.index.read_text()
    assert_user_error(run("embed", checkpoint, genome, "--out", tmp_path / "x", "--stream"), "--per-position")
