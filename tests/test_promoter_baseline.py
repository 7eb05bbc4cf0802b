"""benchmarks/promoter_baseline.py: its splits are finetune's, one-hot features, the val-selected C, summaries.

The split test is what makes the baseline table comparable with `seqssm finetune --seed S` runs: it fails if
finetune's loader ever splits a table differently from ``finetune_splits``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from seqssm.datasets.labelled import read_labelled_table
from seqssm.errors import InputError
from seqssm.pipelines.finetune import FinetuneConfig, _load_data

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "promoter_baseline.py"
_spec = importlib.util.spec_from_file_location("promoter_baseline", _PATH)
pb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pb)


def _finetune_test_ids(path: Path, seed: int, tmp_path: Path) -> dict[str, list[str]]:
    _, splits, _ = _load_data(FinetuneConfig(data=str(path), out=str(tmp_path / "unused"), seed=seed))
    return {name: [item.id for item in items] for name, items in splits.items()}


def _write_table(path: Path, rows) -> None:
    path.write_text("sequence\tlabel\tid\n" + "".join(f"{s}\t{lab}\t{i}\n" for s, lab, i in rows))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_splits_match_finetune_on_a_small_table(tmp_path, seed):
    rng = np.random.default_rng(seed)
    labels = ["0"] * 30 + ["1"] * 14 + ["2"] * 6
    rows = [("".join(rng.choice(list("ACGT"), 12)), lab, f"r{i}") for i, lab in enumerate(labels)]
    _write_table(tmp_path / "t.tsv", rows)
    ids = [r[2] for r in rows]
    expected = _finetune_test_ids(tmp_path / "t.tsv", seed, tmp_path)
    got = pb.finetune_splits(labels, seed)
    assert {name: [ids[i] for i in idx] for name, idx in zip(("train", "val", "test"), got, strict=True)} == expected


def test_splits_match_finetune_on_the_promoter_table(shared_data, tmp_path):
    path = shared_data / "labelled" / "ecoli_promoters.tsv"
    table = read_labelled_table(path)
    for seed in range(5):
        train, val, test = pb.finetune_splits(table.labels, seed)
        assert (len(train), len(val), len(test)) == (4576, 572, 572)
        assert [table.ids[i] for i in test] == _finetune_test_ids(path, seed, tmp_path)["test"]


def test_splits_refuse_multi_label_tables():
    with pytest.raises(InputError, match="multi-label"):
        pb.finetune_splits(["a", "a;b", "b"], 0)


def test_one_hot_positions_bases_and_unknowns():
    x = pb.one_hot(["ACGT", "tNga"])
    assert x.shape == (2, 16) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0].reshape(4, 4), np.eye(4))
    np.testing.assert_array_equal(x[1].reshape(4, 4), [[0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]])
    with pytest.raises(InputError, match="one length"):
        pb.one_hot(["ACGT", "ACG"])


def test_seed_row_learns_a_planted_base_and_picks_c_on_val():
    # The label is the base at position 3 (A/C -> 0, G/T -> 1) with 10% of labels flipped: strong
    # regularisation cannot fit it, so validation must choose a larger C, whose test accuracy is ~0.9.
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), 10)) for _ in range(600)]
    y = np.array(["1" if s[3] in "GT" else "0" for s in seqs])
    flip = rng.random(600) < 0.1
    y[flip] = np.where(y[flip] == "1", "0", "1")
    row = pb.seed_row(pb.one_hot(seqs), y, seed=0, grid=(1e-4, 1.0))
    assert row["c_by_val"] == 1.0 and row["by_val"] == row[1.0] > 0.8
    assert row[1e-4] < 0.7


def test_read_model_summary(tmp_path):
    path = tmp_path / "summary.txt"
    path.write_text("run\tseed\texit\ttest_acc\n"
                    "promoters_fresh_s0\t0\t0\t0.8462\n"
                    "promoters_fresh_s1\t1\t124\t\n")
    assert pb.read_model_summary(path) == {0: 0.8462}
    (tmp_path / "bad.txt").write_text("run\taccuracy\nx\t0.5\n")
    with pytest.raises(InputError, match="seed"):
        pb.read_model_summary(tmp_path / "bad.txt")
    with pytest.raises(InputError, match="does not exist"):
        pb.read_model_summary(tmp_path / "missing.txt")


def test_read_model_summaries_with_a_model_column(tmp_path):
    path = tmp_path / "summary.tsv"
    path.write_text("model\tseed\ttest_acc\tinit_seed\n"
                    "single_0\t0\t0.80\t0\n"
                    "ens3\t0\t0.85\t\n"
                    "single_0\t1\t0.70\t1\n"
                    "ens3\t1\t\t\n")
    assert pb.read_model_summaries(path) == {"single_0": {0: 0.80, 1: 0.70}, "ens3": {0: 0.85}}
    with pytest.raises(InputError, match="2 models"):
        pb.read_model_summary(path)
    path.write_text("model\tseed\ttest_acc\nens3\t0\t0.85\nens3\t0\t0.86\n")
    with pytest.raises(InputError, match=r"summary.tsv:3: a second test_acc for model 'ens3' at seed 0"):
        pb.read_model_summaries(path)


def test_main_prints_one_paired_table_per_model(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(1)
    seqs = ["".join(rng.choice(list("ACGT"), 8)) for _ in range(200)]
    labels = ["1" if s[2] in "GT" else "0" for s in seqs]
    _write_table(tmp_path / "t.tsv", [(s, lab, f"r{i}") for i, (s, lab) in enumerate(zip(seqs, labels, strict=True))])
    (tmp_path / "summary.tsv").write_text("model\tseed\ttest_acc\n"
                                          "single_0\t0\t0.5\nens3\t0\t0.75\nsingle_0\t1\t0.55\nens3\t1\t0.8\n")
    monkeypatch.setattr("sys.argv", ["promoter_baseline.py", "--table", str(tmp_path / "t.tsv"), "--seeds", "0", "1",
                                     "--models", str(tmp_path / "summary.tsv")])
    pb.main()
    out = capsys.readouterr().out
    x, y = pb.one_hot(seqs), np.asarray(labels)
    by_val = [pb.seed_row(x, y, seed)["by_val"] for seed in (0, 1)]
    assert out.count("| seed |") == 2 and "| ens3 | ens3 - LR by val |" in out and "| single_0 |" in out
    for name, accs in (("single_0", (0.5, 0.55)), ("ens3", (0.75, 0.8))):
        diffs = [a - b for a, b in zip(accs, by_val, strict=True)]
        line = f"paired difference {name} - LR (C by val): {np.mean(diffs):+.4f}"
        assert out.count(line) == 2  # under its table and in the closing list
        assert f"| {accs[1]:.4f} | {accs[1] - by_val[1]:+.4f} |\n" in out  # seed 1's row of its table
    assert out.index("\nsingle_0:") < out.index("\nens3:") < out.index("\nall models:")
