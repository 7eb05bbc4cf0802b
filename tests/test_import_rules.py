"""The import rule of docs/design.md, checked on every module's imports (ast): layers import only downward,
and no job module of ``pipelines/`` imports another job module."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"seqssm": "seqssm", "kernels": "seqssm.kernels", "models": "seqssm.models",
           "datasets": "seqssm.datasets", "pipelines": "seqssm.pipelines"}

# The bottom of the core: small modules every layer may use; they import only each other.
BASE = {"seqssm.errors", "seqssm.version", "seqssm.device", "seqssm.options", "seqssm.config",
        "seqssm.tokenizers", "seqssm.transforms"}
# The library API above models and datasets (load_model, Embedder, streaming).
API = {"seqssm", "seqssm.embedder", "seqssm.streaming", "seqssm.streaming_bidirectional"}
CLI = {"seqssm.cli", "seqssm.cli_tasks", "seqssm.cli_build", "seqssm.__main__"}  # __main__: python -m seqssm
# pipelines/ modules that are not jobs: the pieces jobs share. Every other module there is a job.
COMMON = {"__init__", "baseline_features", "checkpointing", "classical", "classify", "common", "configs_labelled",
          "configs_score", "configs_sequence", "configs_train", "decoding", "ema", "folds", "length_schedule",
          "likelihood", "metrics", "objectives", "outputs", "report", "sampling", "self_pretrain", "train_utils",
          "finetune_setup"}
# Jobs made of other jobs (the quick-start runs pretrain, embed and generate).
COMPOSITE = {"demo"}

# Layer -> the layers it may import.
ALLOWED = {
    "base": {"base"},
    "kernels": {"base", "kernels"},
    "models": {"base", "kernels", "models"},
    "datasets": {"base", "datasets"},
    "api": {"base", "kernels", "models", "datasets", "api"},
    "pipelines": {"base", "kernels", "models", "datasets", "api", "pipelines"},
    "cli": {"base", "kernels", "models", "datasets", "api", "pipelines", "cli"},
}


def layer(module: str) -> str | None:
    """The layer of a seqssm module name (None: not seqssm's)."""
    parts = module.split(".")
    if parts[0] != "seqssm":
        return None
    if len(parts) > 1 and parts[1] in ("kernels", "models", "datasets", "pipelines"):
        return parts[1]
    top = ".".join(parts[:2])
    if top in CLI:
        return "cli"
    if top in API:
        return "api"
    return "base"


def is_job(module: str) -> bool:
    parts = module.split(".")
    return len(parts) == 3 and parts[1] == "pipelines" and parts[2] not in COMMON


def modules(root: Path):
    """(module name, path) of every Python file of the package under ``root``."""
    for folder, package in FOLDERS.items():
        base = root / folder if folder != "models" else root / "seqssm" / "models"
        for path in sorted(base.rglob("*.py")):
            if folder == "seqssm" and "models" in path.relative_to(base).parts:
                continue  # models are their own layer
            rel = path.relative_to(base).with_suffix("").parts
            name = ".".join([package, *rel])
            yield (name[: -len(".__init__")] if name.endswith(".__init__") else name), path


def imports(path: Path):
    """(imported module, line, at top level) of every absolute import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            yield name, node.lineno, id(node) in top


def violations(root: Path) -> list[str]:
    known = {name for name, _ in modules(root)}
    found = []
    for name, path in modules(root):
        mine = layer(name)
        for target, line, at_top in imports(path):
            theirs = layer(target)
            if theirs is None or (target not in known and "." in target and target.rsplit(".", 1)[0] in known):
                continue  # not seqssm's, or a name imported from a module (checked as the module)
            where = f"{path.relative_to(root)}:{line} imports {target}"
            if theirs not in ALLOWED[mine]:
                found.append(f"{where}: {mine} may not import {theirs}")
            if is_job(name) and is_job(target) and target != name and name.rsplit(".", 1)[1] not in COMPOSITE:
                found.append(f"{where}: a job module imports another job module")
            if mine == "cli" and is_job(target) and at_top:
                found.append(f"{where}: the CLI imports job modules inside its commands (fast --help)")
    return found


def test_imports_follow_the_layers():
    assert violations(ROOT) == []


def test_a_planted_violation_is_found(tmp_path):
    for folder in ("seqssm", "kernels", "datasets", "pipelines"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    assert violations(tmp_path) == []
    plants = {
        "kernels/common.py": "from seqssm.models import mixer",
        "datasets/fasta.py": "from seqssm.pipelines.common import progress",
        "seqssm/errors.py": "import seqssm.pipelines.finetune",
        "pipelines/probe.py": "from seqssm.pipelines.predict import predict",
        "seqssm/cli_tasks.py": "from seqssm.pipelines.finetune import finetune as _finetune",
        "seqssm/models/heads.py": "from seqssm.datasets import fasta",
    }
    for rel, line in plants.items():
        path = tmp_path / rel
        path.write_text(path.read_text() + f"\n{line}\n")
    found = violations(tmp_path)
    for rel in plants:
        assert any(v.startswith(rel) for v in found), (rel, found)
