# Shared by the seqssm rules (rules/*.smk): the samples sheet, output paths, CLI options and resources.
# Another workflow can `include:` this file and any rules/*.smk after it, given a `config` with the keys
# of ../config.yaml (at least samples, outdir, device, resources and one table per command it uses).

import csv
import os
from pathlib import Path


def _samples_path() -> Path:
    """The samples sheet: relative to the working directory, else to this workflow's folder."""
    path = Path(config["samples"])
    if not path.is_absolute() and not path.exists():
        beside = Path(workflow.basedir) / path
        if beside.exists():
            return beside
    return path


def _read_samples() -> dict[str, dict[str, str]]:
    """sample -> its row (genome, and optional labels and vcf; empty or '-' means none)."""
    path = _samples_path()
    if not path.is_file():
        raise WorkflowError(f"samples sheet {path} not found (config key 'samples')")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or "sample" not in rows[0] or "genome" not in rows[0]:
        raise WorkflowError(f"{path}: needs a tab-separated header with at least 'sample' and 'genome'")
    samples = {}
    for row in rows:
        name = (row.get("sample") or "").strip()
        if not name or "/" in name or name in samples:
            raise WorkflowError(f"{path}: sample names must be unique, non-empty and without '/': {name!r}")
        samples[name] = {k: ("" if (v or "").strip() == "-" else (v or "").strip()) for k, v in row.items()}
    return samples


SAMPLES = _read_samples()
OUT = config["outdir"]


def sample_file(column: str):
    """An input function: the sample's `column` from the sheet."""
    return lambda wildcards: SAMPLES[wildcards.sample][column]


def with_column(column: str) -> list[str]:
    """Samples that have a value in `column`."""
    return [name for name, row in SAMPLES.items() if row.get(column)]


def cli_args(command: str, *skip: str) -> list[str]:
    """The command's config table as CLI words (each quoted on its own by {params.args:q})."""
    words = []
    for key, value in (config.get(command) or {}).items():
        if key in skip or value is None:
            continue
        if value is True:
            words.append(f"--{key}")
        elif value is False:
            words.append(f"--no-{key}")
        else:
            words += [f"--{key}", str(value)]
    return words


def res(rule_name: str, key: str, default):
    return (config.get("resources", {}).get(rule_name) or {}).get(key, default)


def log_path(rule_name: str) -> str:
    return os.path.join(OUT, "logs", rule_name, "{sample}.log")


def all_targets() -> list[str]:
    """Outputs of the config's targets for every sample that has their inputs."""
    wanted = set(config.get("targets", []))
    per_sample = {
        "pretrain": (f"{OUT}/{{sample}}/pretrain", list(SAMPLES)),
        "embed": (f"{OUT}/{{sample}}/embed", list(SAMPLES)),
        "score": (f"{OUT}/{{sample}}/score/scores.tsv", list(SAMPLES)),
        "generate": (f"{OUT}/{{sample}}/generated.fa", list(SAMPLES)),
        "score_variants": (f"{OUT}/{{sample}}/score_variants/variants.vcf.gz", with_column("vcf")),
        "finetune": (f"{OUT}/{{sample}}/finetune", with_column("labels")),
        "predict": (f"{OUT}/{{sample}}/predict/predictions.tsv", with_column("labels")),
        "evaluate": (f"{OUT}/{{sample}}/evaluate", with_column("labels")),
    }
    unknown = wanted - set(per_sample)
    if unknown:
        raise WorkflowError(f"config targets: unknown {sorted(unknown)}; choose from {sorted(per_sample)}")
    return [path for name in sorted(wanted) for path in expand(per_sample[name][0], sample=per_sample[name][1])]
