"""Shared fixtures: the real data folder beside the repository, and seeded randomness."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config):
    """torch on one thread in this process and, through OMP_NUM_THREADS, in every process a test starts (seqssm
    commands, torchrun ranks, Snakemake jobs), unless OMP_NUM_THREADS is set already. The tests run tiny ops,
    and on a busy 2-core machine (the interpreted Triton child below holds one core) OpenMP threads mostly wait
    for each other: test_embedder, test_finetune, test_augment and test_baseline took 80 and 112 s on torch's
    default 2 threads and 14 and 24 s on one, run alternately on a loaded 2-core machine (2026-12-04)."""
    torch.set_num_threads(int(os.environ.setdefault("OMP_NUM_THREADS", "1")))


def _is_twin(item) -> bool:
    return getattr(getattr(item, "function", None), "interpreted_twin", False)


@pytest.hookimpl(trylast=True)  # after -k / -m have deselected
def pytest_collection_modifyitems(session, config, items):
    """CPU only: the Triton modules' tests report the outcomes of interpreted child runs (``triton_harness``).
    Move them to the end and start the child runs of the selected ones now, on background threads, so the
    interpreter (one Python-bound core a child) overlaps the rest of the suite instead of adding to it."""
    import triton_harness

    if not triton_harness.PROXY:
        return
    twins = [item for item in items if _is_twin(item)]
    items[:] = [item for item in items if not _is_twin(item)] + twins
    tests: dict[str, list[str]] = {}
    for item in twins:
        tests.setdefault(str(Path(item.fspath).resolve()), []).append(item.nodeid.split("::", 1)[1])
    triton_harness.start_children(tests)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (real genomes, reads, labelled tables, audio); skips when the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it sits beside the repo in CI and dev machines)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """torch on one thread for the test: decoding is all tiny ops, and on a shared 2-core machine OpenMP
    threads only wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
