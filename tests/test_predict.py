"""seqssm.pipelines.predict: the table evaluate reads, equal to the model's own probabilities; streaming and
batch-size invariance; every input kind; atomic output; bad inputs (unknown labels, no head, modality);
checkpoint ensembles (the mean of the members' tables, one pass, mismatched tasks); and the typer commands of
seqssm.cli_tasks.
"""

from __future__ import annotations

import csv
import itertools
import json
import random

import numpy as np
import pytest
import soundfile as sf
import torch
import typer
from typer.testing import CliRunner

from seqssm import cli_tasks
from seqssm.config import MambaConfig
from seqssm.datasets.labelled import Example, InputSpec, iter_examples
from seqssm.datasets.predictions import read_predictions
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel
from seqssm.models.ensemble import ClassifierEnsemble
from seqssm.models.heads import SequenceClassifier, TaskConfig, load_classifier
from seqssm.pipelines import predict as predict_module
from seqssm.pipelines.classify import TaskCollate
from seqssm.pipelines.predict import PredictConfig, predict
from seqssm.tokenizers import NucleotideTokenizer

TOK = NucleotideTokenizer()


def classifier(path, task: TaskConfig, tokenizer="nucleotide", bidirectional=True, seed=0):
    torch.manual_seed(seed)
    audio = tokenizer != "nucleotide"
    config = MambaConfig(d_model=16, n_layer=1, d_state=4, expand=1, vocab_size=256 if audio else 10,
                         tokenizer=tokenizer, bidirectional=bidirectional, sample_rate=8000 if audio else None)
    model = SequenceClassifier(MambaLMHeadModel(config, impl="chunked"), task)
    torch.nn.init.normal_(model.head.weight)  # a head with visible differences between classes
    model.save_pretrained(path)
    return str(path)


def rows(n=11, seed=0, labels=("lo", "hi")):
    rng = random.Random(seed)
    return [("".join(rng.choice("ACGT") for _ in range(rng.randint(5, 25))), labels[i % len(labels)], f"q{i}")
            for i in range(n)]


def write_table(path, table, header=("sequence", "label", "id"), delimiter="\t"):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(table)
    return str(path)


@pytest.fixture
def dna_ckpt(tmp_path):
    return classifier(tmp_path / "ckpt", TaskConfig(classes=["hi", "lo"]))


def run(ckpt, data, out, **kw):
    return predict(PredictConfig(checkpoint=ckpt, data=str(data), out=str(out), device="cpu", impl="chunked", **kw))


def test_table_predictions_equal_the_models_probabilities(dna_ckpt, tmp_path):
    table = rows()
    result = run(dna_ckpt, write_table(tmp_path / "in.tsv", table), tmp_path / "p.tsv", batch_size=4)
    assert result.rows == 11 and result.classes == ["hi", "lo"]
    header = (tmp_path / "p.tsv").read_text().splitlines()[0].split("\t")
    assert header == ["id", "predicted", "prob_hi", "prob_lo", "label"]
    preds = read_predictions(tmp_path / "p.tsv")
    assert preds.ids == [r[2] for r in table] and preds.true == [r[1] for r in table]
    model = load_classifier(dna_ckpt).eval()
    for (seq, _, _), probs, predicted in zip(table, preds.probs, preds.predicted, strict=True):
        ids = torch.from_numpy(TOK.encode(seq))[None]
        expected = model(ids).softmax(-1)[0].detach().numpy()
        np.testing.assert_allclose(probs, expected, atol=1e-6)
        assert predicted == ["hi", "lo"][int(expected.argmax())]
    assert np.ptp(preds.probs[:, 0]) > 0.01  # rows differ, so the comparison above means something


def test_batch_size_does_not_change_predictions(dna_ckpt, tmp_path):
    data = write_table(tmp_path / "in.csv", rows(13), delimiter=",")
    run(dna_ckpt, data, tmp_path / "a.tsv", batch_size=1)
    run(dna_ckpt, data, tmp_path / "b.tsv", batch_size=5)
    a, b = read_predictions(tmp_path / "a.tsv"), read_predictions(tmp_path / "b.tsv")
    assert a.ids == b.ids and a.predicted == b.predicted
    np.testing.assert_allclose(a.probs, b.probs, atol=2e-6)


def test_unlabelled_inputs_and_fasta(dna_ckpt, tmp_path):
    table = rows(5)
    write_table(tmp_path / "nolabel.tsv", [(s, i) for s, _, i in table], header=("sequence", "id"))
    run(dna_ckpt, tmp_path / "nolabel.tsv", tmp_path / "a.tsv")
    assert "label" not in (tmp_path / "a.tsv").read_text().splitlines()[0].split("\t")
    (tmp_path / "in.fa").write_text("".join(f">{i} label={lab} extra\n{s}\n" for s, lab, i in table))
    run(dna_ckpt, tmp_path / "in.fa", tmp_path / "b.tsv")
    fasta, tsv = read_predictions(tmp_path / "b.tsv"), read_predictions(tmp_path / "a.tsv")
    assert fasta.ids == tsv.ids and fasta.true == [lab for _, lab, _ in table] and tsv.true is None
    np.testing.assert_allclose(fasta.probs, tsv.probs)


def test_inputs_are_streamed(tmp_path):
    lines = [("ACGT", "lo", f"r{i}") for i in range(3)]
    path = write_table(tmp_path / "in.tsv", lines)
    with open(path, "a") as f:
        f.write("ACGT\tonly-two-fields\n")
    examples = iter_examples(InputSpec(data=path))
    assert [e.id for e in itertools.islice(examples, 3)] == ["r0", "r1", "r2"]
    with pytest.raises(InputError, match=r"in.tsv:5: 2 fields, the header has 3"):
        next(examples)


def test_unknown_label_is_an_error_and_leaves_no_file(dna_ckpt, tmp_path):
    data = write_table(tmp_path / "in.tsv", [*rows(70), ("ACGT", "mid", "odd")])
    out = tmp_path / "p.tsv"
    with pytest.raises(InputError, match="input 'odd': label 'mid' is not one of the classifier's classes"):
        run(dna_ckpt, data, out, batch_size=8)
    assert not out.exists() and list(tmp_path.glob(".p.tsv*")) == []


def test_backbone_checkpoint_and_modality_mismatch(dna_ckpt, tmp_path):
    MambaLMHeadModel(MambaConfig(d_model=8, n_layer=1, vocab_size=10)).save_pretrained(tmp_path / "bb")
    data = write_table(tmp_path / "in.tsv", rows(3))
    with pytest.raises(InputError, match="has no classification head"):
        run(str(tmp_path / "bb"), data, tmp_path / "p.tsv")
    with pytest.raises(InputError, match="mismatched modality: --modality audio"):
        run(dna_ckpt, data, tmp_path / "p.tsv", modality="audio")
    write_wavs(tmp_path / "wavs")
    with pytest.raises(InputError, match="mismatched modality"):
        run(dna_ckpt, tmp_path / "wavs", tmp_path / "p.tsv")
    audio = classifier(tmp_path / "audio", TaskConfig(classes=["hi", "lo"], modality="audio", patch_size=4,
                                                     sample_rate=8000), tokenizer="mulaw8")
    with pytest.raises(InputError, match="mismatched modality"):
        run(audio, data, tmp_path / "p.tsv")
    with pytest.raises(InputError, match="no sequence column 'seq'"):
        run(dna_ckpt, data, tmp_path / "p.tsv", sequence_column="seq")


def test_multilabel_table(tmp_path):
    ckpt = classifier(tmp_path / "ml", TaskConfig(classes=["a", "b", "c"], problem_type="multi_label"))
    data = write_table(tmp_path / "in.tsv", rows(9, labels=("a;b", "c", "a;b;c")))
    run(ckpt, data, tmp_path / "p.tsv")
    preds = read_predictions(tmp_path / "p.tsv")
    assert preds.true[:3] == ["a;b", "c", "a;b;c"]
    for predicted, probs in zip(preds.predicted, preds.probs, strict=True):
        assert predicted == ";".join(c for c, p in zip("abc", probs, strict=True) if p >= 0.5)
    assert np.abs(preds.probs.sum(1) - 1).max() > 0.01  # independent sigmoids, not a softmax


def test_token_level_rows_per_position(tmp_path):
    ckpt = classifier(tmp_path / "tok", TaskConfig(classes=["S", "W"], level="token", pooling="cls"))
    table = [("ACGTA", "WSSWW", "t0"), ("GG", "SS", "t1")]
    run(ckpt, write_table(tmp_path / "in.tsv", table), tmp_path / "p.tsv")
    preds = read_predictions(tmp_path / "p.tsv")
    assert preds.ids == [f"t0:{i}" for i in range(5)] + ["t1:0", "t1:1"]
    assert preds.true == list("WSSWW") + ["S", "S"]
    model = load_classifier(ckpt).eval()
    batch = TaskCollate(model.task)([Example("t0", "ACGTA", None)])
    expected = model(batch["input_ids"]).softmax(-1)[0, 1:].detach().numpy()  # position 0 is the cls token
    np.testing.assert_allclose(preds.probs[:5], expected, atol=1e-6)


def test_bed_input(dna_ckpt, tmp_path):
    rng = random.Random(1)
    genome = "".join(rng.choice("ACGT") for _ in range(300))
    (tmp_path / "g.fa").write_text(f">chr2\n{genome}\n")
    (tmp_path / "r.bed").write_text("chr2\t10\t40\tfirst\t0\t+\tlo\nchr2\t100\t130\tsecond\t0\t-\thi\n")
    run(dna_ckpt, tmp_path / "r.bed", tmp_path / "p.tsv", genome=str(tmp_path / "g.fa"), bed_labels="6")
    preds = read_predictions(tmp_path / "p.tsv")
    assert preds.ids == ["first", "second"] and preds.true == ["lo", "hi"]
    with pytest.raises(InputError, match="pass --genome"):
        run(dna_ckpt, tmp_path / "r.bed", tmp_path / "q.tsv")


def write_wavs(folder, names=("a", "b", "c")):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        sf.write(folder / f"{name}.wav", (0.2 * rng.standard_normal(int(rng.integers(50, 120)))).astype(np.float32),
                 8000, subtype="FLOAT")
    return folder


def test_audio_inputs(tmp_path):
    task = TaskConfig(classes=["3", "7"], modality="audio", patch_size=8, sample_rate=8000)
    ckpt = classifier(tmp_path / "audio", task, tokenizer="mulaw8")
    write_wavs(tmp_path / "flat")
    run(ckpt, tmp_path / "flat", tmp_path / "flat.tsv", batch_size=2)
    flat = read_predictions(tmp_path / "flat.tsv")
    assert flat.ids == ["a", "b", "c"] and flat.true is None
    model = load_classifier(ckpt).eval()
    wave = torch.from_numpy(sf.read(tmp_path / "flat" / "b.wav", dtype="float32")[0])[None]
    np.testing.assert_allclose(flat.probs[1], model(input_values=wave).softmax(-1)[0].detach().numpy(), atol=1e-6)
    run(ckpt, tmp_path / "flat" / "c.wav", tmp_path / "one.tsv")
    np.testing.assert_allclose(read_predictions(tmp_path / "one.tsv").probs, flat.probs[2:], atol=1e-6)
    write_wavs(tmp_path / "fsdd", names=("3_ann_0", "7_ann_1", "3_bob_9"))
    run(ckpt, tmp_path / "fsdd", tmp_path / "test.tsv", fsdd_split="test")
    fsdd = read_predictions(tmp_path / "test.tsv")
    assert fsdd.ids == ["3_ann_0", "7_ann_1"] and fsdd.true == ["3", "7"]


def test_ensemble_table_is_the_mean_of_the_members_tables(tmp_path, monkeypatch):
    task = TaskConfig(classes=["hi", "lo"])
    a, b = (classifier(tmp_path / name, task, seed=seed) for name, seed in (("a", 0), ("b", 1)))
    data = write_table(tmp_path / "in.tsv", rows(13))
    run(a, data, tmp_path / "a.tsv", batch_size=4)
    run(b, data, tmp_path / "b.tsv", batch_size=4)
    passes = []

    def counted(spec, **kw):
        passes.append(spec.data)
        return iter_examples(spec, **kw)

    monkeypatch.setattr(predict_module, "iter_examples", counted)
    result = run([a, b], data, tmp_path / "ab.tsv", batch_size=4)
    assert result.members == 2 and result.rows == 13 and passes == [data]  # one pass over the data
    pa, pb, pab = (read_predictions(tmp_path / f"{n}.tsv") for n in ("a", "b", "ab"))
    assert (tmp_path / "ab.tsv").read_text().splitlines()[0] == (tmp_path / "a.tsv").read_text().splitlines()[0]
    assert pab.ids == pa.ids and pab.true == pa.true
    np.testing.assert_allclose(pab.probs, (pa.probs + pb.probs) / 2, atol=2e-6)
    assert pab.predicted == [["hi", "lo"][int(p.argmax())] for p in pab.probs]
    assert np.abs(pa.probs - pb.probs).max() > 0.05  # the members differ, so the mean is a real test
    run([a], data, tmp_path / "one.tsv", batch_size=4)  # a list of one is the single model
    assert (tmp_path / "one.tsv").read_text() == (tmp_path / "a.tsv").read_text()


def test_multilabel_ensemble_averages_sigmoids(tmp_path):
    task = TaskConfig(classes=["a", "b", "c"], problem_type="multi_label")
    members = [load_classifier(classifier(tmp_path / f"m{seed}", task, seed=seed)).eval() for seed in (0, 1, 2)]
    ensemble = ClassifierEnsemble(members).eval()
    batch = TaskCollate(task)([Example(f"x{i}", s, None) for i, (s, _, _) in enumerate(rows(6))])
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        expected = torch.stack([torch.sigmoid(m(**inputs)) for m in members]).mean(0)
        got = ensemble.probabilities(ensemble(**inputs))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_ensemble_of_different_tasks_is_refused(dna_ckpt, tmp_path):
    data = write_table(tmp_path / "in.tsv", rows(3))
    other = classifier(tmp_path / "other", TaskConfig(classes=["hi", "lo", "mid"]))
    with pytest.raises(InputError, match=r"checkpoints .*ckpt and .*other cannot be averaged: classes"):
        run([dna_ckpt, other], data, tmp_path / "p.tsv")
    multi = classifier(tmp_path / "multi", TaskConfig(classes=["hi", "lo"], problem_type="multi_label"))
    with pytest.raises(InputError, match="problem_type 'single_label' vs 'multi_label'"):
        run([dna_ckpt, multi], data, tmp_path / "p.tsv")
    audio = classifier(tmp_path / "audio", TaskConfig(classes=["hi", "lo"], modality="audio", patch_size=4,
                                                     sample_rate=8000), tokenizer="mulaw8")
    with pytest.raises(InputError, match="modality 'dna' vs 'audio'"):
        run([dna_ckpt, audio], data, tmp_path / "p.tsv")
    assert not (tmp_path / "p.tsv").exists()


def test_config_checks():
    with pytest.raises(InputError, match="--batch-size"):
        PredictConfig(checkpoint="c", data="d", out="o", batch_size=0)
    with pytest.raises(InputError, match="--modality"):
        PredictConfig(checkpoint="c", data="d", out="o", modality="text")
    with pytest.raises(InputError, match="no checkpoint"):
        PredictConfig(checkpoint=[], data="d", out="o")
    assert PredictConfig(checkpoint="c", data="d", out="o").checkpoints == ["c"]


def app() -> typer.Typer:
    app = typer.Typer()
    for fn, epilog in ((cli_tasks.finetune, cli_tasks.FINETUNE_EPILOG), (cli_tasks.predict, cli_tasks.PREDICT_EPILOG),
                       (cli_tasks.probe, cli_tasks.PROBE_EPILOG)):
        app.command(epilog=epilog)(fn)
    return app


def test_cli_finetune_predict_probe(tmp_path):
    data = write_table(tmp_path / "in.tsv", rows(30))
    runner = CliRunner()
    common = ["--d-model", "8", "--n-layer", "1", "--d-state", "4", "--device", "cpu", "--impl", "chunked"]
    result = runner.invoke(app(), ["finetune", data, "--out", str(tmp_path / "ft"), "--epochs", "1",
                                   "--batch-size", "8", "--split", "0.6,0.2,0.2", "--init-seed", "7", *common])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "ft" / "run.json").read_text())["config"]["init_seed"] == 7
    assert "best val accuracy" in result.output and "test (6)" in result.output
    ckpt = str(tmp_path / "ft" / "checkpoint")
    result = runner.invoke(app(), ["predict", ckpt, data, "--out", str(tmp_path / "p.tsv"), "--device", "cpu"])
    assert result.exit_code == 0 and "30 predictions over 2 classes" in result.output
    result = runner.invoke(app(), ["predict", ckpt, ckpt, data, "--out", str(tmp_path / "pp.tsv"), "--device", "cpu"])
    assert result.exit_code == 0 and "30 predictions over 2 classes, the mean of 2 checkpoints" in result.output
    np.testing.assert_allclose(read_predictions(tmp_path / "pp.tsv").probs, read_predictions(tmp_path / "p.tsv").probs,
                               atol=2e-6)
    result = runner.invoke(app(), ["predict", data, "--out", str(tmp_path / "x.tsv")])
    assert isinstance(result.exception, InputError) and "then the input" in str(result.exception)
    result = runner.invoke(app(), ["probe", ckpt, data, "--folds", "3", "--out", str(tmp_path / "probe"),
                                   "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "accuracy:" in result.output and (tmp_path / "probe" / "probe.json").is_file()
    result = runner.invoke(app(), ["finetune", data, "--out", str(tmp_path / "x"), "--split", "a,b"])
    assert isinstance(result.exception, InputError)
    assert "Example" in runner.invoke(app(), ["predict", "--help"]).output


def test_predict_on_a_table_imports_no_sklearn_biopython_or_dynamo(dna_ckpt, tmp_path):
    """`seqssm predict` of a table starts without scikit-learn (1-2 s: fine-tuning's splits and class
    weights), Biopython (FASTA inputs) or torch._dynamo (a meta-device model build): issue 16's start-up."""
    import subprocess
    import sys

    data = write_table(tmp_path / "in.tsv", rows())
    code = ("import sys; from seqssm import cli; "
            f"sys.argv = ['seqssm', 'predict', {str(dna_ckpt)!r}, {str(data)!r}, '--out', {str(tmp_path / 'p')!r}, "
            "'--device', 'cpu']\n"
            "try:\n    cli.main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print(sorted(m for m in ('sklearn', 'Bio', 'torch._dynamo') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert len((tmp_path / "p").read_text().splitlines()) == 12  # header and 11 rows
