"""benchmarks/classification.py and benchmarks/genome_segments.py: the paired statistics, the segment task's
construction, and a tiny end-to-end run (synthetic tables, two seeds, CPU) whose baseline scores the model's
own test rows."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load("classification")
segments = _load("genome_segments")
COMPLEMENT = str.maketrans("ACGT", "TGCA")


def _row(task, seed, model, base):
    return {"task": task, "seed": seed, "model": {"accuracy": model}, "baseline": {"accuracy": base}}


def test_paired_difference_standard_error_and_verdict():
    rows = [_row("t", s, m, b) for s, (m, b) in enumerate([(0.80, 0.70), (0.82, 0.71), (0.78, 0.70)])]
    got = bench.paired(rows, "accuracy")
    d = [0.10, 0.11, 0.08]
    assert got["diff"] == pytest.approx(np.mean(d))
    assert got["se"] == pytest.approx(np.std(d, ddof=1) / math.sqrt(3))
    assert got["above"] and got["wins"] == 3 and got["n"] == 3
    # Ahead on average but by less than two paired SEs (one split goes the other way): not above.
    rows = [_row("t", s, m, b) for s, (m, b) in enumerate([(0.80, 0.70), (0.70, 0.75), (0.76, 0.74)])]
    got = bench.paired(rows, "accuracy")
    assert got["diff"] > 0 and not got["above"] and got["wins"] == 2
    one = bench.paired(rows[:1], "accuracy")
    assert math.isnan(one["se"]) and not one["above"]


def _fasta(path: Path, records: dict[str, str], gz: bool) -> None:
    text = "".join(f">{name} x\n" + "\n".join(seq[i:i + 60] for i in range(0, len(seq), 60)) + "\n"
                   for name, seq in records.items())
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)


def _genomes(root: Path, rng) -> dict[str, str]:
    (root / "dna").mkdir(parents=True)
    seqs = {name: "".join(rng.choice(list("ACGT"), n)) for name, n in
            [("ECOLI", 24_000), ("CHROMOSOME_I", 9_000), ("CHROMOSOME_II", 3_100), ("CHROMOSOME_MtDNA", 2_500),
             ("LAMBDA", 6_000)]}
    seqs["ECOLI"] = seqs["ECOLI"][:5000] + "N" * 40 + seqs["ECOLI"][5040:]  # a gap: its segment is dropped
    _fasta(root / "dna" / "ecoli_536.fna.gz", {"ECOLI": seqs["ECOLI"]}, True)
    _fasta(root / "dna" / "ce_chrI_1mb.fa", {k: seqs[k] for k in ("CHROMOSOME_I", "CHROMOSOME_II",
                                                                  "CHROMOSOME_MtDNA")}, False)
    _fasta(root / "dna" / "lambda_phage.fa.gz", {"LAMBDA": seqs["LAMBDA"]}, True)
    return seqs


def test_segments_are_disjoint_labelled_strands_and_deterministic(tmp_path):
    seqs = _genomes(tmp_path, np.random.default_rng(1))
    rows = segments.build_rows(tmp_path)
    assert rows == segments.build_rows(tmp_path)  # a pure function of the files and the seed
    assert rows != segments.build_rows(tmp_path, seed=1)
    labels = {lab for _, lab, _ in rows}
    assert labels <= {f"{s}_{d}" for s in ("ecoli_q1", "ecoli_q2", "ecoli_q3", "ecoli_q4", "ce_chrI", "ce_other",
                                            "lambda") for d in ("fwd", "rev")}
    assert {lab.rsplit("_", 1)[1] for lab in labels} == {"fwd", "rev"}
    used: dict[str, list[tuple[int, int]]] = {}
    for seq, label, rid in rows:
        record, span = rid.rsplit(":", 1)
        start, end = (int(x) for x in span[:-1].split("-"))
        assert segments.MIN_LEN <= end - start <= segments.MAX_LEN and len(seq) == end - start
        source = seqs[record][start:end]
        assert seq == (source.translate(COMPLEMENT)[::-1] if span.endswith("-") else source)
        assert label.endswith("_rev") == span.endswith("-")
        quarter = start // (len(seqs["ECOLI"]) // 4) + 1
        assert label.startswith({"ECOLI": f"ecoli_q{min(quarter, 4)}", "CHROMOSOME_I": "ce_chrI",
                                 "LAMBDA": "lambda"}.get(record, "ce_other"))
        used.setdefault(record, []).append((start, end))
        assert "N" not in seq
    for spans in used.values():  # no base in two rows, so no split can leak sequence
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert not any(s < 5040 and e > 5000 for s, e in used["ECOLI"])
    capped = segments.build_rows(tmp_path, max_per_class=2)
    counts = {lab: sum(r[1] == lab for r in capped) for lab in labels}
    assert max(counts.values()) == 2 and all(r in rows for r in capped)


def _table(path: Path, rng, n: int, classes: int) -> None:
    motif = ["TATAAT", "TTGACA", "CCGGCC"]
    lines = ["sequence\tlabel\tid"]
    for i in range(n):
        label = i % classes
        seq = list(rng.choice(list("ACGT"), 30))
        seq[10:16] = motif[label]
        lines.append(f"{''.join(seq)}\t{label}\tr{i}")
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SEQSSM_BENCH_SMOKE") != "1",
                    reason="30-80 s on 2 busy CPU cores: set SEQSSM_BENCH_SMOKE=1 to run this end-to-end test")
def test_tiny_run_writes_paired_rows_on_the_models_own_split(tmp_path, capsys, one_thread):
    rng = np.random.default_rng(0)
    (tmp_path / "data" / "labelled").mkdir(parents=True)
    _table(tmp_path / "data" / "labelled" / "ecoli_sigma_subtypes.tsv", rng, 60, 3)
    out = tmp_path / "out"
    argv = ["--out", str(out), "--data-root", str(tmp_path / "data"), "--tasks", "sigma", "--seeds", "0,1",
            "--set", "d_model=8", "--set", "n_layer=1", "--set", "epochs=1", "--set", "impl=\"ref\""]
    rows = bench.main(argv)
    test_ids = {}
    assert [(r["task"], r["seed"]) for r in rows] == [("sigma", 0), ("sigma", 1)]
    for r in rows:
        assert all(0 <= r[side][m] <= 1 for side in ("model", "baseline") for m in bench.METRICS)
        assert r["recipe"]["d_model"] == 8 and r["status"] == "complete"
        run = out / "runs" / f"{r['task']}_s{r['seed']}"
        with open(run / "test_predictions.tsv") as f:
            model_ids = [row["id"] for row in csv.DictReader(f, delimiter="\t")]
        with open(run / "baseline_predictions.tsv") as f:
            base_ids = [row["id"] for row in csv.DictReader(f, delimiter="\t")]
        assert model_ids == base_ids and len(model_ids) == 6 == r["sizes"]["test"]
        test_ids[r["task"], r["seed"]] = model_ids
    assert test_ids["sigma", 0] != test_ids["sigma", 1]  # the seed moves the split
    with open(out / "rows.tsv") as f:
        tsv = list(csv.DictReader(f, delimiter="\t"))
    assert len(tsv) == 2 and json.loads(tsv[0]["recipe"])["epochs"] == 1
    md = (out / "results.md").read_text()
    assert md.count("| sigma | ") == 3 + 2 and "above by > 2 SE" in md  # 3 metric rows, 2 per-run rows
    printed = capsys.readouterr().out
    assert "sigma seed 1: model acc" in printed and printed.rstrip().splitlines()[-1].startswith("sigma ")
    with pytest.raises(SystemExit):  # results there: neither replaced nor mixed without --resume / --overwrite
        bench.main(argv)
    again = bench.main([*argv, "--resume"])
    assert [r["model"] for r in again] == [r["model"] for r in rows]
    assert "done before, kept" in capsys.readouterr().out


def test_device_script_parses_and_names_the_benchmark():
    import shutil
    import subprocess

    script = REPO / "benchmarks" / "device" / "classification.sh"
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "benchmarks/classification.py" in text and "--summarize" in text and "--device" in text
