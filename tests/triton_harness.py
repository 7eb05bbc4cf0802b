"""Shared by the Triton test files: run a test module under TRITON_INTERPRET=1 when there is no GPU.

TRITON_INTERPRET=1 must be set before triton is first imported, which another test file of the same
session may already have done, so without CUDA a Triton test module reruns itself in a child pytest with
the variable set (only the tests this session selected), and each test in the parent reports its child twin's
outcome.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

ON_CUDA = torch.cuda.is_available()
PROXY = not ON_CUDA and os.environ.get("TRITON_INTERPRET") != "1"
DEVICE = "cuda" if ON_CUDA else "cpu"


# Interpreted children started ahead of their tests (``start_children``, from conftest at the end of
# collection) on two background threads: with this process that makes three single-threaded processes on a
# 2-core machine, so neither core idles while the other finishes a long module. The longest modules start
# first, each in a child of its own; the rest share one child (a child's start, Python, torch and Triton, costs
# 3-10 s of a busy core).
LONGEST = ("test_triton_scan.py", "test_mamba_inner.py")  # 136 and 73 s of one core interpreted (2026-12-04)
_FUTURES: dict[str, concurrent.futures.Future] = {}
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="interpreted")


def start_children(tests: dict[str, list[str]]) -> None:
    """Queue the interpreted child runs of ``tests`` (module path -> the node ids, after the path, of its twins
    in this session) on the background threads: the LONGEST modules alone, then the rest together."""
    todo = {path: names for path, names in tests.items() if path not in _FUTURES}
    first = sorted((p for p in todo if Path(p).name in LONGEST), key=lambda p: LONGEST.index(Path(p).name))
    for group in [[p] for p in first] + [[p for p in todo if p not in first]]:
        if group:
            future = _POOL.submit(_run_child, [f"{path}::{name}" for path in group for name in todo[path]])
            _FUTURES.update(dict.fromkeys(group, future))


@functools.cache
def _child_outcomes(module_path: str) -> dict[tuple[str, str], tuple[str, str]]:
    """Outcomes under TRITON_INTERPRET=1 from the module's queued child run, or from a run of the whole module
    started now."""
    future = _FUTURES.get(module_path)
    return future.result() if future is not None else _run_child([module_path])


def _run_child(tests: list[str]) -> dict[tuple[str, str], tuple[str, str]]:
    """Run ``tests`` (module paths or node ids) under TRITON_INTERPRET=1 in a child pytest; (module name, test
    name) -> (outcome, message), or "" -> ("failed", output) when the child wrote no report."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        cmd = [sys.executable, "-c", "import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))",
               *tests, "-q", "-p", "no:cacheprovider", f"--junitxml={report}"]
        # One thread: the interpreter is Python-bound, and the parent's tests use the other core meanwhile.
        env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
        # A hang guard, not a budget: on a loaded 2-core machine the largest module took over 15 minutes.
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=1800)
        if not report.exists():
            return {"": ("failed", proc.stdout[-3000:] + proc.stderr[-3000:])}
        outcomes = {}
        for case in ET.parse(report).iter("testcase"):
            outcome, message = "passed", ""
            for kind in ("failure", "error", "skipped"):
                node = case.find(kind)
                if node is not None:
                    outcome = "skipped" if kind == "skipped" else "failed"
                    message = (node.get("message") or "") + "\n" + (node.text or "")
            # classname is the module's dotted path from the rootdir ("tests.test_ssd"): its last part.
            outcomes[(case.get("classname").rsplit(".", 1)[-1], case.get("name"))] = (outcome, message)
        return outcomes


def interpreted(fn):
    """In the proxy process, replace a test by a lookup of its twin's outcome in the interpreted child."""
    if not PROXY:
        return fn
    module_path = str(Path(sys.modules[fn.__module__].__file__).resolve())

    @functools.wraps(fn)
    def twin(*args, **kwargs):
        name = os.environ["PYTEST_CURRENT_TEST"].split("::")[-1].rsplit(" ", 1)[0]
        outcomes = _child_outcomes(module_path)
        outcome, message = outcomes.get((Path(module_path).stem, name),
                                        outcomes.get("", ("failed", f"{name} did not run in the child")))
        if outcome == "skipped":
            pytest.skip(message)
        if outcome != "passed":
            pytest.fail(f"under TRITON_INTERPRET=1:\n{message}", pytrace=False)

    twin.interpreted_twin = True  # conftest finds the modules to start early by this
    return twin


def rel_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """‖x − ref‖ / ‖ref‖, with ‖ref‖ floored at 0.01: some exact gradients are zero (dA with L = 1 and no
    initial state), where fp32 rounding alone would give an unbounded ratio."""
    return ((x.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-2)).item()


def rounded(ref: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """ref stored in dtype as the kernels store it: round to nearest even, except that Triton 3.6's interpreter
    truncates fp32 to bf16 (it passes no rounding mode to its converter), so there the baseline truncates."""
    if dtype == torch.bfloat16 and not ON_CUDA:
        return (ref.float().contiguous().view(torch.int32) & -65536).view(torch.float32)
    return ref.to(dtype)


def packed_seq_idx(batch: int, length: int, cuts) -> torch.Tensor:
    """[batch, L] int32 packed-sequence ids for the kernels' seq_idx tests, on DEVICE. Row 0 starts a new
    sequence at each of ``cuts`` inside (0, L); row 1 repeats a value after a change (a run is a sequence, not a
    value) and ends in padding (-1); further rows are one sequence."""
    rows = torch.zeros(batch, length, dtype=torch.int32)
    if length > 1:
        for i, c in enumerate(sorted({c for c in cuts if 0 < c < length})):
            rows[0, c:] = i + 1
        rows[1, length // 3:] = 1
        rows[1, (2 * length) // 3:] = 0
        rows[1, length - max(1, length // 5):] = -1
    return rows.to(DEVICE)
