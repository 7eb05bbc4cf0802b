"""seqssm.pipelines.probe: scores equal scikit-learn's cross-validation run by hand on the same folds and
embeddings; the written report; bad inputs; a real-data run."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from seqssm.config import MambaConfig
from seqssm.embedder import Embedder
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel
from seqssm.pipelines.probe import ProbeConfig, probe, probe_embeddings


def hand_cv(features, labels, folds, seed, C=1.0):
    y = np.unique(labels, return_inverse=True)[1]
    out = {"accuracy": [], "balanced_accuracy": [], "macro_f1": [], "auroc": []}
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, y):
        scaler = StandardScaler().fit(features[train])
        model = LogisticRegression(C=C, max_iter=1000).fit(scaler.transform(features[train]), y[train])
        x = scaler.transform(features[test])
        pred, prob = model.predict(x), model.predict_proba(x)
        out["accuracy"].append(accuracy_score(y[test], pred))
        out["balanced_accuracy"].append(balanced_accuracy_score(y[test], pred))
        out["macro_f1"].append(f1_score(y[test], pred, average="macro"))
        out["auroc"].append(roc_auc_score(y[test], prob[:, 1]) if prob.shape[1] == 2
                            else roc_auc_score(y[test], prob, multi_class="ovr"))
    return out


@pytest.mark.parametrize("n_classes", [2, 3])
def test_probe_embeddings_equals_hand_cross_validation(n_classes):
    rng = np.random.default_rng(0)
    labels = [f"c{i % n_classes}" for i in range(45)]
    features = rng.standard_normal((45, 6)) + np.array([int(c[1]) for c in labels])[:, None] * 0.7
    got = probe_embeddings(features, labels, folds=3, C=0.5, seed=7)
    expected = hand_cv(features, np.array(labels), 3, 7, C=0.5)
    for name, scores in expected.items():
        np.testing.assert_allclose(got[name]["folds"], scores, rtol=1e-9)
        assert got[name]["mean"] == pytest.approx(np.mean(scores)) and got[name]["std"] == pytest.approx(np.std(scores))


def test_probe_embeddings_rejects_too_few():
    with pytest.raises(InputError, match="need two classes"):
        probe_embeddings(np.zeros((6, 2)), ["a"] * 6)
    with pytest.raises(InputError, match="class 'b' has 2 inputs, fewer than --folds 3"):
        probe_embeddings(np.zeros((8, 2)), ["a"] * 6 + ["b"] * 2, folds=3)
    with pytest.raises(InputError, match="--folds"):
        ProbeConfig(checkpoint="c", data="d", folds=1)


def write_table(path, rows, header=("sequence", "label", "id")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    config = MambaConfig(d_model=16, n_layer=1, d_state=4, expand=1, vocab_size=10, bidirectional=True)
    MambaLMHeadModel(config).save_pretrained(tmp_path / "bb")
    return str(tmp_path / "bb")


def test_probe_end_to_end(ckpt, tmp_path):
    rng = random.Random(0)
    rows = []
    for i in range(30):
        seq = "".join(rng.choice("ACGT") for _ in range(rng.randint(10, 20)))
        rows.append((seq + ("GGGGCCCC" if i % 2 else "AAAATTTT"), "yes" if i % 2 else "no", f"p{i}"))
    data = write_table(tmp_path / "p.tsv", rows)
    result = probe(ProbeConfig(checkpoint=ckpt, data=data, out=str(tmp_path / "out"), folds=3, device="cpu"))
    assert result.n == 30 and result.dim == 16 and result.classes == ["no", "yes"]
    features = Embedder(ckpt, device="cpu").embed_sequences([r[0] for r in rows])
    expected = probe_embeddings(features, [r[1] for r in rows], folds=3)
    assert result.metrics == expected
    assert result.lines()[0].startswith("accuracy: ") and " ± " in result.lines()[0]
    report = json.loads((tmp_path / "out" / "probe.json").read_text())
    assert report["metrics"] == expected and report["config"]["folds"] == 3 and "torch" in report["versions"]
    sub = probe(ProbeConfig(checkpoint=ckpt, data=data, folds=3, max_examples=18, device="cpu"))
    assert sub.n == 18 and sub.report is None


def test_probe_flatten_pooling_keeps_where_a_motif_sits(ckpt, tmp_path):
    # Fixed-length rows whose class is only where GGCC sits: flatten features carry position, and the probe's
    # scores are exactly a hand cross-validation of the flattened embeddings.
    rng = random.Random(1)
    rows = []
    for i in range(24):
        seq = list("".join(rng.choice("AT") for _ in range(16)))
        at = 2 if i % 2 else 10
        seq[at:at + 4] = "GGCC"
        rows.append(("".join(seq), "early" if i % 2 else "late", f"r{i}"))
    data = write_table(tmp_path / "pos.tsv", rows)
    result = probe(ProbeConfig(checkpoint=ckpt, data=data, folds=3, pooling="flatten", device="cpu"))
    assert result.dim == 16 * 16
    features = Embedder(ckpt, pooling="flatten", device="cpu").embed_sequences([r[0] for r in rows])
    assert result.metrics == probe_embeddings(features, [r[1] for r in rows], folds=3)


def test_probe_bad_inputs(ckpt, tmp_path):
    data = write_table(tmp_path / "ml.tsv", [("ACGT", "a;b", "x")] * 6)
    with pytest.raises(InputError, match="multi-label"):
        probe(ProbeConfig(checkpoint=ckpt, data=data, folds=2, device="cpu"))
    data = write_table(tmp_path / "nolabel.tsv", [("ACGT", "x")], header=("sequence", "id"))
    with pytest.raises(InputError, match="no label column"):
        probe(ProbeConfig(checkpoint=ckpt, data=data, device="cpu"))


def test_probe_on_real_promoters(shared_data, ckpt):
    result = probe(ProbeConfig(checkpoint=ckpt, data=str(shared_data / "labelled" / "ecoli_promoters.tsv"),
                               folds=3, max_examples=90, device="cpu"))
    assert result.n == 90 and result.classes == ["0", "1"]
    assert all(0 <= m["mean"] <= 1 for m in result.metrics.values())
