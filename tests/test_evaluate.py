"""seqssm.pipelines.evaluate: metrics equal sklearn's and hand counts; joins, bad inputs, written files."""

from __future__ import annotations

import base64
import csv
import json
import os
import re

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    classification_report,
    f1_score,
    hamming_loss,
    matthews_corrcoef,
    roc_auc_score,
)

from seqssm.errors import InputError
from seqssm.pipelines.evaluate import EvaluateConfig, evaluate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# id, label, predicted, prob_0, prob_1: 6 of 8 right, confusion [[3, 1], [1, 3]].
BINARY = [
    ("r1", "0", "0", 0.9, 0.1), ("r2", "0", "0", 0.8, 0.2), ("r3", "0", "1", 0.4, 0.6),
    ("r4", "0", "0", 0.7, 0.3), ("r5", "1", "1", 0.2, 0.8), ("r6", "1", "1", 0.1, 0.9),
    ("r7", "1", "0", 0.6, 0.4), ("r8", "1", "1", 0.45, 0.55),
]
# Labels sort by value (2 < 10 < 33, not as strings); the file lists the prob columns in another order.
MULTICLASS = [  # id, label, predicted, prob_2, prob_10, prob_33
    ("a", "2", "2", 0.7, 0.2, 0.1), ("b", "2", "2", 0.5, 0.3, 0.2), ("c", "2", "10", 0.3, 0.6, 0.1),
    ("d", "10", "10", 0.1, 0.8, 0.1), ("e", "10", "10", 0.2, 0.5, 0.3), ("f", "10", "33", 0.1, 0.4, 0.5),
    ("g", "33", "33", 0.1, 0.1, 0.8), ("h", "33", "33", 0.2, 0.2, 0.6), ("i", "33", "2", 0.4, 0.3, 0.3),
]
MULTILABEL = [  # id, label, predicted, prob_A, prob_B, prob_C
    ("m1", "A; B", "A", 0.9, 0.4, 0.1), ("m2", "", "", 0.2, 0.1, 0.3), ("m3", "C", "C", 0.1, 0.2, 0.7),
    ("m4", "A;C", "A;C", 0.8, 0.3, 0.6), ("m5", "B", "B;C", 0.3, 0.9, 0.55),
    ("m6", "A;B;C", "A;B;C", 0.7, 0.8, 0.9),
]


def write_tsv(path, header, rows, delimiter="\t"):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def binary_table(path, rows=BINARY):
    return write_tsv(path, ["id", "label", "predicted", "prob_0", "prob_1"], rows)


def run(tmp_path, predictions, **kwargs):
    return evaluate(EvaluateConfig(predictions=predictions, out=str(tmp_path / "out"), **kwargs))


def test_binary_metrics_match_hand_counts_and_sklearn(tmp_path):
    report = run(tmp_path, binary_table(tmp_path / "p.tsv"))
    y = np.array([r[1] for r in BINARY])
    pred = np.array([r[2] for r in BINARY])
    p1 = np.array([r[4] for r in BINARY])
    m = report["metrics"]
    assert report["task"] == "binary" and report["positive_label"] == "1" and report["classes"] == ["0", "1"]
    assert report["confusion_matrix"] == [[3, 1], [1, 3]]
    # By hand: MCC (3·3 − 1·1)/4² ; AUROC 14 of 16 (positive, negative) pairs ordered right;
    # AP: positives at ranks 1, 2, 4, 5 → (1 + 1 + 3/4 + 4/5)/4.
    expected = {"accuracy": 0.75, "balanced_accuracy": 0.75, "macro_f1": 0.75, "mcc": 0.5, "auroc": 14 / 16,
                "auprc": (1 + 1 + 3 / 4 + 4 / 5) / 4}
    assert m == pytest.approx(expected)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["mcc"] == pytest.approx(matthews_corrcoef(y, pred))
    assert m["auroc"] == pytest.approx(roc_auc_score(y == "1", p1))
    assert m["auprc"] == pytest.approx(average_precision_score(y == "1", p1))
    sk = classification_report(y, pred, output_dict=True)
    for c in ("0", "1"):
        for key in ("precision", "recall", "f1-score", "support"):
            assert report["per_class"][c][key] == pytest.approx(sk[c][key])
    assert report["averages"]["macro avg"]["f1-score"] == pytest.approx(sk["macro avg"]["f1-score"])


def test_positive_label_option_picks_the_scored_class(tmp_path):
    report = run(tmp_path, binary_table(tmp_path / "p.tsv"), positive_label="0")
    y = np.array([r[1] for r in BINARY])
    p0 = np.array([r[3] for r in BINARY])
    assert report["positive_label"] == "0"
    # Class 0's positives (prob_0 .9 .8 .7 .4) sit at ranks 1, 2, 3, 6.
    assert report["metrics"]["auprc"] == pytest.approx((1 + 1 + 1 + 4 / 6) / 4)
    assert report["metrics"]["auprc"] == pytest.approx(average_precision_score(y == "0", p0))


def test_multiclass_metrics_match_sklearn(tmp_path):
    header = ["id", "prob_33", "predicted", "prob_2", "label", "prob_10"]
    rows = [(i, p33, pred, p2, lab, p10) for i, lab, pred, p2, p10, p33 in MULTICLASS]
    report = run(tmp_path, write_tsv(tmp_path / "p.tsv", header, rows))
    order = ["2", "10", "33"]
    y = np.array([r[1] for r in MULTICLASS])
    pred = np.array([r[2] for r in MULTICLASS])
    probs = np.array([r[3:] for r in MULTICLASS])
    onehot = (y[:, None] == np.array(order)[None, :]).astype(int)
    assert report["task"] == "multiclass" and report["classes"] == order
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 2, 1], [1, 0, 2]]
    expected = {
        "accuracy": 6 / 9,
        "balanced_accuracy": balanced_accuracy_score(y, pred),
        "macro_f1": f1_score(y, pred, average="macro"),
        "mcc": matthews_corrcoef(y, pred),
        # sklearn wants its labels in string order.
        "macro_auroc": roc_auc_score(y, probs[:, [order.index(c) for c in sorted(order)]], multi_class="ovr",
                                     labels=sorted(order)),
        "macro_auprc": average_precision_score(onehot, probs, average="macro"),
    }
    assert report["metrics"] == pytest.approx(expected)
    for k, c in enumerate(order):
        assert report["per_class"][c]["auroc"] == pytest.approx(roc_auc_score(onehot[:, k], probs[:, k]))
        assert report["per_class"][c]["recall"] == pytest.approx(2 / 3)
    assert report["majority_baseline"]["accuracy"] == pytest.approx(1 / 3)


def test_multilabel_metrics_match_hand_counts_and_sklearn(tmp_path):
    header = ["id", "label", "predicted", "prob_A", "prob_B", "prob_C"]
    report = run(tmp_path, write_tsv(tmp_path / "p.tsv", header, MULTILABEL))
    truth = np.array([[1, 1, 0], [0, 0, 0], [0, 0, 1], [1, 0, 1], [0, 1, 0], [1, 1, 1]])
    pred = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]])
    probs = np.array([r[3:] for r in MULTILABEL])
    assert report["task"] == "multilabel" and report["classes"] == ["A", "B", "C"]
    m = report["metrics"]
    # By hand: 4 of 6 rows exactly right; 2 of 18 decisions wrong; 8 TP, 1 FP, 1 FN pooled.
    assert m["subset_accuracy"] == pytest.approx(4 / 6)
    assert m["hamming_loss"] == pytest.approx(2 / 18)
    assert m["micro_f1"] == pytest.approx(16 / 18)
    assert m["subset_accuracy"] == pytest.approx(accuracy_score(truth, pred))
    assert m["hamming_loss"] == pytest.approx(hamming_loss(truth, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(truth, pred, average="macro"))
    assert m["macro_auroc"] == pytest.approx(roc_auc_score(truth, probs, average="macro"))
    assert m["macro_auprc"] == pytest.approx(average_precision_score(truth, probs, average="macro"))
    for k, c in enumerate("ABC"):
        assert report["per_class"][c]["auroc"] == pytest.approx(roc_auc_score(truth[:, k], probs[:, k]))
        assert report["per_class"][c]["auprc"] == pytest.approx(
            average_precision_score(truth[:, k], probs[:, k]))
        assert report["per_class"][c]["support"] == truth[:, k].sum()
    assert np.array(report["confusion_matrix"]).shape == (3, 2, 2)


def test_task_inferred_from_sigmoid_rows_and_overridable(tmp_path):
    # One label per row and no ';', but rows that do not sum to 1: independent sigmoids.
    rows = [("x1", "a", "a", 0.9, 0.3), ("x2", "b", "b", 0.2, 0.7), ("x3", "b", "a", 0.6, 0.5)]
    path = write_tsv(tmp_path / "p.tsv", ["id", "label", "predicted", "prob_a", "prob_b"], rows)
    report = run(tmp_path, path)
    assert report["task"] == "multilabel"
    assert any("do not sum to 1" in note for note in report["notes"])
    forced = run(tmp_path, path, task="binary", overwrite=True)
    assert forced["task"] == "binary" and forced["metrics"]["accuracy"] == pytest.approx(2 / 3)


def test_curves_undefined_when_the_truth_has_one_class(tmp_path):
    rows = [r for r in BINARY if r[1] == "1"]
    report = run(tmp_path, binary_table(tmp_path / "p.tsv", rows))
    assert report["metrics"]["accuracy"] == pytest.approx(3 / 4)
    assert report["metrics"]["auroc"] is None and report["metrics"]["auprc"] is None
    assert any("'1' undefined: only true '1' rows" in note for note in report["notes"])
    assert "roc_pr.png" not in report["files"] and not (tmp_path / "out" / "roc_pr.png").exists()


def test_labels_joined_from_a_csv_table(tmp_path):
    rows = [(i, pred, p0, p1) for i, _, pred, p0, p1 in BINARY]
    preds = write_tsv(tmp_path / "p.tsv", ["id", "predicted", "prob_0", "prob_1"], rows)
    truth = [(lab, i, "extra") for i, lab, *_ in reversed(BINARY)] + [("1", "unused", "")]
    labels = write_tsv(tmp_path / "truth.csv", ["label", "id", "note"], truth, delimiter=",")
    joined = run(tmp_path, preds, labels=labels)
    direct = run(tmp_path, binary_table(tmp_path / "direct.tsv"), overwrite=True)
    assert joined["metrics"] == pytest.approx(direct["metrics"])
    assert joined["labels_from"] == labels


def test_join_against_the_real_labelled_table(tmp_path, shared_data):
    from sklearn.naive_bayes import BernoulliNB

    table = shared_data / "labelled" / "ecoli_sigma_subtypes.tsv"
    with open(table) as f:
        records = list(csv.DictReader(f, delimiter="\t"))[::7]
    onehot = np.array([[base == b for base in r["sequence"] for b in "ACGT"] for r in records], dtype=float)
    labels = np.array([r["label"] for r in records])
    model = BernoulliNB().fit(onehot[::2], labels[::2])
    probs = model.predict_proba(onehot)
    predicted = model.classes_[probs.argmax(1)]
    rows = [(r["id"], p, *map(float, q)) for r, p, q in zip(records, predicted, probs, strict=True)]
    path = write_tsv(tmp_path / "p.tsv", ["id", "predicted", *(f"prob_{c}" for c in model.classes_)], rows)
    report = run(tmp_path, path, labels=str(table))
    assert report["n"] == len(records) and report["classes"] == sorted(model.classes_)
    assert report["metrics"]["accuracy"] == pytest.approx(model.score(onehot, labels))
    assert report["metrics"]["macro_auroc"] == pytest.approx(
        roc_auc_score(labels, probs, multi_class="ovr", labels=list(model.classes_)))


def test_ids_missing_from_labels_table_are_counted_and_shown(tmp_path):
    rows = [(i, pred, p0, p1) for i, _, pred, p0, p1 in BINARY]
    preds = write_tsv(tmp_path / "p.tsv", ["id", "predicted", "prob_0", "prob_1"], rows)
    labels = write_tsv(tmp_path / "truth.tsv", ["id", "label"], [(i, lab) for i, lab, *_ in BINARY[2:]])
    with pytest.raises(InputError, match=r"2 of 8 prediction ids are missing .*'r1', 'r2'"):
        run(tmp_path, preds, labels=labels)
    assert not (tmp_path / "out").exists()


def _bad(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


HEADER = "id\tlabel\tpredicted\tprob_0\tprob_1\n"
BAD_TABLES = {
    "empty": ("", "is empty"),
    "header only": (HEADER, "no rows"),
    "no predicted": ("id\tlabel\tprob_0\tprob_1\nr1\t0\t0.9\t0.1\n", "'predicted' column"),
    "no prob columns": ("id\tlabel\tpredicted\nr1\t0\t0\n", "prob_<label> columns"),
    "unknown true label": (HEADER + "r1\t2\t0\t0.9\t0.1\n", "label '2' in column 'label'"),
    "unknown predicted": (HEADER + "r1\t0\tyes\t0.9\t0.1\n", "'yes' in column 'predicted'"),
    "prob not a number": (HEADER + "r1\t0\t0\thigh\t0.1\n", "prob_0 = 'high'"),
    "prob above 1": (HEADER + "r1\t0\t0\t0.2\t1.5\n", "prob_1 = 1.5"),
    "ragged row": (HEADER + "r1\t0\t0\t0.9\n", "line 2 .* 4 fields"),
    "no truth": ("id\tpredicted\tprob_0\tprob_1\nr1\t0\t0.9\t0.1\n", "no 'label' column"),
    "single prob column": ("id\tlabel\tpredicted\tprob_0\nr1\t0\t0\t1.0\n", "single prob_ column"),
    "empty label cell": (HEADER + "r1\t\t0\t0.9\t0.1\n", "empty 'label' cell"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_prediction_tables_name_file_and_column(tmp_path, case):
    text, message = BAD_TABLES[case]
    path = _bad(tmp_path, "preds.tsv", text)
    with pytest.raises(InputError, match=message) as err:
        run(tmp_path, path)
    assert "preds.tsv" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kwargs, files, message", [
    ({"positive_label": "yes"}, {}, "--positive-label 'yes' is not a class"),
    ({"task": "multiclass", "positive_label": "1"}, {}, "only for binary"),
    ({"task": "regression"}, {}, "must be one of"),
    ({"history": "h.tsv"}, {"h.tsv": "time\ttrain_loss\n1\t0.5\n"}, "'step' or 'epoch'"),
    ({"history": "h.tsv"}, {"h.tsv": "step\ttrain_loss\n1\tlow\n"}, "train_loss = 'low'"),
    ({"history": "missing.tsv"}, {}, "does not exist"),
    ({"labels": "t.tsv"}, {"t.tsv": "name\tlabel\nr1\t0\n"}, "lacks column"),
    ({"labels": "t.tsv"}, {"t.tsv": "id\tlabel\nr1\t0\nr1\t1\n"}, "different label"),
])
def test_bad_options_and_side_files(tmp_path, kwargs, files, message):
    for name, text in files.items():
        _bad(tmp_path, name, text)
    kwargs = {k: str(tmp_path / v) if k in ("history", "labels") else v for k, v in kwargs.items()}
    with pytest.raises(InputError, match=message):
        run(tmp_path, binary_table(tmp_path / "p.tsv"), **kwargs)
    assert not (tmp_path / "out").exists()


def test_files_written_and_valid(tmp_path):
    history = write_tsv(tmp_path / "train_log.tsv", ["step", "train_loss", "val_loss", "val_accuracy"],
                        [(0, 0.9, 0.95, 0.5), (50, 0.6, "", ""), (100, 0.4, 0.5, 0.75)])
    report = run(tmp_path, binary_table(tmp_path / "p.tsv"), history=history, title="Promoters <v1> & co")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["confusion_matrix.png", "roc_pr.png", "curves.png", "metrics.json", "report.html"])
    assert json.loads((out / "metrics.json").read_text()) == report
    assert report["history"]["last"] == {"train_loss": 0.4, "val_loss": 0.5, "val_accuracy": 0.75}
    page = (out / "report.html").read_text()
    embedded = [base64.b64decode(b) for b in re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)]
    assert len(embedded) == 3
    for name in ("confusion_matrix.png", "roc_pr.png", "curves.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and data in embedded
    for value in report["metrics"].values():
        assert f"{value:.4f}" in page
    assert f"{report['per_class']['1']['auprc']:.4f}" in page
    assert "Promoters &lt;v1&gt; &amp; co" in page and "<v1>" not in page


def test_rerun_without_history_removes_the_stale_curves(tmp_path):
    history = write_tsv(tmp_path / "log.tsv", ["epoch", "train_loss"], [(1, 0.7), (2, 0.5)])
    preds = binary_table(tmp_path / "p.tsv")
    run(tmp_path, preds, history=history)
    assert (tmp_path / "out" / "curves.png").exists()
    report = run(tmp_path, preds, overwrite=True)
    assert not (tmp_path / "out" / "curves.png").exists() and "curves.png" not in report["files"]


def test_no_temp_files_left_when_writing_fails(tmp_path, monkeypatch):
    preds = binary_table(tmp_path / "p.tsv")
    real_replace, calls = os.replace, []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        run(tmp_path, preds)
    out = tmp_path / "out"
    names = [p.name for p in out.iterdir()]
    assert len(names) == 2 and not [n for n in names if n.startswith(".") or n.endswith(".tmp")]


def test_evaluate_runs_without_importing_torch(tmp_path):
    """`seqssm evaluate` scores a table with scikit-learn alone: torch (1.4 s of start-up) is never imported."""
    import subprocess
    import sys

    table = binary_table(tmp_path / "p.tsv")
    code = ("import sys; from seqssm import cli; "
            f"sys.argv = ['seqssm', 'evaluate', {str(table)!r}, '--out', {str(tmp_path / 'out')!r}]\n"
            "try:\n    cli.main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False" and (tmp_path / "out" / "metrics.json").is_file()
