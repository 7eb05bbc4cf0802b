"""The Snakemake and Nextflow workflows call only `seqssm` commands and options that exist."""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
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


# A genome whose name would run a command if a rule put it into the shell unquoted.
TRICKY = "my genome;touch INJECTED"
SHELL_FIELD = re.compile(r"(?<!\{)\{([A-Za-z_][\w.\[\]]*)(:[^}]*)?\}(?!\})")


def _shell_commands(snakefile: Path) -> dict[str, str]:
    """rule name -> its shell string (the Snakefile's rules each have one, on the line after ``shell:``)."""
    rules, rule = {}, None
    lines = snakefile.read_text().splitlines()
    for i, line in enumerate(lines):
        if m := re.match(r"rule (\w+):", line):
            rule = m.group(1)
        elif line.strip() == "shell:":
            rules[rule] = ast.literal_eval(lines[i + 1].strip())
    return rules


def test_snakemake_shell_fields_are_quoted():
    commands = _shell_commands(WORKFLOWS[0])
    assert set(commands) == {"pretrain", "embed", "generate"}
    for rule, command in commands.items():
        assert "$(" not in command, f"rule {rule}: a $(...) result is split into words by the shell"
        fields = SHELL_FIELD.findall(command)
        assert fields, rule
        for name, spec in fields:
            assert spec == ":q", f"rule {rule}: {{{name}{spec}}} goes into the shell unquoted; write {{{name}:q}}"


def test_nextflow_script_values_are_quoted():
    text = WORKFLOWS[1].read_text()
    scripts = re.findall(r'script:\s*"""(.*?)"""', text, flags=re.S)
    assert len(scripts) == 3
    for script in scripts:
        values = re.findall(r"\$\{([^}]*)\}", script)
        assert values and all(re.fullmatch(r"q\(.+\)", v) for v in values), script
    assert "def q(value)" in text


def _tiny_checkpoint(ckpt_dir: Path) -> None:
    from seqssm.config import MambaConfig
    from seqssm.models import MambaLMHeadModel

    MambaLMHeadModel(MambaConfig(d_model=16, n_layer=1, vocab_size=10, d_state=4)).save_pretrained(ckpt_dir)


def _snakemake() -> str | None:
    found = Path(sys.executable).parent / "snakemake"
    return str(found) if found.is_file() else shutil.which("snakemake")


def test_snakemake_rule_runs_on_a_path_with_space_and_semicolon(tmp_path):
    """The generate rule on genome "my genome;touch INJECTED": the output appears and nothing else runs.

    With Snakemake installed (beside this Python or on PATH) it runs the rule itself (`--cores 1`); without,
    the rule's shell string is rendered as Snakemake renders it ({x:q} is shlex.quote) and run by bash.
    """
    genome = tmp_path / f"{TRICKY}.fa"
    genome.write_text(">chr\nACGTACGTAC\n")
    run_dir = tmp_path / "runs" / TRICKY
    _tiny_checkpoint(run_dir / "pretrain" / "checkpoint")  # after the genome, so Snakemake keeps it
    output = run_dir / "generated.fa"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "SEQSSM_PROGRESS": "0"}
    snakemake = _snakemake()
    if snakemake:
        cmd = [snakemake, "-s", str(WORKFLOWS[0]), "--cores", "1", "--directory", str(tmp_path),
               "--config", f"genomes={genome}", "out=runs", "device=cpu", "--", f"runs/{TRICKY}/generated.fa"]
    else:
        command = _shell_commands(WORKFLOWS[0])["generate"]
        ckpt = run_dir / "pretrain" / "checkpoint"
        values = {"input": str(ckpt / "config.json"), "params.ckpt": str(ckpt), "output": str(output),
                  "DEVICE": "cpu"}
        rendered = SHELL_FIELD.sub(lambda m: shlex.quote(values[m[1]]) if m[2] == ":q" else values[m[1]], command)
        cmd = ["bash", "-c", rendered]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert not (tmp_path / "INJECTED").exists() and not (run_dir / "INJECTED").exists()
    records = output.read_text().splitlines()
    assert records[0].startswith(">") and len("".join(records[1:])) == 1000
