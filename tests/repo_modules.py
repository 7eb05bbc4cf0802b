"""Which of the repo's folders got imported under their bare top-level names (`kernels`, not `seqssm.kernels`).

The names also belong to PyPI packages (transformers >= 5.25 depends on `kernels`), so a bare `kernels` in
sys.modules is fine when it is that package: only a module loaded from the repo's own folder is the fault.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BARE_NAMES = ("kernels", "datasets", "pipelines")


def shadowed_repo_folders() -> dict[str, str]:
    """{bare name: file} for each repo folder imported as a top-level module."""
    found = {}
    for name in BARE_NAMES:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", []) or []), "")
        if module is not None and path and Path(path).resolve().is_relative_to(ROOT / name):
            found[name] = str(path)
    return found
