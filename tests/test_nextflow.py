"""The Nextflow pipeline (workflows/nextflow/), linted offline: the Nextflow runtime is not installed here,
so it is never run. Every .nf and .config file parses with reftrace (a DSL2 parser); every module has the
nf-core pieces; every process's `seqssm` command line, with its ext.args from conf/modules.config and the
params' defaults, parses with the CLI itself; values reach the shell quoted; the schema covers the params."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

reftrace = pytest.importorskip("reftrace", reason="reftrace is not importable (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parents[1]
NF = ROOT / "workflows" / "nextflow"
MODULES = NF / "modules" / "local" / "seqssm"
COMMANDS = ["pretrain", "finetune", "predict", "evaluate", "embed", "score", "score_variants", "generate"]
TRICKY = "my genome;touch INJECTED"
Q_DEF = """def q(value) { "'" + value.toString().replace("'", "'\\\\''") + "'" }"""
QUOTE_ALL = """.collect { "'" + it.toString().replace("'", "'\\\\''") + "'" }.join(' ')"""


def _groovy_q(value: str) -> str:
    """What Q_DEF does, in Python."""
    return "'" + value.replace("'", "'\\''") + "'"


def _block(text: str, name: str) -> str:
    """The body of `name { ... }` (first occurrence), braces matched."""
    start = re.search(rf"(?m)^\s*{name}\s*\{{", text)
    assert start, f"no `{name} {{` block"
    depth, i = 1, start.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[start.end():i - 1]


def _params() -> dict[str, object]:
    """nextflow.config's params block: name -> default (as Python)."""
    values = {}
    for line in _block((NF / "nextflow.config").read_text(), "params").splitlines():
        if m := re.match(r"\s*(\w+)\s*=\s*('[^']*'|\S+)", line):
            raw = m.group(2)
            number = float(raw) if "." in raw else int(raw) if raw.isdigit() else raw
            literal = raw[1:-1] if raw.startswith("'") else number
            values[m.group(1)] = {"true": True, "false": False, "null": None}.get(raw, literal)
    return values


def _ext_args(process: str, params: dict[str, object]) -> list[str]:
    """The words of the process's ext.args in conf/modules.config, evaluated with the params' defaults."""
    text = (NF / "conf" / "modules.config").read_text()
    head = rf"withName: 'SEQSSM_{process.upper()}' \{{\s*ext\.args = \{{ "
    m = re.search(rf"{head}\[(.*)\]{re.escape(QUOTE_ALL)} \}}", text)
    assert m, f"conf/modules.config: SEQSSM_{process.upper()} has no ext.args list quoted word by word"
    expr = re.sub(r"params\.(\w+)", lambda p: repr(params[p.group(1)]), m.group(1))
    # Groovy `a ? b : c` (the only operator used there) -> Python; `*(list)` spreads in both
    expr = re.sub(r"(\w+) \? ('[^']*'|\[[^\]]*\]) : ('[^']*'|\[\])", r"(\2 if \1 else \3)", expr)
    return [str(word) for word in eval(f"[{expr}]", {})]  # noqa: S307 -- our own config file


def _script(path: Path, section: str = "script") -> str:
    text = path.read_text()
    body = text.split(f"\n    {section}:\n", 1)[1]
    return body.split('"""', 2)[1]


def _command_line(command: str) -> list[str]:
    """The module's `seqssm ...` line as shell words: q(...) values as one placeholder word each, ${args}
    as its ext.args words (each quoted as the config quotes them)."""
    lines = [line for line in _script(MODULES / command / "main.nf").splitlines() if " seqssm " in f" {line}"]
    assert len(lines) == 1, f"{command}: expected one seqssm line, got {lines}"
    line = lines[0]
    args = " ".join(_groovy_q(w) for w in _ext_args(command, _params()))
    line = line.replace("${args}", args)
    line = re.sub(r"\$\{q\([\w.]+\)\}", "PLACEHOLDER", line)
    assert "$" not in line, f"{command}: an interpolation not quoted with q(): {lines[0]}"
    words = shlex.split(line)
    return words[words.index("seqssm"):]


def _cli_parses(words: list[str]) -> None:
    import typer.main

    from seqssm.cli import app

    group = typer.main.get_command(app)
    assert words[1] in group.commands, f"`seqssm {words[1]}` is not a command"
    try:
        group.commands[words[1]].make_context(words[1], list(words[2:]))
    except Exception as error:  # typer vendors click: its UsageError is not click's
        pytest.fail(f"`{shlex.join(words)}` does not parse: {error}")


def test_old_main_nf_is_gone_and_every_module_exists():
    assert not (ROOT / "workflows" / "main.nf").exists()
    assert sorted(p.parent.name for p in MODULES.glob("*/main.nf")) == sorted(COMMANDS)


def test_every_nf_file_parses_with_reftrace():
    files = sorted(NF.rglob("*.nf"))
    assert len(files) == len(COMMANDS) + 1
    for path in files:
        module = reftrace.Module.from_file(str(path))
        assert not isinstance(module, reftrace.ParseError), f"{path}: {module.error}"
        assert module.dsl_version == 2, path
    main = reftrace.Module.from_file(str(NF / "main.nf"))
    included = {item.name for inc in main.includes for item in inc.items}
    assert included == {f"SEQSSM_{c.upper()}" for c in COMMANDS}


def test_reftrace_rejects_a_broken_file(tmp_path):
    broken = tmp_path / "broken.nf"
    broken.write_text((MODULES / "embed" / "main.nf").read_text().replace("    output:", "    output: {", 1))
    assert isinstance(reftrace.Module.from_file(str(broken)), reftrace.ParseError)


def test_every_config_parses_with_reftrace():
    for path in [NF / "nextflow.config", *sorted((NF / "conf").glob("*.config"))]:
        result = reftrace.ConfigFile.from_file(str(path))
        assert result.error is None, f"{path}: {result.error}"


@pytest.mark.parametrize("command", COMMANDS)
def test_module_has_the_nf_core_pieces(command):
    path = MODULES / command / "main.nf"
    text = path.read_text()
    (process,) = reftrace.Module.from_file(str(path)).processes
    assert process.name == f"SEQSSM_{command.upper()}"
    assert [t.tag for t in process.tags] == ["${meta.id}"], f"{path}: tag is not meta.id"
    assert {label.label for label in process.labels} <= {"process_low", "process_medium", "process_gpu"}
    assert process.labels, f"{path}: no resource label"
    inputs = text.split("\n    input:\n", 1)[1].split("\n    output:\n", 1)[0]
    assert re.match(r"\s*tuple val\(meta\), path\(\w+\)", inputs), f"{path}: input is not `tuple val(meta), path(...)`"
    assert "path 'versions.yml', emit: versions" in text
    assert "def args = task.ext.args ?: ''" in text and "${args}" in _script(path)
    assert "versions.yml" in _script(path) and "import seqssm" in _script(path)
    assert "versions.yml" in _script(path, "stub") and "touch" in _script(path, "stub")
    assert Q_DEF in text, f"{path}: no (or a different) q() quoting helper"


@pytest.mark.parametrize("command", COMMANDS)
def test_module_command_line_parses_with_the_cli(command):
    words = _command_line(command)
    assert words[1] == command.replace("_", "-")
    _cli_parses(words)


def test_a_broken_command_line_fails(monkeypatch):
    with pytest.raises(pytest.fail.Exception):
        _cli_parses(["seqssm", "embed", "ckpt", "genome.fa", "--out", "x", "--no-such-option", "1"])
    with pytest.raises(pytest.fail.Exception):
        _cli_parses(["seqssm", "score-variants", "ckpt", "calls.vcf", "--out", "x.vcf.gz"])  # no --genome
    real = _ext_args
    monkeypatch.setitem(globals(), "_ext_args", lambda process, params: [*real(process, params), "--stepz", "3"])
    with pytest.raises(pytest.fail.Exception):
        _cli_parses(_command_line("pretrain"))


def test_values_reach_the_shell_quoted():
    for value in [TRICKY, "it's $HOME `x`", "a'b'c"]:
        assert shlex.split(f"seqssm embed {_groovy_q(value)} x") == ["seqssm", "embed", value, "x"]
    params = {**_params(), "device": TRICKY}
    words = _ext_args("embed", params)
    assert shlex.split(" ".join(_groovy_q(w) for w in words))[-1] == TRICKY
    text = (NF / "conf" / "modules.config").read_text()
    assert text.count("ext.args = ") == text.count(QUOTE_ALL) == len(COMMANDS)


def test_schema_is_valid_and_covers_every_param():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((NF / "nextflow_schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    props = {k: v for group in schema["$defs"].values() for k, v in group["properties"].items()}
    params = _params()
    assert set(props) == set(params)
    for name, default in params.items():
        assert props[name].get("default") == default, name
    jsonschema.validate({**{k: v for k, v in params.items() if v is not None}, "input": "samples.tsv"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"input": "samples.tsv", "pretrain_steps": "many"}, schema)


def test_profiles_exist():
    profiles = _block((NF / "nextflow.config").read_text(), "profiles")
    names = set(re.findall(r"(?m)^    (\w+) \{", profiles))
    assert {"standard", "slurm", "gpu", "conda", "docker", "apptainer"} <= names
    base = (NF / "conf" / "base.config").read_text()
    for label in ["process_low", "process_medium", "process_gpu"]:
        assert f"withLabel: '{label}'" in base


def test_dockerfile_pins_torch_and_has_cpu_and_cuda():
    docker = (NF / "Dockerfile").read_text()
    pin = re.search(r'"torch==([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert pin == "2.11.0"
    assert f"ARG TORCH_VERSION={pin}" in docker and '"torch==${TORCH_VERSION}"' in docker
    assert "ARG VARIANT=cpu" in docker and '"$VARIANT" = "cuda"' in docker
    assert "download.pytorch.org/whl/cpu" in docker
