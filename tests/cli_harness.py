"""Shared by the test files that run the CLI in this process: ``seqssm ARGS`` through the console script's
entry point (``seqssm.cli.main``), minus the seconds of imports a subprocess costs."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_cli(args: list, capsys, monkeypatch) -> tuple[int, str]:
    """(exit code, stderr) of ``seqssm ARGS``."""
    result = run_cli_result(args, capsys, monkeypatch)
    return result.returncode, result.stderr


def run_cli_result(args: list, capsys, monkeypatch) -> subprocess.CompletedProcess:
    """``seqssm ARGS`` as a finished process would report it: exit code, stdout and stderr."""
    from seqssm import cli

    words = ["seqssm", *map(str, args)]
    monkeypatch.setattr(sys, "argv", words)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(words, exit_.value.code, out, err)
