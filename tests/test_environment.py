"""environment.yml and pyproject.toml name the same dependencies with the same pins."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# conda-forge spells a few packages differently from PyPI
CONDA_NAMES = {"soundfile": "pysoundfile", "matplotlib": "matplotlib-base"}


def _split(spec: str) -> tuple[str, str]:
    spec = spec.split(";")[0].strip()
    name = re.match(r"[A-Za-z0-9_.-]+", spec).group(0)
    return name.lower(), spec[len(name):].replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_split(s) for s in project["dependencies"] + project["optional-dependencies"]["dev"])
    lines = [line.strip()[2:] for line in (ROOT / "environment.yml").read_text().splitlines()
             if line.strip().startswith("- ") and not line.strip().startswith("- pip:")]
    have = dict(_split(line) for line in lines if line not in ("pip", "-e .") and not line.startswith("python"))
    for name, pin in wanted.items():
        conda = CONDA_NAMES.get(name, name)
        assert conda in have, f"environment.yml lacks {conda} (pyproject: {name}{pin})"
        assert have[conda] == pin, f"{conda}: environment.yml pins {have[conda]!r}, pyproject {pin!r}"
