"""No output ever destroys what is there: every command that writes, run through the real CLI entry point
(``seqssm.cli.main`` in this process, so exit codes and the one-line errors are the user's), next to
precious files it must not touch. Also checkpoint digests, non-finite models, checkpoints of the wrong
modality or task, stale temporaries of killed runs, and the atomic swap itself.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from seqssm.cli import main
from seqssm.config import MambaConfig
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel, load_model
from seqssm.models.heads import SequenceClassifier, TaskConfig
from seqssm.pipelines import outputs
from seqssm.pipelines.common import atomic_path, remove_stale_temps

DEAD_PID = 4_194_400  # above Linux's largest pid_max (2**22), so never a running process
FILE, FOLDER = "file", "folder"


# ------------------------------------------------------------------------------------------ fixtures


def _lm(path: Path, **kw) -> str:
    torch.manual_seed(0)
    config = MambaConfig(**{"d_model": 16, "n_layer": 1, "d_state": 4, "expand": 1, "vocab_size": 10, **kw})
    MambaLMHeadModel(config, impl="chunked").save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Inputs and checkpoints shared by the module; tests only read them (`snapshot` checks that)."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    dna = lambda n: "".join(rng.choice(list("ACGT"), n))  # noqa: E731
    (root / "genome.fa").write_text(f">c0\n{dna(600)}\n>c1\n{dna(200)}\n")
    with open(root / "table.tsv", "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["id", "sequence", "label"])
        writer.writerows([(f"s{i}", dna(20), "ab"[i % 2]) for i in range(24)])
    with open(root / "predictions.tsv", "w") as f:
        f.write("id\tpredicted\tprob_a\tprob_b\tlabel\n")
        f.writelines(f"s{i}\t{'ab'[i % 3 == 0]}\t{p:.2f}\t{1 - p:.2f}\t{'ab'[i % 2]}\n"
                     for i, p in enumerate(np.linspace(0.1, 0.9, 8)))
    sf.write(root / "clip.wav", (0.3 * np.sin(np.arange(400) / 5)).astype(np.float32), 8000, subtype="PCM_16")
    lm = _lm(root / "lm")
    audio_lm = _lm(root / "audio_lm", vocab_size=256, tokenizer="mulaw8", sample_rate=8000)
    torch.manual_seed(0)
    backbone = MambaLMHeadModel(MambaConfig(d_model=16, n_layer=1, d_state=4, expand=1, vocab_size=10,
                                            bidirectional=True), impl="chunked")
    SequenceClassifier(backbone, TaskConfig(classes=["a", "b"])).save_pretrained(root / "clf")
    return {"root": root, "genome": root / "genome.fa", "table": root / "table.tsv", "wav": root / "clip.wav",
            "predictions": root / "predictions.tsv", "lm": lm, "audio_lm": audio_lm, "clf": str(root / "clf")}


@pytest.fixture
def seqssm(monkeypatch, capsys):
    """Run `seqssm ARGS...` as the console script does; (exit code, stderr). Any exception other than the
    exit escapes, so a traceback fails the test."""

    def run(*args) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["seqssm", *map(str, args)])
        with pytest.raises(SystemExit) as stop:
            main()
        err = capsys.readouterr().err
        return stop.value.code or 0, err

    return run


def ok(result):
    code, err = result
    assert code == 0, err


def refused(result, *fragments):
    code, err = result
    assert code == 2, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in line, line


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def inodes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_ino for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------- every writing command

TINY_PRETRAIN = ["--d-model", "16", "--n-layer", "1", "--d-state", "4", "--window", "32", "--batch-size", "2",
                 "--steps", "2", "--val-every", "2", "--val-windows", "2", "--device", "cpu"]
TINY_FINETUNE = ["--d-model", "8", "--n-layer", "1", "--d-state", "4", "--epochs", "1", "--batch-size", "8",
                 "--device", "cpu", "--impl", "chunked"]

# command: (kind of --out, name of --out, args before --out given the inputs, args after it)
COMMANDS = {
    "pretrain": (FOLDER, "run", lambda d: ["pretrain", d["genome"]], TINY_PRETRAIN),
    "finetune": (FOLDER, "run", lambda d: ["finetune", d["table"]], TINY_FINETUNE),
    "predict": (FILE, "p.tsv", lambda d: ["predict", d["clf"], d["table"]], ["--device", "cpu"]),
    "evaluate": (FOLDER, "report", lambda d: ["evaluate", d["predictions"]], []),
    "embed": (FOLDER, "emb", lambda d: ["embed", d["lm"], d["genome"]], ["--window", "100", "--device", "cpu"]),
    "embed --stream": (FOLDER, "emb", lambda d: ["embed", d["lm"], d["genome"]],
                       ["--per-position", "--stream", "--region", "c1", "--chunk-size", "64", "--device", "cpu"]),
    "generate": (FILE, "gen.fa", lambda d: ["generate", d["lm"]], ["--length", "20", "--device", "cpu"]),
    "generate audio": (FILE, "gen.wav", lambda d: ["generate", d["audio_lm"]],
                       ["--modality", "audio", "--seconds", "0.005", "--device", "cpu"]),
    "probe": (FOLDER, "probe", lambda d: ["probe", d["lm"], d["table"]], ["--folds", "2", "--device", "cpu"]),
    "score-audio": (FOLDER, "scores", lambda d: ["score-audio", d["audio_lm"], d["wav"]], ["--device", "cpu"]),
    "demo": (FOLDER, "demo", lambda d: ["demo"], ["--steps", "1", "--device", "cpu"]),
    "export": (FOLDER, "hf", lambda d: ["export", d["lm"]], ["--format", "hf"]),
}
WHOLE = {"export"}  # writes its --out folder as a whole, so nothing of the user's belongs inside it


def command(name, data, out, *extra):
    _, _, head, tail = COMMANDS[name]
    return [*head(data), "--out", out, *tail, *extra]


@pytest.mark.parametrize("name", COMMANDS)
def test_an_output_of_the_other_kind_is_refused(name, data, seqssm, tmp_path):
    kind, out_name, _, _ = COMMANDS[name]
    out = tmp_path / out_name
    if kind == FILE:  # a folder where the file would go, with something precious inside
        out.mkdir()
        (out / "precious.txt").write_text("keep me")
        fragment = "is an existing folder"
    else:
        out.write_text("keep me")
        fragment = "is an existing file"
    before = snapshot(tmp_path)
    for flags in ([], ["--overwrite"]):
        refused(seqssm(*command(name, data, out, *flags)), fragment)
        assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", COMMANDS)
def test_an_existing_output_needs_overwrite_and_other_files_stay(name, data, seqssm, tmp_path):
    kind, out_name, _, _ = COMMANDS[name]
    out = tmp_path / out_name
    precious = (out if kind == FOLDER and name not in WHOLE else tmp_path) / "precious.txt"
    precious.parent.mkdir(exist_ok=True)
    precious.write_text("keep me")
    if name == "demo":  # a demo run takes a minute on the CPU: an earlier one's output is made by hand, and
        (out / "generated.fa").write_text(">earlier\nACGT\n")  # --overwrite is that of the three commands above
        before = snapshot(tmp_path)
        refused(seqssm(*command(name, data, out)), "generated.fa", "--overwrite")
        assert snapshot(tmp_path) == before
        return
    ok(seqssm(*command(name, data, out)))
    first, first_inodes = snapshot(tmp_path), inodes(tmp_path)
    assert len(first) > 1
    # A streamed run of the same job resumes (here: is already complete); starting over is what destroys.
    again = ["--no-resume"] if name == "embed --stream" else []
    refused(seqssm(*command(name, data, out, *again)), "--overwrite")
    assert snapshot(tmp_path) == first
    ok(seqssm(*command(name, data, out, *again, "--overwrite")))
    assert precious.read_text() == "keep me"
    now = inodes(tmp_path)
    assert set(now) == set(first_inodes)
    replaced = [p for p in now if p != str(precious.relative_to(tmp_path)) and now[p] != first_inodes[p]]
    assert replaced, "no output was replaced"
    if name != "embed --stream":  # written in place so it can resume; the others are all new files
        assert len(replaced) == len(now) - 1
    assert not [p for p in now if p.endswith(".tmp") or "/." in p or p.startswith(".")]


# (--out, fragment of the message) that would write over, into or around an input
ON_INPUTS = {
    "pretrain": (lambda d: d["root"], "holds the training data"),
    "finetune": (lambda d: d["root"], "holds the training data"),
    "predict": (lambda d: d["table"], "is the input"),
    "evaluate": (lambda d: d["root"], "holds the predictions file"),
    "embed": (lambda d: d["lm"], "is the checkpoint"),
    "embed --stream": (lambda d: Path(d["lm"]) / "emb", "is inside the checkpoint"),
    "generate": (lambda d: d["lm"], "is the checkpoint"),
    "generate audio": (lambda d: Path(d["audio_lm"]) / "x.wav", "is inside the checkpoint"),
    "probe": (lambda d: d["lm"], "is the checkpoint"),
    "score-audio": (lambda d: d["root"], "holds the checkpoint"),
    "export": (lambda d: d["lm"], "is the checkpoint"),
}


@pytest.mark.parametrize("name", ON_INPUTS)
def test_an_output_never_replaces_an_input(name, data, seqssm):
    where, fragment = ON_INPUTS[name]
    before = snapshot(data["root"])
    for flags in ([], ["--overwrite"]):
        refused(seqssm(*command(name, data, where(data), *flags)), fragment, "choose")
        assert snapshot(data["root"]) == before


def test_generate_into_its_own_checkpoint_is_refused_and_the_checkpoint_survives(data, seqssm):
    before = snapshot(Path(data["lm"]))
    refused(seqssm("generate", data["lm"], "--out", data["lm"], "--overwrite"), "is the checkpoint", "itself")
    refused(seqssm("pretrain", data["genome"], "--out", Path(data["lm"]).parent, "--init-from", data["lm"],
                   *TINY_PRETRAIN), "holds")
    assert snapshot(Path(data["lm"])) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("name", COMMANDS)
def test_a_read_only_parent_is_refused_before_the_work(name, data, seqssm, tmp_path):
    kind, out_name, _, _ = COMMANDS[name]
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        refused(seqssm(*command(name, data, locked / out_name)), "--out", "cannot write in folder", str(locked))
        refused(seqssm(*command(name, data, locked / "new" / out_name)), "cannot write in folder")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


# ---------------------------------------------------------------------------- failures leave nothing


def test_a_failed_embed_or_predict_leaves_no_folder(data, seqssm, tmp_path):
    empty = tmp_path / "empty.fa"
    empty.write_text(">only_a_name\n")
    refused(seqssm("embed", data["lm"], empty, "--out", tmp_path / "a" / "emb", "--device", "cpu"), "no sequence")
    header_only = tmp_path / "header.tsv"
    header_only.write_text("id\tsequence\n")
    refused(seqssm("predict", data["clf"], header_only, "--out", tmp_path / "b" / "p.tsv", "--device", "cpu"),
            "no inputs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.fa", "header.tsv"]


def test_stale_temporaries_of_killed_runs_are_removed(data, seqssm, tmp_path):
    out = tmp_path / "gen.fa"
    dead = tmp_path / f".gen.fa.{DEAD_PID}-abcdefgh.tmp"
    legacy = tmp_path / ".gen.fa.k2j4h5g6.tmp"  # older seqssm: no pid in the name
    live = tmp_path / f".gen.fa.{os.getpid()}-running.tmp"  # a run still going: kept
    other = tmp_path / ".other.fa.k2j4h5g6.tmp"  # another output's: not ours to judge
    for path in (dead, legacy, live, other):
        path.write_text("half")
    ok(seqssm("generate", data["lm"], "--out", out, "--length", "5", "--device", "cpu"))
    assert out.exists() and not dead.exists() and not legacy.exists() and live.exists() and other.exists()

    run = tmp_path / "run"
    killed_save = run / f".checkpoint.{DEAD_PID}-abcdefgh.tmp"  # a kill during a checkpoint save
    killed_save.mkdir(parents=True)
    (killed_save / "model.safetensors.tmp").write_bytes(b"\0" * 64)
    ok(seqssm("pretrain", data["genome"], "--out", run, *TINY_PRETRAIN))
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint", "run.json", "train_log.tsv", "trainer_state"]


def test_lr_and_other_bad_numbers_are_user_errors(data, seqssm, tmp_path):
    refused(seqssm("pretrain", data["genome"], "--out", tmp_path / "r", *TINY_PRETRAIN, "--lr", "-1"), "--lr")
    refused(seqssm("pretrain", data["genome"], "--out", tmp_path / "r", *TINY_PRETRAIN, "--weight-decay", "-1"),
            "--weight-decay")
    refused(seqssm("finetune", data["table"], "--out", tmp_path / "f", *TINY_FINETUNE, "--weight-decay", "-1"),
            "--weight-decay")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ damaged checkpoints


def _flip_data_bytes(weights: Path) -> None:
    """Change bytes in the tensor data, keeping the header (and so the file's structure) intact."""
    raw = bytearray(weights.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    for i in range(start + 5, len(raw), 97):
        raw[i] ^= 0x5A
    weights.write_bytes(bytes(raw))


def _copy(src, dst: Path) -> Path:
    dst.mkdir()
    for p in Path(src).iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_tampered_weights_are_refused_as_corrupt(data, seqssm, tmp_path):
    lm = _copy(data["lm"], tmp_path / "lm")
    _flip_data_bytes(lm / "model.safetensors")
    refused(seqssm("embed", lm, data["genome"], "--out", tmp_path / "e", "--device", "cpu"),
            f"checkpoint {lm} is corrupt (checksum mismatch)")
    refused(seqssm("generate", lm, "--out", tmp_path / "g.fa", "--device", "cpu"), "corrupt (checksum mismatch)")
    refused(seqssm("info", lm), "corrupt")
    for name in ("model.safetensors", "head.safetensors"):
        clf = _copy(data["clf"], tmp_path / f"clf_{name}")
        _flip_data_bytes(clf / name)
        refused(seqssm("predict", clf, data["table"], "--out", tmp_path / "p.tsv", "--device", "cpu"),
                "corrupt (checksum mismatch)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf_head.safetensors", "clf_model.safetensors", "lm"]


def test_a_checkpoint_without_digest_still_loads(data, tmp_path):
    lm = _copy(data["lm"], tmp_path / "old")
    tensors = load_file(lm / "model.safetensors")
    save_file(tensors, str(lm / "model.safetensors"), metadata={"format": "pt"})  # as seqssm wrote them before
    reference = load_model(data["lm"])
    loaded = load_model(lm)
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), loaded.state_dict().values(),
                                                 strict=True))


@pytest.mark.parametrize("value, fragment", [(float("nan"), "non-finite weights"),
                                             (1e38, "non-finite outputs")])
def test_a_model_that_gives_nan_is_refused(data, seqssm, tmp_path, value, fragment):
    model = load_model(data["lm"])
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)  # saved like that: the digest is of these bytes
    model.save_pretrained(tmp_path / "bad")
    refused(seqssm("embed", tmp_path / "bad", data["genome"], "--out", tmp_path / "e", "--device", "cpu"), fragment)
    refused(seqssm("generate", tmp_path / "bad", "--out", tmp_path / "g.fa", "--device", "cpu"), fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


# ------------------------------------------------------------------- checkpoints of the wrong kind


def test_the_wrong_modality_or_task_is_refused_with_the_fitting_command(data, seqssm, tmp_path):
    cpu = ["--device", "cpu"]
    refused(seqssm("embed", data["audio_lm"], data["genome"], "--out", tmp_path / "e", *cpu),
            "mismatched modality", "audio", "seqssm score-audio")
    refused(seqssm("generate", data["audio_lm"], "--out", tmp_path / "g.fa", *cpu), "audio is written as WAV")
    refused(seqssm("generate", data["lm"], "--modality", "audio", "--out", tmp_path / "g.wav", *cpu),
            "drop --modality audio")
    refused(seqssm("score-audio", data["lm"], data["wav"], "--out", tmp_path / "s", *cpu), "seqssm embed")
    refused(seqssm("embed", data["audio_lm"], data["genome"], "--out", tmp_path / "s", "--per-position",
                   "--stream", *cpu), "score-audio")
    refused(seqssm("pretrain", data["genome"], "--out", tmp_path / "r", "--init-from", data["audio_lm"],
                   *TINY_PRETRAIN), "mismatched modality: --modality dna")
    refused(seqssm("finetune", data["table"], "--out", tmp_path / "f", "--init-from", data["audio_lm"],
                   *TINY_FINETUNE), "mismatched modality")
    refused(seqssm("generate", data["clf"], "--out", tmp_path / "g.fa", *cpu), "fine-tuned classifier",
            "seqssm predict")
    refused(seqssm("score-audio", data["clf"], data["wav"], "--out", tmp_path / "s", *cpu), "fine-tuned classifier")
    refused(seqssm("predict", data["lm"], data["table"], "--out", tmp_path / "p.tsv", *cpu),
            "no classification head", "seqssm finetune")
    refused(seqssm("pretrain", data["genome"], "--out", tmp_path / "r", "--init-from", data["clf"], *TINY_PRETRAIN),
            "fine-tuned classifier")
    refused(seqssm("pretrain", data["genome"], "--out", tmp_path / "r", "--init-from", data["lm"], *TINY_PRETRAIN,
                   "--objective", "mlm", "--bidirectional"), "is causal")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------- the atomic swap


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two renames"])
def test_atomic_path_swaps_folders_and_never_mixes_kinds(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"] and [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    with pytest.raises(InputError, match="never replaces a folder by a file"), atomic_path(target) as tmp:
        tmp.write_text("a file")
    (tmp_path / "f.txt").write_text("precious")
    with pytest.raises(InputError, match="never replaces a file by a folder"), atomic_path(tmp_path / "f.txt") as tmp:
        tmp.mkdir()
    assert (target / "new.txt").read_text() == "new" and (tmp_path / "f.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "f.txt"]


def test_a_failed_block_removes_its_temporary_and_the_folders_it_made(tmp_path):
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(tmp_path / "a" / "b" / "out.npy") as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_moved_aside_by_a_killed_swap_is_put_back(tmp_path):
    old = tmp_path / ".ckpt.old"  # killed between the two renames: ckpt is missing
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"kept": True}))
    remove_stale_temps(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text()) == {"kept": True} and not old.exists()


def test_foreign_layouts_pass_by_the_tokenizer_they_carry(data, seqssm, tmp_path):
    ok(seqssm("export", data["lm"], "--format", "hf", "--out", tmp_path / "hf"))
    ok(seqssm("generate", tmp_path / "hf", "--out", tmp_path / "g.fa", "--length", "5", "--device", "cpu"))
    weights = tmp_path / "hf" / "model.safetensors"
    save_file(load_file(weights), str(weights), metadata={"format": "pt"})  # as Hugging Face's own files are
    refused(seqssm("embed", tmp_path / "hf", data["genome"], "--out", tmp_path / "e", "--device", "cpu"),
            "tokenizer 'external'", "does not ship its text tokenizer")
