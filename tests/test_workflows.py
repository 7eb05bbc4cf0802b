"""The Snakemake and Nextflow workflows call only `seqssm` commands and options that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEQSSM = str(Path(sys.executable).parent / "seqssm")
WORKFLOWS = [ROOT / "workflows" / "Snakefile", ROOT / "workflows" / "main.nf"]


def _calls(path: Path) -> list[tuple[str, list[str]]]:
    """(command, options) of every `seqssm COMMAND ...` line that is not a comment."""
    calls = []
    for line in path.read_text().splitlines():
        if line.lstrip().startswith(("#", "//")):
            continue
        m = re.search(r"\bseqssm (\w+)(.*)", line)
        if m:
            calls.append((m.group(1), re.findall(r"(--[a-z][a-z-]*)", m.group(2))))
    return calls


@pytest.fixture(scope="module")
def help_texts() -> dict[str, str]:
    texts = {}
    for command in ("pretrain", "embed", "generate"):
        proc = subprocess.run([SEQSSM, command, "--help"], capture_output=True, text=True,
                              env={"COLUMNS": "200", "PATH": ""})
        assert proc.returncode == 0, proc.stderr
        texts[command] = proc.stdout
    return texts


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_calls_real_options(path, help_texts):
    calls = _calls(path)
    assert {c for c, _ in calls} == {"pretrain", "embed", "generate"}
    for command, options in calls:
        assert options, f"{path.name}: `seqssm {command}` without options"
        for option in options:
            assert option in help_texts[command], f"{path.name}: `seqssm {command}` has no {option}"
