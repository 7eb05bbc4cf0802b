"""The workflows: Snakemake runs end to end on tiny real data and lints clean; every Nextflow file parses
(reftrace, offline: the Nextflow runtime is not installed here) and every `seqssm` command line in either
engine parses with the CLI itself. Values reach the shell quoted: a genome named "my genome;touch INJECTED"
stays one word."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKE = ROOT / "workflows" / "snakemake"
NEXTFLOW = ROOT / "workflows" / "nextflow"
DATA = ROOT.parent / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")
LAMBDA = DATA / "dna" / "lambda_phage.fa.gz"
PROMOTERS = DATA / "labelled" / "ecoli_promoters.tsv"
TRICKY = "my genome;touch INJECTED"
HAVE_SNAKEMAKE = importlib.util.find_spec("snakemake") is not None
needs_snakemake = pytest.mark.skipif(not HAVE_SNAKEMAKE, reason="snakemake is not importable (pip install -e '.[dev]')")
needs_data = pytest.mark.skipif(not LAMBDA.is_file(), reason=f"real data not found at {DATA}")


# ---------------------------------------------------------------------------------------------- CLI parsing
def _cli_command(name: str):
    import typer.main

    from seqssm.cli import app

    group = typer.main.get_command(app)
    assert name in group.commands, f"`seqssm {name}` is not a command"
    return group.commands[name]


def _parses(words: list[str], where: str) -> None:
    """`seqssm WORDS...` parses with the CLI's own parser (unknown options, missing arguments fail)."""
    assert words and words[0] == "seqssm", where
    command = _cli_command(words[1])
    try:
        command.make_context(words[1], list(words[2:]))
    except Exception as error:  # typer vendors click: its UsageError is not click's
        pytest.fail(f"{where}: `{shlex.join(words)}` does not parse: {error}")


def _seqssm_words(command_line: str) -> list[str]:
    """The `seqssm ...` words of a shell line, up to the first redirection or operator."""
    words = shlex.split(command_line, comments=True)
    start = words.index("seqssm")
    end = next((i for i in range(start, len(words)) if words[i] in (">", "2>", "|", "&&", ";", "2>&1")),
               len(words))
    return words[start:end]


# ---------------------------------------------------------------------------------------------- Snakemake
SHELL_FIELD = re.compile(r"(?<!\{)\{([A-Za-z_][\w.\[\]]*)(:[^}]*)?\}(?!\})")


def _snakemake_shells() -> dict[str, str]:
    """rule name -> its shell string (each rule's, on the line after ``shell:``) over rules/*.smk."""
    import ast

    rules = {}
    for path in sorted((SNAKE / "rules").glob("*.smk")):
        rule, lines = None, path.read_text().splitlines()
        for i, line in enumerate(lines):
            if m := re.match(r"rule (\w+):", line):
                rule = m.group(1)
            elif line.strip() == "shell:":
                rules[rule] = ast.literal_eval(lines[i + 1].strip())
    return rules


SNAKE_RULES = {"pretrain", "finetune", "predict", "evaluate", "embed", "score", "score_variants", "generate"}


def test_snakemake_shell_fields_are_quoted():
    commands = _snakemake_shells()
    assert set(commands) == SNAKE_RULES
    for rule, command in commands.items():
        assert "$(" not in command, f"rule {rule}: a $(...) result is split into words by the shell"
        fields = SHELL_FIELD.findall(command)
        assert fields, rule
        for name, spec in fields:
            assert spec == ":q", f"rule {rule}: {{{name}{spec}}} goes into the shell unquoted; write {{{name}:q}}"


def _default_args(section: dict) -> list[str]:
    """config.yaml's table for a command as CLI words, as rules/common.smk's cli_args renders it."""
    words = []
    for key, value in section.items():
        if key == "per_position" or value is None:
            continue
        words += [f"--{key}"] if value is True else [f"--no-{key}"] if value is False else [f"--{key}", str(value)]
    return words


def test_snakemake_command_lines_parse_with_the_cli():
    """Each rule's command, with the defaults of config.yaml in place of {params.args}, parses."""
    import yaml

    config = yaml.safe_load((SNAKE / "config.yaml").read_text())
    for rule, command in _snakemake_shells().items():
        extra = {"params.args": shlex.join(_default_args(config[rule])), "params.per_position": "--per-position p.bg"}
        rendered = SHELL_FIELD.sub(lambda m: extra.get(m[1], "PLACEHOLDER"), command)  # noqa: B023
        _parses(_seqssm_words(rendered), f"rule {rule}")


def _snakemake(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "SEQSSM_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    # cwd is a temporary folder, never the repo root, so `-m` puts nothing of the repo on sys.path.
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(SNAKE / "Snakefile"), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


def _logs(folder: Path) -> str:
    return "".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in sorted(folder.rglob("*.log")))


@needs_snakemake
def test_snakemake_lint_passes(tmp_path):
    proc = _snakemake(["--lint", "--directory", str(ROOT)], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and "Lints for" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def _tiny_checkpoint(ckpt_dir: Path) -> None:
    from seqssm.config import MambaConfig
    from seqssm.models import MambaLMHeadModel

    MambaLMHeadModel(MambaConfig(d_model=16, n_layer=1, vocab_size=10, d_state=4)).save_pretrained(ckpt_dir)


@needs_snakemake
def test_snakemake_rules_run_on_a_path_with_space_and_semicolon(tmp_path):
    """generate and score on genome and sample "my genome;touch INJECTED": outputs appear, nothing else runs."""
    genome = tmp_path / f"{TRICKY}.fa"
    genome.write_text(">chr\nACGTACGTACGGATTACA\n")
    (tmp_path / "samples.tsv").write_text(f"sample\tgenome\n{TRICKY}\t{genome}\n")
    run_dir = tmp_path / "runs" / TRICKY
    _tiny_checkpoint(run_dir / "pretrain" / "checkpoint")  # after the genome, so Snakemake keeps it
    proc = _snakemake(["--cores", "1", "--directory", str(tmp_path), "--config", "outdir=runs", "device=cpu",
                       "--", f"runs/{TRICKY}/generated.fa", f"runs/{TRICKY}/score/scores.tsv"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:] + _logs(tmp_path / "runs")
    assert not list(tmp_path.rglob("INJECTED")), "a file name ran as a command"
    records = (run_dir / "generated.fa").read_text().splitlines()
    assert records[0].startswith(">") and len("".join(records[1:])) == 1000
    with open(run_dir / "score" / "scores.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(rows) == 1 and int(rows[0]["scored"]) == 17


def _lambda_contig() -> tuple[str, str]:
    with gzip.open(LAMBDA, "rt") as handle:
        lines = handle.read().split("\n")
    return lines[0][1:].split()[0], "".join(lines[1:]).upper()


def _write_inputs(folder: Path) -> Path:
    """Samples sheet over real data: lambda phage (its name made tricky by a link), a balanced slice of the
    E. coli promoter table, and a VCF of SNVs, indels and one REF mismatch on lambda."""
    genome = folder / f"{TRICKY}.fa.gz"
    genome.symlink_to(LAMBDA)
    with open(PROMOTERS) as handle:
        header, *rows = handle.read().splitlines()
    labels = folder / "promoters.tsv"
    positives = [r for r in rows if r.split("\t")[1] == "1"][:60]
    negatives = [r for r in rows if r.split("\t")[1] == "0"][:60]
    labels.write_text("\n".join([header, *[r for pair in zip(positives, negatives, strict=True) for r in pair]]) + "\n")
    contig, seq = _lambda_contig()
    other = {"A": "C", "C": "G", "G": "T", "T": "A"}
    records = [(1000, seq[999], other[seq[999]]), (2000, seq[1999], f"{other[seq[1999]]},{other[other[seq[1999]]]}"),
               (3000, seq[2999:3002], seq[2999]), (4000, seq[3999], seq[3999] + "GA"),
               (5000, other[seq[4999]], seq[4999])]  # the last: REF differs from the genome, skipped
    vcf = folder / "variants.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n" f"##contig=<ID={contig},length={len(seq)}>\n"
                   "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   + "".join(f"{contig}\t{p}\tv{p}\t{r}\t{a}\t.\tPASS\t.\n" for p, r, a in records))
    sheet = folder / "samples.tsv"
    sheet.write_text("sample\tgenome\tlabels\tvcf\n" f"lambda phage\t{genome}\t{labels}\t{vcf}\n")
    return sheet


TINY = """\
samples: {samples}
outdir: results
device: cpu
targets: [pretrain, embed, score, score_variants, generate, finetune, predict, evaluate]
pretrain: {{steps: 3, window: 128, batch-size: 2, d-model: 16, n-layer: 1, d-state: 4, warmup-steps: 1,
           val-every: 3, val-windows: 2}}
finetune: {{epochs: 1, batch-size: 32, rc-augment: null, warmup-steps: 1}}
embed: {{window: 2048}}
score: {{per_position: true}}
score_variants: {{window: 64}}
generate: {{length: 200}}
# One thread a job (the defaults ask up to 4, capped at --cores 2): two jobs at a time, each on one core,
# instead of one job whose two OpenMP threads wait for each other on a busy machine.
resources: {{pretrain: {{threads: 1}}, finetune: {{threads: 1}}, predict: {{threads: 1}}, embed: {{threads: 1}},
            score: {{threads: 1}}, score_variants: {{threads: 1}}}}
"""


@pytest.mark.slow
@needs_snakemake
@needs_data
def test_snakemake_runs_end_to_end_on_real_data(tmp_path):
    """Every rule, one job per sample, `--cores 2`, tiny model and a few steps through a --configfile."""
    import numpy as np
    import pysam

    sheet = _write_inputs(tmp_path)
    override = tmp_path / "tiny.yaml"
    override.write_text(TINY.format(samples=sheet))
    proc = _snakemake(["--cores", "2", "--directory", str(tmp_path), "--configfile", str(override)], cwd=tmp_path,
                      timeout=600)
    out = tmp_path / "results" / "lambda phage"
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:] + _logs(tmp_path / "results")
    assert not list(tmp_path.rglob("INJECTED"))

    assert json.loads((out / "pretrain" / "checkpoint" / "config.json").read_text())["d_model"] == 16
    embeddings = np.load(out / "embed" / "embeddings.npy")
    index = (out / "embed" / "index.tsv").read_text().splitlines()
    assert embeddings.shape[0] == len(index) - 1 >= 1 and np.isfinite(embeddings).all()

    with open(out / "score" / "scores.tsv", newline="") as handle:
        (row,) = list(csv.DictReader(handle, delimiter="\t"))
    contig, seq = _lambda_contig()
    assert row["record"] == contig and int(row["length"]) == len(seq)
    assert 0 < float(row["bits_per_base"]) < 4 and math.isfinite(float(row["total_bits"]))
    bedgraph = [line.split("\t") for line in (out / "score" / "bits.bedgraph").read_text().splitlines()
                if not line.startswith(("track", "#"))]
    assert sum(int(e) - int(s) for _, s, e, _ in bedgraph) == int(row["scored"])

    with pysam.VariantFile(str(out / "score_variants" / "variants.vcf.gz")) as vcf:
        scored = {rec.id: rec.info.get("SEQSSM_LLR") for rec in vcf}
    assert set(scored) == {"v1000", "v2000", "v3000", "v4000", "v5000"}
    assert len(scored["v2000"]) == 2 and all(math.isfinite(x) for x in scored["v1000"] + scored["v3000"])
    assert scored["v5000"] is None  # REF mismatch: skipped and flagged, not scored
    assert (out / "score_variants" / "variants.vcf.gz.tbi").is_file()
    assert len((out / "score_variants" / "variants.tsv").read_text().splitlines()) >= 6

    records = (out / "generated.fa").read_text().splitlines()
    assert records[0].startswith(">") and set("".join(records[1:])) <= set("ACGT")
    assert (out / "finetune" / "checkpoint" / "config.json").is_file()
    with open(out / "predict" / "predictions.tsv", newline="") as handle:
        predictions = list(csv.DictReader(handle, delimiter="\t"))
    assert len(predictions) == 120 and {p["predicted"] for p in predictions} <= {"0", "1"}
    metrics = json.loads((out / "evaluate" / "metrics.json").read_text())
    assert 0 <= metrics["metrics"]["accuracy"] <= 1
