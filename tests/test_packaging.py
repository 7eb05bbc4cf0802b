"""The built wheel holds every subpackage and the bundled data; nothing imports the folders top-level."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from repo_modules import shadowed_repo_folders

ROOT = Path(__file__).resolve().parents[1]
# Folder in the repo -> the package name it installs as.
MAPPED = {"seqssm": "seqssm", "kernels": "seqssm/kernels", "pipelines": "seqssm/pipelines",
          "datasets": "seqssm/datasets"}
BANNED = {"kernels", "datasets", "pipelines"}


def _python_files():
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in {".venv", "build", "dist"} or rel.parts[0].startswith("."):
            continue
        yield path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True, capture_output=True,
    )
    (path,) = out.glob("seqssm-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_holds_every_subpackage(wheel):
    names = set(wheel.namelist())
    expected = []
    for folder, package in MAPPED.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.relative_to(ROOT / folder).parent
            expected.append(f"{package}/{rel.as_posix()}/__init__.py".replace("/./", "/"))
    assert len(expected) >= 8
    missing = [e for e in expected if e not in names]
    assert not missing, f"wheel lacks {missing}: add them to [tool.setuptools] packages"
    assert not [n for n in names if n.split("/")[0] in BANNED], "a folder was installed under its bare name"


def test_wheel_holds_bundled_data(wheel):
    names = set(wheel.namelist())
    assert "seqssm/data/lambda_phage.fa.gz" in names
    assert "seqssm/data/ATTRIBUTION.md" in names


def test_nothing_imports_the_folders_top_level():
    offenders = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}" for r in roots if r in BANNED]
    assert not offenders, f"import seqssm.kernels / seqssm.datasets / seqssm.pipelines instead: {offenders}"


def test_tests_folder_is_not_a_package():
    # With tests/__init__.py, pytest's rootdir insertion would put the repo root on sys.path.
    assert not (ROOT / "tests" / "__init__.py").exists()


def test_installed_package_is_not_the_repo_root():
    import seqssm.kernels

    assert Path(seqssm.kernels.__file__).parent.name == "kernels"
    assert not shadowed_repo_folders(), "a repo folder got imported under its bare name"


def test_shadow_check_sees_the_repo_folder_imported_bare():
    # The check above must fail when the repo root is on sys.path (what `python -m pytest` does), and
    # must not when the bare name is some other package's (transformers >= 5.25 installs PyPI `kernels`).
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import kernels; "
            "from repo_modules import shadowed_repo_folders as s; print(sorted(s()))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT), str(ROOT / "tests")], capture_output=True,
                         text=True, cwd=ROOT / "tests", check=True).stdout
    assert out.strip() == "['kernels']"
